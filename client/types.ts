// The client's public types: options, events and the WebSocket it needs. Wire frames come from
// the relay's own protocol module, so client and relay cannot drift apart.
import type {
  AckFrame,
  DirectFrame,
  ErrorFrame,
  MessageFrame,
  PresenceCountFrame,
  PresenceFrame,
  SubscribedFrame,
  UnsubscribedFrame,
  WelcomeFrame,
} from "../src/protocol/frames";

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** The part of the WebSocket API the client uses: the browser's, Node 22's or the `ws` package's. */
export type WebSocketLike = {
  readonly readyState: number;
  binaryType: string;
  send(data: string | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
};

export type WebSocketFactory = new (url: string) => WebSocketLike;

export interface RelayClientOptions {
  /** The relay's base URL, `https://...` or `wss://...` (http and ws for local use). */
  url: string | URL;
  /** Join this room... */
  room?: string;
  /** ...or open this user's own inbox (direct messages, publishing into any allowed room). */
  inbox?: string;
  /** A token, or a function that returns a fresh one (or none) before every connection attempt. */
  token?: string | (() => string | undefined | Promise<string | undefined>);
  /** Anonymous relays only: the name to use (`?user=`). */
  user?: string;
  /** Reconnection delays: full jitter over an exponential ramp. `false` turns reconnection off. */
  reconnect?: { minDelayMs?: number; maxDelayMs?: number } | false;
  /** Frames kept while disconnected (default 100). When full, the oldest is dropped (`dropped` event). */
  maxQueue?: number;
  /** Ack each direct message after the `direct` listeners ran (default true). */
  autoAck?: boolean;
  /** A WebSocket implementation where there is no global one. */
  WebSocket?: WebSocketFactory;
}

export interface CloseInfo {
  code: number;
  reason: string;
  /** Whether the client will try again (false after close() or a terminal code). */
  willReconnect: boolean;
}

/** Why the relay refused the connection outright (HTTP status and its JSON error). */
export interface Refusal {
  status: number;
  error: string;
  message: string;
}

export interface RelayEvents {
  state: ConnectionState;
  /** The relay refused the connection (bad name, bad token, forbidden): the client stops. */
  refused: Refusal;
  welcome: WelcomeFrame;
  /** Resuming failed (`recovered: false`): messages were missed and are gone; reload state. */
  reset: WelcomeFrame;
  message: MessageFrame;
  presence: PresenceFrame | PresenceCountFrame;
  /** A user socket's subscription stands (after `{"type":"subscribe"}`). */
  subscribed: SubscribedFrame;
  unsubscribed: UnsubscribedFrame;
  direct: DirectFrame;
  ack: AckFrame;
  error: ErrorFrame;
  binary: ArrayBuffer;
  /** A queued frame dropped because the queue was full while disconnected. */
  dropped: string;
  close: CloseInfo;
}
