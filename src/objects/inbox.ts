// Inbox: one Durable Object per user. Holds that user's sockets on every device and stores each
// direct message durably until the user acks it, replaying the rest on every new connection.
import {
  ackFrame,
  FrameError,
  PROTOCOL_VERSION,
  type ClientFrame,
  type Delivery,
  type DirectFrame,
  type Json,
  type PublishFrame,
  type Refusal,
  type WelcomeFrame,
} from "../protocol";
import { roomAllowed } from "../auth";
import { readConnectRequest } from "./connect";
import type { Session } from "./session";
import { SocketHost } from "./socket-host";

export class Inbox extends SocketHost {

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.storage.sql.exec(
      "CREATE TABLE IF NOT EXISTS directs (seq INTEGER PRIMARY KEY, frame TEXT NOT NULL, expires INTEGER NOT NULL)",
    );
  }

  // ---- connections ----

  override async fetch(request: Request): Promise<Response> {
    const connect = readConnectRequest(request);
    const { 0: client, 1: server } = new WebSocketPair();
    const { session } = this.accept(server, connect);
    const welcome: WelcomeFrame = {
      type: "welcome",
      protocol: PROTOCOL_VERSION,
      user: this.name,
      connection: session.connection,
      seq: this.sequence.current,
      epoch: this.sequence.epoch,
      heartbeat: this.heartbeat,
    };
    this.send(server, welcome);
    // Every unacknowledged direct, oldest first; nothing can be delivered between these sends.
    for (const { frame } of this.#pending()) this.send(server, frame);
    return new Response(null, { status: 101, webSocket: client });
  }

  #pending(): { frame: string }[] {
    return this.ctx.storage.sql
      .exec<{ frame: string }>("SELECT frame FROM directs WHERE expires > ? ORDER BY seq", Date.now())
      .toArray();
  }

  // ---- frames ----

  protected override async onFrame(session: Session, frame: ClientFrame): Promise<void> {
    switch (frame.type) {
      case "publish":
        return this.#publish(session, frame);
      case "direct":
        return this.relayDirect(session, frame);
      case "ack":
        this.ctx.storage.sql.exec("DELETE FROM directs WHERE seq <= ?", frame.seq);
        this.#heldCount = undefined; // recounted at the next delivery
        return;
    }
  }

  /** A publish from a user socket goes to the room it names, through the room's stub. */
  async #publish(session: Session, frame: PublishFrame): Promise<void> {
    const { room } = frame;
    if (room === undefined) throw new FrameError("bad_frame", `"publish" on a user socket needs a "room"`);
    if (!roomAllowed(session.identity.rooms, room)) throw new FrameError("forbidden", `token does not allow room ${room}`);
    let seq: number;
    try {
      seq = await this.stubs.room(room).publish(session.identity.user, frame.data, frame.id);
    } catch {
      this.stubs.drop("room", room);
      throw new FrameError("internal", `could not publish to room ${room}; not sent`);
    }
    if (frame.id !== undefined) this.send(session.ws, ackFrame(frame.id, "delivered", seq));
  }

  /** Rows held, expired or not; counted after a wake-up or an ack, then kept in step. */
  #heldCount?: number;

  #held(): number {
    this.#heldCount ??= this.ctx.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM directs").one().n;
    return this.#heldCount;
  }

  // ---- RPC (from other objects and the Worker) ----

  /**
   * Stores one direct durably, then sends it to every socket of this user. A full inbox refuses
   * it (answered, not thrown: a refusal is an outcome, not a failure of the call).
   */
  deliver(from: string, data: Json, id?: string): Delivery | Refusal {
    const now = Date.now();
    const sql = this.ctx.storage.sql;
    // Expired rows are never replayed; they are only deleted when they would count against the
    // limit, so a delivery usually costs one INSERT and nothing else.
    if (this.#held() >= this.config.inboxMaxMessages) {
      this.#heldCount = undefined;
      sql.exec("DELETE FROM directs WHERE expires <= ?", now);
      const held = this.#held();
      if (held >= this.config.inboxMaxMessages) {
        return { refused: "inbox_full", message: `inbox of ${this.name} holds ${held} unacknowledged messages, its limit; not sent` };
      }
    }
    const text = this.ctx.storage.transactionSync(() => {
      const seq = this.sequence.next();
      const frame: DirectFrame = { type: "direct", seq, from, data, ts: now };
      if (id !== undefined) frame.id = id;
      const text = JSON.stringify(frame);
      sql.exec("INSERT INTO directs (seq, frame, expires) VALUES (?, ?, ?)", seq, text, now + this.config.inboxTtlSeconds * 1000);
      return text;
    });
    this.#heldCount = this.#held() + 1;
    // Output gates hold these sends, and the caller's answer, until the write is durable.
    this.broadcast(text);
    return { status: this.sessions.size > 0 ? "delivered" : "queued", seq: this.sequence.current };
  }
}

