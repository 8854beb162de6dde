// Everything the relay sends, built here and nowhere else: frames, SSE events and the bodies of
// HTTP answers that carry stored frames. Optional fields are left out, never sent as null.
import type { ErrorCode } from "./codes";
import type {
  AckFrame,
  DeliveryStatus,
  DirectFrame,
  ErrorFrame,
  Json,
  MessageFrame,
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

export function messageFrame(room: string, seq: number, from: string, data: Json, id: string | undefined, ts: number): MessageFrame {
  return withId({ type: "message", room, seq, from, data, ts } as MessageFrame, id);
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

/** One Server-Sent Event; `data` is one line of JSON. */
export function sseEvent(event: string, data: string, id?: number): string {
  return `${id === undefined ? "" : `id: ${id}\n`}event: ${event}\ndata: ${data}\n\n`;
}

/** The keep-alive comment of an event stream. */
export const SSE_KEEP_ALIVE = ": ping\n\n";

/** `GET /rooms/:room/messages`: stored frames are already JSON text, so they are joined, not re-encoded. */
export function historyBody(frames: string[]): string {
  return `{"messages":[${frames.join(",")}]}`;
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
