// How the Worker hands a vetted connection to an object. The identity travels in a header of
// a request the Worker builds from scratch, so nothing a client sends can reach the object.
import type { Identity } from "./socket-host";

const CONNECT_HEADER = "X-Edge-Relay-Connect";

export interface ConnectInfo extends Identity {
  /** Resume point: the last seq the client saw. */
  since?: number;
  /** The epoch the client saw with it; absent skips the epoch check. */
  epoch?: string;
}

export function connectRequest(info: ConnectInfo): Request {
  return new Request("https://edge-relay.internal/connect", {
    headers: { Upgrade: "websocket", [CONNECT_HEADER]: JSON.stringify(info) },
  });
}

export function readConnectRequest(request: Request): ConnectInfo {
  const header = request.headers.get(CONNECT_HEADER);
  if (header === null) throw new Error(`object reached without ${CONNECT_HEADER}`);
  return JSON.parse(header) as ConnectInfo;
}
