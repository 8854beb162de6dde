// How the Worker hands a vetted connection to an object, and where that object is. The identity
// travels in a header of a request the Worker builds from scratch, so nothing a client sends can
// reach an object.
import type { Identity } from "../identity";
import type { ResumePoint } from "../protocol";
import { againIfReset } from "./reset";

const CONNECT_HEADER = "X-Edge-Relay-Connect";
const HOLDER_HEADER = "X-Edge-Relay-Holder";

export interface ConnectInfo extends Identity, ResumePoint {
  /** The room of a room socket or event stream; absent for a user socket. */
  room?: string;
  /** A Pusher protocol socket's socket_id (docs/pusher.md). */
  pusher?: string;
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
  const kind = request.url.endsWith("/events") ? "events" : "socket"; // connectRequest's URL, no query
  return { ...(JSON.parse(header) as ConnectInfo), kind };
}

/** Who a connection belongs to, as the Worker established it (no field the object does not need). */
export function identityOf({ user, exp, rooms }: ConnectInfo): Identity {
  return { user, ...(exp !== undefined && { exp }), ...(rooms !== undefined && { rooms }) };
}

/** Why a room at MAX_CONNECTIONS_PER_ROOM takes no more: to an upgrade, a join, a plain GET of its socket URL. */
export function roomFullMessage(room: string, limit: number): string {
  return `room ${room} has ${limit} connections, its limit`;
}

/** A full Room's answer: open this socket on the named holder instead (docs/design.md "Placement"). */
export function placeAt(holder: string): Response {
  return new Response(null, { status: 307, headers: { [HOLDER_HEADER]: holder } });
}

/** The holder a Room's answer names, if it placed the socket elsewhere. */
export function placedAt(response: Response): string | undefined {
  return response.status === 307 ? (response.headers.get(HOLDER_HEADER) ?? undefined) : undefined;
}

/** How many full hubs a user or Pusher socket is handed past before it is refused. */
const MAX_HUB_HOPS = 16;

/**
 * Opens a user or Pusher socket on `hub`, or on the overflow hub each full one names (at most
 * MAX_HUB_HOPS); undefined when every one of them was full (docs/design.md "Placement").
 */
export async function openOnHubs(holders: Env["HOLDERS"], hub: string, info: ConnectInfo): Promise<Response | undefined> {
  for (let hops = 0; hops < MAX_HUB_HOPS; hops++) {
    const answer = await againIfReset(() => holders.getByName(hub).fetch(connectRequest(info)));
    const next = placedAt(answer);
    if (next === undefined) return answer;
    hub = next;
  }
  return undefined;
}

/** The name of a room's n-th shard; `#` is never part of a room id, so no room is named so. */
export function shardName(room: string, n: number): string {
  return `${room}#${n}`;
}

/**
 * Pusher sockets are spread over this many hubs of their own (overflow hubs come on top). A
 * Pusher socket names no user to group by and its channels come only after it connects, so a
 * room's Pusher subscribers sit on any of these hubs: fewer hubs, fewer delivery calls per
 * message (BENCHMARKS.md measured ~31 calls a publish with them spread over all 32 user hubs).
 */
const PUSHER_HUBS = 4;

/** Where a Pusher socket goes, and a socket_id for it. */
export function pusherPlacement(): { hub: string; socketId: string } {
  const [a, b] = crypto.getRandomValues(new Uint32Array(2));
  return { hub: `pusher-${a! % PUSHER_HUBS}`, socketId: `${a}.${b}` };
}

/** The hub a user's sockets go to first: the devices of a user meet there (FNV-1a of the id). */
export function hubFor(user: string, hubs: number): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < user.length; i++) hash = Math.imul(hash ^ user.charCodeAt(i), 0x01000193);
  return `users-${(hash >>> 0) % hubs}`;
}

/**
 * Where a full hub sends new sockets: `users-3`, then `users-3~2`, `users-3~3`... The Inbox learns
 * every hub its user's sockets are on when they attach, so any hub will do for a direct.
 */
export function overflowHub(hub: string): string {
  const match = /^(.*)~(\d+)$/.exec(hub);
  return match ? `${match[1]}~${Number(match[2]) + 1}` : `${hub}~2`;
}
