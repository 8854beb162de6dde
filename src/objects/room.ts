// Room: one Durable Object per room. Sequences and broadcasts messages, keeps the last
// HISTORY_LIMIT of them so clients resume without gaps, and tracks presence per user.
import { HttpError } from "../http-error";
import { log } from "../log";
import {
  errorFrame,
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
import type { Session } from "./session";
import { SocketHost } from "./socket-host";

/** A stored message: its seq and the exact frame text clients receive. */
type Stored = { seq: number; frame: string };

/** A message numbered but not yet stored, and who to tell if storing it fails. */
interface Pending extends Stored {
  id?: string;
  sender?: WebSocket;
}

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
    this.#flush();
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
        return this.#publishFromSocket(session, frame.data, frame.id);
      case "direct":
        return this.relayDirect(session, frame);
      case "ack":
        throw new FrameError("bad_frame", `"ack" is only meaningful on a user socket`);
    }
  }

  // Binary frames are relayed as-is and not stored (PROTOCOL.md "Frames").
  protected override onBinary(session: Session, data: ArrayBuffer): void {
    this.#flush();
    this.broadcast(data, session.ws);
  }

  protected override onLeave(session: Session, lastOfUser: boolean): void {
    if (lastOfUser) this.#announce("leave", session.identity.user);
  }

  #announce(event: PresenceFrame["event"], user: string, except?: WebSocket): void {
    this.#flush();
    const frame: PresenceFrame = { type: "presence", room: this.name, event, user };
    const text = JSON.stringify(frame);
    this.broadcast(text, except);
    for (const stream of this.#streams) stream.send("presence", text);
  }

  #presence(): PresenceEntry[] {
    return [...this.users].map(([user, connections]) => ({ user, connections }));
  }

  // ---- RPC (called by the Worker through the stub) ----

  /** Sequences, stores and broadcasts one message; answers its seq once it is stored. */
  publish(from: string, data: Json, id?: string): number {
    const seq = this.#sequenceMessage(from, data, id);
    // The caller's answer must not leave before the message is stored: write now.
    this.#flush();
    return seq;
  }

  // ---- the publish path ----
  //
  // Storage is most of what a publish costs (BENCHMARKS.md), and each event's writes commit on
  // their own. So publishes from sockets are numbered at once but stored and broadcast in
  // batches: the first schedules a flush (a zero timer, which runs after the events already
  // queued), and everything published until then shares one transaction and one commit. In a
  // quiet room a batch is one message and the timer hop costs well under a millisecond; under
  // load batches grow and throughput triples. Output gates hold every broadcast until its
  // commit, so no client sees a message that is not yet durable, and anything that reads or
  // sends room state flushes first, so a forming batch is never observable.

  #pending: Pending[] = [];
  #flushScheduled = false;

  #publishFromSocket(session: Session, data: Json, id?: string): void {
    this.#sequenceMessage(session.identity.user, data, id, session.ws);
    this.#scheduleFlush();
  }

  protected override flushPending(): void {
    this.#flushAndReport();
  }

  /** Flushes for socket publishes, whose senders a failed flush has already told. */
  #flushAndReport(): void {
    try {
      this.#flush();
    } catch (error) {
      log("error", "room could not store a batch of messages", { room: this.name, error });
    }
  }

  #sequenceMessage(from: string, data: Json, id?: string, sender?: WebSocket): number {
    const seq = this.sequence.reserve();
    const frame: MessageFrame = { type: "message", room: this.name, seq, from, data, ts: Date.now() };
    if (id !== undefined) frame.id = id;
    this.#pending.push({ seq, frame: JSON.stringify(frame), id, sender });
    return seq;
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setTimeout(() => {
      this.#flushScheduled = false;
      this.#flushAndReport();
    }, 0);
  }

  /** Stores every pending message in one transaction, then broadcasts them in seq order. */
  #flush(): void {
    const batch = this.#pending;
    if (batch.length === 0) return;
    this.#pending = [];
    const sql = this.ctx.storage.sql;
    const last = batch[batch.length - 1]!.seq;
    try {
      this.ctx.storage.transactionSync(() => {
        for (const { seq, frame } of batch) sql.exec("INSERT INTO messages (seq, frame) VALUES (?, ?)", seq, frame);
        sql.exec("DELETE FROM messages WHERE seq <= ?", last - this.config.historyLimit);
        this.sequence.save();
      });
    } catch (error) {
      // Nothing of the batch was stored or sent: take its numbers back and tell each sender.
      this.sequence.rewind(batch[0]!.seq - 1);
      for (const { id, sender } of batch) {
        if (sender) this.send(sender, errorFrame("internal", "the room could not store this message; not sent", id));
      }
      throw error;
    }
    for (const { seq, frame } of batch) {
      this.broadcast(frame);
      for (const stream of this.#streams) stream.send("message", frame, seq);
    }
  }

  info(): RoomInfo {
    this.#flush();
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
    this.#flush();
    return `{"messages":[${this.#messagesAfter(since, limit)
      .map((message) => message.frame)
      .join(",")}]}`;
  }
}
