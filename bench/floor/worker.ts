// The floor for the benchmarks: hibernatable sockets and nothing else. A room re-sends every
// frame to every socket it holds (sender included, as the relay does), with no parsing, no
// storage, no limits. An inbox reads only the "to" of a direct and hands the frame over RPC to
// the recipient's object, which sends it to that user's sockets: the least a cross-object direct
// message can cost.
//
// With WELCOME=true each new socket also gets a welcome-sized frame; with PRESENCE=true a room
// also tells presence as the relay's protocol asks at the least (docs/protocol.md "Presence at
// scale"): in memory only, no storage, no limits. With KEEP_STATE=true each socket also keeps
// what a relay whose sockets outlive hibernation must: who it is, in its attachment, and pings
// answered by the runtime while the object sleeps (docs/platform.md).
import { DurableObject } from "cloudflare:workers";

interface FloorEnv {
  FLOOR: DurableObjectNamespace<Floor>;
  FLOOR_INBOX: DurableObjectNamespace<FloorInbox>;
  /** "true": each new socket gets one welcome-sized frame, as the relay's welcome (the "floor + welcome" target). */
  WELCOME?: string;
  /** "true": rooms count users (`?user=`) and send presence frames (the "floor + presence" target). */
  PRESENCE?: string;
  /** "true": each socket gets an attachment and objects answer pings while hibernated (both targets above). */
  KEEP_STATE?: string;
}

const WELCOME_FIELDS = { type: "welcome", protocol: 1, room: "r", user: "bench", connection: "00000000-0000-4000-8000-000000000000", seq: 0, epoch: "00000000-0000-4000-8000-000000000001", heartbeat: { interval: 30000, timeout: 90000 } };
const WELCOME = JSON.stringify({ ...WELCOME_FIELDS, users: 1, presence: [{ user: "bench", connections: 1 }] });

/** Sockets waiting for their welcome, per object; sent by one zero timer after the 101 answers, as the relay does. */
const opening = new WeakMap<DurableObjectState, Opening[]>();

interface Opening {
  ws: WebSocket;
  welcome: string;
  /** The join frame every other socket gets, for a new user while the room is small. */
  join?: string;
}

/** With KEEP_STATE, the ping auto-response every socket-holding object of the relay sets up. */
function answerPings(ctx: DurableObjectState, env: FloorEnv): void {
  if (env.KEEP_STATE === "true") ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
}

function upgrade(ctx: DurableObjectState, env: FloorEnv, presence?: FloorPresence, user?: string): Response {
  const { 0: client, 1: server } = new WebSocketPair();
  ctx.acceptWebSocket(server);
  if (env.KEEP_STATE === "true") server.serializeAttachment({ user: user ?? "bench", connection: crypto.randomUUID(), seen: Date.now() });
  const opened = presence && user !== undefined ? { ws: server, ...presence.arrive(user, server) } : env.WELCOME === "true" ? { ws: server, welcome: WELCOME } : undefined;
  if (opened) {
    const waiting = opening.get(ctx) ?? [];
    opening.set(ctx, waiting);
    if (waiting.push(opened) === 1) {
      setTimeout(() => {
        opening.delete(ctx);
        for (const { ws, welcome } of waiting) ws.send(welcome);
        presence?.opened(waiting);
      }, 0);
    }
  }
  return new Response(null, { status: 101, webSocket: client });
}

/** The relay's default PRESENCE_LIST_LIMIT: join frames and welcome lists up to it, counts above. */
const PRESENCE_LIST_LIMIT = 100;

/**
 * A room's users and the presence frames they cause: the welcome lists them while the room is
 * small and a new user's join frame goes to every other socket; above the limit a count frame
 * goes to every socket at most once a second. Leaves only count down (no frames). It keeps its
 * own set of sockets: the platform's `getWebSockets()` makes an array of them all on every call.
 */
class FloorPresence {
  readonly #users = new Map<string, number>();
  readonly #userOf = new Map<WebSocket, string>();
  /** Sockets whose welcome has not gone out: a count frame would reach them before it. */
  readonly #opening = new Set<WebSocket>();
  #countAt = 0;
  #said = -1;
  #timer?: ReturnType<typeof setTimeout>;

