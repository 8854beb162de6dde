import { createExecutionContext, env } from "cloudflare:test";
import { sign } from "hono/jwt";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import { connect, freshRoom, join, ORIGIN, request } from "./connect";

// The project's relay runs with ALLOW_ANONYMOUS=true and API_KEY=test-api-key; other settings
// are tried by calling the Worker's entry with a changed env (the objects keep the project's env):
// upgrades to the socket routes take src/sockets.ts, everything else the Hono app.
const KEY = { Authorization: "Bearer test-api-key" };
const upgrade = { Upgrade: "websocket" };

function withEnv(vars: Record<string, unknown>, path: string, headers: Record<string, string> = {}) {
  return worker.fetch(new Request(ORIGIN + path, { headers }), { ...env, ...vars }, createExecutionContext());
}

/** Asserts a 101 and closes the socket, so no half-open pipe outlives the test. */
async function expectUpgraded(res: Response | Promise<Response>) {
  const response = await res;
  expect(response.status).toBe(101);
  response.webSocket!.accept();
  response.webSocket!.close(1000);
}

async function expectError(res: Response | Promise<Response>, status: number, code: string) {
  const response = await res;
  expect(response.status).toBe(status);
  expect(response.headers.get("Content-Type")).toContain("application/json");
  const body = (await response.json()) as { error: string; message: string };
  expect(body).toEqual({ error: code, message: expect.any(String) });
  return body.message;
}

describe("HTTP surface", () => {
  it("answers /healthz", async () => {
    const res = await request("/healthz");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
  });

  it("answers 400 for an empty room or user id, on every route that takes one", async () => {
    for (const path of ["/rooms//ws", "/rooms//messages", "/rooms//events", "/rooms//presence", "/rooms/", "/users//ws", "/users//messages"]) {
      expect(await expectError(request(path), 400, "bad_request"), path).toMatch(/(room|user) id must be/);
    }
    expect(await expectError(request("/rooms//ws", { headers: upgrade }), 400, "bad_request")).toContain("room id");
    expect(await expectError(request("/users//messages", { method: "POST", body: "{}" }), 400, "bad_request")).toContain("user id");
  });

  it("answers 404 as JSON for unknown paths", async () => {
    await expectError(request("/nope"), 404, "not_found");
    await expectError(request("/rooms/a/b/ws"), 404, "not_found");
    await expectError(request("/rooms/a/b/ws", { headers: upgrade }), 404, "not_found");
  });

  it("takes upgrades on GET only", async () => {
    // Called in-process: a fetch with Upgrade: websocket is always sent as a GET by the runtime.
    const post = worker.fetch(new Request(`${ORIGIN}/rooms/${freshRoom()}/ws`, { method: "POST", headers: upgrade }), env, createExecutionContext());
    await expectError(post, 404, "not_found");
  });

  it.each([
    ["an empty-looking name", "%20"],
    ["a path trick", "..%2F..%2Fetc"],
    ["a space", "a%20b"],
    ["unicode", "caf%C3%A9"],
    ["165 characters", "a".repeat(165)],
    ["a slash-encoded name", "a%2Fb"],
  ])("answers 400 for a room id with %s", async (_, name) => {
    await expectError(request(`/rooms/${name}/ws`, { headers: upgrade }), 400, "bad_request");
    await expectError(request(`/rooms/${name}`, { headers: KEY }), 400, "bad_request");
  });

  it("accepts the longest and the most varied valid names", async () => {
    const { welcome } = await join("a".repeat(128), "u");
    expect(welcome.room).toHaveLength(128);
    const { welcome: other } = await join("Z9_.:-x", "u2");
    expect(other.room).toBe("Z9_.:-x");
    const { welcome: encoded } = await join("Z9_.%3A-y", "u3"); // the path's encoding is undone
    expect(encoded.room).toBe("Z9_.:-y");
  });

  it("answers 426 to a plain GET on the upgrade route", async () => {
    await expectError(request(`/rooms/${freshRoom()}/ws`), 426, "upgrade_required");
  });

  it("answers 400 for an invalid ?since=", async () => {
    await expectError(request(`/rooms/${freshRoom()}/ws?since=-1`, { headers: upgrade }), 400, "bad_request");
    await expectError(request(`/rooms/${freshRoom()}/ws?since=abc`, { headers: upgrade }), 400, "bad_request");
  });

  it("gives anonymous users a random anon- id when they name none, or name an invalid one", async () => {
    for (const query of ["", "?user=bad%20name", "?user=.dot"]) {
      const client = await connect(`/rooms/${freshRoom()}/ws${query}`);
      expect(await client.json()).toMatchObject({ type: "welcome", user: expect.stringMatching(/^anon-[0-9a-f]{8}$/) });
      client.close();
    }
    // On a user socket an invalid ?user= falls back to the route's user.
    const inbox = await connect(`/users/ivy/ws?user=bad%20name`);
    expect(await inbox.json()).toMatchObject({ type: "welcome", user: "ivy" });
    inbox.close();
  });

  it("refuses a token whose exp is 0 (long past) with 401", async () => {
    const vars = { ALLOW_ANONYMOUS: "false", AUTH_SECRET: "k" };
    const token = await sign({ sub: "zero", exp: 0 }, "k", "HS256");
    expect(await expectError(withEnv(vars, `/rooms/r/ws?token=${token}`, upgrade), 401, "unauthorized")).toBe("token expired");
  });

  it.each([[null], ["9999999999"], [true], [[1]]])("refuses a token whose exp is %j with 401 saying exp must be a number", async (exp) => {
    const vars = { ALLOW_ANONYMOUS: "false", AUTH_SECRET: "k" };
    const token = await sign({ sub: "odd", exp } as never, "k", "HS256");
    expect(await expectError(withEnv(vars, `/rooms/r/ws?token=${token}`, upgrade), 401, "unauthorized")).toBe('token "exp" must be a number of seconds since 1970');
  });
});

