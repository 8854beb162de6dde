// Room: one Durable Object per room. Sequences and broadcasts messages, keeps the last
// HISTORY_LIMIT of them so clients resume without gaps, and tracks presence per user.
import { HttpError } from "../http-error";
import {
  FrameError,
  PROTOCOL_VERSION,
  type ClientFrame,
  type Json,
  type MessageFrame,
  type PresenceEntry,
  type PresenceFrame,
  type RoomInfo,
  type WelcomeFrame,
} from "../protocol";
import { readConnectRequest, type ConnectInfo } from "./connect";
import { EventStream } from "./event-stream";
import { SocketHost, type Session } from "./socket-host";

/** A stored message: its seq and the exact frame text clients receive. */
type Stored = { seq: number; frame: string };

/** The outcome of a resume request: whether nothing was missed, and the messages to replay. */
interface Resume {
  recovered: boolean;
  messages: Stored[];
}

export class Room extends SocketHost {

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    // Stored frames are the exact text sent to clients, so replay and history never re-encode.
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, frame TEXT NOT NULL)");
  }

  // ---- connections ----

  override async fetch(request: Request): Promise<Response> {
    const connect = readConnectRequest(request);
    // Streams have a cap of their own: they are not connections (PROTOCOL.md), but unbounded
    // they would be a way around the room's limit.
    const open = connect.kind === "events" ? this.#streams.size : this.sessions.size;
    if (open >= this.config.maxConnectionsPerRoom) {
      const what = connect.kind === "events" ? "event streams" : "connections";
      return new HttpError(
        503,
        "room_full",
        `room ${this.name} has ${this.config.maxConnectionsPerRoom} ${what}, its limit`,
      ).toResponse();
    }
    if (connect.kind === "events") return this.#openStream(connect);
    const resume = connect.since === undefined ? undefined : this.#resume(connect.since, connect.epoch);
    const { 0: client, 1: server } = new WebSocketPair();
    const { firstOfUser, session } = this.accept(server, connect);
    const welcome: WelcomeFrame = {
      type: "welcome",
      protocol: PROTOCOL_VERSION,
      room: this.name,
      user: session.identity.user,
      connection: session.connection,
      seq: this.sequence.current,
      epoch: this.sequence.epoch,
      presence: this.#presence(),
      ...(resume && { recovered: resume.recovered }),
      heartbeat: this.heartbeat,
    };
    this.send(server, welcome);
    // Nothing can be sequenced between these sends (no await), so replay meets live with no gap.
    for (const { frame } of resume?.messages ?? []) this.send(server, frame);
    if (firstOfUser) this.#announce("join", session.identity.user, server);
    return new Response(null, { status: 101, webSocket: client });
  }

  #resume(since: number, epoch: string | undefined): Resume {
    const lost: Resume = { recovered: false, messages: [] };
    const seq = this.sequence.current;
    if (epoch !== undefined && epoch !== this.sequence.epoch) return lost;
    if (since > seq) return lost;
    if (since === seq) return { recovered: true, messages: [] };
    const oldest = this.ctx.storage.sql.exec<{ oldest: number | null }>("SELECT MIN(seq) AS oldest FROM messages").one()
      .oldest;
    if (oldest === null || since < oldest - 1) return lost;
    return { recovered: true, messages: this.#messagesAfter(since, seq - since) };
  }

  #messagesAfter(since: number, limit: number): Stored[] {
    return this.ctx.storage.sql
      .exec<Stored>("SELECT seq, frame FROM messages WHERE seq > ? ORDER BY seq LIMIT ?", since, limit)
      .toArray();
  }

  // ---- Server-Sent Events ----

  #streams = new Set<EventStream>();

  /** A receive-only stream: welcome, the replay `since` asks for, then live messages. */
  #openStream({ since, epoch, exp }: ConnectInfo): Response {
    const stream = new EventStream((ended) => this.#streams.delete(ended), exp === undefined ? undefined : exp * 1000);
    const resume = since === undefined ? undefined : this.#resume(since, epoch);
    const welcome = { seq: this.sequence.current, epoch: this.sequence.epoch, ...(resume && { recovered: resume.recovered }) };
    stream.send("welcome", JSON.stringify(welcome));
    for (const { seq, frame } of resume?.messages ?? []) stream.send("message", frame, seq);
    this.#streams.add(stream);
    return stream.response;
  }

  // ---- frames ----

  protected override onFrame(session: Session, frame: ClientFrame): void | Promise<void> {
    switch (frame.type) {
      case "publish":
        if (frame.room !== undefined && frame.room !== this.name) {
          throw new FrameError(
            "bad_frame",
            `this socket is in room ${this.name}; publish to other rooms from a user socket`,
          );
        }
        this.publish(session.identity.user, frame.data, frame.id);
        return;
      case "direct":
        return this.relayDirect(session, frame);
      case "ack":
        throw new FrameError("bad_frame", `"ack" is only meaningful on a user socket`);
    }
  }

  // Binary frames are relayed as-is and not stored (PROTOCOL.md "Frames").
  protected override onBinary(session: Session, data: ArrayBuffer): void {
    this.broadcast(data, session.ws);
  }

  protected override onLeave(session: Session, lastOfUser: boolean): void {
    if (lastOfUser) this.#announce("leave", session.identity.user);
  }

  #announce(event: PresenceFrame["event"], user: string, except?: WebSocket): void {
    const frame: PresenceFrame = { type: "presence", room: this.name, event, user };
    const text = JSON.stringify(frame);
    this.broadcast(text, except);
    for (const stream of this.#streams) stream.send("presence", text);
  }

  #presence(): PresenceEntry[] {
    return [...this.users].map(([user, connections]) => ({ user, connections }));
  }

  // ---- RPC (called by the Worker through the stub) ----

  /** Sequences, stores and broadcasts one message; answers its seq. */
  publish(from: string, data: Json, id?: string): number {
    const sql = this.ctx.storage.sql;
    const text = this.ctx.storage.transactionSync(() => {
      const seq = this.sequence.next();
      const frame: MessageFrame = { type: "message", room: this.name, seq, from, data, ts: Date.now() };
      if (id !== undefined) frame.id = id;
      const text = JSON.stringify(frame);
      sql.exec("INSERT INTO messages (seq, frame) VALUES (?, ?)", seq, text);
      sql.exec("DELETE FROM messages WHERE seq <= ?", seq - this.config.historyLimit);
      return text;
    });
    // Output gates hold these sends until the write above is durable.
    this.broadcast(text);
    const seq = this.sequence.current;
    for (const stream of this.#streams) stream.send("message", text, seq);
    return seq;
  }

  info(): RoomInfo {
    return {
      room: this.name,
      seq: this.sequence.current,
      epoch: this.sequence.epoch,
      connections: this.sessions.size,
      presence: this.#presence(),
    };
  }

  /** `{"messages": [...]}` with the first `limit` retained messages after `since`, as JSON text. */
  history(since: number, limit: number): string {
    return `{"messages":[${this.#messagesAfter(since, limit)
      .map((message) => message.frame)
      .join(",")}]}`;
  }
}
