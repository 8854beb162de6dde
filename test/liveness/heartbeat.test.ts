import { env, evictDurableObject, runDurableObjectAlarm } from "cloudflare:test";
import { sign } from "hono/jwt";
import { describe, expect, it } from "vitest";
import type { TestClient } from "../support/client";
import { connect, freshRoom, join } from "../workers/connect";

// This project runs with HEARTBEAT_INTERVAL_MS=200, HEARTBEAT_TIMEOUT_MS=800 and
// AUTH_SECRET=liveness-secret (vitest.config.ts), so real time can pass a timeout quickly.
const TIMEOUT_MS = 800;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Pings every 100 ms for `ms`, reading each pong. The room's own sweep alarm runs meanwhile, so
 * other frames may arrive between pongs: they are answered, in order.
 */
async function keepAlive(client: TestClient, ms: number): Promise<unknown[]> {
  const others: unknown[] = [];
  const started = Date.now();
  while (Date.now() - started < ms) {
    client.send("ping");
    for (let frame = await client.next(); frame !== "pong"; frame = await client.next()) others.push(frame);
    await sleep(100);
  }
  return others;
}

/** The frames `client` got while kept alive, plus the next one if those were none. */
async function nextAfter(client: TestClient, others: unknown[]): Promise<unknown> {
  return others.length > 0 ? others.shift() : client.json();
}

describe("heartbeat timeouts", () => {
  it("closes a silent socket with 4000 when the sweep alarm runs after the timeout", async () => {
    const room = freshRoom();
    const { client, welcome } = await join(room, "silent");
    expect(welcome.heartbeat).toEqual({ interval: 200, timeout: TIMEOUT_MS });
    await sleep(TIMEOUT_MS + 50);
    await runDurableObjectAlarm(env.ROOMS.getByName(room));
    expect(await client.closed).toEqual({ code: 4000, reason: "heartbeat timeout" });
  });

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

  it("does not close before the timeout", async () => {
    const room = freshRoom();
    const { client } = await join(room, "fresh");
    await runDurableObjectAlarm(env.ROOMS.getByName(room));
    client.send({ type: "publish", data: "open" });
    expect(await client.nextOf("message")).toMatchObject({ data: "open" });
  });

  it("stops re-arming the alarm once the room is empty", async () => {
    const room = freshRoom();
    const { client } = await join(room, "leaver");
    await client.close();
    expect(await runDurableObjectAlarm(env.ROOMS.getByName(room))).toBe(true);
    expect(await runDurableObjectAlarm(env.ROOMS.getByName(room))).toBe(false);
  });
});

describe("token expiry", () => {
  it("closes a socket with 4001 once its token's exp has passed", async () => {
    const room = freshRoom();
    const exp = Math.floor(Date.now() / 1000) + 1;
    const token = await sign({ sub: "expiring", exp }, "liveness-secret", "HS256");
    const client = await connect(`/rooms/${room}/ws?token=${token}`);
    expect(await client.json()).toMatchObject({ type: "welcome", user: "expiring" });
    // Keep the heartbeat alive so only the expiry can close it.
    // Stop just before exp: the room's own sweep may close the socket any time after it.
    await keepAlive(client, exp * 1000 - 150 - Date.now());
    await sleep(250);
    await runDurableObjectAlarm(env.ROOMS.getByName(room));
    expect(await client.closed).toEqual({ code: 4001, reason: "token expired" });
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