describe("server routes", () => {
  it("refuses room info and history without the API key", async () => {
    const room = freshRoom();
    await expectError(request(`/rooms/${room}`), 401, "unauthorized");
    await expectError(request(`/rooms/${room}/messages`, { headers: { Authorization: "Bearer wrong" } }), 401, "unauthorized");
  });

  it("says server routes are closed when no API_KEY is set", async () => {
    const message = await expectError(withEnv({ API_KEY: "" }, `/rooms/x`, KEY), 401, "unauthorized");
    expect(message).toContain(".dev.vars"); // how to set one locally, too
    // History is open to user tokens as well, and says so.
    const history = await expectError(withEnv({ API_KEY: "", AUTH_SECRET: "k" }, `/rooms/x/messages`, KEY), 401, "unauthorized");
    expect(history).toContain("or a user token that allows this room");
  });

  it("answers room info with seq, epoch, connections and presence", async () => {
    const room = freshRoom();
    const alice = await join(room, "alice");
    await join(room, "alice");
    alice.client.send({ type: "publish", data: 1 });
    await alice.client.nextOf("message");
    const res = await request(`/rooms/${room}`, { headers: KEY });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      room,
      seq: 1,
      epoch: alice.welcome.epoch,
      connections: 2,
      users: 1,
      presence: [{ user: "alice", connections: 2 }],
      objects: 1,
    });
  });

  it("answers history after since, oldest first, at most limit", async () => {
    const room = freshRoom();
    const { client } = await join(room, "alice");
    for (let i = 1; i <= 4; i++) client.send({ type: "publish", data: i });
    for (let i = 1; i <= 4; i++) await client.nextOf("message");
    const all = (await (await request(`/rooms/${room}/messages`, { headers: KEY })).json()) as { messages: any[] };
    expect(all.messages.map((m) => m.seq)).toEqual([1, 2, 3, 4]);
    expect(all.messages[0]).toMatchObject({ type: "message", room, seq: 1, from: "alice", data: 1 });
    const page = (await (await request(`/rooms/${room}/messages?since=1&limit=2`, { headers: KEY })).json()) as {
      messages: any[];
    };
    expect(page.messages.map((m) => m.seq)).toEqual([2, 3]);
    await expectError(request(`/rooms/${room}/messages?limit=x`, { headers: KEY }), 400, "bad_request");
  });

  it("lets a user token that allows the room read its history", async () => {
    const vars = { AUTH_SECRET: "s3cret" };
    const room = freshRoom("team");
    const allowed = await sign({ sub: "reader", rooms: ["team-*"] }, "s3cret", "HS256");
    const denied = await sign({ sub: "reader", rooms: ["other"] }, "s3cret", "HS256");
    expect((await withEnv(vars, `/rooms/${room}/messages`, { Authorization: `Bearer ${allowed}` })).status).toBe(200);
    await expectError(withEnv(vars, `/rooms/${room}/messages`, { Authorization: `Bearer ${denied}` }), 403, "forbidden");
    // Room info stays a server route.
    expect(await expectError(withEnv(vars, `/rooms/${room}`, { Authorization: `Bearer ${allowed}` }), 401, "unauthorized")).not.toContain("user token");
    // History without either names both ways in.
    expect(await expectError(withEnv(vars, `/rooms/${room}/messages`), 401, "unauthorized")).toContain("or a user token that allows this room");
  });

  it("keeps room info and presence pages to the API key on private rooms too, whatever a token's claim names", async () => {
    const vars = { AUTH_SECRET: "s3cret" };
    const room = freshRoom("private-desk");
    const named = await sign({ sub: "reader", rooms: [room] }, "s3cret", "HS256");
    const bearer = { Authorization: `Bearer ${named}` };
    expect((await withEnv(vars, `/rooms/${room}/messages`, bearer)).status).toBe(200);
    await expectError(withEnv(vars, `/rooms/${room}`, bearer), 401, "unauthorized");
    await expectError(withEnv(vars, `/rooms/${room}/presence`, bearer), 401, "unauthorized");
    expect((await withEnv(vars, `/rooms/${room}`, KEY)).status).toBe(200);
  });
});

