// The client's public types: options, events and the WebSocket it needs. Wire frames come from
// the relay's own protocol module, so client and relay cannot drift apart.
import type {
  AckFrame,
  DeliveryStatus,
  DirectFrame,
  ErrorFrame,
  Json,
  MessageFrame,
  PresenceCountFrame,
  PresenceFrame,
  ResumePoint,
  SubscribedFrame,
  UnsubscribedFrame,
  WelcomeFrame,
} from "../src/protocol/frames";
import type { RelayError } from "./errors";

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/**
 * The part of the WebSocket API the client uses: the browser's, Node 22's or the `ws` package's.
 * Handlers take `any` because each implementation types its events its own way (the client reads
 * `data` of a message, `code` and `reason` of a close), and stricter types would refuse some.
 */
export type WebSocketLike = {
  readonly readyState: number;
  binaryType: string;
  send(data: string | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  /** The `ws` package's: ends the connection without waiting for the peer's close frame. */
  terminate?(): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
};

export type WebSocketFactory = new (url: string) => WebSocketLike;

/** A token, or a function that returns a fresh one (or none). */
export type TokenOption = string | (() => string | undefined | Promise<string | undefined>);

/** Where each room was left, by room id: JSON, so an app can keep it across a page reload. */
export type ResumeState = Record<string, ResumePoint>;

export interface RelayClientOptions {
  /** The relay's base URL, `https://...` or `wss://...` (http and ws for local use). */
  url: string | URL;
  /** Join this room... */
  room?: string;
  /** ...or open this user's own socket: direct messages, publishing into any allowed room, subscriptions. */
  inbox?: string;
  /**
   * A token, or a function that returns a fresh one before every connection attempt. A function
   * is also called again shortly before the token's `exp`, and the client reconnects with the new
   * token, so the relay never has to close it with 4001.
   */
  token?: TokenOption;
  /** Anonymous relays only: the name to use (`?user=`). */
  user?: string;
  /** Room clients: resume from here on the first connection (the last seq the app saw)... */
  since?: number;
  /** ...in this epoch (optional; without it the relay skips the epoch check). */
  epoch?: string;
  /** Where rooms were left, as `resumeState` answered before (say, before a page reload). */
  resume?: ResumeState;
  /** Reconnection delays: full jitter over an exponential ramp. `false` turns reconnection off. */
  reconnect?: { minDelayMs?: number; maxDelayMs?: number } | false;
  /** Reconnection attempts in a row without a welcome before the client gives up (default: no limit). */
  maxRetries?: number;
  /** How long an attempt may take to get its welcome before it is dropped and retried (default 10 000). */
  connectTimeoutMs?: number;
  /** Frames kept waiting to be sent, while disconnected or for the pace (default 100). When full, the oldest is dropped (`dropped` event). */
  maxQueue?: number;
  /**
   * Frames a second the client sends at most (bursts of as many): publishes, directs, what
   * waited, sent after a (re)connect, and subscribes (all of them again after a reconnect); more
   * wait in the queue. Default 20, the relay's default RATE_LIMIT_PER_SECOND: a relay drops
   * frames past its limit and closes a socket that floods it (1008). Pings and acks are not paced.
   */
  pacedPerSecond?: number;
  /** Ack each direct message after the `direct` listeners ran (default true). */
  autoAck?: boolean;
  /** A WebSocket implementation where there is no global one. */
  WebSocket?: WebSocketFactory;
}

export interface CloseInfo {
  code: number;
  reason: string;
  /** Whether the client will try again (false after close(), a terminal code or `maxRetries`). */
  willReconnect: boolean;
  /**
   * What the relay answered when an attempt failed before its welcome: a refusal (400, 401, 403,
   * 404; the client stops) or a failure it retries (a 500 `bad_config`, say).
   */
  refusal?: Refusal;
}

/** Why the relay refused the connection outright (HTTP status and its JSON error). */
export interface Refusal {
  status: number;
  error: string;
  message: string;
}

/** A room message whose data has the app's own type. */
export type Message<T = Json> = Omit<MessageFrame, "data"> & { data: T };

/** A direct message whose data has the app's own type. */
export type Direct<D = Json> = Omit<DirectFrame, "data"> & { data: D };

/** What the relay answered for a direct message it took. */
export interface DirectReceipt {
  status: DeliveryStatus;
  seq: number;
}

/** A frame on its way: a promise of the relay's answer that also carries the frame's id. */
export type Sent<R> = Promise<R> & { readonly id: string };

/**
 * Who is in a room, as far as the relay tells: how many users always, and who they are while the
 * room is small enough for the relay to list them (PRESENCE_LIST_LIMIT).
 */
export interface PresenceState {
  room: string;
  users: number;
  /** User ids, sorted; absent once the room is too big to list (then only `users` is kept current). */
  members?: string[];
}

/**
 * What `publish` and `direct` take: the app's own type, or, for an untyped client, any value that
 * survives JSON (interfaces included, which TypeScript would not let through as `Json`).
 */
export type JsonSafe<P> = P extends Json
  ? P
  : P extends (...args: never[]) => unknown
    ? never
    : P extends readonly unknown[]
      ? { [I in keyof P]: JsonSafe<P[I]> }
      : P extends object
        ? { [K in keyof P]: JsonSafe<P[K]> }
        : never;

/** The data a client publishes: its own type, or, untyped, anything JSON can carry (see JsonSafe). */
export type DataOf<T> = Json extends T ? unknown : T;

export interface RelayEvents<T = Json, D = T> {
  state: ConnectionState;
  /** The relay refused the connection (bad name, bad token, forbidden): the client stops. */
  refused: Refusal;
  welcome: WelcomeFrame;
  /** Resuming failed (`recovered: false`): messages were missed and are gone; reload state. */
  reset: WelcomeFrame;
  message: Message<T>;
  presence: PresenceFrame | PresenceCountFrame;
  /** A room's presence state changed (a welcome, a subscription, a join, a leave or a count). */
  presenceChange: PresenceState;
  /** A subscription stands, or stands again after a reconnect (`recovered: false`: reload that room). */
  subscribed: SubscribedFrame;
  unsubscribed: UnsubscribedFrame;
  /** The relay refused a subscription (first or after a reconnect); it is dropped. */
  subscribeFailed: { room: string; error: RelayError };
  direct: Direct<D>;
  ack: AckFrame;
  error: ErrorFrame;
  binary: ArrayBuffer;
  /** A queued frame dropped because the queue was full while disconnected. */
  dropped: string;
  /** The token function threw (or rejected) with this: the attempt failed and will be retried. */
  tokenFailed: unknown;
  close: CloseInfo;
}
