import { env, evictDurableObject, runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { TestClient } from "../support/client";
import { hubFor } from "../../src/objects/connect";
import { connect, freshRoom, join } from "../workers/connect";
import { itClosesDeadSockets, keepAlive, sleep, TIMEOUT_MS } from "./liveness.case";

async function openRoomSocket(as: { user: string } | { token: string }) {
  const room = freshRoom();
  const query = "token" in as ? `token=${as.token}` : `user=${as.user}`;
  const client = await connect(`/rooms/${room}/ws?${query}`);
  expect(await client.json()).toMatchObject({ type: "welcome", heartbeat: { interval: 200, timeout: TIMEOUT_MS } });
  return { client, stub: env.ROOMS.getByName(room) };
}

/** Hubs holding this file's user sockets; the token's user "expiring" is fixed, so its hub too. */
const usedHubs = new Set([hubFor("expiring", 32)]);

/**
 * `name` with a suffix that puts it on a hub no earlier test used: some tests leave their sockets
 * open, and a hub that still holds one keeps its alarm running, which the "last socket left" case
 * would then read as its own (it failed so about once in 16 runs).
 */
function userOnFreshHub(name: string): string {
  for (;;) {
    const user = `${name}-${crypto.randomUUID().slice(0, 8)}`;
    const hub = hubFor(user, 32);
    if (!usedHubs.has(hub)) {
      usedHubs.add(hub);
      return user;
    }
  }
}

async function openUserSocket(as: { user: string } | { token: string }) {
  const user = "token" in as ? "expiring" : userOnFreshHub(as.user);
  const query = "token" in as ? `token=${as.token}` : `user=${user}`;
  const client = await connect(`/users/${user}/ws?${query}`);
  expect(await client.json()).toMatchObject({ type: "welcome", user });
  // User sockets live in their hub (docs/design.md "Placement"); USER_HUBS is 32 here.
  return { client, stub: env.HOLDERS.getByName(hubFor(user, 32)) };
}

/** The frames `client` got while kept alive, plus the next one if those were none. */
async function nextAfter(client: TestClient, others: unknown[]): Promise<unknown> {
  return others.length > 0 ? others.shift() : client.json();
}

describe("liveness of room sockets", () => {
  itClosesDeadSockets({ open: openRoomSocket });
});

describe("liveness of user sockets", () => {
  itClosesDeadSockets({ open: openUserSocket });
});

describe("heartbeat timeouts in rooms", () => {
  it("keeps a socket whose pings keep arriving, and counts the silent one as left", async () => {
    const room = freshRoom();
    const alive = await join(room, "alive");
    const silent = await join(room, "silent");
    await alive.client.nextOf("presence");
    const others = await keepAlive(alive.client, TIMEOUT_MS + 100);
    await runDurableObjectAlarm(env.ROOMS.getByName(room));
    expect((await silent.client.closed).code).toBe(4000);
    expect(await nextAfter(alive.client, others)).toEqual({ type: "presence", room, event: "leave", user: "silent" });
    expect(await env.ROOMS.getByName(room).info()).toMatchObject({ connections: 1, presence: [{ user: "alive" }] });
  });

  it("counts any frame as activity, not only ping", async () => {
    const room = freshRoom();
    const { client } = await join(room, "chatty");
    const started = Date.now();
    while (Date.now() - started < TIMEOUT_MS + 100) {
      client.send({ type: "publish", data: "still here" });
      await client.nextOf("message");
      await sleep(150);
    }
    await runDurableObjectAlarm(env.ROOMS.getByName(room));
    client.send({ type: "publish", data: "open" });
    expect(await client.nextOf("message")).toMatchObject({ data: "open" });
  });
});

describe("liveness across hibernation", () => {
  it("still times out a silent socket, and spares a pinging one, after the object was evicted", async () => {
    const room = freshRoom();
    const alive = await join(room, "alive");
    const silent = await join(room, "silent");
    await alive.client.nextOf("presence");
    await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });
    const others = await keepAlive(alive.client, 2 * TIMEOUT_MS);
    await runDurableObjectAlarm(env.ROOMS.getByName(room));
    expect((await silent.client.closed).code).toBe(4000);
    expect(await nextAfter(alive.client, others)).toEqual({ type: "presence", room, event: "leave", user: "silent" });
    alive.client.send({ type: "publish", data: "open" });
    expect(await alive.client.nextOf("message")).toMatchObject({ data: "open" });
  });
});