describe("authentication seams", () => {
  it("refuses connections with a message naming what to set when no AUTH_SECRET and no anonymous mode", async () => {
    const message = await expectError(
      withEnv({ ALLOW_ANONYMOUS: "false", AUTH_SECRET: "" }, `/rooms/r/ws`, upgrade),
      401,
      "unauthorized",
    );
    expect(message).toContain("AUTH_SECRET");
    expect(message).toContain("ALLOW_ANONYMOUS");
  });

  it("requires a token when AUTH_SECRET is set and anonymous mode is off", async () => {
    await expectError(withEnv({ ALLOW_ANONYMOUS: "false", AUTH_SECRET: "k" }, `/rooms/r/ws`, upgrade), 401, "unauthorized");
  });

  it("verifies a presented token even in anonymous mode", async () => {
    await expectError(request(`/rooms/r/ws?token=not.a.jwt`, { headers: upgrade }), 401, "unauthorized");
  });

  it("takes an empty ?token= for no token, as an empty Authorization header is", async () => {
    await expectUpgraded(request(`/rooms/r/ws?token=&user=anon`, { headers: upgrade }));
    const vars = { ALLOW_ANONYMOUS: "false", AUTH_SECRET: "k" };
    const token = await sign({ sub: "tok-user" }, "k", "HS256");
    await expectUpgraded(withEnv(vars, `/rooms/r/ws?token=`, { ...upgrade, Authorization: `Bearer ${token}` }));
    const message = await expectError(withEnv(vars, `/rooms/r/ws?token=`, upgrade), 401, "unauthorized");
    expect(message).toContain("missing token");
  });

  it("takes the identity from a valid token and enforces its rooms", async () => {
    const vars = { ALLOW_ANONYMOUS: "false", AUTH_SECRET: "k" };
    const token = await sign({ sub: "tok-user", rooms: ["lobby", "team-*"] }, "k", "HS256");
    await expectUpgraded(withEnv(vars, `/rooms/team-a/ws?token=${token}`, upgrade));
    await expectUpgraded(withEnv(vars, `/rooms/lobby/ws`, { ...upgrade, Authorization: `Bearer ${token}` }));
    await expectError(withEnv(vars, `/rooms/secret/ws?token=${token}`, upgrade), 403, "forbidden");
  });

  it("takes the API key in a token's place on socket and stream routes, for every room, as server or as ?user=", async () => {
    const room = freshRoom("private-ops");
    const server = await connect(`/rooms/${room}/ws`, KEY);
    expect(await server.json()).toMatchObject({ type: "welcome", room, user: "server" });
    const named = await connect(`/rooms/${room}/ws?token=test-api-key&user=ops`);
    expect(await named.json()).toMatchObject({ type: "welcome", room, user: "ops" });
    const inbox = await connect(`/users/backend/ws`, KEY);
    expect(await inbox.json()).toMatchObject({ type: "welcome", user: "backend" });
    const stream = await request(`/rooms/${room}/events`, { headers: KEY });
    expect(stream.status).toBe(200);
    await stream.body?.cancel();
    // Closed relays too; a wrong key is a bad token.
    const closed = { ALLOW_ANONYMOUS: "false", AUTH_SECRET: "k" };
    await expectUpgraded(withEnv(closed, `/rooms/${room}/ws`, { ...upgrade, ...KEY }));
    await expectError(withEnv(closed, `/rooms/${room}/ws`, { ...upgrade, Authorization: "Bearer wrong-key" }), 401, "unauthorized");
    await expectError(request(`/rooms/${room}/events?token=wrong-key`), 401, "unauthorized");
    for (const client of [server, named, inbox]) client.close();
  });

  it("refuses a foreign Origin when ALLOWED_ORIGINS is set, and allows a listed one", async () => {
    const vars = { ALLOWED_ORIGINS: "https://app.example, https://admin.example" };
    await expectError(withEnv(vars, `/rooms/r/ws`, { ...upgrade, Origin: "https://evil.example" }), 403, "forbidden");
    await expectUpgraded(withEnv(vars, `/rooms/r/ws`, { ...upgrade, Origin: "https://admin.example" }));
    // The relay's own pages (its origin) are always let in.
    await expectUpgraded(withEnv(vars, `/rooms/r/ws`, { ...upgrade, Origin: ORIGIN }));
    // A refused page can read why (a plain GET, as the client library asks), and nothing else.
    const refused = await withEnv(vars, `/rooms/r/ws`, { Origin: "https://evil.example" });
    expect(refused.status).toBe(403);
    expect(refused.headers.get("Access-Control-Allow-Origin")).toBe("https://evil.example");
    const history = await withEnv(vars, `/rooms/r/messages`, { Origin: "https://evil.example", Authorization: "Bearer test-api-key" });
    expect(history.headers.get("Access-Control-Allow-Origin")).toBeNull();
    // Hosts compare without case, as browsers send them lowercase; `null` (a sandboxed page) may be listed.
    const mixed = { ALLOWED_ORIGINS: "https://App.Example, null" };
    await expectUpgraded(withEnv(mixed, `/rooms/r/ws`, { ...upgrade, Origin: "https://app.example" }));
    await expectUpgraded(withEnv(mixed, `/rooms/r/ws`, { ...upgrade, Origin: "null" }));
    // Written as browsers write them: no default port, an international host in punycode.
    const spelled = { ALLOWED_ORIGINS: "https://app.example:443, https://bücher.example" };
    await expectUpgraded(withEnv(spelled, `/rooms/r/ws`, { ...upgrade, Origin: "https://app.example" }));
    await expectUpgraded(withEnv(spelled, `/rooms/r/ws`, { ...upgrade, Origin: "https://xn--bcher-kva.example" }));
    // And the header is read the same way: a client that spells out the default port is let in.
    await expectUpgraded(withEnv(vars, `/rooms/r/ws`, { ...upgrade, Origin: "https://app.example:443" }));
    await expectError(withEnv(vars, `/rooms/r/ws`, { ...upgrade, Origin: "https://app.example:8443" }), 403, "forbidden");
    await expectError(withEnv(vars, `/rooms/r/ws`, { ...upgrade, Origin: "https://app.example/chat" }), 403, "forbidden");
    const preflight = await withEnv(mixed, `/rooms/r/messages`, { Origin: "https://app.example" });
    expect(preflight.headers.get("Access-Control-Allow-Origin")).toBe("https://app.example");
  });

  it("answers 500 naming ALLOWED_ORIGINS when an entry is no origin a browser could send", async () => {
    for (const entry of ["app.example", "https://app.example/", "https://app.example/chat", "https://app.example?x"]) {
      const message = await expectError(withEnv({ ALLOWED_ORIGINS: `https://ok.example, ${entry}` }, "/healthz"), 500, "bad_config");
      expect(message).toContain("ALLOWED_ORIGINS");
    }
  });

  it('takes ALLOWED_ORIGINS="*" for any origin, as an empty list: no browser sends * as its origin', async () => {
    for (const list of ["*", "https://app.example,*"]) {
      await expectUpgraded(withEnv({ ALLOWED_ORIGINS: list }, `/rooms/r/ws`, { ...upgrade, Origin: "https://elsewhere.example" }));
      const info = await withEnv({ ALLOWED_ORIGINS: list }, `/healthz`, { Origin: "https://elsewhere.example" });
      expect(info.headers.get("Access-Control-Allow-Origin")).toBe("*");
    }
  });
});

