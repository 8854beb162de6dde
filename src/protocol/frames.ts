// The wire format: every frame shape, and the one decoder for frames sent by clients.
// Objects receive decoded frames only; the client library imports these same types.
import type { ErrorCode } from "./codes";
import { isValidName, NAME_RULE } from "./names";

export const PROTOCOL_VERSION = 1;

/** The literal text frames of the heartbeat, answered by the platform without waking objects. */
export const PING = "ping";
export const PONG = "pong";

/** Client ids (`"id"` on publish and direct) are opaque strings of this many characters at most. */
export const MAX_CLIENT_ID_LENGTH = 256;

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

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
}

export type ClientFrame = PublishFrame | DirectRequestFrame | AckRequestFrame;

// ---- relay to client ----

export interface PresenceEntry {
  user: string;
  connections: number;
}

export interface WelcomeFrame {
  type: "welcome";
  protocol: typeof PROTOCOL_VERSION;
  room?: string;
  user: string;
  connection: string;
  seq: number;
  epoch: string;
  presence?: PresenceEntry[];
  recovered?: boolean;
  heartbeat: { interval: number; timeout: number };
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

/** What an inbox answers for a direct message it stored. */
export interface Delivery {
  status: DeliveryStatus;
  seq: number;
}

/** What an inbox answers for a direct message it would not take. */
export interface Refusal {
  refused: "inbox_full";
  message: string;
}

export interface ErrorFrame {
  type: "error";
  code: ErrorCode;
  message: string;
  id?: string;
}

export type ServerFrame = WelcomeFrame | MessageFrame | PresenceFrame | DirectFrame | AckFrame | ErrorFrame;

/** Room info, as answered by `GET /rooms/:room`. */
export interface RoomInfo {
  room: string;
  seq: number;
  epoch: string;
  connections: number;
  presence: PresenceEntry[];
}

// ---- decoding ----

/** A frame the relay refuses: becomes an `error` frame, the connection stays open. */
export class FrameError extends Error {
  readonly code: ErrorCode;
  readonly id?: string;
  constructor(code: ErrorCode, message: string, id?: string) {
    super(message);
    this.name = "FrameError";
    this.code = code;
    this.id = id;
  }
}

export function ackFrame(id: string | undefined, status: DeliveryStatus, seq: number): AckFrame {
  return id === undefined ? { type: "ack", status, seq } : { type: "ack", id, status, seq };
}

export function errorFrame(code: ErrorCode, message: string, id?: string): ErrorFrame {
  return id === undefined ? { type: "error", code, message } : { type: "error", code, message, id };
}

/** UTF-8 length of `text`, counted without allocating. */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

/** Whether a frame's payload is over `maxBytes`, decided cheaply from its length where possible. */
export function isOversized(message: string | ArrayBuffer, maxBytes: number): boolean {
  if (typeof message !== "string") return message.byteLength > maxBytes;
  // A UTF-16 unit encodes to 1-3 UTF-8 bytes: only the middle band needs counting.
  if (message.length > maxBytes) return true;
  if (message.length * 3 <= maxBytes) return false;
  return utf8Length(message) > maxBytes;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function clientId(frame: Record<string, unknown>): string | undefined {
  const id = frame.id;
  if (id === undefined) return undefined;
  if (typeof id !== "string" || id.length === 0 || id.length > MAX_CLIENT_ID_LENGTH) {
    throw new FrameError("bad_frame", `"id" must be a string of 1-${MAX_CLIENT_ID_LENGTH} characters`);
  }
  return id;
}

function requireData(frame: Record<string, unknown>, id: string | undefined): Json {
  if (!("data" in frame)) throw new FrameError("bad_frame", `"${String(frame.type)}" needs a "data" field`, id);
  return frame.data as Json;
}

/**
 * Decodes one text frame from a client. Throws FrameError (`bad_json` or `bad_frame`) for
 * anything that is not a known frame; never throws anything else.
 */
export function decodeClientFrame(text: string): ClientFrame {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new FrameError("bad_json", "frame is not valid JSON");
  }
  if (!isRecord(parsed)) throw new FrameError("bad_frame", "frame must be a JSON object");
  const id = clientId(parsed);
  switch (parsed.type) {
    case "publish": {
      const data = requireData(parsed, id);
      const room = parsed.room;
      if (room !== undefined && !isValidName(room)) {
        throw new FrameError("bad_frame", `"room" must be a room id: ${NAME_RULE}`, id);
      }
      return { type: "publish", data, ...(id !== undefined && { id }), ...(room !== undefined && { room }) };
    }
    case "direct": {
      const data = requireData(parsed, id);
      if (!isValidName(parsed.to)) throw new FrameError("bad_frame", `"to" must be a user id: ${NAME_RULE}`, id);
      return { type: "direct", to: parsed.to, data, ...(id !== undefined && { id }) };
    }
    case "ack": {
      const seq = parsed.seq;
      if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0) {
        throw new FrameError("bad_frame", `"seq" must be a non-negative integer`, id);
      }
      return { type: "ack", seq };
    }
    case undefined:
      throw new FrameError("bad_frame", `frame needs a "type"`, id);
    default:
      throw new FrameError("bad_frame", `unknown frame type ${JSON.stringify(parsed.type)}`.slice(0, 200), id);
  }
}
