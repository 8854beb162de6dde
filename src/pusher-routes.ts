// Pusher Channels compatibility in the Worker (docs/pusher.md): the protocol 7 WebSocket at
// `/app/:key`, and the signed REST API under `/apps/:app_id/`. Both are off (404) until
// PUSHER_APP_ID, PUSHER_APP_KEY and the secret PUSHER_APP_SECRET are all set.
import { Hono, type Context } from "hono";
import { checkOrigin } from "./auth";
import { configOf, type Config } from "./config";
import { HttpError } from "./http-error";
import { openOnHubs, pusherPlacement } from "./objects/connect";
import { againIfReset } from "./objects/reset";
import { readBody, requireUpgrade } from "./request";
import {
  closeReason,
  dataProblem,
  hex,
  isPresenceChannel,
  isUserChannel,
  isValidSigninId,
  isValidRoom,
  MAX_DATA_DEPTH,
  MAX_EVENT_NAME,
  NOT_FINITE,
  protocolRefusal,
  pusherError,
  PusherClose,
  pusherSignature,
  roomDataOf,
  ROOM_RULE,
  SIGNIN_ID_RULE,
  type Json,
  type PresenceEntry,
  userChannel,
  type TooLarge,
} from "./protocol";

type PusherApp = { Bindings: Env; Variables: { config: Config; url: URL } };
type PusherContext = Context<PusherApp>;

export const pusher = new Hono<PusherApp>();

function appOf(c: PusherContext): NonNullable<Config["pusher"]> {
  return pusherApp(c.get("config"));
}

function pusherApp(config: Config): NonNullable<Config["pusher"]> {
  const app = config.pusher;
  if (!app) {
    throw new HttpError(404, "not_found", "Pusher compatibility is off: set PUSHER_APP_ID, PUSHER_APP_KEY and the secret PUSHER_APP_SECRET");
  }
  return app;
}

// ---- the WebSocket ----

// Upgrades skip the app (src/sockets.ts); a plain GET gets here, and 426 once vetted.
pusher.get("/app/:key", (c) => pusherSocket(c.req.raw, c.env, c.req.param("key")));

export async function pusherSocket(request: Request, env: Env, key: string): Promise<Response> {
  const config = configOf(env);
  const app = pusherApp(config);
  checkOrigin(request, config);
  requireUpgrade(request);
  // Pusher tells a client with an unknown key over the socket, then closes it 4001: pusher-js
  // then stops instead of retrying.
  if (key !== app.key) return refuseSocket(PusherClose.appUnknown, `App key ${key} not in this cluster`);
  const refusal = protocolRefusal(new URL(request.url).searchParams.get("protocol"));
  if (refusal) return refuseSocket(refusal.code, refusal.message);
  const { hub, socketId } = pusherPlacement();
  const opened = await openOnHubs(env.HOLDERS, hub, { user: `pusher-${socketId}`, pusher: socketId });
  return opened ?? refuseSocket(PusherClose.overCapacity, "over capacity; try again later");
}

/** Accepts a socket only to tell it why it may not stay, as Pusher does. */
function refuseSocket(code: number, message: string): Response {
  const { 0: client, 1: server } = new WebSocketPair();
  server.accept();
  server.send(pusherError(code, message));
  server.close(code, closeReason(message));
  return new Response(null, { status: 101, webSocket: client });
}

// ---- the REST API ----

const encoder = new TextEncoder();

/** The most channels one event may go to, and events one batch may carry, as Pusher allows. */
const MAX_CHANNELS = 100;
const MAX_BATCH = 10;

const NO_BODY = { bytes: new Uint8Array(0), text: "" };

/**
 * The largest REST body: a full batch whose event data is JSON-escaped (twice its size is
 * plenty for text) beside its channel lists. Each event's data is held to MAX_MESSAGE_BYTES
 * after parsing; this bound only keeps a body from being read without end.
 */
function pusherBodyLimit(config: Config): number {
  return MAX_BATCH * (2 * config.maxMessageBytes + MAX_CHANNELS * 200);
}

/** How far `auth_timestamp` may be from now, as Pusher allows. */
const MAX_CLOCK_SKEW_S = 600;

