// edge-relay client for browsers and Node (any global WebSocket, or the `ws` package): a room, or
// the user's own socket with its direct messages and any number of room subscriptions. It keeps
// the heartbeat, reconnects with backoff, resumes without gaps (across a page reload too), queues
// what is sent while disconnected, answers every frame with a promise, and refreshes its token
// before it expires. This file ties the parts together: transport.ts (the socket), queue.ts
// (outgoing frames), rooms.ts (resume points and subscriptions), presence.ts, token.ts, http.ts.
import type { DirectFrame, Json, ResumePoint, ServerFrame, SubscribedFrame, WelcomeFrame } from "../src/protocol/frames";
import { RelayError } from "./errors";
import { Emitter, type Listener } from "./events";
import { baseUrl, fetchHistory, socketUrl } from "./http";
import { newId } from "./id";
import { Directs } from "./inbox";
import { Presence } from "./presence";
import { Pace } from "./pace";
import { Outbox, pending, type Answer } from "./queue";
import { Rooms } from "./rooms";
import { TokenRefresh, Tokens } from "./token";
import { Transport } from "./transport";
import type { CloseInfo, ConnectionState, DataOf, Direct, DirectReceipt, JsonSafe, Message, PresenceState } from "./types";
import type { RelayClientOptions, RelayEvents, ResumeState, Sent } from "./types";

export type { AckFrame, DirectFrame, ErrorFrame, Json, MessageFrame, PresenceCountFrame, PresenceEntry } from "../src/protocol/frames";
export type { PresenceFrame, ResumePoint, SubscribedFrame, UnsubscribedFrame, WelcomeFrame } from "../src/protocol/frames";
export type * from "./types";
export { RelayError, type RelayErrorCode } from "./errors";

export class RelayClient<T = Json, D = T> {
  readonly #options: RelayClientOptions;
  readonly #base: URL;
  readonly #events = new Emitter<RelayEvents<T, D>>();
  readonly #tokens: Tokens;
  readonly #presence = new Presence();
  readonly #rooms: Rooms;
  readonly #outbox: Outbox;
  readonly #transport: Transport;
  /** The last welcome, and whether its connection is set up for sending (see #welcomed). */
  #welcome?: WelcomeFrame;
  /** A welcome came and the frames the last connection left unconfirmed are not sent again yet. */
  #resendDue = false;
  #open = false;
  #closedError?: RelayError;
  /** Aborts the HTTP requests under way (history) when the client closes. */
  readonly #requests = new AbortController();
  readonly #directs: Directs;
  readonly #refresh: TokenRefresh;

