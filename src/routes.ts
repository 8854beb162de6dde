// The HTTP surface: validate, authenticate, then hand over to the room's object by name.
import { Hono, type Context } from "hono";
import { cors } from "hono/cors";
import { authorizeServer, checkOrigin, identify, type Target } from "./auth";
import { ConfigError, configOf, type Config } from "./config";
import { HttpError } from "./http-error";
import type { Identity } from "./identity";
import { log } from "./log";
import { pusher } from "./pusher-routes";
import { siteFile } from "./site";
import { connectRequest, hubFor, placedAt, type ConnectInfo } from "./objects/connect";
import { HEALTHY, isValidName, isValidRoom, NAME_RULE, publishedBody, ROOM_RULE, type Json } from "./protocol";

type App = { Bindings: Env; Variables: { config: Config; url: URL } };
type AppContext = Context<App>;

export const app = new Hono<App>();

// The demo page and client bundle (src/site.ts) come first: no CORS, no variables, no auth.
app.get("*", async (c, next) => siteFile(c) ?? next());

// Browsers on other origins read history, room info, event streams and the reason an upgrade was
// refused (docs/protocol.md "Cross-origin browsers"). Refusals carry the headers too. WebSocket
// upgrades are left alone: browsers do not apply CORS to them (the Origin check in auth.ts does
// that job), and an upgrade's answer must pass through untouched.
const withCors = cors({
  origin: (origin, c) => {
    let allowed: string[];
    try {
      allowed = configOf(c.env).allowedOrigins;
    } catch {
      return "*"; // a bad variable answers 500 naming it; any page may read that
    }
    if (allowed.length === 0) return "*";
    return allowed.includes(origin) ? origin : null;
  },
  allowMethods: ["GET", "POST", "OPTIONS"],
  allowHeaders: ["Authorization", "Content-Type", "Last-Event-ID"],
  maxAge: 600,
});

app.use((c, next) => (c.req.header("Upgrade")?.toLowerCase() === "websocket" ? next() : withCors(c, next)));

// Parse the variables before anything else, so a bad one answers 500 naming it.
app.use(async (c, next) => {
  c.set("config", configOf(c.env));
  c.set("url", new URL(c.req.url));
  await next();
});

function nameParam(c: AppContext, kind: "room" | "user"): string {
  const name = c.req.param(kind) ?? "";
  if (kind === "room" ? !isValidRoom(name) : !isValidName(name)) {
    throw new HttpError(400, "bad_request", `${kind} id must be ${kind === "room" ? ROOM_RULE : NAME_RULE}`);
  }
  return name;
}

// Checked after the request is vetted, so a plain GET with the same URL answers what an upgrade
// would get (400, 401, 403) or 426 when all is well. Browsers hide why an upgrade failed; the
// client library asks this way to tell a refusal from a network failure.
function requireUpgrade(c: AppContext): void {
  if (c.req.header("Upgrade")?.toLowerCase() !== "websocket") {
    throw new HttpError(426, "upgrade_required", "this route takes a WebSocket upgrade (Upgrade: websocket)");
  }
}

/** The body as text, keeping no more than `max` bytes: a chunked body may carry no length. */
async function readAtMost(request: Request, max: number, tooLarge: HttpError): Promise<string> {
  if (!request.body) return "";
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    // Past the limit nothing more is kept, but the rest is still read: many HTTP clients cannot
    // take an answer before they finished sending, and only API key holders get this far.
    if (size <= max) chunks.push(value);
  }
  if (size > max) throw tooLarge;
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new HttpError(400, "bad_request", "body is not valid UTF-8");
  }
}

/** A server publish body, `{"data": <json>, "from"?: "<id>"}`, checked for size before parsing. */
async function messageBody(c: AppContext): Promise<{ data: Json; from: string }> {
  const max = c.get("config").maxMessageBytes;
  const tooLarge = new HttpError(413, "too_large", `bodies are limited to ${max} bytes`);
  if (Number(c.req.header("Content-Length") ?? 0) > max) throw tooLarge;
  const text = await readAtMost(c.req.raw, max, tooLarge);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new HttpError(400, "bad_request", "body is not valid JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body) || !("data" in body)) {
    throw new HttpError(400, "bad_request", `body must be a JSON object with a "data" field`);
  }
  const { data, from = "server" } = body as { data: Json; from?: unknown };
  if (!isValidName(from)) throw new HttpError(400, "bad_request", `"from" must be an id: ${NAME_RULE}`);
  return { data, from };
}

/** A non-negative integer query parameter; undefined when absent. */
function countParam(c: AppContext, name: string): number | undefined {
  const value = c.get("url").searchParams.get(name);
  if (value === null) return undefined;
  if (!/^\d{1,15}$/.test(value)) throw new HttpError(400, "bad_request", `"${name}" must be a non-negative integer`);
  return Number(value);
}

function eventId(value: string): number {
  if (!/^\d{1,15}$/.test(value)) throw new HttpError(400, "bad_request", "Last-Event-ID must be a message seq");
  return Number(value);
}

app.get("/healthz", (c) => c.json(HEALTHY));

/** Origin and identity of a WebSocket or event-stream client, checked the same way everywhere. */
function vetClient(c: AppContext, target: Target): Promise<Identity> {
  const config = c.get("config");
  checkOrigin(c.req.raw, config);
  return identify(c.req.raw, c.get("url"), config, target);
}

