// The Pusher Channels wire format (protocol 7), as pusher-js speaks it (docs/pusher.md); the
// relay's own frames translated to it are pusher-events.ts. A Pusher frame is
// `{"event", "channel"?, "data"}` where the relay's `data` is a JSON *string*, as Pusher sends it.
import type { ErrorCode } from "./codes";
import { dataProblem, FrameError, resumePoint } from "./decode";
import type { Json } from "./frames";
import { isValidRoom, ROOM_RULE } from "./names";

/** Pusher's close codes (4000-4099: do not reconnect; 4100-4199: back off; 4200-4299: reconnect now; 4300-4399: other). */
export const PusherClose = {
  appUnknown: 4001,
  badProtocolVersion: 4006,
  unsupportedProtocol: 4007,
  unauthorized: 4009,
  overCapacity: 4100,
  generic: 4200,
  pongNotReceived: 4201,
  rateLimited: 4301,
} as const;

/**
 * Why the relay refuses a `?protocol=` version, as Pusher answers: 4006 for one that is not a
 * number, 4007 for one it does not speak (it speaks 5 to 7; pusher-js sends 7; none given is
 * taken as 7); undefined when it speaks it.
 */
export function protocolRefusal(version: string | null): { code: number; message: string } | undefined {
  if (version === null || version === "5" || version === "6" || version === "7") return undefined;
  if (!/^\d+$/.test(version)) return { code: PusherClose.badProtocolVersion, message: `Invalid version string format: ${version.slice(0, 40)}` };
  return { code: PusherClose.unsupportedProtocol, message: `Unsupported protocol version ${version.slice(0, 40)}: this relay speaks 5 to 7` };
}

/** The relay's close codes as a Pusher client should hear them. */
export function pusherCloseCode(code: number): number {
  switch (code) {
    case 4000: // heartbeat timeout
      return PusherClose.pongNotReceived;
    case 1008: // rate limit
    case 1009: // too large, three times
      return PusherClose.rateLimited;
    case 1011:
      return PusherClose.generic;
    case 1013: // too slow: pusher-js backs off, then reconnects
      return PusherClose.overCapacity;
    default:
      return code;
  }
}

/** Pusher's numeric code for one of the relay's refusals, where Pusher has one. */
function pusherErrorCode(code: ErrorCode): number | null {
  switch (code) {
    case "forbidden":
      return PusherClose.unauthorized;
    case "rate_limited":
      return PusherClose.rateLimited;
    case "room_full":
      return PusherClose.overCapacity;
    default:
      return null;
  }
}

export type PusherClientFrame =
  | { event: "pusher:ping" }
  | { event: "pusher:pong" }
  | { event: "pusher:subscribe"; channel: string; auth?: string; channelData?: string; since?: number; epoch?: string }
  | { event: "pusher:unsubscribe"; channel: string }
  | { event: "pusher:signin"; auth: string; userData: string }
  | { event: `client-${string}`; channel: string; data: Json }
  | { event: "other"; name: string };

const CHANNEL_EVENT = /^client-/;

/** Pusher's longest event name, for client events as for REST events. */
export const MAX_EVENT_NAME = 200;

