// Per-socket state: who the socket belongs to, what survives hibernation in its attachment, and
// what the object keeps for it in memory while awake.
import type { Identity } from "../identity";
import type { Backlog } from "./backlog";
import type { OversizeCounter, RateLimiter, ReplayBudget } from "./limits";

/** What is stored with each socket (serializeAttachment): all that must survive hibernation. */
export interface Attachment {
  identity: Identity;
  connection: string;
  /** The room of a room socket; absent on user sockets. */
  room?: string;
  /** A Pusher protocol socket (docs/pusher.md): its connection id is its socket_id. */
  pusher?: true;
  /** Last activity as of the last save, ms since the epoch. */
  seen: number;
  /** Set when we closed the socket: it no longer counts, whatever its readyState says. */
  closed?: true;
}

/** One open socket and its live state. */
export interface Session {
  readonly ws: WebSocket;
  readonly identity: Identity;
  readonly connection: string;
  readonly room?: string;
  readonly pusher?: true;
  /** Latest activity, ms; after a restore an upper bound (see `SocketHost#restore`). */
  seen: number;
  /** `seen` as last written into the attachment. */
  savedSeen: number;
  readonly rate: RateLimiter;
  /** A Pusher socket's own limit for its subscribes and unsubscribes, made at the first one. */
  subscribing?: RateLimiter;
  /** What its subscribes may replay, made at the first replay. */
  replays?: ReplayBudget;
  readonly oversize: OversizeCounter;
  /** Answers not yet sent, to frames it got in (owed.ts); undefined until the first frame. */
  owed?: number;
  /** By room, the seq of its last publish answered there: its echo is owed until delivered (owed.ts). */
  echoes?: Map<string, number>;
}

/** Writes `session`'s attachment: its `seen` now, and `closed` once we close it. */
export function saveAttachment(session: Session, closed?: true): void {
  const attachment: Attachment = {
    identity: session.identity,
    connection: session.connection,
    ...(session.room !== undefined && { room: session.room }),
    ...(session.pusher && { pusher: true as const }),
    seen: session.seen,
    ...(closed && { closed }),
  };
  session.ws.serializeAttachment(attachment);
  session.savedSeen = session.seen;
}

/** The socket's attachment, unless it is missing or marks a socket we already closed. */
export function liveAttachment(ws: WebSocket): Attachment | undefined {
  const attachment = ws.deserializeAttachment() as Attachment | null;
  return attachment && !attachment.closed ? attachment : undefined;
}

/** The connections of `sockets` (the platform's list) that we have not closed, closing ones included. */
export function connectionsOf(sockets: WebSocket[]): Set<string> {
  const connections = new Set<string>();
  for (const ws of sockets) {
    const attachment = liveAttachment(ws);
    if (attachment) connections.add(attachment.connection);
  }
  return connections;
}

// Frames sent on a socket before its 101 answer has gone out wait in a pipe that keeps its
// buffers for the socket's whole life: ~12 KiB a socket locally, measured with the floor
// (BENCHMARKS.md, "Cost per operation"). So a new socket's frames (welcome, replay, live frames
// that arrive meanwhile) are held here, in order, and sent one tick later, after the answer.
// Every quarter of MAX_BACKLOG_BYTES sent, the object's watch sees how far behind the client is
// (backlog.ts): not after every frame, which measured 0-8% of the 10-socket fan-out's CPU.
interface Outgoing {
  /** What waits for the socket's 101 answer; undefined once it has gone out. */
  held?: (string | ArrayBuffer)[];
  backlog?: Backlog;
  /** Characters (bytes of binary frames) sent since the backlog last looked. */
  sent: number;
}

const outgoing = new WeakMap<WebSocket, Outgoing>();

/** The object's watch on what `ws` has not read, for every send from now on. */
export function watch(ws: WebSocket, backlog: Backlog): void {
  const out = outgoing.get(ws);
  if (out) out.backlog = backlog;
  else outgoing.set(ws, { backlog, sent: 0 });
}

/** Holds what is sent on `ws` until `release(ws)`. */
export function hold(ws: WebSocket): void {
  const out = outgoing.get(ws);
  if (out) out.held = [];
  else outgoing.set(ws, { held: [], sent: 0 });
}

/** Sends what `ws` held, in order; later frames go straight out. */
export function release(ws: WebSocket): void {
  const out = outgoing.get(ws);
  const held = out?.held;
  if (held === undefined) return;
  if (out!.backlog) out!.held = undefined;
  else outgoing.delete(ws); // nothing more to keep for it
  for (const frame of held) transmit(ws, frame);
}

/** Sends one frame now, or after the socket's answer; a socket that cannot take it is left to its close event. */
export function transmit(ws: WebSocket, frame: string | ArrayBuffer): void {
  const out = outgoing.get(ws);
  if (out?.held !== undefined) {
    out.held.push(frame);
    return;
  }
  try {
    ws.send(frame);
  } catch {
    return; // Closing or gone: webSocketClose/webSocketError will report it.
  }
  if (out?.backlog === undefined) return;
  out.sent += typeof frame === "string" ? frame.length : frame.byteLength;
  if (out.sent < out.backlog.lookEvery) return;
  out.sent = 0;
  out.backlog.sent(ws);
}