/**
 * Pusher's request signature: HMAC-SHA256(secret, "METHOD\npath\nquery") in hex, where query is
 * every parameter but auth_signature, keys lower-cased, sorted, as `key=value` joined with `&`.
 * Answers the body, read once, for the handler.
 */
async function verified(c: PusherContext): Promise<string> {
  const app = appOf(c);
  if (c.req.param("app_id") !== app.appId) throw new HttpError(404, "not_found", `unknown app ${c.req.param("app_id")}`);
  const url = c.get("url");
  const params = [...url.searchParams].map(([key, value]) => [key.toLowerCase(), value] as const);
  const given = Object.fromEntries(params);
  if (given.auth_key !== app.key) throw new HttpError(401, "unauthorized", "auth_key is missing or is not this app's key");
  if (given.auth_version !== "1.0") throw new HttpError(401, "unauthorized", "auth_version must be 1.0");
  const timestamp = Number(given.auth_timestamp);
  if (!Number.isFinite(timestamp) || Math.abs(Date.now() / 1000 - timestamp) > MAX_CLOCK_SKEW_S) {
    throw new HttpError(401, "unauthorized", `auth_timestamp must be within ${MAX_CLOCK_SKEW_S} s of the server's clock`);
  }
  // The signature covers the body (body_md5), so the body is read before it is checked, and
  // only up to the limit: the checks above need no secret (the app key is public).
  const post = c.req.method === "POST";
  const { bytes, text: body } = post ? await readBody(c.req.raw, pusherBodyLimit(c.get("config")), { drain: false }) : NO_BODY;
  if (bytes.length > 0 && given.body_md5 !== hex(await crypto.subtle.digest("MD5", bytes))) {
    throw new HttpError(401, "unauthorized", "body_md5 does not match the body");
  }
  const query = params
    .filter(([key]) => key !== "auth_signature")
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, value]) => `${key}=${value}`)
    .join("&");
  const signed = `${c.req.method}\n${url.pathname}\n${query}`;
  const expected = await pusherSignature(app.secret, signed);
  const signature = typeof given.auth_signature === "string" ? given.auth_signature.toLowerCase() : "";
  const same = signature.length === expected.length && crypto.subtle.timingSafeEqual(encoder.encode(signature), encoder.encode(expected));
  if (!same) throw new HttpError(401, "unauthorized", `invalid signature: expected HMAC-SHA256 hex of ${JSON.stringify(signed)}`);
  return body;
}

interface PusherEvent {
  name: string;
  /** The room message's data: `{event, data}` (roomDataOf). */
  data: Json;
  /** The data as sent, where it is JSON text of something other than a string: stored as it is (decision 58). */
  payload?: string;
  channels: string[];
  socketId?: string;
  /** The channel attributes the answer is to carry (`info`): user_count, subscription_count. */
  info?: Set<ChannelAttribute>;
}

type ChannelAttribute = "user_count" | "subscription_count";
const CHANNEL_ATTRIBUTES: readonly string[] = ["user_count", "subscription_count"] satisfies ChannelAttribute[];

/** A channel's attributes as `info` asks for them; user_count only on presence channels, as Pusher gives it. */
type ChannelAttributes = Partial<Record<ChannelAttribute, number>>;

/** The attributes `info` asks for, from the channel's room's counts (trigger, `GET channels`, `GET channels/:channel`). */
function countsOf(channel: string, info: ReadonlySet<string>, room: { users: number; connections: number }): ChannelAttributes {
  return {
    ...(info.has("user_count") && isPresenceChannel(channel) && { user_count: room.users }),
    ...(info.has("subscription_count") && { subscription_count: room.connections }),
  };
}