/** `value` as a plain object's fields, or undefined for anything else (arrays included). */
export function record(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function channelOf(fields: Record<string, unknown> | undefined): string {
  const channel = fields?.channel;
  if (!isValidRoom(channel) && !isUserChannel(channel)) throw new FrameError("bad_frame", `"channel" must be a channel name: ${ROOM_RULE}`);
  return channel;
}

/**
 * A signed-in user's own channel, `#server-to-user-<id>` (docs/pusher.md "User authentication"):
 * the room of that name, which no room route can name (`#` is in no room id).
 */
const USER_CHANNEL = "#server-to-user-";

/** Pusher user authentication's longest user id the relay takes. */
export const MAX_SIGNIN_ID = 128;
export const SIGNIN_ID_RULE = `1-${MAX_SIGNIN_ID} characters of A-Z a-z 0-9 _ . : - = @ , ; (not . or ..)`;

export function isValidSigninId(id: unknown): id is string {
  return isValidRoom(id) && id.length <= MAX_SIGNIN_ID;
}

export function userChannel(id: string): string {
  return USER_CHANNEL + id;
}

/** The user of a user's channel. */
export function userOfChannel(channel: string): string {
  return channel.slice(USER_CHANNEL.length);
}

/** The most users a signed-in user's watchlist may name (Pusher's limit). */
export const MAX_WATCHLIST = 100;

/** `#server-to-user-<id>` with a valid id: the one channel name outside the room id rule. */
export function isUserChannel(channel: unknown): channel is string {
  return typeof channel === "string" && channel.startsWith(USER_CHANNEL) && isValidSigninId(channel.slice(USER_CHANNEL.length));
}

type SubscriptionEvent = "pusher:subscribe" | "pusher:unsubscribe";

/**
 * A Pusher client's subscribe or unsubscribe frame, read before the frame is handled (its rate
 * limit, its refusal): the event and the channel it names, unchecked. Parsed only when the text
 * may be one.
 */
function subscription(text: string): { event: SubscriptionEvent; channel: unknown } | undefined {
  if (!text.includes('"pusher:subscribe"') && !text.includes('"pusher:unsubscribe"')) return undefined;
  try {
    const frame = record(JSON.parse(text));
    const event = frame?.event;
    return event === "pusher:subscribe" || event === "pusher:unsubscribe" ? { event, channel: record(frame!.data)?.channel } : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a Pusher client's frame is a subscribe or an unsubscribe. */
export function isPusherSubscription(text: string): boolean {
  return subscription(text) !== undefined;
}

/** The channel a `pusher:subscribe` frame names, if it is one and names a valid channel. */
export function subscribingTo(text: string): string | undefined {
  const frame = subscription(text);
  return frame?.event === "pusher:subscribe" && (isValidRoom(frame.channel) || isUserChannel(frame.channel)) ? frame.channel : undefined;
}

/** The channel a `pusher:unsubscribe` frame names, if it is one and names a string. */
export function unsubscribingFrom(text: string): string | undefined {
  const frame = subscription(text);
  return frame?.event === "pusher:unsubscribe" && typeof frame.channel === "string" ? frame.channel : undefined;
}

/** A refused `pusher:subscribe` that named its channel: pusher-js hears of it on that channel too. */
export class SubscribeRefused extends FrameError {
  readonly channel: string;
  constructor(refusal: FrameError, channel: string) {
    super(refusal.code, refusal.message);
    this.name = "SubscribeRefused";
    this.channel = channel;
  }
}

function subscribeFrame(fields: Record<string, unknown> | undefined): PusherClientFrame {
  try {
    const channel = channelOf(fields);
    // Checked as a user socket's subscribe checks them.
    const resume = resumePoint(fields ?? {});
    const optional = (name: string) => (typeof fields?.[name] === "string" ? (fields[name] as string) : undefined);
    const auth = optional("auth");
    const channelData = optional("channel_data");
    return {
      event: "pusher:subscribe",
      channel,
      ...(auth !== undefined && { auth }),
      ...(channelData !== undefined && { channelData }),
      ...resume,
    };
  } catch (error) {
    const named = fields?.channel;
    if (error instanceof FrameError && typeof named === "string" && named !== "") throw new SubscribeRefused(error, named);
    throw error;
  }
}

/** Decodes one text frame of a Pusher client; throws FrameError for anything malformed. */
export function decodePusherFrame(text: string): PusherClientFrame {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new FrameError("bad_json", "frame is not valid JSON");
  }
  const frame = record(parsed);
  if (!frame || typeof frame.event !== "string") throw new FrameError("bad_frame", `frame must be an object with an "event"`);
  // pusher-js sends `data` as an object; some clients send it as a JSON string.
  let data = frame.data;
  if (typeof data === "string" && frame.event.startsWith("pusher:")) {
    try {
      data = JSON.parse(data);
    } catch {
      // left as a string: the checks below refuse it where it matters
    }
  }
  const fields = record(data);
  switch (frame.event) {
    case "pusher:ping":
      return { event: "pusher:ping" };
    case "pusher:pong":
      return { event: "pusher:pong" };
    case "pusher:subscribe":
      return subscribeFrame(fields);
    case "pusher:unsubscribe":
      return { event: "pusher:unsubscribe", channel: channelOf(fields) };
    case "pusher:signin": {
      const { auth, user_data: userData } = fields ?? {};
      if (typeof auth !== "string" || typeof userData !== "string") throw new FrameError("bad_frame", `pusher:signin needs "auth" and "user_data" strings`);
      return { event: "pusher:signin", auth, userData };
    }
    default:
      if (CHANNEL_EVENT.test(frame.event)) {
        if (frame.event.length > MAX_EVENT_NAME) throw new FrameError("bad_frame", `event names are at most ${MAX_EVENT_NAME} characters`);
        const problem = dataProblem(frame.data);
        if (problem !== undefined) throw new FrameError("bad_frame", problem);
        return { event: frame.event as `client-${string}`, channel: channelOf(frame), data: (frame.data ?? null) as Json };
      }
      return { event: "other", name: frame.event.slice(0, 100) };
  }
}

// ---- relay to Pusher client ----

export function connectionEstablished(socketId: string, activityTimeoutSeconds: number): string {
  return JSON.stringify({
    event: "pusher:connection_established",
    data: JSON.stringify({ socket_id: socketId, activity_timeout: activityTimeoutSeconds }),
  });
}

/** Bytes as lower-case hex, as Pusher writes digests and signatures. */
export function hex(bytes: ArrayBuffer): string {
  return [...new Uint8Array(bytes)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** HMAC-SHA256(secret, text) in hex: Pusher's REST request and webhook signatures. */
export async function pusherSignature(secret: string, text: string): Promise<string> {
  const encoder = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return hex(await crypto.subtle.sign("HMAC", key, encoder.encode(text)));
}

export const PUSHER_PONG = JSON.stringify({ event: "pusher:pong", data: "{}" });

export function signinSuccess(userData: string): string {
  return JSON.stringify({ event: "pusher:signin_success", data: JSON.stringify({ user_data: userData }) });
}

/** The relay asking a quiet Pusher client whether it is still there. */
export const PUSHER_PING = JSON.stringify({ event: "pusher:ping", data: "{}" });

export function pusherError(code: ErrorCode | number | null, message: string): string {
  const numeric = typeof code === "string" ? pusherErrorCode(code) : code;
  return JSON.stringify({ event: "pusher:error", data: { code: numeric, message } });
}

/** A channel's subscription refused: pusher-js emits it on the channel as `pusher:subscription_error`. */
export function subscriptionError(channel: string, status: number, message: string): string {
  return JSON.stringify({ event: "pusher:subscription_error", channel, data: { type: "AuthError", error: message, status } });
}

export interface Member {
  user: string;
  /** Its user_info as JSON text, if it gave one. */
  info?: string;
}

/**
 * `pusher_internal:subscription_succeeded`, with the room's seq and epoch (pusher-js ignores
 * them). On presence channels, the members listed and how many there are in all.
 */
export function subscriptionSucceeded(channel: string, seq: number, epoch: string, members?: Member[], count?: number, recovered?: boolean): string {
  const data = members === undefined ? "{}" : `{"presence":${presenceData(members, count ?? members.length)}}`;
  const resumed = recovered === undefined ? {} : { recovered };
  return JSON.stringify({ event: "pusher_internal:subscription_succeeded", channel, data, seq, epoch, ...resumed });
}

/** `{ids, hash, count}` of a presence channel's members, their user_info spliced in as the JSON text it is stored as. */
function presenceData(members: Member[], count: number): string {
  const hash = members.map(({ user, info }) => `${JSON.stringify(user)}:${info ?? "null"}`).join(",");
  return `{"ids":${JSON.stringify(members.map((member) => member.user))},"hash":{${hash}},"count":${count}}`;
}

/** Pusher's watchlist events: users of a signed-in user's watchlist came online or went offline. */
export function watchlistEvents(name: "online" | "offline", userIds: string[]): string {
  return JSON.stringify({ event: "pusher_internal:watchlist_events", data: JSON.stringify({ events: [{ name, user_ids: userIds }] }) });
}

/** subscription_succeeded for the user's channel a signed-in socket holds already (no seq or epoch). */
export function stillSubscribed(channel: string): string {
  return JSON.stringify({ event: "pusher_internal:subscription_succeeded", channel, data: "{}" });
}

/** A client event, as the channel's other Pusher subscribers receive it. */
export function clientEvent(channel: string, event: string, data: Json, userId?: string): string {
  return JSON.stringify({ event, channel, data: typeof data === "string" ? data : JSON.stringify(data), ...(userId !== undefined && { user_id: userId }) });
}

export function isPrivateChannel(channel: string): boolean {
  return channel.startsWith("private-") || channel.startsWith("presence-");
}

/** End-to-end encrypted: the relay carries ciphertext it cannot read (docs/pusher.md). */
export function isEncryptedChannel(channel: string): boolean {
  return channel.startsWith("private-encrypted-");
}

export function isPresenceChannel(channel: string): boolean {
  return channel.startsWith("presence-");
}

/** Pusher's cache channels: a subscriber first gets the channel's last event, or `pusher:cache_miss`. */
export function isCacheChannel(channel: string): boolean {
  return /^(?:private-encrypted-|private-|presence-)?cache-/.test(channel);
}

/** How old a cache channel's last event may be and still be sent to a new subscriber (Pusher's 30 minutes). */
export const CACHE_TTL_MS = 30 * 60_000;

/** Pusher's subscription counting: a channel's number of subscriptions, as pusher-js reads it. */
export function subscriptionCountEvent(channel: string, count: number): string {
  return JSON.stringify({ event: "pusher_internal:subscription_count", channel, data: JSON.stringify({ subscription_count: count }) });
}

export function cacheMiss(channel: string): string {
  return JSON.stringify({ event: "pusher:cache_miss", channel });
}
