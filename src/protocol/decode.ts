// The one decoder for frames sent by clients, and the size checks made before it runs.
import type { ErrorCode } from "./codes";
import { MAX_CLIENT_ID_LENGTH, MAX_DATA_DEPTH, type ClientFrame, type Json } from "./frames";
import { isValidName, isValidRoom, NAME_RULE, ROOM_RULE } from "./names";

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

type Fields = Record<string, unknown>;

function isRecord(value: unknown): value is Fields {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function clientId(frame: Fields): string | undefined {
  const id = frame.id;
  if (id === undefined) return undefined;
  if (typeof id !== "string" || id.length === 0 || id.length > MAX_CLIENT_ID_LENGTH) {
    throw new FrameError("bad_frame", `"id" must be a string of 1-${MAX_CLIENT_ID_LENGTH} characters`);
  }
  return id;
}

function requireData(frame: Fields, id: string | undefined): Json {
  if (!("data" in frame)) throw new FrameError("bad_frame", `"${String(frame.type)}" needs a "data" field`, id);
  const problem = dataProblem(frame.data);
  if (problem !== undefined) throw new FrameError("bad_frame", problem, id);
  return frame.data as Json;
}

/** The `id` of a client frame, if it is JSON text that has one; never throws. */
export function frameId(message: string | ArrayBuffer): string | undefined {
  if (typeof message !== "string") return undefined;
  try {
    const id = (JSON.parse(message) as { id?: unknown } | null)?.id;
    return typeof id === "string" && id.length <= MAX_CLIENT_ID_LENGTH ? id : undefined;
  } catch {
    return undefined;
  }
}

export const TOO_DEEP = `"data" may nest at most ${MAX_DATA_DEPTH} levels of arrays and objects`;
export const NOT_FINITE = `"data" may hold only numbers a double can carry (one like 1e400 would reach everyone as null)`;

/**
 * Why `value` cannot be relayed as it came, if it cannot: it nests more than `levels` levels of
 * arrays and objects, or holds a number JSON.parse made infinite, which JSON can only write as
 * null. Integers past 2^53 lose precision as in any JavaScript JSON (docs/protocol.md).
 */
export function dataProblem(value: unknown, levels = MAX_DATA_DEPTH): string | undefined {
  if (typeof value === "number") return Number.isFinite(value) ? undefined : NOT_FINITE;
  if (typeof value !== "object" || value === null) return undefined;
  if (levels === 0) return TOO_DEEP;
  for (const item of Array.isArray(value) ? (value as unknown[]) : Object.values(value)) {
    const problem = dataProblem(item, levels - 1);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

/** A seq a client names: past 2^53 - 1 it reads as 2^53 - 1, above every seq, as on a URL. */
function seqField(value: unknown, name: string, id: string | undefined): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
    throw new FrameError("bad_frame", `"${name}" must be a non-negative integer`, id);
  }
  return Math.min(value, Number.MAX_SAFE_INTEGER);
}

function roomField(frame: Fields, id: string | undefined): string {
  if (!isValidRoom(frame.room)) throw new FrameError("bad_frame", `"room" must be a room id: ${ROOM_RULE}`, id);
  return frame.room;
}

/** `since` and `epoch` of a subscribe (the relay's or Pusher's), each optional. */
export function resumePoint(frame: Fields, id?: string): { since?: number; epoch?: string } {
  const point: { since?: number; epoch?: string } = {};
  if (frame.since !== undefined) point.since = seqField(frame.since, "since", id);
  if (frame.epoch !== undefined) {
    if (typeof frame.epoch !== "string" || frame.epoch.length > MAX_CLIENT_ID_LENGTH) {
      throw new FrameError("bad_frame", `"epoch" must be the string a welcome or subscribed frame gave`, id);
    }
    point.epoch = frame.epoch;
  }
  return point;
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
  const withId = id === undefined ? {} : { id };
  switch (parsed.type) {
    case "publish": {
      const data = requireData(parsed, id);
      const room = parsed.room === undefined ? undefined : roomField(parsed, id);
      return { type: "publish", data, ...withId, ...(room !== undefined && { room }) };
    }
    case "direct": {
      const data = requireData(parsed, id);
      if (!isValidName(parsed.to)) throw new FrameError("bad_frame", `"to" must be a user id: ${NAME_RULE}`, id);
      return { type: "direct", to: parsed.to, data, ...withId };
    }
    case "ack":
      return { type: "ack", seq: seqField(parsed.seq, "seq", id), ...withId };
    case "subscribe":
      return { type: "subscribe", room: roomField(parsed, id), ...resumePoint(parsed, id), ...withId };
    case "unsubscribe":
      return { type: "unsubscribe", room: roomField(parsed, id), ...withId };
    case undefined:
      throw new FrameError("bad_frame", `frame needs a "type"`, id);
    default:
      throw new FrameError("bad_frame", `unknown frame type ${JSON.stringify(parsed.type)}`.slice(0, 200), id);
  }
}
