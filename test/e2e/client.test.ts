// The client library in Node 22 (its global WebSocket) against the whole relay over TCP.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RelayClient, type MessageFrame, type RelayEvents } from "../../client";
import { freshRoom, startRelay, type Relay } from "./relay";

const FAST = { minDelayMs: 10, maxDelayMs: 100 };

/** Resolves with the next `type` event that satisfies `accept`. */
function next<K extends keyof RelayEvents>(
  client: RelayClient,
  type: K,
  accept: (value: RelayEvents[K]) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<RelayEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = client.on(type, (value) => {
      if (!accept(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

/** Collects every `message` event's data. */
function collect(client: RelayClient): unknown[] {
  const seen: unknown[] = [];
  client.on("message", (frame: MessageFrame) => seen.push(frame.data));
  return seen;
}

describe("RelayClient", () => {
  let relay: Relay;
  const clients: RelayClient[] = [];
  const make = (options: Omit<ConstructorParameters<typeof RelayClient>[0], "url">) => {
    const client = new RelayClient({ url: relay.url, reconnect: FAST, ...options });
    clients.push(client);
    return client;
  };

  beforeAll(async () => {
    relay = await startRelay({ vars: { ALLOW_ANONYMOUS: "true", HISTORY_LIMIT: "3" } });
  });
  afterAll(async () => {
    for (const client of clients) client.close();
    await relay?.close();
  });

  it("joins a room, publishes and receives, and sees presence", async () => {
    const room = freshRoom();
    const alice = make({ room, user: "alice" });
    await next(alice, "welcome");
    const joined = next(alice, "presence", (frame) => "user" in frame && frame.user === "bob");
    const bob = make({ room, user: "bob" });
    expect((await next(bob, "welcome")).presence).toHaveLength(2);
    await joined;
    const got = next(alice, "message");
    bob.publish({ text: "hi" });
    expect(await got).toMatchObject({ from: "bob", data: { text: "hi" }, seq: 1 });
    expect(alice.state).toBe("open");
  });

  it("queues what is sent before the connection opens, and sends it after the welcome", async () => {
    const room = freshRoom();
    const alice = make({ room, user: "alice" });
    const seen = collect(alice);
    alice.publish(1);
    alice.publish(2);
    await next(alice, "message", (frame) => frame.data === 2);
    expect(seen).toEqual([1, 2]);
  });

  it("drops the oldest queued frame when the queue is full, and says so", async () => {
    const alice = make({ room: freshRoom(), user: "alice", maxQueue: 2 });
    const dropped: string[] = [];
    alice.on("dropped", (text) => dropped.push(text));
    for (const n of [1, 2, 3]) alice.publish(n);
    expect(dropped.map((text) => JSON.parse(text).data)).toEqual([1]);
    await next(alice, "message", (frame) => frame.data === 3);
  });

  it("reconnects after the relay drops it and resumes without missing a message", async () => {
    const room = freshRoom();
    const reader = make({ room, user: "reader" });
    const seen = collect(reader);
    const writer = make({ room, user: "writer" });
    await Promise.all([next(reader, "welcome"), next(writer, "welcome")]);
    writer.publish("before");
    await next(reader, "message", (frame) => frame.data === "before");

    const reconnected = next(reader, "welcome");
    await relay.dropRoom(room);
    // The writer reconnects too; whatever it publishes meanwhile must reach the reader once.
    writer.publish("during-1");
    writer.publish("during-2");
    const welcome = await reconnected;
    expect(welcome.recovered).toBe(true);
    writer.publish("after");
    await next(reader, "message", (frame) => frame.data === "after");
    expect(seen).toEqual(["before", "during-1", "during-2", "after"]);
  });

  it("emits reset when messages it missed are no longer retained", async () => {
    const room = freshRoom();
    // The token hook runs before every attempt: holding it keeps the reader away on purpose.
    let gate: Promise<void> | undefined;
    let release = () => {};
    const reader = make({ room, user: "reader", token: async () => void (await gate) });
    await next(reader, "welcome");
    gate = new Promise((resolve) => (release = resolve));
    const away = next(reader, "state", (state) => state === "reconnecting");
    await relay.dropRoom(room);
    await away;
    const publisher = make({ room, user: "publisher" });
    for (let n = 1; n <= 5; n++) publisher.publish(n); // more than HISTORY_LIMIT (3)
    await next(publisher, "message", (frame) => frame.data === 5);
    const reset = next(reader, "reset");
    release();
    expect(await reset).toMatchObject({ recovered: false, seq: 5 });
    expect(reader.position.seq).toBe(5);
  });

  it("gets direct messages on an inbox, acks them, and is not replayed them again", async () => {
    const user = `bob-${Date.now().toString(36)}`;
    const sender = make({ room: freshRoom(), user: "alice" });
    await next(sender, "welcome");
    const acked = next(sender, "ack");
    sender.direct(user, "queued for later");
    expect(await acked).toMatchObject({ status: "queued" });

    const bob = make({ inbox: user, user });
    expect(await next(bob, "direct")).toMatchObject({ from: "alice", data: "queued for later" });
    // Auto-ack has gone out; a second device connecting later gets nothing replayed.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const device = make({ inbox: user, user });
    const replayed: unknown[] = [];
    device.on("direct", (frame) => replayed.push(frame.data));
    await next(device, "welcome");
    const live = next(device, "direct");
    sender.direct(user, "live");
    expect(await live).toMatchObject({ data: "live" });
    expect(replayed).toEqual(["live"]);
  });

  it("stops and says why when the relay refuses the connection", async () => {
    const closedRelay = await startRelay({ vars: { ALLOW_ANONYMOUS: "false", AUTH_SECRET: "client-test-secret" } });
    try {
      const client = new RelayClient({ url: closedRelay.url, room: freshRoom(), token: "not-a-token", reconnect: FAST });
      const states: string[] = [];
      client.on("state", (state) => states.push(state));
      expect(await next(client, "refused")).toMatchObject({ status: 401, error: "unauthorized" });
      expect(client.state).toBe("closed");
      expect(states).not.toContain("reconnecting");
    } finally {
      await closedRelay.close();
    }
  });

  it("stops instead of reconnecting after a terminal close (1008)", async () => {
    const flood = make({ room: freshRoom(), user: "flooder" });
    await next(flood, "welcome");
    const closed = next(flood, "close");
    for (let i = 0; i < 200; i++) flood.publish(i);
    expect(await closed).toMatchObject({ code: 1008, willReconnect: false });
    expect(flood.state).toBe("closed");
  });
});
