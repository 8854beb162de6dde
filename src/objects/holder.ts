// Holder: an object that holds sockets and sends them what their sources forward. As a *shard*
// (`<room>#<n>`) it holds room sockets of one big room; as a *hub* (`users-<n>`) it holds user
// sockets, their subscriptions to rooms, and their directs. Room extends it to hold its own
// sockets. docs/design.md explains the whole path; this file is the holder's half of it.
import { HttpError } from "../http-error";
import { roomAllowed, type Identity } from "../identity";
import { log } from "../log";
import {
  ackFrame,
  CloseCode,
  errorFrame,
  FrameError,
  subscribedFrame,
  unsubscribedFrame,
  welcomeFrame,
  type ClientFrame,
  type Delivery,
  type Json,
  type Refusal,
  type ResumePoint,
  type SubscribeFrame,
} from "../protocol";
import { overflowHub, placeAt, readConnectRequest, type ConnectInfo } from "./connect";
import { Feed, type Admission, type FeedEntry, type JoinRequest, type RoomFull, type Send } from "./feed";
import { Links } from "./links";
import type { Session } from "./session";
import { SocketHost } from "./socket-host";

/** Sends without throwing: a socket that cannot take a frame is left to its close event. */
const sendQuietly: Send = (ws, payload) => {
  try {
    ws.send(payload);
  } catch {
    // Closing or gone.
  }
};

