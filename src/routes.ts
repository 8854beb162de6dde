// The HTTP surface: validate, authenticate, then hand over to the room's object by name.
import { Hono, type Context } from "hono";
import { authorizeServer, checkOrigin, identify } from "./auth";
import { ConfigError, configOf, type Config } from "./config";
import { HttpError } from "./http-error";
import { log } from "./log";
import { connectRequest } from "./objects/connect";
import { isValidName, NAME_RULE } from "./protocol";

type App = { Bindings: Env; Variables: { config: Config; url: URL } };
type AppContext = Context<App>;

export const app = new Hono<App>();

// Parse the variables before anything else, so a bad one answers 500 naming it.
app.use(async (c, next) => {
  c.set("config", configOf(c.env));
  c.set("url", new URL(c.req.url));
  await next();
});

function roomParam(c: AppContext): string {
  const room = c.req.param("room");
  if (!isValidName(room)) throw new HttpError(400, "bad_request", `room id must be ${NAME_RULE}`);
  return room;
}

/** A non-negative integer query parameter; undefined when absent. */
function countParam(c: AppContext, name: string): number | undefined {
  const value = c.get("url").searchParams.get(name);
  if (value === null) return undefined;
  if (!/^\d{1,15}$/.test(value)) throw new HttpError(400, "bad_request", `"${name}" must be a non-negative integer`);
  return Number(value);
}

app.get("/healthz", (c) => c.json({ ok: true }));

app.get("/rooms/:room/ws", async (c) => {
  const room = roomParam(c);
  if (c.req.header("Upgrade")?.toLowerCase() !== "websocket") {
    throw new HttpError(426, "upgrade_required", "this route takes a WebSocket upgrade (Upgrade: websocket)");
  }
  const config = c.get("config");
  const url = c.get("url");
  checkOrigin(c.req.raw, config);
  const identity = await identify(c.req.raw, url, config, { room });
  const since = countParam(c, "since");
  const epoch = url.searchParams.get("epoch") ?? undefined;
  return c.env.ROOMS.getByName(room).fetch(
    connectRequest({ ...identity, ...(since !== undefined && { since }), ...(epoch !== undefined && { epoch }) }),
  );
});

app.get("/rooms/:room", async (c) => {
  const room = roomParam(c);
  await authorizeServer(c.req.raw, c.get("url"), c.get("config"));
  return c.json(await c.env.ROOMS.getByName(room).info());
});

app.get("/rooms/:room/messages", async (c) => {
  const room = roomParam(c);
  const config = c.get("config");
  await authorizeServer(c.req.raw, c.get("url"), config, { room });
  const since = countParam(c, "since") ?? 0;
  const limit = Math.min(countParam(c, "limit") ?? config.historyLimit, config.historyLimit);
  const body = await c.env.ROOMS.getByName(room).history(since, limit);
  return c.body(body, 200, { "Content-Type": "application/json" });
});

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
