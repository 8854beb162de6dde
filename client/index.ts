// edge-relay client for browsers and Node (any global WebSocket): joins a room or the user's own
// inbox, keeps the heartbeat, reconnects with backoff and resumes without gaps, queues what is
// sent while disconnected, and acks direct messages. The wire types come from the relay's own
// protocol module, so the two cannot drift apart.
import { PING, PONG, type Json, type ServerFrame, type WelcomeFrame } from "../src/protocol/frames";
import type { ConnectionState, RelayClientOptions, RelayEvents, Refusal, WebSocketFactory, WebSocketLike } from "./types";

export type {
  AckFrame,
  DirectFrame,
  ErrorFrame,
  Json,
  MessageFrame,
  PresenceCountFrame,
  PresenceFrame,
  SubscribedFrame,
  UnsubscribedFrame,
  WelcomeFrame,
} from "../src/protocol/frames";
export type * from "./types";

/** A frame of ours and its id, by which the relay's answer confirms it. */
interface Outgoing {
  id: string;
  text: string;
}

type Listener<K extends keyof RelayEvents> = (value: RelayEvents[K]) => void;

/** Close codes after which trying again cannot help: the relay said stop, or the token is done. */
const TERMINAL_CODES = new Set([1002, 1003, 1007, 1008]);
const TOKEN_EXPIRED = 4001;

export class RelayClient {
  readonly #options: RelayClientOptions;
  readonly #listeners = new Map<keyof RelayEvents, Set<Listener<any>>>();
  #socket?: WebSocketLike;
  #state: ConnectionState = "connecting";
  /** Frames not yet sent: written while disconnected, or while a resume replays. */
  #queue: Outgoing[] = [];
  /** Frames sent but not yet confirmed (own message echoed, ack or error with the id). */
  #unconfirmed = new Map<string, Outgoing>();
  /** While a resume replays, the seq it ends at: sending waits for it (see #welcome). */
  #replayUntil?: number;
  #attempt = 0;
  #retryTimer?: ReturnType<typeof setTimeout>;
  #heartbeat?: ReturnType<typeof setInterval>;
  #heardAt = 0;
  #lastSeq?: number;
  #epoch?: string;
  #pendingAck?: number;
  #nextId = 0;
  readonly #idPrefix = `${Math.random().toString(36).slice(2, 10)}-`;
  #stopped = false;
  /** The URL of the current attempt, and whether it got as far as a welcome. */
  #url?: URL;
  #welcomed = false;

