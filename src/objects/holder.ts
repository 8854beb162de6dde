// Holder: an object that holds sockets and sends them what their sources forward. As a *shard*
// (`<room>#<n>`) it holds room sockets of one big room; as a *hub* (`users-<n>`) it holds user
// sockets, their subscriptions to rooms, and their directs. Room extends it to hold its own
// sockets. docs/design.md explains the whole path; this file is the holder's half of it.
import { HttpError } from "../http-error";
import { log } from "../log";
import {
  CloseCode,
  FrameError,
  connectionEstablished,
  isUserChannel,
  PUSHER_PING,
  pusherCloseCode,
  welcomeFrame,
  type ClientFrame,
  type Json,
  type ResumePoint,
  type TooLarge,
} from "../protocol";
import { identityOf, overflowHub, placeAt, readConnectRequest, type ConnectInfo } from "./connect";
import { admitted, sendEntry, sendKept, storedSeq, type Admission, type FeedEntry, type JoinRequest, type Member, type RoomFull } from "./feed";
import { Feeds, SubscriptionTable } from "./feeds";
import { withinReplayBudget } from "./limits";
import { Batches, Links, QueueFull } from "./links";
import { PusherSockets } from "./pusher-sockets";
import { RelaySockets } from "./relay-sockets";
import { RosterCalls } from "./roster-calls";
import type { CensusAnswer } from "./roster";
import { connectionsOf, type Session } from "./session";
import { SocketHost } from "./socket-host";
import { Turns } from "./turns";

