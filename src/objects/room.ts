// Room: one Durable Object per room. It numbers, stores and retains the room's messages (its
// MessageLog), counts presence over every object holding the room's sockets (its Roster), holds
// the first SOCKETS_PER_OBJECT sockets itself and forwards each stored batch to the other holders
// over one ordered stream each. docs/design.md draws the whole path.
import { HttpError } from "../http-error";
import { log } from "../log";
import {
  CACHE_TTL_MS,
  FrameError,
  isPresenceChannel,
  isUserChannel,
  presenceFrame,
  pusherEventText,
  type Json,
  type PresenceEntry,
  type PresencePage,
  streamWelcome,
  toPusher,
  type RoomInfo,
  type TooLarge,
  messageText,
} from "../protocol";
import { placeAt, readConnectRequest, roomFullMessage, type ConnectInfo } from "./connect";
import { Census } from "./census";
import { CountFrames } from "./count-frames";
import { EventStreams } from "./event-stream";
import { entrySize, storedSeq, type Admission, type FeedEntry, type JoinRequest, type RoomFull, type RosterAnswer, type RosterChange } from "./feed";
import { Holder } from "./holder";
import { tooBigToStore } from "./limits";
import { Streams } from "./links";
import { MessageLog, type Fresh } from "./message-log";
import { PusherHooks, Watchers } from "./pusher-hooks";
import { HERE, MemberInfos, Roster } from "./roster";
import { applyRosterChanges } from "./roster-calls";
import { Seats } from "./seats";
import { liveAttachment } from "./session";

