// Every shape on the wire: frames both ways, HTTP bodies and what objects tell each other about
// them. Types only; decode.ts reads client frames and encode.ts builds everything the relay sends.
// The client library imports these same types, so client and relay cannot drift.
import type { ErrorCode } from "./codes";

export const PROTOCOL_VERSION = 1;

/** The literal text frames of the heartbeat, answered by the platform without waking objects. */
export const PING = "ping";
export const PONG = "pong";

/** Client ids (`"id"` on publish and direct) are opaque strings of this many characters at most. */
export const MAX_CLIENT_ID_LENGTH = 256;

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * How many levels of arrays and objects a payload may nest. Objects pass payloads to each other
 * by RPC, whose serializer gave up near 2,400 levels of objects locally (docs/protocol.md
 * decision 47): the limit keeps well clear of it.
 */
export const MAX_DATA_DEPTH = 1000;

// ---- client to relay ----

export interface PublishFrame {
  type: "publish";
  data: Json;
  id?: string;
  /** Target room; required on user sockets, optional (and must match) on room sockets. */
  room?: string;
}

export interface DirectRequestFrame {
  type: "direct";
  to: string;
  data: Json;
  id?: string;
}

export interface AckRequestFrame {
  type: "ack";
  seq: number;
  /** Not answered on success; kept so that an error about this frame carries it. */
  id?: string;
}

/** Where a client resumes: the last seq it saw, and the epoch it saw it in (optional). */
export interface ResumePoint {
  since?: number;
  epoch?: string;
}

export interface SubscribeFrame extends ResumePoint {
  type: "subscribe";
  room: string;
  id?: string;
}

export interface UnsubscribeFrame {
  type: "unsubscribe";
  room: string;
  id?: string;
}

export type ClientFrame = PublishFrame | DirectRequestFrame | AckRequestFrame | SubscribeFrame | UnsubscribeFrame;

// ---- relay to client ----

export interface PresenceEntry {
  user: string;
  connections: number;
}

export interface Heartbeat {
  interval: number;
  timeout: number;
}

export interface WelcomeFrame {
  type: "welcome";
  protocol: typeof PROTOCOL_VERSION;
  room?: string;
  user: string;
  connection: string;
  seq: number;
  epoch: string;
  users?: number;
  presence?: PresenceEntry[];
  recovered?: boolean;
  heartbeat: Heartbeat;
}

/** A Room's answer to a publish whose stored frame would not fit a storage row (docs/protocol.md decision 59). */
export interface TooLarge {
  refused: "too_large";
  message: string;
}

export interface MessageFrame {
  type: "message";
  room: string;
  seq: number;
  from: string;
  data: Json;
  id?: string;
  ts: number;
}

export interface PresenceFrame {
  type: "presence";
  room: string;
  event: "join" | "leave";
  user: string;
}

/** Above PRESENCE_LIST_LIMIT users, the room tells how many instead of who. */
export interface PresenceCountFrame {
  type: "presence";
  room: string;
  event: "count";
  users: number;
}

export interface DirectFrame {
  type: "direct";
  seq: number;
  from: string;
  data: Json;
  id?: string;
  ts: number;
}

export type DeliveryStatus = "delivered" | "queued";

export interface AckFrame {
  type: "ack";
  /** The acknowledged frame's client id; absent when it carried none. */
  id?: string;
  status: DeliveryStatus;
  seq?: number;
}

export interface SubscribedFrame {
  type: "subscribed";
  room: string;
  seq: number;
  epoch: string;
  users: number;
  presence?: PresenceEntry[];
  recovered?: boolean;
  id?: string;
}

export interface UnsubscribedFrame {
  type: "unsubscribed";
  room: string;
  id?: string;
}

export interface ErrorFrame {
  type: "error";
  code: ErrorCode;
  message: string;
  id?: string;
}

export type ServerFrame =
  | WelcomeFrame
  | MessageFrame
  | PresenceFrame
  | PresenceCountFrame
  | DirectFrame
  | AckFrame
  | SubscribedFrame
  | UnsubscribedFrame
  | ErrorFrame;

// ---- HTTP bodies ----

/** Room info, as answered by `GET /rooms/:room`. */
export interface RoomInfo {
  room: string;
  seq: number;
  epoch: string;
  connections: number;
  users: number;
  /** Present while `users` is at most PRESENCE_LIST_LIMIT. */
  presence?: PresenceEntry[];
  /** How many objects hold the room's sockets now (for operators). */
  objects: number;
}

/** One page of `GET /rooms/:room/presence`. */
export interface PresencePage {
  presence: PresenceEntry[];
  next?: string;
}

/** The welcome event of a Server-Sent Events stream. */
export interface StreamWelcome {
  seq: number;
  epoch: string;
  recovered?: boolean;
}

/** What an inbox answers for a direct message it stored. */
export interface Delivery {
  status: DeliveryStatus;
  seq: number;
}

/** What an inbox answers for a direct message it would not take, or could not store. */
export interface Refusal {
  refused: "inbox_full" | "internal" | "too_large";
  message: string;
}