export class Holder extends SocketHost {
  protected readonly links: Links;
  readonly #relay: RelaySockets;
  readonly #pusher: PusherSockets;
  /** Subscribes of each socket still waiting for their room's answer. */
  readonly #joining = new Map<string, number>();
  /** Each socket's subscription changes to a room, in frame order (key: connection and room). */
  readonly #changes = new Turns();
  // Built lazily from the sockets and the subscriptions table, so they are right after a wake-up.
  #feedsOf?: Feeds;
  /** `member` is set where the socket is someone else in a room (a Pusher presence user_id). */
  readonly #subscriptions: SubscriptionTable;
  /** Joins and counts to each room, in order, many in one call while one is out. */
  readonly #rosterCalls: RosterCalls;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.links = new Links(env);
    const links = this.links;
    this.#relay = new RelaySockets({
      name: this.name,
      links,
      directs: new Batches((to, directs) => links.call("inbox", to, (stub) => stub.deliverAll(directs))),
      send: (session, frame) => this.send(session.ws, frame),
      // A publish waits for its socket's subscribe to that room, if one is under way: it gets its echo.
      publishTo: (session, room, data, id) => this.#changes.after(`${session.connection} ${room}`, () => this.publishTo(room, session.identity.user, data, id)),
      answering: (session, answer) => this.answering(session, answer),
      oweEcho: (session, room, seq) => this.#feeds().oweEcho(session, room, seq),
      subscribe: (session, room, resume, answer) => this.subscribe(session, room, resume, answer),
      unsubscribe: (session, room) => this.unsubscribe(session, room),
    });
    this.#pusher = new PusherSockets({
      config: this.config,
      send: (session, text) => this.send(session.ws, text),
      close: (session, code, reason) => this.close(session, code, reason),
      subscribe: (session, room, resume, answer, vet) => this.subscribe(session, room, resume, answer, vet),
      unsubscribe: (session, room) => this.unsubscribe(session, room),
      memberOf: (session, room) => (this.subscribed(session, room) ? (this.#feeds().rooms.get(room)?.memberOf(session) ?? null) : null),
      toRoom: (room, call) => this.links.call("room", room, call),
    });
    this.#subscriptions = new SubscriptionTable(ctx.storage.sql);
    this.#rosterCalls = new RosterCalls(links, () => this.joinAs);
  }

  /** Nothing under way either: no join waiting for its room, no call to another object. */
  protected override quiet(): boolean {
    return super.quiet() && this.#joining.size === 0 && this.links.idle;
  }

  /** The name this holder gives when it joins a room; Room uses the roster's own marker. */
  protected get joinAs(): string {
    return this.name;
  }

  // ---- feeds ----

  #feeds(): Feeds {
    return (this.#feedsOf ??= new Feeds(this.sessions.values(), this.#subscriptions, connectionsOf(this.ctx.getWebSockets())));
  }

  // ---- joining a room (room sockets and subscriptions) ----

  /** Asks `room` to count a socket here; Room answers its own sockets without a call. */
  protected joinRoom(room: string, request: JoinRequest): Promise<Admission | RoomFull> {
    return this.#rosterCalls.join(room, request);
  }

  /** Tells `room` how many of `user`'s sockets it has here now (0: all gone). */
  protected report(room: string, user: string, connections: number): void {
    this.#rosterCalls.count(room, user, connections).catch((error: unknown) => log("error", "could not report to a room", { holder: this.name, room, error }));
  }

  /**
   * Joins `room` for a socket of `user`: frames that arrive while the Room answers are kept and
   * handed back after the answer's seq, so the welcome, the replay and live frames meet with no
   * gap and no duplicate (docs/design.md "Joining, counting and presence").
   */
  async #admit(room: string, user: string, connection: string, resume: ResumePoint, info?: unknown) {
    const feeds = this.#feeds();
    const feed = feeds.room(room);
    const joiner = feed.startJoin(user);
    try {
      const request: JoinRequest = { holder: this.joinAs, user, connection, connections: feed.count(user), ...resume };
      if (info !== undefined) request.info = info;
      const answer = await this.joinRoom(room, request);
      const kept = "refused" in answer ? feed.endJoin(joiner, undefined) : feed.endJoin(joiner, answer.seq, answer.mark);
      return { feed, answer, kept };
    } catch (error) {
      feed.endJoin(joiner, undefined);
      // The Room may have counted it (a call can fail after its work was done): the count without it sets that right.
      if (!(error instanceof QueueFull)) this.report(room, user, feed.count(user));
      throw error;
    } finally {
      feeds.dropIfEmpty(room);
    }
  }

  // ---- connections ----

  override async fetch(request: Request): Promise<Response> {
    const connect = readConnectRequest(request);
    if (this.sessions.size + this.opens.size >= this.config.socketsPerObject) {
      // A full hub hands the user socket on; a full shard (seats the Room promised raced) refuses.
      if (connect.room === undefined) return placeAt(overflowHub(this.name));
      return new HttpError(503, "room_full", `this object holds ${this.config.socketsPerObject} sockets, its limit`).toResponse();
    }
    const { pusher, room } = connect;
    return this.opens.during(() => (pusher !== undefined ? this.#openPusherSocket(connect, pusher) : room === undefined ? this.#openUserSocket(connect) : this.openRoomSocket(connect, room)));
  }

  /** A room socket: join the room, then welcome, replay and whatever arrived meanwhile. */
  protected async openRoomSocket(connect: ConnectInfo, room: string): Promise<Response> {
    const identity = identityOf(connect);
    const connection = crypto.randomUUID();
    const { feed, answer, kept } = await this.#admit(room, identity.user, connection, connect);
    if ("refused" in answer) return new HttpError(503, "room_full", answer.message).toResponse();
    const { 0: client, 1: server } = new WebSocketPair();
    const session = this.accept(server, identity, connection, { room });
    this.send(server, welcomeFrame({ room, user: identity.user, connection, ...admitted(answer), heartbeat: this.heartbeat }));
    for (const frame of answer.replay) this.send(server, frame);
    sendKept(session, kept);
    feed.add(session, answer.seq, undefined, answer.mark);
    this.#feeds().rooms.set(room, feed);
    return new Response(null, { status: 101, webSocket: client });
  }

  /** A user socket: attach to the user's inbox, then welcome and every unacknowledged direct. */
  async #openUserSocket(connect: ConnectInfo): Promise<Response> {
    const identity = identityOf(connect);
    const { user } = identity;
    const feeds = this.#feeds();
    const feed = feeds.inbox(user);
    const joiner = feed.startJoin(user);
    let attached;
    try {
      attached = await this.links.call("inbox", user, (stub) => stub.attach(this.name, feed.count(user)));
    } catch (error) {
      feed.endJoin(joiner, undefined);
      feeds.dropIfEmpty(undefined, user);
      throw error;
    }
    const kept = feed.endJoin(joiner, attached.seq);
    const { 0: client, 1: server } = new WebSocketPair();
    const connection = crypto.randomUUID();
    const session = this.accept(server, identity, connection);
    this.send(server, welcomeFrame({ user, connection, seq: attached.seq, epoch: attached.epoch, heartbeat: this.heartbeat }));
    for (const frame of attached.pending) this.send(server, frame);
    sendKept(session, kept);
    feed.add(session, attached.seq);
    feeds.inboxes.set(user, feed);
    return new Response(null, { status: 101, webSocket: client });
  }

  /** A Pusher socket (docs/pusher.md): no inbox; its connection id is its socket_id. */
  #openPusherSocket(connect: ConnectInfo, socketId: string): Response {
    const { 0: client, 1: server } = new WebSocketPair();
    this.accept(server, identityOf(connect), socketId, { pusher: true });
    this.send(server, connectionEstablished(socketId, Math.ceil(this.config.heartbeatIntervalMs / 1000)));
    return new Response(null, { status: 101, webSocket: client });
  }

  protected override onLeave(session: Session): void {
    if (session.room !== undefined) return this.#leaveRoom(session, session.room);
    for (const { room, member } of this.#subscriptions.take(session.connection)) this.#leaveRoom(session, room, member ?? undefined);
    if (session.pusher) return;
    const feeds = this.#feeds();
    const { user } = session.identity;
    const feed = feeds.inboxes.get(user);
    feed?.remove(session);
    const left = feed?.count(user) ?? 0;
    feeds.dropIfEmpty(undefined, user);
    this.links
      .call("inbox", user, (stub) => stub.detach(this.name, left))
      .catch((error: unknown) => log("error", "could not detach from an inbox", { holder: this.name, user, error }));
  }

  /** `session` leaves `room` here; the Room hears how many of that member's sockets are left. */
  #leaveRoom(session: Session, room: string, member?: string): void {
    const feeds = this.#feeds();
    const feed = feeds.rooms.get(room);
    const who = member ?? feed?.memberOf(session) ?? session.identity.user;
    feed?.remove(session);
    const left = feed?.count(who) ?? 0;
    feeds.dropIfEmpty(room);
    this.report(room, who, left);
  }

  // ---- frames ----

  protected override onText(session: Session, text: string): Promise<void> {
    return session.pusher ? this.#pusher.onText(session, text) : super.onText(session, text);
  }

  protected override unlimited(session: Session, message: string | ArrayBuffer): boolean {
    return session.pusher === true && typeof message === "string" && this.#pusher.unlimited(session, message);
  }

  protected override refuse(session: Session, error: FrameError, unread?: string | ArrayBuffer): void {
    if (session.pusher) this.#pusher.refuse(session, error, unread);
    else super.refuse(session, error);
  }

  // pusher-js on a busy channel never pings (it hears events): asked, its pusher:pong is activity.
  protected override onQuiet(session: Session): void {
    if (session.pusher) this.send(session.ws, PUSHER_PING);
  }

  protected override closeCodeFor(session: Session, code: number): number {
    return session.pusher ? pusherCloseCode(code) : code;
  }

  protected override onFrame(session: Session, frame: ClientFrame, size: number): Promise<void> {
    return this.#relay.onFrame(session, frame, size);
  }

  /** Publishes into `room`; answers its seq once stored. Room publishes its own without a call. */
  protected async publishTo(room: string, from: string, data: Json, id?: string): Promise<number> {
    const answer = await this.links.call("room", room, (stub) => stub.publish(from, data, id) as Promise<number | TooLarge>).catch((error: unknown) => {
      log("error", "publish to a room failed", { holder: this.name, room, error });
      throw new FrameError("internal", `could not publish to room ${room}; not sent`);
    });
    return storedSeq(answer);
  }

  // Binary frames are relayed as-is to the room's other sockets and not stored (docs/protocol.md).
  protected override onBinary(session: Session, data: ArrayBuffer): void {
    if (session.room === undefined) return super.onBinary(session, data);
    this.relayBinary(session.room, data, session.connection);
  }

  protected relayBinary(room: string, data: ArrayBuffer, except: string): void {
    this.links
      .call("room", room, (stub) => stub.binary(data, except))
      .catch((error: unknown) => log("error", "could not relay a binary frame", { holder: this.name, room, error }));
  }

  // ---- subscriptions ----

  /**
   * Subscribes a user or Pusher socket to `room` as `member`: `answer` sends the dialect's own
   * acknowledgement, then the replay `resume` asks for and live frames follow, with no gap.
   * `vet` (Pusher's channel auth) runs in the same turn and names the member, or refuses with
   * undefined, having said why. Throws FrameError `too_many_subscriptions` or `room_full`.
   */
  protected subscribe(
    session: Session,
    room: string,
    resume: ResumePoint,
    answer: (admission: Admission) => void,
    vet: () => Member | undefined | Promise<Member | undefined> = () => ({ member: session.identity.user }),
  ): Promise<void> {
    return this.#changes.run(`${session.connection} ${room}`, async () => {
      const who = await vet();
      if (who !== undefined) await this.#subscribe(session, room, resume, answer, who);
    });
  }

  /** Ends a subscription; answers whether there was one. */
  protected unsubscribe(session: Session, room: string): Promise<boolean> {
    return this.#changes.run(`${session.connection} ${room}`, () => {
      if (!this.subscribed(session, room)) return false;
      if (isUserChannel(room)) throw new FrameError("forbidden", `a signed-in socket keeps ${room} until it closes (docs/pusher.md)`);
      this.#forget(session, room);
      return true;
    });
  }

  async #subscribe(session: Session, room: string, resume: ResumePoint, answer: (admission: Admission) => void, who: Member): Promise<void> {
    const { member, info } = who;
    const { rooms } = this.#feeds();
    const again = rooms.get(room)?.sessions.has(session.connection) ?? false;
    const joining = this.#joining.get(session.connection) ?? 0;
    if (!again && !isUserChannel(room)) {
      // Joins still waiting count too, or a burst could pass the cap; a held user channel does not.
      let held = joining;
      for (const [name, feed] of rooms) if (!isUserChannel(name) && feed.sessions.has(session.connection)) held++;
      if (held >= this.config.maxSubscriptions) {
        throw new FrameError("too_many_subscriptions", `a socket holds at most ${this.config.maxSubscriptions} rooms`);
      }
    }
    // A repeat joins again with the socket set aside: its replay and live frames meet as for a first.
    const previous = again ? rooms.get(room)!.memberOf(session) : undefined;
    if (again) rooms.get(room)!.remove(session);
    this.#joining.set(session.connection, joining + 1);
    let outcome;
    try {
      outcome = await this.#admit(room, member, session.connection, resume, info);
    } catch (error) {
      log("error", "subscribe failed", { holder: this.name, room, error });
      if (again) this.#forget(session, room, previous); // set aside above: now as unsubscribed as the answer says
      throw new FrameError("internal", `could not reach room ${room}; not subscribed`);
    } finally {
      const left = (this.#joining.get(session.connection) ?? 1) - 1;
      if (left > 0) this.#joining.set(session.connection, left);
      else this.#joining.delete(session.connection);
    }
    const { feed, answer: admission, kept } = outcome;
    if (!this.sessions.has(session.ws)) return this.report(room, member, feed.count(member));
    if ("refused" in admission) {
      if (again) this.#forget(session, room, previous);
      throw new FrameError(admission.refused, admission.message);
    }
    const row = { connection: session.connection, room, member: member === session.identity.user ? null : member };
    if (!again || previous !== member) this.#subscriptions.save(row);
    const granted = withinReplayBudget(session, admission);
    answer(granted);
    for (const frame of granted.replay) sendEntry(session, { frame });
    sendKept(session, kept);
    feed.add(session, admission.seq, member, admission.mark);
    rooms.set(room, feed);
    if (again && previous !== member) this.report(room, previous!, feed.count(previous!)); // a Pusher member now someone else
  }

  /** Whether `session` has subscribed to `room` here. */
  protected subscribed(session: Session, room: string): boolean {
    return this.#feeds().rooms.get(room)?.sessions.has(session.connection) ?? false;
  }

  #forget(session: Session, room: string, member?: string): void {
    this.#subscriptions.drop(session.connection, room);
    session.echoes?.delete(room);
    this.#leaveRoom(session, room, member);
  }

  // ---- RPC (from Room and Inbox objects) ----

  /** Sends a room's entries to its sockets here; answers how many sockets the room has here. */
  deliver(room: string, entries: FeedEntry[]): number {
    const feed = this.#feeds().rooms.get(room);
    if (!feed) return 0;
    if (!feed.deliver(entries, sendEntry)) {
      // A batch never arrived (docs/design.md "Failures"): these sockets resume from history.
      log("warn", "missed messages of a room; closing its sockets here so they resume", { holder: this.name, room });
      this.closeRoom(room, CloseCode.internal, "missed messages; reconnect and resume");
    }
    this.delivered();
    return feed.held;
  }

  /** Closes every socket here that is in `room` (a Room's closeAll). */
  closeRoom(room: string, code: number, reason: string): void {
    for (const session of [...(this.#feeds().rooms.get(room)?.sessions.values() ?? [])]) this.close(session, code, reason);
  }

  protected override echoed(session: Session): boolean {
    return this.#feeds().echoed(session);
  }

  /** Sends a user's new directs to that user's sockets here; answers how many are here (joining ones too). */
  direct(user: string, entries: FeedEntry[]): number {
    const feed = this.#feeds().inboxes.get(user);
    if (!feed) return 0;
    feed.deliver(entries, sendEntry);
    return feed.held;
  }

  /** How many of `user`'s user sockets are here: an Inbox recounts with it after it starts. */
  userSockets(user: string): number {
    return this.#feeds().inboxes.get(user)?.count(user) ?? 0;
  }

  /** Each user's sockets in `room` here: a Room corrects its counts with it. */
  census(room: string): CensusAnswer {
    return this.#feeds().rooms.get(room)?.census() ?? { counts: {} };
  }
}
