// A room's messages and presence frames as Pusher events, and Pusher events as room messages
// (docs/pusher.md): the event a room message names, its payload as Pusher's wire carries it (a
// REST event's as it was sent, docs/protocol.md decision 58), member_added and member_removed.
import { messageHead, messageTail } from "./encode";
import type { Json, MessageFrame, PresenceFrame } from "./frames";
import { isPresenceChannel, record } from "./pusher";

/**
 * Pusher's event name and payload inside a room message's data (docs/protocol.md "Pusher").
 * `dataText` is that data's JSON text as stored: a payload that is no string goes as it is there,
 * which for a REST event is the text it was sent as (decision 58).
 */
export function pusherEventOf(data: Json, dataText?: string): { event: string; payload: string } {
  const fields = record(data);
  const event = fields?.event;
  if (typeof event === "string" && event !== "" && !event.startsWith("pusher:") && !event.startsWith("pusher_internal:")) {
    const payload = (fields!.data ?? null) as Json;
    return { event, payload: (typeof payload !== "string" && dataText !== undefined && storedPayload(dataText, fields!, event)) || wireText(payload) };
  }
  return { event: "message", payload: wireText(data) };
}

/** A REST event's room message data, `{event, data}`, around its payload's JSON text as sent. */
export function pusherEventText(event: string, payload: string): string {
  return `${eventHead(event)}${payload}}`;
}

function eventHead(event: string): string {
  return `{"event":${JSON.stringify(event)},"data":`;
}

/** The payload's text in `dataText`, where the data is `{event, data}` alone, as pusherEventText writes it. */
function storedPayload(dataText: string, fields: Record<string, unknown>, event: string): string | undefined {
  const keys = Object.keys(fields);
  const head = eventHead(event);
  if (keys.length !== 2 || keys[0] !== "event" || keys[1] !== "data" || !dataText.startsWith(head) || !dataText.endsWith("}")) return undefined;
  return dataText.slice(head.length, -1);
}

/**
 * An event's data as Pusher's wire text: JSON text, but a string that is not itself JSON text
 * goes as it is. pusher-js parses the wire text when it can, so its listeners get the value back
 * either way; a string such as "123" sent bare would reach them as the number 123.
 */
function wireText(value: Json): string {
  if (typeof value !== "string") return JSON.stringify(value);
  try {
    JSON.parse(value);
    return JSON.stringify(value);
  } catch {
    return value;
  }
}

/** A REST or Pusher-published event as a room message's data: the payload parsed when it is JSON. */
export function roomDataOf(event: string, payload: string): Json {
  let data: Json = payload;
  try {
    data = JSON.parse(payload) as Json;
  } catch {
    // not JSON: kept as the string pusher-js would hand its listeners
  }
  return { event, data };
}

/**
 * The Pusher frame for one of the relay's own frames (a room message or presence change), or
 * undefined when a Pusher client gets nothing for it. `info` is a joining member's user_info.
 */
export function toPusher(text: string, info?: unknown): string | undefined {
  const frame = JSON.parse(text) as MessageFrame | PresenceFrame | { type: string };
  if (frame.type === "message") {
    const { room, seq, from, data, id, ts } = frame as MessageFrame;
    // The data's text as stored, found by the frame's layout (messageText); not there, it is written anew.
    const head = messageHead(room, seq, from);
    const tail = messageTail(id, ts);
    const dataText = text.startsWith(head) && text.endsWith(tail) ? text.slice(head.length, text.length - tail.length) : undefined;
    const { event, payload } = pusherEventOf(data, dataText);
    return JSON.stringify({ event, channel: room, data: payload, seq });
  }
  if (frame.type === "presence" && "user" in frame && isPresenceChannel(frame.room)) {
    const { room, event, user } = frame as PresenceFrame;
    if (event === "join") {
      // A member without user_info (any socket but a Pusher one that gave some) arrives without it.
      const member = info === undefined || info === null ? { user_id: user } : { user_id: user, user_info: info };
      return JSON.stringify({ event: "pusher_internal:member_added", channel: room, data: JSON.stringify(member) });
    }
    return JSON.stringify({ event: "pusher_internal:member_removed", channel: room, data: JSON.stringify({ user_id: user }) });
  }
  return undefined;
}