describe("configuration", () => {
  it.each([
    ["HEARTBEAT_TIMEOUT_MS", "soon"],
    ["HISTORY_LIMIT", "-5"],
    ["SOCKETS_PER_OBJECT", "40000"],
    ["ALLOW_ANONYMOUS", "yes"],
    ["RATE_LIMIT_PER_SECOND", "0"],
    ["MAX_STREAMS_PER_ROOM", "many"],
    ["MAX_BACKLOG_BYTES", "-1"],
    ["HEARTBEAT_INTERVAL_MS", "0"],
  ])("answers 500 naming %s=%s on every route", async (name, value) => {
    for (const path of ["/healthz", "/rooms/r/ws", "/nope"]) {
      const message = await expectError(withEnv({ [name]: value }, path), 500, "bad_config");
      expect(message).toContain(name);
    }
    for (const path of ["/rooms/r/ws", "/users/u/ws?user=u"]) {
      expect(await expectError(withEnv({ [name]: value }, path, upgrade), 500, "bad_config")).toContain(name);
    }
  });

  it("names every bad variable at once, so one fix does not just reveal the next", async () => {
    const message = await expectError(withEnv({ ALLOWED_ORIGINS: "not an origin", HEARTBEAT_TIMEOUT_MS: "soon", PUSHER_WEBHOOK_URL: "ftp://x" }, "/healthz"), 500, "bad_config");
    for (const name of ["ALLOWED_ORIGINS", "HEARTBEAT_TIMEOUT_MS", "PUSHER_WEBHOOK_URL"]) expect(message).toContain(`Configuration variable ${name} `);
  });

  it("answers 500 naming PUSHER_WEBHOOK_URL when it is not an http(s) URL, or PUSHER_SUBSCRIPTION_COUNT when not a flag", async () => {
    const app = { PUSHER_APP_ID: "app-1", PUSHER_APP_KEY: "key-1", PUSHER_APP_SECRET: "secret-1" };
    for (const url of ["hooks.example.com", "ftp://hooks.example.com/in"]) {
      expect(await expectError(withEnv({ ...app, PUSHER_WEBHOOK_URL: url }, "/healthz"), 500, "bad_config")).toContain("PUSHER_WEBHOOK_URL");
    }
    expect((await withEnv({ ...app, PUSHER_WEBHOOK_URL: "https://hooks.example.com/in" }, "/healthz")).status).toBe(200);
    // Without the app as well: a bad value is never ignored.
    for (const vars of [{ ...app, PUSHER_SUBSCRIPTION_COUNT: "yes" }, { PUSHER_SUBSCRIPTION_COUNT: "yes" }]) {
      expect(await expectError(withEnv(vars, "/healthz"), 500, "bad_config")).toContain("PUSHER_SUBSCRIPTION_COUNT");
    }
    expect(await expectError(withEnv({ PUSHER_WEBHOOK_URL: "ftp://hooks.example.com/in" }, "/healthz"), 500, "bad_config")).toContain("PUSHER_WEBHOOK_URL");
  });

  it("takes numbers and true/false as written unquoted in [vars] or given to a test harness", async () => {
    const numbers = { HEARTBEAT_INTERVAL_MS: 1000, HEARTBEAT_TIMEOUT_MS: 2500, HISTORY_LIMIT: 0, PUSHER_APP_ID: 123, PUSHER_APP_KEY: "key-1", PUSHER_APP_SECRET: "secret-1" };
    await expectUpgraded(withEnv({ ...numbers, ALLOW_ANONYMOUS: true }, `/rooms/r/ws?user=ann`, upgrade));
    await expectUpgraded(withEnv(numbers, "/app/key-1?protocol=7", upgrade));
    const closed = await expectError(withEnv({ ALLOW_ANONYMOUS: false, AUTH_SECRET: "" }, `/rooms/r/ws`, upgrade), 401, "unauthorized");
    expect(closed).toContain("AUTH_SECRET");
    // What still does not parse is named: a fraction, a list, a flag that is not one.
    for (const [name, value] of [["HISTORY_LIMIT", 2.5], ["ALLOWED_ORIGINS", ["https://app.example"]], ["ALLOW_ANONYMOUS", 1]] as const) {
      expect(await expectError(withEnv({ [name]: value }, "/healthz"), 500, "bad_config")).toContain(name);
    }
  });

  it("takes any value that parses, a heartbeat timeout below the interval included (the operator's choice)", async () => {
    const settings: Record<string, string>[] = [{ HEARTBEAT_TIMEOUT_MS: "2000" }, { HEARTBEAT_INTERVAL_MS: "1", HEARTBEAT_TIMEOUT_MS: "1" }, { MAX_MESSAGE_BYTES: "1" }, { HISTORY_LIMIT: "0" }];
    for (const vars of settings) {
      expect((await withEnv(vars, "/healthz")).status).toBe(200);
    }
  });
});