  arrive(user: string, ws: WebSocket): { welcome: string; join?: string } {
    const connections = (this.#users.get(user) ?? 0) + 1;
    this.#users.set(user, connections);
    this.#userOf.set(ws, user);
    this.#opening.add(ws);
    const users = this.#users.size;
    const short = users <= PRESENCE_LIST_LIMIT;
    const presence = short ? [...this.#users.keys()].sort().map((name) => ({ user: name, connections: this.#users.get(name)! })) : undefined;
    const welcome = JSON.stringify({ ...WELCOME_FIELDS, user, users, ...(presence && { presence }) });
    if (connections > 1) return { welcome };
    if (short) return { welcome, join: JSON.stringify({ type: "presence", room: "r", event: "join", user }) };
    this.#countChanged();
    return { welcome };
  }

  /** Sockets whose welcome just went out; each new user's join goes to every other socket. */
  opened(sockets: Opening[]): void {
    for (const { ws } of sockets) this.#opening.delete(ws);
    for (const { ws: newcomer, join } of sockets) {
      if (join !== undefined) for (const ws of this.#userOf.keys()) if (ws !== newcomer) send(ws, join);
    }
  }

  leave(ws: WebSocket): void {
    const user = this.#userOf.get(ws);
    if (user === undefined) return;
    this.#userOf.delete(ws);
    this.#opening.delete(ws);
    const left = (this.#users.get(user) ?? 1) - 1;
    if (left > 0) this.#users.set(user, left);
    else this.#users.delete(user);
  }

  #countChanged(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => this.#sendCount(), Math.max(0, this.#countAt + 1000 - Date.now()));
  }

  #sendCount(): void {
    this.#timer = undefined;
    const users = this.#users.size;
    if (users === this.#said) return;
    this.#said = users;
    this.#countAt = Date.now();
    const frame = JSON.stringify({ type: "presence", room: "r", event: "count", users });
    for (const ws of this.#userOf.keys()) if (!this.#opening.has(ws)) send(ws, frame);
  }
}

function answerClose(ws: WebSocket, code: number): void {
  try {
    ws.close(code === 1005 || code === 1006 || code === 1015 ? 1000 : code, "");
  } catch {
    // already closed
  }
}

function send(ws: WebSocket, message: string | ArrayBuffer): void {
  try {
    ws.send(message);
  } catch {
    // closing; its close event follows
  }
}

function sendToAll(ctx: DurableObjectState, message: string | ArrayBuffer): void {
  for (const ws of ctx.getWebSockets()) send(ws, message);
}

export class Floor extends DurableObject<FloorEnv> {
  readonly #presence = this.env.PRESENCE === "true" ? new FloorPresence() : undefined;

  constructor(ctx: DurableObjectState, env: FloorEnv) {
    super(ctx, env);
    answerPings(ctx, env);
  }

  override async fetch(request: Request): Promise<Response> {
    const user = this.#presence && (new URL(request.url).searchParams.get("user") ?? undefined);
    return upgrade(this.ctx, this.env, this.#presence, user);
  }
  override webSocketMessage(_ws: WebSocket, message: string | ArrayBuffer): void {
    sendToAll(this.ctx, message);
  }
  override webSocketClose(ws: WebSocket, code: number): void {
    this.#presence?.leave(ws);
    answerClose(ws, code);
  }
}

export class FloorInbox extends DurableObject<FloorEnv> {
  constructor(ctx: DurableObjectState, env: FloorEnv) {
    super(ctx, env);
    answerPings(ctx, env);
  }

  override async fetch(): Promise<Response> {
    return upgrade(this.ctx, this.env);
  }
  override webSocketMessage(_ws: WebSocket, message: string | ArrayBuffer): void {
    if (typeof message !== "string") return;
    const to = (JSON.parse(message) as { to?: unknown }).to;
    if (typeof to !== "string") return;
    this.env.FLOOR_INBOX.getByName(to)
      .deliver(message)
      .catch(() => {});
  }
  deliver(message: string): void {
    sendToAll(this.ctx, message);
  }
  override webSocketClose(ws: WebSocket, code: number): void {
    answerClose(ws, code);
  }
}

export default {
  async fetch(request: Request, env: FloorEnv): Promise<Response> {
    const match = /^\/(rooms|users)\/([A-Za-z0-9_.:-]{1,128})\/ws$/.exec(new URL(request.url).pathname);
    if (!match) return new Response("not found", { status: 404 });
    const namespace = match[1] === "rooms" ? env.FLOOR : env.FLOOR_INBOX;
    return namespace.getByName(match[2]!).fetch(request);
  },
} satisfies ExportedHandler<FloorEnv>;