export class Room extends Holder {
  readonly #log: MessageLog;
  readonly #roster: Roster;
  /** Pusher presence members' user_info, while they are here. */
  readonly #infos: MemberInfos;
  readonly #holders: Streams<FeedEntry>;
  readonly #streams: EventStreams;
  /** Grows with every emission (FeedEntry.mark); from the clock, so it grows across restarts too. */
  #mark = Date.now();
  readonly #seats: Seats;
  readonly #counts: CountFrames;
  readonly #census: Census;
  /** A Pusher `presence-` channel: its members may have a user_info (docs/pusher.md). */
  readonly #presenceChannel: boolean;
  /** The channel directory and the app's webhooks, with a Pusher app. */
  readonly #pusher?: PusherHooks;
  /** In a signed-in user's own channel: who watches that user. */
  readonly #watchers?: Watchers;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#log = new MessageLog(ctx.storage, this.name, this.config.historyLimit, (batch) => this.#stored(batch));
    this.#roster = new Roster(ctx.storage.sql, (change) => this.#pusher?.subscriptionsChanged(change > 0));
    this.#infos = new MemberInfos(ctx.storage.sql);
    this.#seats = new Seats(this.name, this.config.socketsPerObject);
    this.#presenceChannel = isPresenceChannel(this.name);
    this.#pusher = PusherHooks.of(this.name, this.config, ctx.storage.sql, this.links, {
      count: () => this.#roster.connections,
      tell: (frame) => this.#emit([{ frame, pusherOnly: true }]),
      settling: () => this.#census.settling,
    });
    if (isUserChannel(this.name)) this.#watchers = new Watchers(ctx.storage.sql, this.name, this.links);
    this.#census = new Census(
      this.name,
      this.#roster,
      (holder) => this.links.call("holder", holder, (stub) => stub.census(this.name)),
      (user, change) => this.#announce(change === "joined" ? "join" : "leave", user),
    );
    this.#counts = new CountFrames(this.name, () => this.#roster.users, (entry) => this.#emit([entry]));
    this.#holders = new Streams((holder, entries) => this.#forward(holder, entries), { sizeOf: entrySize });
    this.#streams = new EventStreams(this.config.maxStreamsPerRoom);
  }

  protected override get joinAs(): string {
    return HERE;
  }

  /** And nothing of the room anywhere: no connection on any holder, seat promised, stream, history being read, batch or webhook. */
  protected override quiet(): boolean {
    const idle = this.#roster.connections === 0 && this.#seats.count === 0 && this.#census.settling === undefined;
    return idle && this.#log.stored && !this.#log.reading && !this.#streams.busy && (this.#pusher?.idle ?? true) && super.quiet();
  }

  /**
   * The roster, its counts of this Room's own sockets checked against the platform's list once
   * after every start: sockets lost with a restart of the runtime never report a close. Closing
   * sockets still listed keep counting until their close event arrives; a close for a socket no
   * longer listed then finds nothing left to change, so each leave is announced once. Other
   * holders may have lost sockets in the same restart: their census is taken at once too.
   */
  get #members(): Roster {
    this.#census.start(() => {
      // Keyed by user id: no prototype, so `constructor` or `__proto__` is a user like any other.
      const counts: Record<string, number> = Object.create(null);
      for (const ws of this.ctx.getWebSockets()) {
        const attachment = liveAttachment(ws);
        if (attachment) counts[attachment.identity.user] = (counts[attachment.identity.user] ?? 0) + 1;
      }
      return counts;
    });
    return this.#roster;
  }

  /**
   * The census of the other holders after a start, while it is under way. Until it is in, what
   * counts or lists users waits for it, so that none counts a socket lost in the restart; joins
   * and reports by awaiting this alone, so they keep the order holders made them in.
   */
  #censusAfterStart(): Promise<void> | undefined {
    void this.#members; // its first access begins it
    return this.#census.settling;
  }

  /** The roster once the census after a start is in. */
  async #settled(): Promise<Roster> {
    const settling = this.#censusAfterStart();
    if (settling) await settling;
    return this.#roster;
  }

  // ---- connections ----

  override async fetch(request: Request): Promise<Response> {
    const connect = readConnectRequest(request);
    if (connect.kind === "events") return this.#openStream(connect);
    const members = await this.#settled();
    const { maxConnectionsPerRoom, socketsPerObject } = this.config;
    if (members.connections + this.#seats.count >= maxConnectionsPerRoom) {
      return new HttpError(503, "room_full", roomFullMessage(this.name, maxConnectionsPerRoom)).toResponse();
    }
    if (this.sessions.size + this.opens.size < socketsPerObject) return this.opens.during(() => this.openRoomSocket(connect, this.name));
    return placeAt(this.#seats.place((shard) => this.#roster.countAt(shard)));
  }

  /** A receive-only stream: welcome, the replay `since` asks for, then live messages. */
  async #openStream({ since, epoch, exp }: ConnectInfo): Promise<Response> {
    const opened = await this.#streams.open(exp === undefined ? undefined : exp * 1000, (stream) => {
      const resume = since === undefined ? undefined : this.#log.resume(since, epoch);
      stream.send("welcome", JSON.stringify(streamWelcome(this.#log.seq, this.#log.epoch, resume?.recovered)));
      for (const { seq, frame } of resume?.messages ?? []) stream.send("message", frame, seq);
    });
    const limit = this.config.maxStreamsPerRoom;
    return opened ?? new HttpError(503, "room_full", `room ${this.name} serves ${limit} event streams, its limit (MAX_STREAMS_PER_ROOM)`).toResponse();
  }

  // ---- joins and presence ----

  protected override async joinRoom(room: string, request: JoinRequest): Promise<Admission | RoomFull> {
    return room === this.name ? this.join(request) : super.joinRoom(room, request);
  }

  protected override report(room: string, user: string, connections: number): void {
    if (room === this.name) this.count(HERE, user, connections).catch((error: unknown) => log("error", "could not count a leave", { room, user, error }));
    else super.report(room, user, connections);
  }

  /** A refused join; a room it left empty leaves Pusher's channel list again (`listed` in `join`). */
  #refuse(refusal: RoomFull): RoomFull {
    if (this.#roster.users === 0) this.#pusher?.unlisted();
    return refusal;
  }

  /** Counts a joining socket and answers its welcome (RPC from holders; called directly for our own). */
  async join(request: JoinRequest): Promise<Admission | RoomFull> {
    const settling = this.#censusAfterStart();
    if (settling) await settling;
    const members = this.#roster;
    // The channel's first subscriber: `GET channels` lists it before the subscriber hears it joined.
    if (members.users === 0 && this.#pusher) await this.#pusher.listed();
    // Store what is pending first: the answer's seq then covers it, and the welcome cannot be
    // overtaken by a flush that sends the batch before the newcomer is in the feed.
    this.#log.flush();
    const { holder, user, connections } = request;
    // The seat promised to this shard is taken, or freed if the join is refused below.
    this.#seats.take(holder);
    const more = connections - members.at(holder, user);
    if (more > 0 && members.connections + more > this.config.maxConnectionsPerRoom) {
      return this.#refuse({ refused: "room_full", message: roomFullMessage(this.name, this.config.maxConnectionsPerRoom) });
    }
    // A Pusher presence member (it brings user_info) needs every member listed, which stops at
    // PRESENCE_LIST_LIMIT: past it a new one is refused, as Pusher caps presence channels.
    const limit = this.config.presenceListLimit;
    if (request.info !== undefined && !members.has(user) && members.users >= limit) {
      return this.#refuse({ refused: "presence_full", message: `presence channel ${this.name} has ${members.users} members, at or past its limit of ${limit} (PRESENCE_LIST_LIMIT)` });
    }
    // No await from here to the answer: what the count causes (frames, Pusher's subscription
    // count) is emitted after the answer's mark, so the newcomer gets it after its welcome.
    const change = members.set(holder, user, connections);
    if (request.info !== undefined && change === "joined") this.#infos.set(user, request.info);
    if (holder !== HERE) this.armAlarm(); // the census of other holders runs on the sweep alarm
    const resume = request.since === undefined ? undefined : this.#log.resume(request.since, request.epoch);
    const presence = this.#presence();
    const answer: Admission = {
      seq: this.#log.seq,
      epoch: this.#log.epoch,
      mark: this.#mark,
      ...presence,
      ...(resume && { recovered: resume.recovered }),
      replay: resume?.messages.map((message) => message.frame) ?? (request.cached ? this.#cached() : []),
    };
    if (this.#presenceChannel && presence.presence) answer.infoTexts = this.#infos.of(presence.presence.map((entry) => entry.user));
    if (change === "joined") this.#announce("join", user, request.connection);
    this.#counts.welcomed(request.connection); // after the join's own frames, which it does not get
    if (request.cached && answer.replay.length === 0) this.#pusher?.cacheMiss(); // after channel_occupied
    return answer;
  }

  /** A holder's joins and counts, in the order it made them (RPC; roster-calls.ts). */
  changeRoster(holder: string, changes: RosterChange[]): Promise<RosterAnswer[]> {
    return applyRosterChanges(changes, {
      join: (request) => this.join(request),
      count: (user, connections) => this.count(holder, user, connections),
      failed: (error) => log("error", "a roster change failed", { room: this.name, holder, error }),
    });
  }

  /** A holder's new count of `user`'s sockets (RPC; 0 when the last one left). */
  async count(holder: string, user: string, connections: number): Promise<void> {
    const settling = this.#censusAfterStart();
    if (settling) await settling;
    const change = this.#roster.set(holder, user, connections);
    if (change) this.#announce(change === "joined" ? "join" : "leave", user);
  }

  /** A Pusher cache channel's replay for a new subscriber: its last message, if fresh (docs/pusher.md). */
  #cached(): string[] {
    const newest = this.#log.newest(CACHE_TTL_MS);
    return newest ? [newest.frame] : [];
  }

  /** `users` always, and the list while it is short (docs/protocol.md "Presence at scale"). */
  #presence(): { users: number; presence?: PresenceEntry[] } {
    const members = this.#roster;
    const users = members.users;
    return users <= this.config.presenceListLimit ? { users, presence: members.list() } : { users };
  }

  /** Join and leave frames while the room is small (counting after a join, before a leave); counts above. */
  #announce(event: "join" | "leave", user: string, except?: string): void {
    const users = this.#roster.users + (event === "leave" ? 1 : 0);
    // Webhooks as Pusher orders them: occupied, then member_added; member_removed, then vacated.
    if (event === "join" && users === 1) this.#pusher?.occupied(true);
    this.#pusher?.member(event, user);
    if (event === "leave" && users === 1) this.#pusher?.occupied(false);
    if (users === 1) this.#watchers?.changed(event === "join");
    // Only a presence channel's members have a user_info: other rooms' leaves cost no query.
    const info = event === "join" && this.#presenceChannel ? this.#infos.get(user) : undefined;
    if (event === "leave" && this.#presenceChannel) this.#infos.delete(user);
    const named = () => JSON.stringify(presenceFrame(this.name, event, user));
    if (users <= this.config.presenceListLimit) {
      this.#counts.named(event);
      this.#emit([{ frame: named(), ...(except !== undefined && { except: [except] }), ...(info !== undefined && { info }) }]);
      return;
    }
    this.#counts.changed(except);
    // pusher-js keeps its own member list and cannot count: a leave still takes the member off
    // it (pusher-js ignores one it never listed; docs/protocol.md decision 49), while any is here.
    const removed = event === "leave" && this.#presenceChannel && this.#infos.any() ? toPusher(named()) : undefined;
    if (removed !== undefined) this.#emit([{ frame: removed, pusherOnly: true }]);
  }

  // ---- the message path ----

  protected override async publishTo(room: string, from: string, data: Json, id?: string): Promise<number> {
    if (room !== this.name) return super.publishTo(room, from, data, id);
    const answer = await this.publish(from, data, id).catch((error: unknown) => {
      log("error", "room could not store a batch of messages", { room: this.name, error });
      throw new FrameError("internal", "the room could not store this message; not sent");
    });
    return storedSeq(answer);
  }

  /**
   * Numbers, stores and sends one message; answers its seq once its batch is stored (RPC).
   * `except` is a connection that must not get it live (Pusher's `socket_id` exclusion).
   * `payload`: a Pusher REST event's data as sent, the JSON text of `data.data`, stored as it is
   * (docs/protocol.md decision 58).
   */
  publish(from: string, data: Json, id?: string, except?: string, payload?: string): Promise<number | TooLarge> {
    const text = payload === undefined ? JSON.stringify(data) : pusherEventText((data as { event: string }).event, payload);
    const refused = tooBigToStore(text, () => messageText(this.name, Number.MAX_SAFE_INTEGER, from, "", id, Date.now()));
    return Promise.resolve(refused ?? this.#log.append(from, text, id, except));
  }

  /** A Pusher client event: to the room's other Pusher subscribers only, not stored (RPC). */
  clientEvent(frame: string, except: string): void {
    this.#emit([{ frame, except: [except], pusherOnly: true }]);
    this.#pusher?.clientEvent(frame, except);
  }

  // ---- watchlists (the Room of a user's own channel; RPC, docs/pusher.md) ----

  /** The user signed in with `watchlist`, which replaces its last one. */
  watch(watchlist: string[]): void {
    this.#watchers?.watch(watchlist);
  }

  /** `watcher` watches this user: it hears at once if the user is online. */
  async watchedBy(watcher: string): Promise<void> {
    const online = (await this.#settled()).users > 0;
    this.#watchers?.add(watcher, online);
  }

  /** A watchlist event about `from` for this user's sockets, not stored: answers whether the user still wants it. */
  async tell(frame: string, from: string): Promise<boolean> {
    if ((await this.#settled()).users === 0 || !this.#watchers?.watches(from)) return false;
    this.#emit([{ frame, pusherOnly: true }]);
    return true;
  }

  /** A binary frame from a room socket on any holder: to every other room socket, not stored (RPC). */
  binary(data: ArrayBuffer, except: string): void {
    this.#emit([{ frame: data, except: [except] }]);
  }

  protected override relayBinary(room: string, data: ArrayBuffer, except: string): void {
    if (room === this.name) this.binary(data, except);
    else super.relayBinary(room, data, except);
  }

  // A socket is answered in the order it asked: its echoes go out before a later error or close.
  protected override beforeSend(): void {
    this.#log.flush();
  }

  /** The one way out for stored messages (MessageLog calls it after the commit). */
  #stored(batch: Fresh[]): void {
    this.#emit(batch.map(({ seq, frame, except }) => ({ frame, seq, ...(except !== undefined && { except: [except] }) })));
  }

  /** Sends entries to this Room's sockets and streams, and queues them for every other holder. */
  #emit(entries: FeedEntry[]): void {
    const mark = ++this.#mark;
    for (const entry of entries) entry.mark = mark;
    this.deliver(this.name, entries);
    for (const holder of this.#roster.others()) this.#holders.push(holder, entries);
    this.#streams.send(entries);
  }

  /**
   * Sends entries to one holder. A holder that answers it has none of the room's sockets lost
   * them without a close (a restart): its counts go at once, unless it reported since the call.
   */
  async #forward(holder: string, entries: FeedEntry[]): Promise<void> {
    const version = this.#roster.version(holder);
    const held = await this.links.call("holder", holder, (stub) => stub.deliver(this.name, entries));
    if (held === 0 && this.#roster.version(holder) === version) this.#census.correct(holder, { counts: {} });
  }

  // ---- census: counts of other holders, checked on the sweep alarm ----

  protected override wantsAlarm(): boolean {
    return super.wantsAlarm() || this.#roster.objects > 0;
  }

  protected override async onAlarm(now: number): Promise<void> {
    this.sweep(now);
    // A Room woken by this alarm takes the census after a start first (counts only go down in
    // it), then a full one, which also restores counts that fell too low.
    const settling = this.#censusAfterStart();
    if (settling) await settling;
    await this.#census.take();
  }

  // ---- RPC (called by the Worker through the stub) ----

  async info(): Promise<RoomInfo> {
    const members = await this.#settled();
    return {
      room: this.name,
      seq: this.#log.seq,
      epoch: this.#log.epoch,
      connections: members.connections,
      ...this.#presence(),
      objects: members.objects,
    };
  }

  async presencePage(after: string | undefined, limit: number): Promise<PresencePage> {
    return (await this.#settled()).page(after, limit);
  }

  /** Closes every socket in the room, on every object that holds one (Pusher's terminate_connections). */
  async closeAll(code: number, reason: string): Promise<void> {
    this.closeRoom(this.name, code, reason);
    await Promise.all(this.#roster.others().map((holder) => this.links.call("holder", holder, (stub) => stub.closeRoom(this.name, code, reason))));
  }

  /** `{"messages": [...]}` with the first `limit` retained messages after `since`, streamed (MessageLog.history). */
  history(since: number, limit: number): ReadableStream<Uint8Array> {
    return this.#log.history(since, limit);
  }
}