  constructor(options: RelayClientOptions) {
    if ((options.room === undefined) === (options.inbox === undefined)) {
      throw new TypeError("RelayClient needs exactly one of `room` or `inbox`");
    }
    this.#options = options;
    this.#connect();
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The last room message seq seen (rooms) and the epoch it belongs to: the resume point. */
  get position(): { seq?: number; epoch?: string } {
    return { seq: this.#lastSeq, epoch: this.#epoch };
  }

  on<K extends keyof RelayEvents>(type: K, listener: Listener<K>): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Publishes into the room (on an inbox client, `room` names it). Answers the frame's id. */
  publish(data: Json, options: { id?: string; room?: string } = {}): string {
    if (this.#options.inbox !== undefined && options.room === undefined) {
      throw new TypeError("publish from an inbox client needs `room`");
    }
    const id = options.id ?? this.#id();
    this.#send({ id, text: JSON.stringify({ type: "publish", data, id, ...(options.room !== undefined && { room: options.room }) }) });
    return id;
  }

  /** Sends a direct message to `to`, wherever they are connected. Answers the frame's id. */
  direct(to: string, data: Json, options: { id?: string } = {}): string {
    const id = options.id ?? this.#id();
    this.#send({ id, text: JSON.stringify({ type: "direct", to, data, id }) });
    return id;
  }

  /** Acknowledges direct messages up to `seq` (done for you unless `autoAck` is false). */
  ack(seq: number): void {
    if (this.#socket?.readyState === 1) this.#socket.send(JSON.stringify({ type: "ack", seq }));
  }

  /** Closes for good: no reconnection. */
  close(code = 1000, reason = ""): void {
    this.#stopped = true;
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#socket?.close(code, reason);
    if (!this.#socket || this.#socket.readyState === 3) this.#setState("closed");
  }

  // ---- connection ----

  #connect(): void {
    this.#open().catch(() => {
      // No token or no socket could be made: count it as a failed attempt.
      this.#socket = undefined;
      this.#retry({ code: 1006, reason: "could not connect" });
    });
  }

  async #open(): Promise<void> {
    const options = this.#options;
    const url = new URL(options.room !== undefined ? `rooms/${options.room}/ws` : `users/${options.inbox}/ws`, base(options.url));
    url.protocol = url.protocol.replace(/^http/, "ws");
    const token = typeof options.token === "function" ? await options.token() : options.token;
    if (token !== undefined) url.searchParams.set("token", token);
    if (options.user !== undefined) url.searchParams.set("user", options.user);
    if (options.room !== undefined && this.#lastSeq !== undefined) {
      url.searchParams.set("since", String(this.#lastSeq));
      if (this.#epoch !== undefined) url.searchParams.set("epoch", this.#epoch);
    }
    if (this.#stopped) return;
    this.#url = url;
    this.#welcomed = false;
    const Socket = options.WebSocket ?? (globalThis as unknown as { WebSocket?: WebSocketFactory }).WebSocket;
    if (!Socket) throw new Error("no WebSocket implementation: pass options.WebSocket");
    const socket = new Socket(url.toString());
    socket.binaryType = "arraybuffer";
    this.#socket = socket;
    socket.onmessage = (event) => this.#receive(event.data);
    socket.onclose = (event) => this.#closed(socket, event.code, event.reason);
    // Browsers follow a failed handshake's error with a close event; Node 22's WebSocket fires
    // only the error and stays CONNECTING. Either way the attempt is over.
    socket.onerror = () => {
      if (!this.#welcomed && socket.readyState !== 1) this.#closed(socket, 1006, "connection failed");
    };
  }

  #receive(data: unknown): void {
    this.#heardAt = Date.now();
    if (data === PONG) return;
    if (typeof data !== "string") return this.#emit("binary", data as ArrayBuffer);
    let frame: ServerFrame;
    try {
      frame = JSON.parse(data) as ServerFrame;
    } catch {
      return; // the relay only sends JSON text besides pong
    }
    switch (frame.type) {
      case "welcome":
        return this.#welcome(frame);
      case "message":
        this.#lastSeq = frame.seq;
        this.#confirm(frame.id);
        this.#emit("message", frame);
        if (this.#replayUntil !== undefined && frame.seq >= this.#replayUntil) this.#flush();
        return;
      case "ack":
      case "error":
        this.#confirm(frame.id);
        return this.#emit(frame.type, frame as never);
      case "direct":
        this.#emit("direct", frame);
        if (this.#options.autoAck !== false) this.#scheduleAck(frame.seq);
        return;
      default:
        return this.#emit(frame.type, frame as never);
    }
  }

  #welcome(frame: WelcomeFrame): void {
    this.#attempt = 0;
    this.#welcomed = true;
    const since = this.#lastSeq;
    if (frame.room !== undefined) {
      // A new epoch, or a failed resume, starts the numbering over from what the room has now.
      if (frame.recovered === false || frame.epoch !== this.#epoch) this.#lastSeq = frame.seq;
      this.#epoch = frame.epoch;
    }
    this.#startHeartbeat(frame.heartbeat.interval);
    this.#setState("open");
    // A resume replays what was missed right after the welcome. Our own unconfirmed messages may
    // be among them, so hold sending until the replay reached the welcome's seq, then resend only
    // what the replay did not confirm. Either way this happens before the listeners run: a frame
    // a `welcome` listener sends must go out once, after what waited.
    if (frame.recovered === true && since !== undefined && frame.seq > since) this.#replayUntil = frame.seq;
    else this.#flush();
    this.#emit("welcome", frame);
    if (frame.recovered === false) this.#emit("reset", frame);
  }

  /** Sends what waited: unconfirmed frames from the last connection first, then the queue. */
  #flush(): void {
    this.#replayUntil = undefined;
    const waiting = [...this.#unconfirmed.values(), ...this.#queue];
    this.#unconfirmed.clear();
    this.#queue = [];
    for (const frame of waiting) this.#send(frame);
  }

  #confirm(id: string | undefined): void {
    if (id !== undefined) this.#unconfirmed.delete(id);
  }

  // Pings on the relay's interval; when nothing at all came back for two intervals the
  // connection is dead even if the socket says open, so drop it and reconnect.
  #startHeartbeat(interval: number): void {
    this.#stopHeartbeat();
    this.#heardAt = Date.now();
    this.#heartbeat = setInterval(() => {
      const socket = this.#socket;
      if (!socket || socket.readyState !== 1) return;
      if (Date.now() - this.#heardAt > 2 * interval) return socket.close(4000, "no pong");
      socket.send(PING);
    }, interval);
  }

  #stopHeartbeat(): void {
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  #closed(socket: WebSocketLike, code: number, reason: string): void {
    if (socket !== this.#socket) return; // an attempt already given up on
    this.#socket = undefined;
    this.#stopHeartbeat();
    if (this.#welcomed || this.#stopped) return this.#retry({ code, reason });
    void this.#whyRefused().then((refusal) => {
      if (!refusal) return this.#retry({ code, reason });
      this.#stopped = true;
      this.#emit("refused", refusal);
      this.#retry({ code, reason: refusal.message });
    });
  }

  // A browser does not say why an upgrade failed. The relay answers a plain GET of the same URL
  // with the status the upgrade got (426 when the upgrade itself would have been fine), so one
  // request tells a refusal, which retrying cannot fix, from a network failure, which it can.
  async #whyRefused(): Promise<Refusal | undefined> {
    if (!this.#url || typeof fetch !== "function") return undefined;
    const url = new URL(this.#url);
    url.protocol = url.protocol.replace(/^ws/, "http");
    try {
      const res = await fetch(url, { cache: "no-store" });
      if (![400, 401, 403, 404].includes(res.status)) return undefined;
      const body = (await res.json().catch(() => ({}))) as Partial<Refusal>;
      return { status: res.status, error: body.error ?? "refused", message: body.message ?? res.statusText };
    } catch {
      return undefined; // unreachable, or a cross-origin relay without CORS: keep retrying
    }
  }

  #retry({ code, reason }: { code: number; reason: string }): void {
    const refresh = code === TOKEN_EXPIRED && typeof this.#options.token === "function";
    const terminal = TERMINAL_CODES.has(code) || (code === TOKEN_EXPIRED && !refresh);
    const willReconnect = !this.#stopped && !terminal && this.#options.reconnect !== false;
    this.#emit("close", { code, reason, willReconnect });
    if (!willReconnect) return this.#setState("closed");
    this.#setState("reconnecting");
    const { minDelayMs = 500, maxDelayMs = 30_000 } = this.#options.reconnect || {};
    // Full jitter: a random delay up to an exponentially growing cap spreads a crowd of clients.
    const delay = Math.random() * Math.min(maxDelayMs, minDelayMs * 2 ** this.#attempt++);
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  // ---- sending ----

  // A frame written to a socket that is already dying is lost without a trace, so every frame
  // stays unconfirmed until the relay answers it, and is sent again after a reconnect if it never
  // was. The price: a direct whose ack was lost in the drop may arrive twice (same id).
  #send(frame: Outgoing): void {
    const max = this.#options.maxQueue ?? 100;
    if (this.#socket?.readyState === 1 && this.#state === "open" && this.#replayUntil === undefined) {
      this.#socket.send(frame.text);
      this.#unconfirmed.set(frame.id, frame);
      if (this.#unconfirmed.size > max) this.#drop(this.#unconfirmed.keys().next().value!);
      return;
    }
    this.#queue.push(frame);
    while (this.#queue.length > max) this.#emit("dropped", this.#queue.shift()!.text);
  }

  #drop(id: string): void {
    const frame = this.#unconfirmed.get(id)!;
    this.#unconfirmed.delete(id);
    this.#emit("dropped", frame.text);
  }

  #scheduleAck(seq: number): void {
    const first = this.#pendingAck === undefined;
    this.#pendingAck = Math.max(seq, this.#pendingAck ?? 0);
    // One ack for a burst of directs (a replay, say): acks are cumulative.
    if (first) {
      queueMicrotask(() => {
        const upTo = this.#pendingAck!;
        this.#pendingAck = undefined;
        this.ack(upTo);
      });
    }
  }

  /** Ids confirm our own frames, so they must not collide with other clients' ids. */
  #id(): string {
    return `${this.#idPrefix}${++this.#nextId}`;
  }

  #setState(state: ConnectionState): void {
    if (state === this.#state) return;
    this.#state = state;
    this.#emit("state", state);
  }

  #emit<K extends keyof RelayEvents>(type: K, value: RelayEvents[K]): void {
    for (const listener of this.#listeners.get(type) ?? []) {
      try {
        listener(value);
      } catch (error) {
        // A failing listener must not break the connection; surface it asynchronously.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}

function base(url: string | URL): URL {
  const parsed = new URL(url);
  if (!parsed.pathname.endsWith("/")) parsed.pathname += "/";
  return parsed;
}
