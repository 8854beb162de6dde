// One connection at a time to the relay: opening the socket, the timeout before its welcome, the
// heartbeat, backoff between attempts, when to give up, and why a refused upgrade was refused.
// What the frames mean is the client's business; this file only moves them.
import { CloseCode } from "../src/protocol/codes";
import { PING, PONG, type ServerFrame } from "../src/protocol/frames";
import { whyFailed } from "./http";
import { expired } from "./token";
import type { CloseInfo, ConnectionState, Refusal, RelayClientOptions, WebSocketFactory, WebSocketLike } from "./types";

/**
 * Close codes after which trying again cannot help: the relay closed for a policy (rate limit), or
 * the peers disagree about the protocol itself (RFC 6455 section 7.4.1).
 */
const TERMINAL_CODES = new Set<number>([1002, 1003, 1007, CloseCode.policy]);
/** The code the client reports for an attempt that failed without a close frame. */
const ABNORMAL = 1006;
/** How long close() lets the relay answer its close frame before ending the connection. */
const CLOSE_WAIT_MS = 1000;

/** What the transport needs from the client, and tells it. */
export interface Link {
  /** The URL of the next attempt; throws when there is none to be had (a token function failed). */
  url(): Promise<URL>;
  /** A frame from the relay. */
  receive(frame: ServerFrame): void;
  /** A binary frame (rooms relay them as they are). */
  binary(data: ArrayBuffer): void;
  state(state: ConnectionState): void;
  /** A socket closed; `willReconnect` says whether another attempt follows. */
  closed(info: CloseInfo): void;
  refused(refusal: Refusal): void;
}

export type TransportOptions = Pick<RelayClientOptions, "WebSocket" | "reconnect" | "maxRetries" | "connectTimeoutMs"> & {
  /** Whether a 4001 (token expired) is worth a retry: only with a token function. */
  tokenRefreshes: boolean;
};

export class Transport {
  readonly #options: TransportOptions;
  readonly #link: Link;
  #socket?: WebSocketLike;
  #state: ConnectionState = "connecting";
  /** Attempts in a row without a welcome. */
  #attempt = 0;
  #retryTimer?: ReturnType<typeof setTimeout>;
  #connectTimer?: ReturnType<typeof setTimeout>;
  #heartbeat?: ReturnType<typeof setInterval>;
  #heardAt = 0;
  #stopped = false;
  /** The URL of the current attempt, and whether it got as far as a welcome. */
  #url?: URL;
  #welcomed = false;

