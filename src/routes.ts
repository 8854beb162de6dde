// The HTTP surface: validate, authenticate, then hand over to the room's object by name.
import { Hono, type Context } from "hono";
import { cors } from "hono/cors";
import { authorizeServer } from "./auth";
import { configOf, originAllowed, type Config } from "./config";
import { HttpError } from "./http-error";
import { connectRequest } from "./objects/connect";
import { againIfReset } from "./objects/reset";
import { dataProblem, HEALTHY, isValidName, NAME_RULE, publishedBody, type Json, type TooLarge } from "./protocol";
import { pusher } from "./pusher-routes";
import { answerError, badName, checkName, countParam as countIn, readBody, vetClient } from "./request";
import { siteFile } from "./site";
import { roomSocket, userSocket } from "./sockets";

type App = { Bindings: Env; Variables: { config: Config; url: URL } };
type AppContext = Context<App>;

export const app = new Hono<App>();

// Browsers on other origins read history, room info, event streams and the reason an upgrade was
// refused (docs/protocol.md "Cross-origin browsers"). Refusals carry the headers too. WebSocket
// upgrades are left alone: browsers do not apply CORS to them (the Origin check in auth.ts does
// that job), and an upgrade's answer must pass through untouched.
const withCors = cors({
  origin: (origin, c) => {
    let config: Config;
    try {
      config = configOf(c.env);
    } catch {
      return "*"; // a bad variable answers 500 naming it; any page may read that
    }
    if (config.allowedOrigins.length === 0) return "*";
    return originAllowed(config, origin) ? origin : null;
  },
  allowMethods: ["GET", "POST", "OPTIONS"],
  allowHeaders: ["Authorization", "Content-Type", "Last-Event-ID"],
  maxAge: 600,
});

app.use((c, next) => (c.req.header("Upgrade")?.toLowerCase() === "websocket" ? next() : withCors(c, next)));

// The demo page and client bundle (src/site.ts) come next: CORS like every route, but no
// variables and no auth, so they load even when a variable is broken.
app.get("*", async (c, next) => siteFile(c) ?? next());

// Parse the variables before anything else, so a bad one answers 500 naming it.
app.use(async (c, next) => {
  c.set("config", configOf(c.env));
  c.set("url", new URL(c.req.url));
  await next();
});

function nameParam(c: AppContext, kind: "room" | "user"): string {
  return checkName(kind, c.req.param(kind));
}

/** A server publish body, `{"data": <json>, "from"?: "<id>"}`, checked for size before parsing. */
async function messageBody(c: AppContext): Promise<{ data: Json; from: string }> {
  const { text } = await readBody(c.req.raw, c.get("config").maxMessageBytes);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new HttpError(400, "bad_request", "body is not valid JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body) || !("data" in body)) {
    throw new HttpError(400, "bad_request", `body must be a JSON object with a "data" field`);
  }
  // A null `from` is an absent one: many serializers write unset fields as null.
  const { data, from: named } = body as { data: Json; from?: unknown };
  const from = named ?? "server";
  const problem = dataProblem(data);
  if (problem !== undefined) throw new HttpError(400, "bad_request", problem);
  if (!isValidName(from)) throw new HttpError(400, "bad_request", `"from" must be an id: ${NAME_RULE}`);
  return { data, from };
}

function countParam(c: AppContext, name: string): number | undefined {
  return countIn(c.get("url"), name);
}

function eventId(value: string): number {
  if (!/^\d+$/.test(value)) throw new HttpError(400, "bad_request", "Last-Event-ID (or ?lastEventId=) must be a message seq");
  return Math.min(Number(value), Number.MAX_SAFE_INTEGER); // as countParam reads `since`
}

app.get("/healthz", (c) => c.json(HEALTHY));

// Upgrades to these two skip the app (src/sockets.ts); a plain GET gets here, and 426 once vetted.
app.get("/rooms/:room/ws", (c) => roomSocket(c.req.raw, c.env, c.get("url"), c.req.param("room")));
app.get("/users/:user/ws", (c) => userSocket(c.req.raw, c.env, c.get("url"), c.req.param("user")));

