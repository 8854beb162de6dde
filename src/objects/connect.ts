// How the Worker hands a vetted connection to an object. The identity travels in a header of
// a request the Worker builds from scratch, so nothing a client sends can reach the object.
import type { Identity } from "./session";

const CONNECT_HEADER = "X-Edge-Relay-Connect";

export interface ConnectInfo extends Identity {
  /** Resume point: the last seq the client saw. */
  since?: number;
  /** The epoch the client saw with it; absent skips the epoch check. */
  epoch?: string;
}

/** A WebSocket, or a Server-Sent Events stream (rooms only). */
export type ConnectKind = "socket" | "events";

/** Fields left undefined are simply absent on the other side (JSON drops them). */
export function connectRequest(info: ConnectInfo, kind: ConnectKind = "socket"): Request {
  const headers: Record<string, string> = { [CONNECT_HEADER]: JSON.stringify(info) };
  if (kind === "socket") headers.Upgrade = "websocket";
  return new Request(`https://edge-relay.internal/${kind}`, { headers });
}

export function readConnectRequest(request: Request): ConnectInfo & { kind: ConnectKind } {
  const header = request.headers.get(CONNECT_HEADER);
  if (header === null) throw new Error(`object reached without ${CONNECT_HEADER}`);
  const kind = new URL(request.url).pathname === "/events" ? "events" : "socket";
  return { ...(JSON.parse(header) as ConnectInfo), kind };
}
