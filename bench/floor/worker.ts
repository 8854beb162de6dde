// The floor for the benchmarks: hibernatable sockets and nothing else. A room re-sends every
// frame to every socket it holds (sender included, as the relay does), with no parsing, no
// storage, no limits. An inbox reads only the "to" of a direct and hands the frame over RPC to
// the recipient's object, which sends it to that user's sockets: the least a cross-object direct
// message can cost.
import { DurableObject } from "cloudflare:workers";

interface FloorEnv {
  FLOOR: DurableObjectNamespace<Floor>;
  FLOOR_INBOX: DurableObjectNamespace<FloorInbox>;
  /** "true": each new socket gets one welcome-sized frame, as the relay's welcome (the "floor + welcome" target). */
  WELCOME?: string;
}

const WELCOME = JSON.stringify({ type: "welcome", protocol: 1, room: "r", user: "bench", connection: "00000000-0000-4000-8000-000000000000", seq: 0, epoch: "00000000-0000-4000-8000-000000000001", users: 1, presence: [{ user: "bench", connections: 1 }], heartbeat: { interval: 30000, timeout: 90000 } });

/** Sockets waiting for their welcome, per object; sent by one zero timer after the 101 answers, as the relay does. */
const opening = new WeakMap<DurableObjectState, WebSocket[]>();

function upgrade(ctx: DurableObjectState, env: FloorEnv): Response {
  const { 0: client, 1: server } = new WebSocketPair();
  ctx.acceptWebSocket(server);
  if (env.WELCOME === "true") {
    const waiting = opening.get(ctx) ?? [];
    opening.set(ctx, waiting);
    if (waiting.push(server) === 1) {
      setTimeout(() => {
        opening.delete(ctx);
        for (const ws of waiting) ws.send(WELCOME);
      }, 0);
    }
  }
  return new Response(null, { status: 101, webSocket: client });
}

function answerClose(ws: WebSocket, code: number): void {
  try {
    ws.close(code === 1005 || code === 1006 || code === 1015 ? 1000 : code, "");
  } catch {
    // already closed
  }
}

function sendToAll(ctx: DurableObjectState, message: string | ArrayBuffer): void {
  for (const ws of ctx.getWebSockets()) {
    try {
      ws.send(message);
    } catch {
      // closing; its close event follows
    }
  }
}

export class Floor extends DurableObject<FloorEnv> {
  override async fetch(): Promise<Response> {
    return upgrade(this.ctx, this.env);
  }
  override webSocketMessage(_ws: WebSocket, message: string | ArrayBuffer): void {
    sendToAll(this.ctx, message);
  }
  override webSocketClose(ws: WebSocket, code: number): void {
    answerClose(ws, code);
  }
}

export class FloorInbox extends DurableObject<FloorEnv> {
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