app.get("/rooms/:room/ws", async (c) => {
  const room = nameParam(c, "room");
  const { user, exp } = await vetClient(c, { room });
  const since = countParam(c, "since");
  requireUpgrade(c);
  const epoch = c.get("url").searchParams.get("epoch") ?? undefined;
  const connect: ConnectInfo = { user, exp, since, epoch, room };
  // A full Room names the shard to open the socket on instead (docs/design.md "Placement").
  const answer = await c.env.ROOMS.getByName(room).fetch(connectRequest(connect));
  const shard = placedAt(answer);
  return shard === undefined ? answer : c.env.HOLDERS.getByName(shard).fetch(connectRequest(connect));
});

app.get("/rooms/:room/events", async (c) => {
  const room = nameParam(c, "room");
  const { user, exp } = await vetClient(c, { room });
  // An EventSource reconnecting sends Last-Event-ID, which wins over the page's own ?since=.
  const lastEventId = c.req.header("Last-Event-ID");
  const since = lastEventId !== undefined && lastEventId !== "" ? eventId(lastEventId) : countParam(c, "since");
  const epoch = c.get("url").searchParams.get("epoch") ?? undefined;
  return c.env.ROOMS.getByName(room).fetch(connectRequest({ user, exp, since, epoch, room }, "events"));
});

/** How many full hubs a user socket is handed past before it is refused. */
const MAX_HUB_HOPS = 16;

app.get("/users/:user/ws", async (c) => {
  const user = nameParam(c, "user");
  const identity = await vetClient(c, { user });
  if (identity.user !== user) throw new HttpError(403, "forbidden", `${identity.user} may not open the inbox of ${user}`);
  requireUpgrade(c);
  // A user's sockets go to their hub, or to the overflow hub a full one names; the Inbox forwards
  // the user's directs to every hub that holds one (docs/design.md "Placement").
  let hub = hubFor(user, c.get("config").userHubs);
  for (let hops = 0; hops < MAX_HUB_HOPS; hops++) {
    const answer = await c.env.HOLDERS.getByName(hub).fetch(connectRequest(identity));
    const next = placedAt(answer);
    if (next === undefined) return answer;
    hub = next;
  }
  throw new HttpError(503, "room_full", "every hub this user's sockets may use is full; try again later");
});

app.post("/rooms/:room/messages", async (c) => {
  const room = nameParam(c, "room");
  await authorizeServer(c.req.raw, c.get("url"), c.get("config"));
  const { data, from } = await messageBody(c);
  return c.json(publishedBody(await c.env.ROOMS.getByName(room).publish(from, data)));
});

app.post("/users/:user/messages", async (c) => {
  const user = nameParam(c, "user");
  await authorizeServer(c.req.raw, c.get("url"), c.get("config"));
  const { data, from } = await messageBody(c);
  const result = await c.env.INBOXES.getByName(user).deliver(from, data);
  if ("refused" in result) throw new HttpError(429, result.refused, result.message);
  return c.json(result);
});

app.get("/rooms/:room", async (c) => {
  const room = nameParam(c, "room");
  await authorizeServer(c.req.raw, c.get("url"), c.get("config"));
  return c.json(await c.env.ROOMS.getByName(room).info());
});

/** Presence pages are at most this long, whatever `limit` asks (docs/protocol.md "Presence at scale"). */
const MAX_PRESENCE_PAGE = 1_000;

app.get("/rooms/:room/presence", async (c) => {
  const room = nameParam(c, "room");
  await authorizeServer(c.req.raw, c.get("url"), c.get("config"));
  const after = c.get("url").searchParams.get("after") ?? undefined;
  if (after !== undefined && !isValidName(after)) throw new HttpError(400, "bad_request", `"after" must be a user id: ${NAME_RULE}`);
  const limit = Math.max(1, Math.min(countParam(c, "limit") ?? 100, MAX_PRESENCE_PAGE));
  return c.json(await c.env.ROOMS.getByName(room).presencePage(after, limit));
});

app.get("/rooms/:room/messages", async (c) => {
  const room = nameParam(c, "room");
  const config = c.get("config");
  await authorizeServer(c.req.raw, c.get("url"), config, { room });
  const since = countParam(c, "since") ?? 0;
  const limit = Math.min(countParam(c, "limit") ?? config.historyLimit, config.historyLimit);
  const body = await c.env.ROOMS.getByName(room).history(since, limit);
  return c.body(body, 200, { "Content-Type": "application/json" });
});

// Pusher Channels compatibility: its socket at /app/:key and its REST API under /apps/:app_id.
app.route("/", pusher);

app.notFound((c) => new HttpError(404, "not_found", `no route for ${c.req.method} ${c.get("url")?.pathname ?? c.req.path}`).toResponse());

// The one catch for every route: known refusals answer as themselves, the rest are logged once.
app.onError((error) => {
  if (error instanceof HttpError) return error.toResponse();
  if (error instanceof ConfigError) {
    return new HttpError(500, "bad_config", error.message).toResponse();
  }
  log("error", "request failed", { error });
  return new HttpError(500, "internal", "the relay failed to handle this request").toResponse();
});