  constructor(options: RelayClientOptions) {
    if ((options.room === undefined) === (options.inbox === undefined)) {
      throw new TypeError("RelayClient needs exactly one of `room` or `inbox`");
    }
    // Said at once: found only when connecting, it would look like a relay that never answers.
    if (options.WebSocket === undefined && typeof (globalThis as { WebSocket?: unknown }).WebSocket !== "function") {
      throw new TypeError("RelayClient needs a WebSocket: this runtime has none (Node before 22); pass the `ws` package as `WebSocket`");
    }
    this.#options = options;
    this.#base = baseUrl(options.url);
    this.#tokens = new Tokens(options.token);
    // One pace for what the client sends in bulk on its own: the relay's rate limit is per socket.
    const pace = new Pace(options.pacedPerSecond ?? 20);
    this.#directs = new Directs(options.autoAck !== false, (seq) => this.ack(seq), pace);
    this.#refresh = new TokenRefresh(this.#tokens, {
      online: () => this.#open,
      inFlight: () => this.#outbox.unconfirmed,
      restart: () => this.#transport.restart("token refresh"),
    });
    this.#rooms = new Rooms((frame) => this.#transport.send(JSON.stringify(frame)), () => this.#replayed(), pace);
    this.#rooms.seed(options.resume);
    const { room, since, epoch } = options;
    if (room !== undefined && since !== undefined) this.#rooms.setPoint(room, { since, epoch });
    this.#outbox = new Outbox(
      options.maxQueue ?? 100,
      pace,
      (text) => this.#open && !this.#rooms.holding && !this.#refresh.draining && this.#transport.send(text),
      (text) => this.#events.emit("dropped", text),
    );
    this.#transport = new Transport(
      { ...options, tokenRefreshes: this.#tokens.refreshable },
      {
        url: () => this.#url(),
        receive: (frame) => this.#receive(frame),
        binary: (data) => this.#events.emit("binary", data),
        state: (state) => this.#events.emit("state", state),
        closed: (info) => this.#closed(info),
        refused: (refusal) => {
          this.#closedError = new RelayError(refusal.error, refusal.message, refusal.status);
          this.#events.emit("refused", refusal);
        },
      },
    );
    this.#transport.start();
  }

  get state(): ConnectionState {
    return this.#transport.state;
  }

  /** A room client's resume point: the last message seq seen and the epoch it belongs to. */
  get position(): { seq?: number; epoch?: string } {
    const { since, epoch } = this.#options.room === undefined ? ({} as ResumePoint) : this.#rooms.point(this.#options.room);
    return { seq: since, epoch };
  }

  /** Where every room was left; keep it (it is JSON) and pass it back as the `resume` option. */
  get resumeState(): ResumeState {
    return this.#rooms.resumeState;
  }

  /** The rooms this user socket is subscribed to (or will subscribe to when it connects). */
  get subscriptions(): string[] {
    return this.#rooms.subscriptions;
  }

  /** Who is in `room` (a room client's own room by default), as the relay last said. */
  presenceState(room = this.#options.room): PresenceState | undefined {
    return room === undefined ? undefined : this.#presence.state(room);
  }

  on<K extends keyof RelayEvents<T, D>>(type: K, listener: Listener<RelayEvents<T, D>[K]>): () => void {
    return this.#events.on(type, listener);
  }

  once<K extends keyof RelayEvents<T, D>>(type: K, listener: Listener<RelayEvents<T, D>[K]>): () => void {
    return this.#events.once(type, listener);
  }

  off<K extends keyof RelayEvents<T, D>>(type: K, listener: Listener<RelayEvents<T, D>[K]>): void {
    this.#events.off(type, listener);
  }

  /** Resolves with the welcome once connected (at once if connected now); rejects if the client stops first. */
  ready(): Promise<WelcomeFrame> {
    if (this.#open && this.#welcome) return Promise.resolve(this.#welcome);
    if (this.state === "closed") return Promise.reject(this.#stoppedError());
    return new Promise((resolve, reject) => {
      const done = () => (offWelcome(), offClose());
      const offWelcome = this.#events.once("welcome", (welcome) => (done(), resolve(welcome)));
      const offClose = this.#events.on("close", (info) => void (info.willReconnect || (done(), reject(this.#stoppedError(info)))));
    });
  }

  /**
   * Publishes into the room (on a user socket, `room` names it). Resolves with the message's seq
   * once the relay stored it; rejects with a RelayError (`.code`) if the relay refused it.
   */
  publish<P extends DataOf<T>>(data: P & JsonSafe<P>, options: { id?: string; room?: string } = {}): Sent<number> {
    if (this.#options.inbox !== undefined && options.room === undefined) throw new TypeError("publish from an inbox client needs `room`");
    const id = options.id ?? newId();
    const frame = { type: "publish", data, id, ...(options.room !== undefined && { room: options.room }) };
    return this.#push(id, JSON.stringify(frame), (answer) => answer.seq!);
  }

  /** Sends a direct message to `to`, wherever they are connected; resolves with the relay's ack. */
  direct<P extends DataOf<D>>(to: string, data: P & JsonSafe<P>, options: { id?: string } = {}): Sent<DirectReceipt> {
    const id = options.id ?? newId();
    return this.#push(id, JSON.stringify({ type: "direct", to, data, id }), (answer) => ({
      status: answer.type === "ack" ? answer.status : "delivered",
      seq: answer.seq!,
    }));
  }

  /** Acknowledges direct messages up to `seq` (done for you unless `autoAck` is false). */
  ack(seq: number): void {
    this.#transport.send(JSON.stringify({ type: "ack", seq }));
  }

  /**
   * A user socket subscribes to `room`, now or when it connects, and again after every reconnect
   * (resuming where the room was left). Resolves with the `subscribed` answer; rejects with a
   * RelayError: `forbidden`, `bad_frame`, `room_full`, `too_many_subscriptions`.
   */
  subscribe(room: string, resume?: ResumePoint): Promise<SubscribedFrame> {
    if (this.#options.inbox === undefined) throw new TypeError("only an inbox client (a user socket) subscribes to rooms");
    if (this.state === "closed") return Promise.reject(this.#stoppedError());
    return this.#rooms.subscribe(room, resume);
  }

  /** Stops receiving `room` and forgets it; resolves when the relay confirmed (at once while offline). */
  unsubscribe(room: string): Promise<void> {
    if (this.#options.inbox === undefined) throw new TypeError("only an inbox client (a user socket) has subscriptions");
    this.#presence.forget(room);
    return this.#rooms.unsubscribe(room);
  }

  /**
   * The room's retained messages after `since` (default 0), oldest first, at most `limit`: an HTTP
   * request with this client's token (a relay's history needs one, or the server's API key).
   */
  async history(options: { since?: number; limit?: number; room?: string } = {}): Promise<Message<T>[]> {
    const room = options.room ?? this.#options.room;
    if (room === undefined) throw new TypeError("history on an inbox client needs `room`");
    const token = await this.#tokens.forRequest();
    try {
      return (await fetchHistory(this.#base, room, options, token, this.#requests.signal)) as Message<T>[];
    } catch (error) {
      throw this.#requests.signal.aborted ? this.#stoppedError() : error;
    }
  }

  /** Closes for good: no reconnection. Frames not yet answered reject with code `closed`. */
  close(code = 1000, reason = ""): void {
    this.#directs.flush();
    this.#transport.stop(code, reason);
    this.#requests.abort();
  }

  // ---- connections ----

  async #url(): Promise<URL> {
    const { room, inbox, user } = this.#options;
    // A token function that fails is asked again at the next attempt; the app hears each failure.
    const token = await this.#tokens.forConnection().catch((error: unknown) => {
      this.#events.emit("tokenFailed", error);
      throw error;
    });
    return socketUrl(this.#base, room !== undefined ? { room, ...this.#rooms.point(room) } : { inbox: inbox! }, token, user);
  }

  #welcomed(frame: WelcomeFrame): void {
    const room = this.#options.room;
    this.#welcome = frame;
    // A resume replays what was missed right after the welcome. Our own unconfirmed messages may
    // be among them, so sending waits until the replays are done (rooms.ts), then resends only
    // what they did not confirm. All of it before the listeners run: a frame a `welcome` or
    // `state` listener sends goes out once, after what waited.
    if (room !== undefined) {
      this.#rooms.joined(room, frame, this.#rooms.point(room).since);
      this.#presence.set(room, frame);
    } else this.#directs.welcome(frame.epoch);
    this.#transport.welcomed(frame.heartbeat.interval);
    if (room === undefined) this.#rooms.resubscribe();
    this.#open = true;
    this.#resendDue = true;
    if (!this.#rooms.holding) this.#replayed();
    this.#refresh.schedule();
    this.#events.emit("welcome", frame);
    if (room !== undefined) this.#events.emit("presenceChange", this.#presence.state(room)!);
    if (frame.recovered === false) this.#events.emit("reset", frame);
  }

  /**
   * Nothing replays now: sending goes on. The first time after a welcome, the last connection's
   * unconfirmed frames go again; after a subscribe's replay on the same connection, they do not
   * (they were sent on it, and their answers come).
   */
  #replayed(): void {
    if (!this.#open) return;
    if (!this.#resendDue) return this.#outbox.resume();
    this.#resendDue = false;
    this.#outbox.flush();
  }

  #closed(info: CloseInfo): void {
    this.#open = false;
    this.#refresh.cancel();
    this.#rooms.disconnected();
    this.#events.emit("close", info);
    if (info.willReconnect) return;
    const error = this.#stoppedError(info);
    this.#outbox.failAll(error);
    this.#rooms.stop(error);
  }

  /** Why promises reject once the client stopped: the relay's refusal (set then), else how it closed. */
  #stoppedError(info?: CloseInfo): RelayError {
    const how = info ? ` (${info.code}${info.reason ? `: ${info.reason}` : ""})` : "";
    return (this.#closedError ??= new RelayError("closed", `the client is closed${how}`));
  }

  // ---- receiving ----

  #receive(frame: ServerFrame): void {
    switch (frame.type) {
      case "welcome":
        return this.#welcomed(frame);
      case "message":
        // Confirmed before the room's position moves: reaching the end of a replay sends what
        // waited, and this message must not be among it.
        this.#answered(frame.id, frame);
        if (this.#rooms.leaving(frame.room) || !this.#rooms.advance(frame.room, frame.seq)) return; // left, or seen already
        return this.#events.emit("message", frame as Message<T>);
      case "presence": {
        if (this.#rooms.leaving(frame.room)) return;
        const state = this.#presence.apply(frame);
        this.#events.emit("presence", frame);
        if (state) this.#events.emit("presenceChange", state);
        return;
      }
      case "subscribed":
        return this.#subscribed(frame);
      case "unsubscribed":
        this.#rooms.unsubscribed(frame.room);
        return this.#events.emit("unsubscribed", frame);
      case "ack":
        this.#answered(frame.id, frame);
        return this.#events.emit("ack", frame);
      case "error": {
        const refused = this.#rooms.refused(frame);
        if (refused) {
          this.#presence.forget(refused.room);
          this.#events.emit("subscribeFailed", refused);
        } else if (this.#outbox.fail(frame.id, new RelayError(frame.code, frame.message))) this.#refresh.answered();
        return this.#events.emit("error", frame);
      }
      case "direct":
        return this.#direct(frame);
    }
  }

  #subscribed(frame: SubscribedFrame): void {
    const answer = this.#rooms.subscribed(frame);
    // Answered after we left it (a subscribe and an unsubscribe crossed): leave it again.
    if (answer === "stray") this.#transport.send(JSON.stringify({ type: "unsubscribe", room: frame.room }));
    if (answer !== "stands") return;
    const state = this.#presence.set(frame.room, frame);
    this.#events.emit("subscribed", frame);
    this.#events.emit("presenceChange", state);
  }

  #direct(frame: DirectFrame): void {
    if (this.#directs.isNew(frame.seq)) this.#events.emit("direct", frame as Direct<D>);
    this.#directs.delivered(frame.seq);
  }

  // ---- sending ----

  #push<R>(id: string, text: string, read: (answer: Answer) => R): Sent<R> {
    const { sent, settle } = pending(id, read);
    if (this.state === "closed") settle.reject(this.#stoppedError());
    else this.#outbox.push({ id, text, settle });
    return sent;
  }

  #answered(id: string | undefined, answer: Answer): void {
    this.#outbox.confirm(id, answer);
    this.#refresh.answered();
  }
}