function parseBody(body: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new HttpError(400, "bad_request", "body is not valid JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new HttpError(400, "bad_request", "body must be a JSON object");
  return parsed as Record<string, unknown>;
}

function eventOf(fields: Record<string, unknown>, maxBytes: number): PusherEvent {
  const { name, data, socket_id: socketId, info } = fields;
  if (typeof name !== "string" || name === "" || name.length > MAX_EVENT_NAME) {
    throw new HttpError(400, "bad_request", `"name" must be an event name of 1-${MAX_EVENT_NAME} characters`);
  }
  // Pusher's events carry their data as a string; other JSON is taken as its text, no data at all is refused.
  if (data === undefined) throw new HttpError(400, "bad_request", `an event needs "data" (a string)`);
  const text = typeof data === "string" ? data : JSON.stringify(data);
  if (encoder.encode(text).length > maxBytes) throw new HttpError(413, "too_large", `event data is limited to ${maxBytes} bytes`);
  if (fields.channels !== undefined && fields.channel !== undefined) throw new HttpError(400, "bad_request", `give "channel" or "channels", not both`);
  const named = Array.isArray(fields.channels) ? fields.channels : fields.channel !== undefined ? [fields.channel] : [];
  // A channel named twice still gets the event once.
  const channels = [...new Set(named)];
  if (channels.length === 0 || channels.length > MAX_CHANNELS) throw new HttpError(400, "bad_request", `an event goes to 1-${MAX_CHANNELS} channels`);
  for (const channel of channels) {
    // sendToUser triggers on `#server-to-user-<id>`, the signed-in user's own channel.
    if (typeof channel === "string" && channel.startsWith("#") && !isUserChannel(channel)) {
      throw new HttpError(400, "bad_request", `a user's channel is #server-to-user- and a user id of ${SIGNIN_ID_RULE}`);
    }
    if (!isValidRoom(channel) && !isUserChannel(channel)) throw new HttpError(400, "bad_request", `channel names are ${ROOM_RULE}`);
  }
  if (socketId !== undefined && (typeof socketId !== "string" || !/^\d+\.\d+$/.test(socketId))) {
    throw new HttpError(400, "bad_request", `"socket_id" must look like 123.456`);
  }
  let roomData = roomDataOf(name, text);
  // The payload sits one level inside `{event, data}`. One whose JSON holds a number too large for
  // a double would be written back as null: it stays the string it came as.
  const problem = dataProblem(roomData, MAX_DATA_DEPTH + 1);
  if (problem === NOT_FINITE) roomData = { event: name, data: text };
  else if (problem !== undefined) throw new HttpError(400, "bad_request", problem);
  const verbatim = typeof (roomData as { data: Json }).data !== "string";
  return {
    name,
    data: roomData,
    ...(verbatim && { payload: text }),
    channels: channels as string[],
    ...(socketId !== undefined && { socketId: socketId as string }),
    ...(info !== undefined && { info: attributesOf(info) }),
  };
}

/** A trigger's `info`: a comma-separated list of channel attributes. */
function attributesOf(info: unknown): Set<ChannelAttribute> {
  const asked = typeof info === "string" ? info.split(",").map((item) => item.trim()).filter((item) => item !== "") : [];
  if (typeof info !== "string" || asked.some((item) => !CHANNEL_ATTRIBUTES.includes(item))) {
    throw new HttpError(400, "bad_request", `"info" is a comma-separated list of ${CHANNEL_ATTRIBUTES.join(", ")}`);
  }
  return new Set(asked as ChannelAttribute[]);
}

/**
 * An event is a room message in every channel it names (docs/protocol.md "Pusher"). With `info`,
 * answers each channel's attributes as they are once the event is stored there.
 */
async function trigger(c: PusherContext, event: PusherEvent): Promise<Record<string, ChannelAttributes>> {
  const attributes = await Promise.all(
    event.channels.map(async (channel): Promise<[string, ChannelAttributes]> => {
      const answer = await againIfReset(() => c.env.ROOMS.getByName(channel).publish("server", event.data, undefined, event.socketId, event.payload) as Promise<number | TooLarge>);
      if (typeof answer !== "number") throw new HttpError(413, answer.refused, answer.message);
      if (event.info === undefined) return [channel, {}];
      return [channel, countsOf(channel, event.info, await againIfReset(() => c.env.ROOMS.getByName(channel).info()))];
    }),
  );
  // From entries: a channel named `__proto__` is a key like any other.
  return Object.fromEntries(attributes);
}

// Pusher answers `{}`, or with `info` each channel's attributes.
pusher.post("/apps/:app_id/events", async (c) => {
  const event = eventOf(parseBody(await verified(c)), c.get("config").maxMessageBytes);
  const channels = await trigger(c, event);
  return c.json(event.info === undefined ? {} : { channels });
});

pusher.post("/apps/:app_id/batch_events", async (c) => {
  const { batch } = parseBody(await verified(c));
  if (!Array.isArray(batch) || batch.length === 0 || batch.length > MAX_BATCH) {
    throw new HttpError(400, "bad_request", `"batch" must hold 1-${MAX_BATCH} events`);
  }
  const events = batch.map((fields) => eventOf(typeof fields === "object" && fields !== null ? fields : {}, c.get("config").maxMessageBytes));
  // In order, so a batch's events to one channel keep their order there.
  const attributes: ChannelAttributes[] = [];
  for (const event of events) attributes.push((await trigger(c, event))[event.channels[0]!] ?? {});
  // Pusher answers `{}`, or when an event asks for `info`, each event's channel attributes in order.
  return c.json(events.some((event) => event.info !== undefined) ? { batch: attributes } : {});
});

/** Closes every connection signed in as the user: they may reconnect, and sign in if the app lets them. */
pusher.post("/apps/:app_id/users/:user_id/terminate_connections", async (c) => {
  await verified(c);
  const user = c.req.param("user_id");
  if (!isValidSigninId(user)) throw new HttpError(400, "bad_request", `user ids are ${SIGNIN_ID_RULE}`);
  await againIfReset(() => c.env.ROOMS.getByName(userChannel(user)).closeAll(PusherClose.generic, "terminated by the app"));
  return c.json({});
});

/** `info=a,b` as a set. */
function infoOf(c: PusherContext): Set<string> {
  return new Set((c.get("url").searchParams.get("info") ?? "").split(",").filter((item) => item !== ""));
}

function presenceOnly(channel: string, what: string): void {
  if (!isPresenceChannel(channel)) throw new HttpError(400, "bad_request", `${what} is only available for presence channels`);
}

pusher.get("/apps/:app_id/channels", async (c) => {
  await verified(c);
  const prefix = c.get("url").searchParams.get("filter_by_prefix") ?? "";
  const info = infoOf(c);
  if (info.has("user_count") && !prefix.startsWith("presence-")) {
    throw new HttpError(400, "bad_request", "info=user_count needs filter_by_prefix=presence-");
  }
  const names = await c.env.DIRECTORY.getByName("channels").list(prefix);
  const counted = CHANNEL_ATTRIBUTES.some((attribute) => info.has(attribute));
  const channels = await Promise.all(
    names.map(async (name) => [name, counted ? countsOf(name, info, await againIfReset(() => c.env.ROOMS.getByName(name).info())) : {}] as const),
  );
  return c.json({ channels: Object.fromEntries(channels) }); // `__proto__` a key like any other
});

function channelParam(c: PusherContext): string {
  const channel = c.req.param("channel") ?? "";
  if (!isValidRoom(channel)) throw new HttpError(400, "bad_request", `channel names are ${ROOM_RULE}`);
  return channel;
}

pusher.get("/apps/:app_id/channels/:channel", async (c) => {
  await verified(c);
  const channel = channelParam(c);
  const info = infoOf(c);
  if (info.has("user_count")) presenceOnly(channel, "user_count");
  const room = await againIfReset(() => c.env.ROOMS.getByName(channel).info());
  return c.json({ occupied: room.connections > 0, ...countsOf(channel, info, room) });
});

pusher.get("/apps/:app_id/channels/:channel/users", async (c) => {
  await verified(c);
  const channel = channelParam(c);
  presenceOnly(channel, "the user list");
  const users: PresenceEntry[] = [];
  let after: string | undefined;
  do {
    const page = await againIfReset(() => c.env.ROOMS.getByName(channel).presencePage(after, 1_000));
    users.push(...page.presence);
    after = page.next;
  } while (after !== undefined);
  return c.json({ users: users.map(({ user }) => ({ id: user })) });
});