app.get("/rooms/:room/events", async (c) => {
  const room = nameParam(c, "room");
  const { user, exp } = await vetClient(c.req.raw, c.get("url"), c.get("config"), { room });
  // An EventSource reconnecting sends Last-Event-ID, which wins over the page's own ?since=;
  // polyfills that cannot send the header cross-origin (event-source-polyfill) send ?lastEventId=.
  const lastEventId = c.req.header("Last-Event-ID") || c.get("url").searchParams.get("lastEventId") || undefined;
  const since = lastEventId !== undefined ? eventId(lastEventId) : countParam(c, "since");
  const epoch = c.get("url").searchParams.get("epoch") ?? undefined;
  return againIfReset(() => c.env.ROOMS.getByName(room).fetch(connectRequest({ user, exp, since, epoch, room }, "events")));
});

app.post("/rooms/:room/messages", async (c) => {
  const room = nameParam(c, "room");
  await authorizeServer(c.req.raw, c.get("url"), c.get("config"));
  const { data, from } = await messageBody(c);
  const answer = await againIfReset(() => c.env.ROOMS.getByName(room).publish(from, data) as Promise<number | TooLarge>);
  if (typeof answer !== "number") throw new HttpError(413, answer.refused, answer.message);
  return c.json(publishedBody(answer));
});

app.post("/users/:user/messages", async (c) => {
  const user = nameParam(c, "user");
  await authorizeServer(c.req.raw, c.get("url"), c.get("config"));
  const { data, from } = await messageBody(c);
  const result = await c.env.INBOXES.getByName(user).deliver(from, data);
  if ("refused" in result) throw new HttpError(result.refused === "too_large" ? 413 : 429, result.refused, result.message);
  return c.json(result);
});

app.get("/rooms/:room", async (c) => {
  const room = nameParam(c, "room");
  await authorizeServer(c.req.raw, c.get("url"), c.get("config"));
  return c.json(await againIfReset(() => c.env.ROOMS.getByName(room).info()));
});

/** Presence pages are at most this long, whatever `limit` asks (docs/protocol.md "Presence at scale"). */
const MAX_PRESENCE_PAGE = 1_000;

app.get("/rooms/:room/presence", async (c) => {
  const room = nameParam(c, "room");
  await authorizeServer(c.req.raw, c.get("url"), c.get("config"));
  const after = c.get("url").searchParams.get("after") ?? undefined;
  // Any member's id: a user id, or a Pusher presence user_id, kept as given (up to 128 characters).
  if (after !== undefined && (after === "" || after.length > 128)) throw new HttpError(400, "bad_request", `"after" must be a member id of 1-128 characters`);
  const limit = Math.max(1, Math.min(countParam(c, "limit") ?? 100, MAX_PRESENCE_PAGE));
  return c.json(await againIfReset(() => c.env.ROOMS.getByName(room).presencePage(after, limit)));
});

app.get("/rooms/:room/messages", async (c) => {
  const room = nameParam(c, "room");
  const config = c.get("config");
  await authorizeServer(c.req.raw, c.get("url"), config, { room });
  const since = countParam(c, "since") ?? 0;
  const limit = Math.min(countParam(c, "limit") ?? config.historyLimit, config.historyLimit);
  const body = await againIfReset(() => c.env.ROOMS.getByName(room).history(since, limit));
  return c.body(body, 200, { "Content-Type": "application/json" });
});

// Pusher Channels compatibility: its socket at /app/:key and its REST API under /apps/:app_id.
app.route("/", pusher);

app.notFound((c) => {
  // `/rooms//ws`, `/users//messages`: an empty id is a bad id (400), not an unknown route.
  const empty = /^\/(room|user)s\/(?:\/|$)/.exec(c.req.path);
  if (empty) return badName(empty[1] as "room" | "user").toResponse();
  return new HttpError(404, "not_found", `no route for ${c.req.method} ${c.get("url")?.pathname ?? c.req.path}`).toResponse();
});

app.onError(answerError);