  constructor(options: TransportOptions, link: Link) {
    this.#options = options;
    this.#link = link;
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** Whether frames can go out now: the socket is open and the relay welcomed it. */
  get ready(): boolean {
    return this.#welcomed && this.#socket?.readyState === 1;
  }

  start(): void {
    this.#connect();
  }

  /** Writes `text` if the connection is ready; false otherwise. */
  send(text: string): boolean {
    if (!this.ready) return false;
    this.#socket!.send(text);
    return true;
  }

  /** The relay welcomed this attempt: the connection is up, pinged every `interval` ms. */
  welcomed(interval: number): void {
    this.#welcomed = true;
    this.#attempt = 0;
    if (this.#connectTimer !== undefined) clearTimeout(this.#connectTimer);
    this.#startHeartbeat(interval);
    this.#setState("open");
  }

  /** Drops the connection and opens a new one at once (a fresh token, say). */
  restart(reason: string): void {
    const socket = this.#socket;
    if (!socket || this.#stopped) return;
    this.#detach();
    closeQuietly(socket, CloseCode.normal, reason);
    this.#link.closed({ code: CloseCode.normal, reason, willReconnect: true });
    this.#setState("reconnecting");
    this.#connect();
  }

  /** Closes for good. The `close` event and the `closed` state follow at once. */
  stop(code: number, reason: string): void {
    if (this.#stopped) return;
    this.#stopped = true;
    const socket = this.#socket;
    this.#detach();
    if (socket) {
      closeQuietly(socket, code, reason);
      // `ws` waits 30 s for a silent peer's close frame, and keeps Node running meanwhile.
      const timer = setTimeout(() => socket.terminate?.(), CLOSE_WAIT_MS) as { unref?: () => void };
      timer.unref?.();
    }
    this.#link.closed({ code, reason, willReconnect: false });
    this.#finish();
  }

  // ---- attempts ----

  #connect(): void {
    this.#open().catch((error: unknown) => {
      // No URL (the token function failed or hung) or no socket could be made: a failed attempt.
      this.#socket = undefined;
      if (!this.#stopped) this.#retry(ABNORMAL, error instanceof AttemptTimeout ? error.message : "could not connect");
    });
  }

  async #open(): Promise<void> {
    // The attempt's time runs from here: a token function that never answers fails it too.
    const timeout = this.#options.connectTimeoutMs ?? 10_000;
    let fail = (_: Error) => {};
    const late = new Promise<never>((_, reject) => (fail = reject));
    const timer = setTimeout(() => fail(new AttemptTimeout(`no token within ${timeout} ms`)), timeout);
    const url = await Promise.race([this.#link.url(), late]).finally(() => clearTimeout(timer));
    if (this.#stopped) return;
    this.#url = url;
    this.#welcomed = false;
    const Socket = this.#options.WebSocket ?? (globalThis as unknown as { WebSocket?: WebSocketFactory }).WebSocket;
    if (!Socket) throw new Error("no WebSocket implementation: pass options.WebSocket");
    const socket = new Socket(url.toString());
    socket.binaryType = "arraybuffer";
    this.#socket = socket;
    socket.onmessage = (event: { data: unknown }) => {
      if (socket !== this.#socket) return;
      this.#heardAt = Date.now();
      if (event.data !== PONG) this.#receive(event.data);
    };
    socket.onclose = (event: { code: number; reason: string }) => this.#closed(socket, event.code, event.reason);
    // Browsers follow a failed handshake's error with a close event; Node 22's WebSocket fires
    // only the error and stays CONNECTING. Either way the attempt is over.
    socket.onerror = () => {
      if (!this.#welcomed && socket.readyState !== 1) this.#closed(socket, ABNORMAL, "connection failed");
    };
    // A relay that accepts the upgrade but never welcomes (or a handshake that hangs) must not
    // hold the client forever.
    this.#connectTimer = setTimeout(() => this.#drop(socket, ABNORMAL, `no welcome within ${timeout} ms`), timeout);
  }

  #receive(data: unknown): void {
    if (typeof data !== "string") return this.#link.binary(data as ArrayBuffer);
    let frame: ServerFrame;
    try {
      frame = JSON.parse(data) as ServerFrame;
    } catch {
      return; // the relay sends only JSON text besides pong
    }
    this.#link.receive(frame);
  }

  #closed(socket: WebSocketLike, code: number, reason: string): void {
    if (socket !== this.#socket) return; // an attempt already given up on
    this.#detach();
    if (this.#welcomed || this.#stopped) return this.#retry(code, reason);
    void whyFailed(this.#url).then((failure) => {
      if (this.#stopped) return;
      if (!failure) return this.#retry(code, reason);
      // A token that expired on its way (a stall, a stale cache) is no refusal when a token
      // function can give a fresh one: the next attempt asks it again.
      const stale = this.#options.tokenRefreshes && failure.refusal.status === 401 && expired(this.#url?.searchParams.get("token") ?? undefined);
      if (failure.final && !stale) {
        this.#link.refused(failure.refusal);
        this.#stopped = true;
      }
      this.#retry(code, failure.refusal.message, failure.refusal);
    });
  }

  /** Gives up on `socket` without waiting for its close handshake, which may never finish. */
  #drop(socket: WebSocketLike, code: number, reason: string): void {
    if (socket !== this.#socket) return;
    this.#detach();
    if (socket.terminate) socket.terminate();
    else closeQuietly(socket, 4000, reason);
    this.#retry(code, reason);
  }

  #detach(): void {
    this.#socket = undefined;
    if (this.#connectTimer !== undefined) clearTimeout(this.#connectTimer);
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  #retry(code: number, reason: string, refusal?: Refusal): void {
    const { reconnect, maxRetries, tokenRefreshes } = this.#options;
    const terminal = TERMINAL_CODES.has(code) || (code === CloseCode.tokenExpired && !tokenRefreshes);
    const exhausted = maxRetries !== undefined && this.#attempt >= maxRetries;
    const willReconnect = !this.#stopped && !terminal && reconnect !== false && !exhausted;
    this.#link.closed({ code, reason, willReconnect, ...(refusal && { refusal }) });
    if (!willReconnect) return this.#finish();
    this.#setState("reconnecting");
    const { minDelayMs = 500, maxDelayMs = 30_000 } = reconnect || {};
    // Full jitter: a random delay up to an exponentially growing cap spreads a crowd of clients.
    const delay = Math.random() * Math.min(maxDelayMs, minDelayMs * 2 ** this.#attempt++);
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #finish(): void {
    this.#stopped = true;
    this.#setState("closed");
  }

  // Pings on the relay's interval; when nothing at all came back for two intervals the
  // connection is dead even if the socket says open, so drop it and reconnect.
  #startHeartbeat(interval: number): void {
    this.#heardAt = Date.now();
    this.#heartbeat = setInterval(() => {
      const socket = this.#socket;
      if (!socket || socket.readyState !== 1) return;
      if (Date.now() - this.#heardAt > 2 * interval) return this.#drop(socket, CloseCode.heartbeatTimeout, "no pong");
      socket.send(PING);
    }, interval);
  }

  #setState(state: ConnectionState): void {
    if (state === this.#state) return;
    this.#state = state;
    this.#link.state(state);
  }
}

/** An attempt that ran out of time before it had a URL to connect to. */
class AttemptTimeout extends Error {}

function closeQuietly(socket: WebSocketLike, code: number, reason: string): void {
  try {
    socket.close(code, reason);
  } catch {
    // A code or reason this implementation refuses (browsers take only 1000 and 3000-4999).
    try {
      socket.close();
    } catch {
      // Already closed.
    }
  }
}
