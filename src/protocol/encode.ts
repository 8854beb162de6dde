// Everything the relay sends, built here and nowhere else: frames, SSE events and the bodies of
// HTTP answers that carry stored frames. Optional fields are left out, never sent as null.
import type { ErrorCode } from "./codes";
import type {
  AckFrame,
  DeliveryStatus,
  DirectFrame,
  ErrorFrame,
  Json,
  PresenceCountFrame,
  PresenceFrame,
  StreamWelcome,
  SubscribedFrame,
  UnsubscribedFrame,
  WelcomeFrame,
} from "./frames";
import { PROTOCOL_VERSION } from "./frames";

function withId<T extends object>(frame: T, id: string | undefined): T & { id?: string } {
  return id === undefined ? frame : { ...frame, id };
}

export function welcomeFrame(fields: Omit<WelcomeFrame, "type" | "protocol">): WelcomeFrame {
  return { type: "welcome", protocol: PROTOCOL_VERSION, ...fields };
}

export function ackFrame(id: string | undefined, status: DeliveryStatus, seq: number): AckFrame {
  return withId({ type: "ack", status, seq } as AckFrame, id);
}

export function errorFrame(code: ErrorCode, message: string, id?: string): ErrorFrame {
  return withId({ type: "error", code, message } as ErrorFrame, id);
}

/**
 * A message frame's text around its data's JSON text, which goes in as it is: a Pusher REST
 * event's payload keeps the text it was sent as (docs/protocol.md decision 58). The same text
 * JSON.stringify makes of a MessageFrame, fields in this order; toPusher finds the data by it.
 */
export function messageText(room: string, seq: number, from: string, dataText: string, id: string | undefined, ts: number): string {
  return `${messageHead(room, seq, from)}${dataText}${messageTail(id, ts)}`;
}

/** What comes before a message frame's data in its text. */
export function messageHead(room: string, seq: number, from: string): string {
  return `{"type":"message","room":${JSON.stringify(room)},"seq":${seq},"from":${JSON.stringify(from)},"data":`;
}

/** What comes after a message frame's data in its text. */
export function messageTail(id: string | undefined, ts: number): string {
  return `,"ts":${ts}${id === undefined ? "" : `,"id":${JSON.stringify(id)}`}}`;
}

export function directFrame(seq: number, from: string, data: Json, id: string | undefined, ts: number): DirectFrame {
  return withId({ type: "direct", seq, from, data, ts } as DirectFrame, id);
}

export function presenceFrame(room: string, event: "join" | "leave", user: string): PresenceFrame {
  return { type: "presence", room, event, user };
}

export function presenceCountFrame(room: string, users: number): PresenceCountFrame {
  return { type: "presence", room, event: "count", users };
}

export function subscribedFrame(fields: Omit<SubscribedFrame, "type" | "id">, id?: string): SubscribedFrame {
  return withId({ type: "subscribed", ...fields } as SubscribedFrame, id);
}

export function unsubscribedFrame(room: string, id?: string): UnsubscribedFrame {
  return withId({ type: "unsubscribed", room } as UnsubscribedFrame, id);
}

/** The first event of a stream: where the room is, and whether a resume found everything. */
export function streamWelcome(seq: number, epoch: string, recovered?: boolean): StreamWelcome {
  return recovered === undefined ? { seq, epoch } : { seq, epoch, recovered };
}

/**
 * One Server-Sent Event; `data` is JSON, one `data:` line for each of its lines (a Pusher REST
 * event's payload keeps its line breaks, decision 58), which a reader joins with line feeds.
 */
export function sseEvent(event: string, data: string, id?: number): string {
  return `${id === undefined ? "" : `id: ${id}\n`}event: ${event}\ndata: ${data.replace(/\r\n?|\n/g, "\ndata: ")}\n\n`;
}

/** The keep-alive comment of an event stream. */
export const SSE_KEEP_ALIVE = ": ping\n\n";

/**
 * `GET /rooms/:room/messages`'s body, `{"messages":[...]}`, in pieces of about `chars` characters
 * for a stream (a frame is never split): stored frames are already JSON text, so they are joined,
 * not re-encoded.
 */
export function historyPieces(frames: string[], chars = 1024 * 1024): string[] {
  const pieces: string[] = [];
  let piece = `{"messages":[`;
  frames.forEach((frame, i) => {
    if (piece.length > 0 && piece.length + frame.length > chars) {
      pieces.push(piece);
      piece = "";
    }
    piece += i === 0 ? frame : `,${frame}`;
  });
  pieces.push(`${piece}]}`);
  return pieces;
}

/** Every refusal over HTTP: a stable code and a message for people. */
export function errorBody(code: string, message: string): { error: string; message: string } {
  return { error: code, message };
}

/** `POST /rooms/:room/messages`: the stored message's seq. */
export function publishedBody(seq: number): { seq: number } {
  return { seq };
}

/** `GET /healthz`. */
export const HEALTHY = { ok: true } as const;