export class Holder extends SocketHost {
  protected readonly links: Links;
  // Built lazily from the sockets and the subscriptions table, so they are right after a wake-up.
  #rooms?: Map<string, Feed>;
  #inboxes?: Map<string, Feed>;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.links = new Links(env);
    // User sockets' subscriptions outlive hibernation here: a socket's attachment (16 KiB) could
    // not hold MAX_SUBSCRIPTIONS room ids (docs/platform.md).
    ctx.storage.sql.exec(
      "CREATE TABLE IF NOT EXISTS subscriptions (connection TEXT NOT NULL, room TEXT NOT NULL, PRIMARY KEY (connection, room))",
    );
  }

  /** The name this holder gives when it joins a room; Room uses the roster's own marker. */
  protected get joinAs(): string {
    return this.name;
  }

  // ---- feeds ----

  #feeds(): { rooms: Map<string, Feed>; inboxes: Map<string, Feed> } {
    if (this.#rooms && this.#inboxes) return { rooms: this.#rooms, inboxes: this.#inboxes };
    const rooms = new Map<string, Feed>();
    const inboxes = new Map<string, Feed>();
    const userSockets = new Map<string, Session>();
    for (const session of this.sessions.values()) {
      if (session.room !== undefined) feedIn(rooms, session.room).add(session);
      else {
        feedIn(inboxes, session.identity.user, false).add(session);
        userSockets.set(session.connection, session);
      }
    }
    if (userSockets.size > 0) {
      for (const { connection, room } of this.ctx.storage.sql.exec<{ connection: string; room: string }>(
        "SELECT connection, room FROM subscriptions",
      )) {
        const session = userSockets.get(connection);
        if (session) feedIn(rooms, room).add(session);
      }
    }
    this.#rooms = rooms;
    this.#inboxes = inboxes;
    return { rooms, inboxes };
  }

  /** The sockets held here for `room`; a Room uses this for its own. */
  protected roomFeed(room: string): Feed | undefined {
    return this.#feeds().rooms.get(room);
  }

  #dropIfEmpty(feeds: Map<string, Feed>, key: string): void {
    if (feeds.get(key)?.empty) feeds.delete(key);
  }

  // ---- joining a room (room sockets and subscriptions) ----

  /** Asks `room` to count a socket here; Room answers its own sockets without a call. */
  protected joinRoom(room: string, request: JoinRequest): Promise<Admission | RoomFull> {
    return this.links.call("room", room, async (stub) => (await stub.join(request)) as Admission | RoomFull);
  }

  /** Tells `room` how many of `user`'s sockets it has here now (0: all gone). */
  protected report(room: string, user: string, connections: number): void {
    this.links
      .call("room", room, (stub) => stub.count(this.joinAs, user, connections))
      .catch((error: unknown) => log("error", "could not report to a room", { holder: this.name, room, error }));
  }

  /**
   * Joins `room` for a socket of `user`: frames that arrive while the Room answers are kept and
   * handed back after the answer's seq, so the welcome, the replay and live frames meet with no
   * gap and no duplicate (docs/design.md "Joining, counting and presence").
   */
  async #admit(room: string, user: string, connection: string, resume: ResumePoint) {
    const { rooms } = this.#feeds();
    const feed = feedIn(rooms, room);
    const joiner = feed.startJoin(user);
    try {
      const answer = await this.joinRoom(room, { holder: this.joinAs, user, connection, connections: feed.count(user), ...resume });
      const kept = feed.endJoin(joiner, "refused" in answer ? undefined : answer.seq);
      return { feed, answer, kept };
    } catch (error) {
      feed.endJoin(joiner, undefined);
      throw error;
    } finally {
      this.#dropIfEmpty(rooms, room);
    }
  }

  /** What arrived while `session` was joining, after its welcome; binary frames to room sockets only. */
  #sendKept(session: Session, kept: FeedEntry[]): void {
    for (const { frame, except } of kept) {
      if (except !== session.connection && (typeof frame === "string" || session.room !== undefined)) sendQuietly(session.ws, frame);
    }
  }

  // ---- connections ----

  override async fetch(request: Request): Promise<Response> {
    const connect = readConnectRequest(request);
    if (this.sessions.size >= this.config.socketsPerObject) {
      // A full hub hands the user socket on; a full shard (seats the Room promised raced) refuses.
      if (connect.room === undefined) return placeAt(overflowHub(this.name));
      return new HttpError(503, "room_full", `this object holds ${this.config.socketsPerObject} sockets, its limit`).toResponse();
    }
    return connect.room === undefined ? this.#openUserSocket(connect) : this.openRoomSocket(connect, connect.room);
  }

  /** A room socket: join the room, then welcome, replay and whatever arrived meanwhile. */
  protected async openRoomSocket(connect: ConnectInfo, room: string): Promise<Response> {
    const identity = identityOf(connect);
    const connection = crypto.randomUUID();
    const { feed, answer, kept } = await this.#admit(room, identity.user, connection, connect);
    if ("refused" in answer) return new HttpError(503, "room_full", answer.message).toResponse();
    const { 0: client, 1: server } = new WebSocketPair();
    const session = this.accept(server, identity, connection, room);
    const { replay, recovered, ...state } = answer;
    this.send(
      server,
      welcomeFrame({ room, user: identity.user, connection, ...state, ...(recovered !== undefined && { recovered }), heartbeat: this.heartbeat }),
    );
    for (const frame of replay) this.send(server, frame);
    this.#sendKept(session, kept);
    feed.add(session, answer.seq);
    this.#feeds().rooms.set(room, feed);
    return new Response(null, { status: 101, webSocket: client });
  }

  /** A user socket: attach to the user's inbox, then welcome and every unacknowledged direct. */
  async #openUserSocket(connect: ConnectInfo): Promise<Response> {
    const identity = identityOf(connect);
    const { user } = identity;
    const { inboxes } = this.#feeds();
    const feed = feedIn(inboxes, user, false);
    const joiner = feed.startJoin(user);
    let attached;
    try {
      attached = await this.links.call("inbox", user, (stub) => stub.attach(this.name, feed.count(user)));
    } catch (error) {
      feed.endJoin(joiner, undefined);
      this.#dropIfEmpty(inboxes, user);
      throw error;
    }
    const kept = feed.endJoin(joiner, attached.seq);
    const { 0: client, 1: server } = new WebSocketPair();
    const connection = crypto.randomUUID();
    const session = this.accept(server, identity, connection);
    this.send(server, welcomeFrame({ user, connection, seq: attached.seq, epoch: attached.epoch, heartbeat: this.heartbeat }));
    for (const frame of attached.pending) this.send(server, frame);
    this.#sendKept(session, kept);
    feed.add(session, attached.seq);
    inboxes.set(user, feed);
    return new Response(null, { status: 101, webSocket: client });
  }

  protected override onLeave(session: Session): void {
    const { inboxes } = this.#feeds();
    const { user } = session.identity;
    if (session.room !== undefined) return this.#leaveRoom(session, session.room);
    const subscribed = this.ctx.storage.sql
      .exec<{ room: string }>("SELECT room FROM subscriptions WHERE connection = ?", session.connection)
      .toArray();
    this.ctx.storage.sql.exec("DELETE FROM subscriptions WHERE connection = ?", session.connection);
    for (const { room } of subscribed) this.#leaveRoom(session, room);
    const feed = inboxes.get(user);
    feed?.remove(session);
    const left = feed?.count(user) ?? 0;
    this.#dropIfEmpty(inboxes, user);
    this.links
      .call("inbox", user, (stub) => stub.detach(this.name, left))
      .catch((error: unknown) => log("error", "could not detach from an inbox", { holder: this.name, user, error }));
  }

  #leaveRoom(session: Session, room: string): void {
    const { rooms } = this.#feeds();
    const feed = rooms.get(room);
    feed?.remove(session);
    const left = feed?.count(session.identity.user) ?? 0;
    this.#dropIfEmpty(rooms, room);
    this.report(room, session.identity.user, left);
  }

  // ---- frames ----

  protected override async onFrame(session: Session, frame: ClientFrame): Promise<void> {
    const { user } = session.identity;
    switch (frame.type) {
      case "publish": {
        const room = session.room ?? frame.room;
        if (room === undefined) throw new FrameError("bad_frame", `"publish" on a user socket needs a "room"`);
        if (session.room !== undefined && frame.room !== undefined && frame.room !== session.room) {
          throw new FrameError("bad_frame", `this socket is in room ${session.room}; publish to other rooms from a user socket`);
        }
        if (session.room === undefined && !roomAllowed(session.identity.rooms, room)) {
          throw new FrameError("forbidden", `token does not allow room ${room}`);
        }
        // Not awaited: a socket's publishes go out back to back (in order, on one stub or into one
        // log) and each is answered when its batch is stored.
        this.publishTo(room, user, frame.data, frame.id).then(
          // Room sockets see their own message echoed; user sockets are also told its seq.
          (seq) => session.room === undefined && frame.id !== undefined && this.send(session.ws, ackFrame(frame.id, "delivered", seq)),
          (error: unknown) => {
            const refusal = error instanceof FrameError ? error : new FrameError("internal", "the relay failed to handle this frame");
            this.send(session.ws, errorFrame(refusal.code, refusal.message, frame.id));
          },
        );
        return;
      }
      case "direct":
        return this.#direct(session, frame.to, frame.data, frame.id);
      case "ack":
        if (session.room !== undefined) throw new FrameError("bad_frame", `"ack" is only meaningful on a user socket`);
        this.links
          .call("inbox", user, (stub) => stub.ack(frame.seq))
          .catch((error: unknown) => log("error", "could not ack directs", { user, error }));
        return;
      case "subscribe":
      case "unsubscribe":
        if (session.room !== undefined) throw new FrameError("bad_frame", `"${frame.type}" is only meaningful on a user socket`);
        return frame.type === "subscribe" ? this.#subscribe(session, frame) : this.#unsubscribe(session, frame.room, frame.id);
    }
  }

  /** Publishes into `room`; answers its seq once stored. Room publishes its own without a call. */
  protected async publishTo(room: string, from: string, data: Json, id?: string): Promise<number> {
    try {
      return await this.links.call("room", room, (stub) => stub.publish(from, data, id));
    } catch (error) {
      log("error", "publish to a room failed", { holder: this.name, room, error });
      throw new FrameError("internal", `could not publish to room ${room}; not sent`);
    }
  }

  async #direct(session: Session, to: string, data: Json, id?: string): Promise<void> {
    try {
      const result = await this.links.call("inbox", to, async (stub) => (await stub.deliver(session.identity.user, data, id)) as Delivery | Refusal);
      this.send(session.ws, "refused" in result ? errorFrame(result.refused, result.message, id) : ackFrame(id, result.status, result.seq));
    } catch (error) {
      log("error", "direct delivery failed", { holder: this.name, to, error });
      this.send(session.ws, errorFrame("internal", `could not deliver to ${to}; not sent`, id));
    }
  }

  // Binary frames are relayed as-is to the room's other sockets and not stored (docs/protocol.md).
  protected override onBinary(session: Session, data: ArrayBuffer): void {
    if (session.room === undefined) return super.onBinary(session, data);
    const room = session.room;
    this.relayBinary(room, data, session.connection);
  }

  protected relayBinary(room: string, data: ArrayBuffer, except: string): void {
    this.links
      .call("room", room, (stub) => stub.binary(data, except))
      .catch((error: unknown) => log("error", "could not relay a binary frame", { holder: this.name, room, error }));
  }

  // ---- subscriptions ----

  async #subscribe(session: Session, frame: SubscribeFrame): Promise<void> {
    const { room, id } = frame;
    if (!roomAllowed(session.identity.rooms, room)) throw new FrameError("forbidden", `token does not allow room ${room}`);
    const { rooms } = this.#feeds();
    const again = rooms.get(room)?.sessions.has(session.connection) ?? false;
    if (!again) {
      let held = 0;
      for (const feed of rooms.values()) if (feed.sessions.has(session.connection)) held++;
      if (held >= this.config.maxSubscriptions) {
        throw new FrameError("too_many_subscriptions", `a user socket holds at most ${this.config.maxSubscriptions} rooms`);
      }
    }
    // A repeated subscribe joins again with the socket set aside, so its replay and the live
    // frames meet as for a first one; the count it reports is unchanged.
    if (again) rooms.get(room)!.remove(session);
    const { feed, answer, kept } = await this.#admit(room, session.identity.user, session.connection, frame);
    if (!this.sessions.has(session.ws)) return this.report(room, session.identity.user, feed.count(session.identity.user));
    if ("refused" in answer) throw new FrameError("room_full", answer.message);
    if (!again) this.ctx.storage.sql.exec("INSERT OR IGNORE INTO subscriptions (connection, room) VALUES (?, ?)", session.connection, room);
    const { replay, recovered, ...state } = answer;
    this.send(session.ws, subscribedFrame({ room, ...state, ...(recovered !== undefined && { recovered }) }, id));
    for (const text of replay) this.send(session.ws, text);
    this.#sendKept(session, kept);
    feed.add(session, answer.seq);
    rooms.set(room, feed);
  }

  #unsubscribe(session: Session, room: string, id?: string): void {
    const feed = this.#feeds().rooms.get(room);
    if (feed?.sessions.has(session.connection)) {
      this.ctx.storage.sql.exec("DELETE FROM subscriptions WHERE connection = ? AND room = ?", session.connection, room);
      this.#leaveRoom(session, room);
    }
    this.send(session.ws, unsubscribedFrame(room, id));
  }

  // ---- RPC (from Room and Inbox objects) ----

  /** Sends a room's entries to its sockets here; answers how many sockets the room has here. */
  deliver(room: string, entries: FeedEntry[]): number {
    return this.deliverRoom(room, entries);
  }

  protected deliverRoom(room: string, entries: FeedEntry[]): number {
    const feed = this.#feeds().rooms.get(room);
    if (!feed) return 0;
    if (!feed.deliver(entries, sendQuietly)) {
      // A batch never arrived (docs/design.md "Failures"): these sockets resume from history.
      log("warn", "missed messages of a room; closing its sockets here so they resume", { holder: this.name, room });
      for (const session of [...feed.sessions.values()]) this.close(session, CloseCode.internal, "missed messages; reconnect and resume");
    }
    return feed.sessions.size;
  }

  /** Sends a user's new directs to that user's sockets here; answers how many got them. */
  direct(user: string, entries: FeedEntry[]): number {
    const feed = this.#feeds().inboxes.get(user);
    if (!feed) return 0;
    feed.deliver(entries, sendQuietly);
    return feed.sessions.size;
  }

  /** Each user's sockets in `room` here: a Room corrects its counts with it. */
  census(room: string): Record<string, number> {
    return this.#feeds().rooms.get(room)?.census() ?? {};
  }
}

function feedIn(feeds: Map<string, Feed>, key: string, gapless = true): Feed {
  let feed = feeds.get(key);
  if (!feed) feeds.set(key, (feed = new Feed(gapless)));
  return feed;
}

function identityOf({ user, exp, rooms }: ConnectInfo): Identity {
  return { user, ...(exp !== undefined && { exp }), ...(rooms !== undefined && { rooms }) };
}
