// The client library in Node 22 (its global WebSocket) against the whole relay over TCP.
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { sign } from "hono/jwt";
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { RelayClient, type CloseInfo, type Json, type MessageFrame, type RelayClientOptions, type RelayEvents } from "../../client";
import { Tokens } from "../../client/token";
import { freshRoom, SERVER_AUTH, startRelay, type Relay } from "./relay";

const FAST = { minDelayMs: 10, maxDelayMs: 100 };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const freshUser = (prefix = "user"): string => `${prefix}-${randomUUID().slice(0, 8)}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A token function held back while `closed` is true: the client stays away on purpose. */
function gate(): { token: () => Promise<undefined>; close(): void; open(): void } {
  let wait: Promise<void> | undefined;
  let release = () => {};
  return {
    token: async () => void (await wait),
    close: () => void (wait = new Promise((resolve) => (release = resolve))),
    open: () => release(),
  };
}

/** The `ws` package's WebSocket, remembering every socket so a test can cut one off abruptly. */
function droppable(): { WebSocket: RelayClientOptions["WebSocket"]; cut(): void } {
  const sockets: WebSocket[] = [];
  class Tracked extends WebSocket {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
  }
  return { WebSocket: Tracked, cut: () => sockets.at(-1)?.terminate() };
}

/** Resolves with the next `type` event that satisfies `accept`. */
function next<K extends keyof RelayEvents>(
  client: RelayClient<any>,
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
function collect(client: RelayClient<any>): unknown[] {
  const seen: unknown[] = [];
  client.on("message", (frame: MessageFrame) => seen.push(frame.data));
  return seen;
}

describe("RelayClient", () => {
  let relay: Relay;
  const clients: { close(): void }[] = [];
  const make = <T = Json>(options: Omit<RelayClientOptions, "url">) => {
    const client = new RelayClient<T>({ url: relay.url, reconnect: FAST, ...options });
    clients.push(client);
    return client;
  };

  beforeAll(async () => {
    relay = await startRelay({ vars: { ALLOW_ANONYMOUS: "true", HISTORY_LIMIT: "3" } });
  });

  /** A direct to `user` through the server API. */
  const serverDirect = (user: string, data: unknown) =>
    relay.fetch(`/users/${user}/messages`, { method: "POST", headers: SERVER_AUTH, body: JSON.stringify({ data }) });

  /** A new client of `user`'s inbox is replayed nothing: every direct was acked. */
  const expectNothingReplayed = async (user: string) => {
    const device = make({ inbox: user, user });
    const replayed: unknown[] = [];
    device.on("direct", (frame) => replayed.push(frame.data));
    await next(device, "welcome");
    await sleep(300);
    expect(replayed).toEqual([]);
  };
  afterAll(async () => {
    for (const client of clients) client.close();
    await relay?.close();
  });

  it("throws at once, saying what to pass, where there is no WebSocket at all", () => {
    const global = globalThis as { WebSocket?: unknown };
    const saved = global.WebSocket;
    delete global.WebSocket;
    try {
      expect(() => new RelayClient({ url: relay.url, room: freshRoom() })).toThrow(/pass the `ws` package as `WebSocket`/);
      const withWs = new RelayClient({ url: relay.url, room: freshRoom(), WebSocket: WebSocket as never });
      withWs.close();
    } finally {
      global.WebSocket = saved;
    }
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
    // Auto-ack has gone out (within a quarter second); a second device connecting later gets nothing replayed.
    await new Promise((resolve) => setTimeout(resolve, 600));
    const device = make({ inbox: user, user });
    const replayed: unknown[] = [];
    device.on("direct", (frame) => replayed.push(frame.data));
    await next(device, "welcome");
    const live = next(device, "direct");
    sender.direct(user, "live");
    expect(await live).toMatchObject({ data: "live" });
    expect(replayed).toEqual(["live"]);
  });

  it("acks a backlog of 100 directs replayed at connect in a few acks, stays connected, and is not replayed them again", async () => {
    const user = freshUser("backlog");
    for (let n = 0; n < 100; n += 10) {
      await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          serverDirect(user, n + i),
        ),
      );
    }
    const acks: string[] = [];
    class Counting extends WebSocket {
      override send(data: string | ArrayBuffer): void {
        if (typeof data === "string" && data.includes('"type":"ack"')) acks.push(data);
        super.send(data);
      }
    }
    const bob = make({ inbox: user, user, WebSocket: Counting });
    const closes: CloseInfo[] = [];
    bob.on("close", (info) => closes.push(info));
    const seen: unknown[] = [];
    bob.on("direct", (frame) => seen.push(frame.data));
    await expect.poll(() => seen.length, { timeout: 10_000 }).toBe(100);
    await expect.poll(() => acks.at(-1), { timeout: 5_000 }).toBe(JSON.stringify({ type: "ack", seq: 100 }));
    // One ack per direct (100) spent the relay's rate limit (bursts of 40) and got the socket closed 1008.
    expect(acks.length).toBeLessThan(10);
    expect(closes).toEqual([]);
    await expectNothingReplayed(user);
  });

  it("acks again a replayed direct whose ack a drop lost, so the next client is not shown it again", async () => {
    const user = freshUser("lost-ack");
    const { WebSocket: Droppable, cut } = droppable();
    const carol = make({ inbox: user, user, WebSocket: Droppable });
    await next(carol, "welcome");
    const shown: unknown[] = [];
    // Cut as soon as the direct is shown: its ack (sent within a quarter second) has no socket.
    carol.on("direct", (frame) => {
      shown.push(frame.data);
      cut();
    });
    const welcomedAgain = next(carol, "welcome");
    await serverDirect(user, "only");
    await welcomedAgain;
    await sleep(600); // the replay came, was not shown, and was acked
    expect(shown).toEqual(["only"]);
    carol.close();
    await expectNothingReplayed(user);
  });

  it("sends ids as they are, so one that is no id is refused 400 instead of joining another room", async () => {
    for (const room of ["%41", "x?y", "x#y"]) {
      const client = make({ room, user: "odd" });
      expect(await next(client, "refused")).toMatchObject({ status: 400, error: "bad_request" });
    }
  });

  it("says when its token function fails, and asks it again at the next attempt", async () => {
    let calls = 0;
    const client = make({
      room: freshRoom(),
      user: "tokenless",
      maxRetries: 1,
      token: () => {
        calls++;
        throw new Error("token service down");
      },
    });
    expect(await next(client, "tokenFailed")).toMatchObject({ message: "token service down" });
    await expect(client.ready()).rejects.toMatchObject({ code: "closed" });
    expect(calls).toBe(2);
  });

  it("gives a token function that never answers connectTimeoutMs, then asks it again", async () => {
    let calls = 0;
    const client = make({
      room: freshRoom(),
      user: "waiting",
      connectTimeoutMs: 300,
      // The first call hangs for good; the next answers (anonymous mode: no token needed).
      token: () => (calls++ === 0 ? new Promise<string>(() => {}) : undefined),
    });
    expect(await next(client, "close")).toEqual({ code: 1006, reason: "no token within 300 ms", willReconnect: true });
    await client.ready();
    expect(calls).toBe(2);
  });

  it("keeps the latest attempt's token when an attempt given up on gets its token late", async () => {
    const answers: ((token: string) => void)[] = [];
    const tokens = new Tokens(() => new Promise<string>((resolve) => answers.push(resolve)));
    const abandoned = tokens.forConnection();
    const latest = tokens.forConnection();
    answers[1]!("latest");
    expect(await latest).toBe("latest");
    answers[0]!("late");
    expect(await abandoned).toBe("late");
    expect(await tokens.forRequest()).toBe("latest");
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

  it("keeps retrying a relay whose configuration is broken, and says why", async () => {
    const broken = await startRelay({ vars: { ALLOW_ANONYMOUS: "true", HEARTBEAT_TIMEOUT_MS: "90s" } });
    try {
      const client = new RelayClient({ url: broken.url, room: freshRoom(), user: "patient", reconnect: FAST });
      const closes: CloseInfo[] = [];
      client.on("close", (info) => closes.push(info));
      await expect.poll(() => closes.length, { timeout: 10_000 }).toBeGreaterThan(1);
      expect(closes[0]).toMatchObject({ willReconnect: true, refusal: { status: 500, error: "bad_config" } });
      expect(closes[0]!.reason).toContain("HEARTBEAT_TIMEOUT_MS");
      client.close();
    } finally {
      await broken.close();
    }
  });

  it("sends a full queue after connecting at a pace the relay's rate limit allows, in order", async () => {
    const client = make({ room: freshRoom(), user: "patient" });
    const closes: CloseInfo[] = [];
    client.on("close", (info) => closes.push(info));
    // A hundred frames is five seconds' worth at the relay's default 20 a second (bursts of 40).
    const seqs = await Promise.all(Array.from({ length: 100 }, (_, n) => client.publish(n)));
    expect(seqs).toEqual(seqs.map((_, n) => n + 1));
    expect(closes).toEqual([]);
    expect(client.state).toBe("open");
  });

  it("paces what the app sends while connected, so a loop of publishes is answered in full", async () => {
    const client = make({ room: freshRoom(), user: "looper" });
    await client.ready();
    const errors: unknown[] = [];
    client.on("error", (error) => errors.push(error));
    // Sixty at once: past the relay's burst of 40, so unpaced most would be dropped unanswered.
    const seqs = await Promise.all(Array.from({ length: 60 }, (_, n) => client.publish(n)));
    expect(seqs).toEqual(seqs.map((_, n) => n + 1));
    expect(errors).toEqual([]);
  });

  it("stops instead of reconnecting after a terminal close (1008)", async () => {
    // Paced far past the relay's limit, so the loop below floods it.
    const flood = make({ room: freshRoom(), user: "flooder", pacedPerSecond: 10_000 });
    await next(flood, "welcome");
    const closed = next(flood, "close");
    for (let i = 0; i < 200; i++) flood.publish(i);
    expect(await closed).toMatchObject({ code: 1008, willReconnect: false });
    expect(flood.state).toBe("closed");
  });

  // ---- typed data, promises, events ----

  it("types message data as the client's T, and takes interfaces as publish data", async () => {
    interface Chat {
      text: string;
      at: number;
    }
    const room = freshRoom();
    const typed = make<Chat>({ room, user: "typed" });
    const got = new Promise<Chat>((resolve) =>
      typed.once("message", (message) => {
        expectTypeOf(message.data).toEqualTypeOf<Chat>();
        resolve(message.data);
      }),
    );
    const chat: Chat = { text: "hi", at: 1 };
    await typed.publish(chat);
    expect(await got).toEqual(chat);
    // An untyped client takes any JSON-safe value, interfaces included, and refuses what JSON drops.
    const untyped = make({ room, user: "untyped" });
    await untyped.publish(chat);
    // @ts-expect-error: a function does not survive JSON
    untyped.publish({ callback: () => 1 }).catch(() => {});
    // @ts-expect-error: a typed client publishes its own type
    typed.publish({ text: 1 }).catch(() => {});
  });

  it("resolves publish with the message's seq, and gives every frame a UUID id", async () => {
    const room = freshRoom();
    const alice = make({ room, user: "alice" });
    const echoed = next(alice, "message", (frame) => frame.data === "counted");
    const sent = alice.publish("counted");
    expect(sent.id).toMatch(UUID);
    const seq = await sent;
    expect(seq).toBe((await echoed).seq);
    expect(await alice.publish("again")).toBe(seq + 1);
  });

  it("rejects publish with the relay's error code when the relay refuses that frame", async () => {
    const alice = make({ room: freshRoom(), user: "alice" });
    const error = await alice.publish("elsewhere", { room: freshRoom() }).then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(Error);
    expect(error).toMatchObject({ name: "RelayError", code: "bad_frame" });
    expect(alice.state).toBe("open");
  });

  it("resolves direct with the inbox's answer, and a user socket's publish from its ack", async () => {
    const room = freshRoom();
    const sender = make({ inbox: freshUser("sender"), user: undefined });
    expect(await sender.direct(freshUser("nobody"), "later")).toMatchObject({ status: "queued", seq: 1 });
    const reader = make({ room, user: "reader" });
    await reader.ready();
    const seen = next(reader, "message", (frame) => frame.data === "from a user socket");
    const seq = await sender.publish("from a user socket", { room });
    expect((await seen).seq).toBe(seq);
  });

  it("resolves ready() at the welcome, and at once while connected", async () => {
    const alice = make({ room: freshRoom(), user: "alice" });
    const welcome = await alice.ready();
    expect(welcome).toMatchObject({ type: "welcome", user: "alice" });
    await expect(alice.ready()).resolves.toBe(welcome);
    alice.close();
    await expect(alice.ready()).rejects.toMatchObject({ code: "closed" });
    await expect(alice.publish("too late")).rejects.toMatchObject({ code: "closed" });
  });

  it("removes listeners with off(), and once() fires once", async () => {
    const room = freshRoom();
    const alice = make({ room, user: "alice" });
    const all: unknown[] = [];
    const first: unknown[] = [];
    const listener = (frame: MessageFrame) => all.push(frame.data);
    alice.on("message", listener);
    alice.once("message", (frame) => first.push(frame.data));
    await alice.publish(1);
    await alice.publish(2);
    alice.off("message", listener);
    const last = next(alice, "message", (frame) => frame.data === 3);
    await alice.publish(3);
    await last;
    expect(all).toEqual([1, 2]);
    expect(first).toEqual([1]);
  });

  // ---- resume across a page reload ----

  it("resumes where a previous page left off, from resumeState or from since and epoch", async () => {
    const room = freshRoom();
    const reader = make({ room, user: "reader" });
    const writer = make({ room, user: "writer" });
    await Promise.all([reader.ready(), writer.ready()]);
    const one = next(reader, "message", (frame) => frame.data === "one");
    await writer.publish("one");
    await one;
    // What a page would put in sessionStorage before it unloads.
    const saved = JSON.parse(JSON.stringify(reader.resumeState)) as Record<string, { since?: number; epoch?: string }>;
    expect(saved).toEqual({ [room]: { since: 1, epoch: expect.any(String) } });
    reader.close();
    await writer.publish("two");
    await writer.publish("three");

    const reloaded = make({ room, user: "reader", resume: saved });
    const seen = collect(reloaded);
    expect((await reloaded.ready()).recovered).toBe(true);
    await expect.poll(() => seen, { timeout: 10_000 }).toEqual(["two", "three"]);

    const bySeq = make({ room, user: "reader", since: 2, epoch: saved[room]!.epoch });
    const seenBySeq = collect(bySeq);
    expect((await bySeq.ready()).recovered).toBe(true);
    await expect.poll(() => seenBySeq, { timeout: 10_000 }).toEqual(["three"]);

    // A stored epoch that is not the room's: the messages are not those the page saw.
    const stale = make({ room, user: "reader", since: 1, epoch: "another-epoch" });
    const reset = next(stale, "reset");
    expect(await reset).toMatchObject({ recovered: false, seq: 3 });
    expect(stale.position.seq).toBe(3);
  });

  // ---- subscriptions on a user socket ----

  it("subscribes one user socket to many rooms and gets each room's messages and presence", async () => {
    const [red, blue] = [freshRoom("red"), freshRoom("blue")];
    const user = freshUser("many");
    const hub = make({ inbox: user, user });
    const alice = make({ room: red, user: "alice" });
    await alice.ready();
    const subscribed = await hub.subscribe(red);
    expect(subscribed).toMatchObject({ type: "subscribed", room: red, users: 2, id: expect.stringMatching(UUID) });
    await hub.subscribe(blue);
    expect(hub.subscriptions).toEqual([red, blue]);
    expect(hub.presenceState(red)).toEqual({ room: red, users: 2, members: ["alice", user].sort() });
    expect(hub.presenceState(blue)).toEqual({ room: blue, users: 1, members: [user] });

    const seen: [string, unknown][] = [];
    hub.on("message", (frame) => seen.push([frame.room, frame.data]));
    await alice.publish("red 1");
    await hub.publish("blue 1", { room: blue });
    await expect.poll(() => seen, { timeout: 10_000 }).toEqual([
      [red, "red 1"],
      [blue, "blue 1"],
    ]);

    const left = next(hub, "presenceChange", (state) => state.room === red && state.users === 1);
    alice.close();
    expect(await left).toEqual({ room: red, users: 1, members: [user] });
  });

  it("sends nothing twice when a subscribe's replay holds back new frames while others await their answers", async () => {
    const [room, other] = [freshRoom("replayed"), freshRoom("elsewhere")];
    for (const n of [1, 2, 3]) await relay.fetch(`/rooms/${room}/messages`, { method: "POST", headers: SERVER_AUTH, body: JSON.stringify({ data: n }) });
    const [sender, recipient] = [freshUser("sender"), freshUser("recipient")];
    const inbox = make({ inbox: recipient, user: recipient });
    const directs: unknown[] = [];
    inbox.on("direct", (frame) => directs.push(frame.data));
    const watcher = make({ room: other, user: "watcher" });
    const published = collect(watcher);
    await Promise.all([inbox.ready(), watcher.ready()]);
    const hub = make({ inbox: sender, user: sender });
    await hub.ready();
    const sent = [
      ...Array.from({ length: 10 }, (_, n) => hub.direct(recipient, `direct ${n}`)),
      ...Array.from({ length: 5 }, (_, n) => hub.publish(`publish ${n}`, { room: other })),
    ];
    // Replays 2 and 3: frames sent after it wait for that, the ones above are out already.
    expect(await hub.subscribe(room, { since: 1 })).toMatchObject({ recovered: true });
    await Promise.all(sent);
    await sleep(1_000);
    expect(directs).toEqual(Array.from({ length: 10 }, (_, n) => `direct ${n}`));
    expect(published).toEqual(Array.from({ length: 5 }, (_, n) => `publish ${n}`));
  });

  it("stops a room's messages at unsubscribe, and keeps the others", async () => {
    const [quiet, loud] = [freshRoom("quiet"), freshRoom("loud")];
    const user = freshUser("leaver");
    const hub = make({ inbox: user, user });
    await Promise.all([hub.subscribe(quiet), hub.subscribe(loud)]);
    const seen = collect(hub);
    await hub.unsubscribe(quiet);
    expect(hub.subscriptions).toEqual([loud]);
    expect(hub.presenceState(quiet)).toBeUndefined();
    const writer = make({ inbox: freshUser("writer"), user: undefined });
    await writer.publish("unheard", { room: quiet });
    // Listening before the publish: the hub's copy can arrive before the writer's ack.
    const marker = next(hub, "message", (frame) => frame.data === "marker");
    await writer.publish("marker", { room: loud });
    await marker;
    expect(seen).toEqual(["marker"]);
  });

  it("shows nothing more of a room from the unsubscribe call on, not even its replay still arriving", async () => {
    const [left, kept] = [freshRoom("left"), freshRoom("kept")];
    const writer = make({ inbox: freshUser("writer"), user: undefined });
    for (let n = 0; n < 3; n++) await writer.publish(`old ${n}`, { room: left }); // HISTORY_LIMIT
    const user = freshUser("quitter");
    const hub = make({ inbox: user, user });
    await hub.subscribe(kept);
    const seen = collect(hub);
    // The replay of 3 messages follows the answer: leaving as the answer is read, they are all still to come.
    let gone: Promise<void> | undefined;
    hub.on("subscribed", (frame) => void (frame.room === left && (gone = hub.unsubscribe(left))));
    await hub.subscribe(left, { since: 0 });
    await gone;
    const marker = next(hub, "message", (frame) => frame.data === "marker");
    await writer.publish("marker", { room: kept });
    await marker;
    expect(seen).toEqual(["marker"]);
  });

  it("ends subscribed, once, after subscribe, unsubscribe and subscribe in a row", async () => {
    const room = freshRoom();
    const user = freshUser("fickle");
    const hub = make({ inbox: user, user });
    await hub.ready();
    const first = hub.subscribe(room);
    const left = hub.unsubscribe(room);
    const again = hub.subscribe(room);
    await expect(first).rejects.toMatchObject({ code: "unsubscribed" });
    await left;
    expect(await again).toMatchObject({ room, users: 1 });
    expect(hub.subscriptions).toEqual([room]);
    const seen = collect(hub);
    await hub.publish("once", { room });
    const marker = next(hub, "message", (frame) => frame.data === "marker");
    await hub.publish("marker", { room });
    await marker;
    expect(seen).toEqual(["once", "marker"]);
  });

  it("subscribes again after a reconnect, resuming every room without a gap or a duplicate", async () => {
    const [red, blue] = [freshRoom("red"), freshRoom("blue")];
    const user = freshUser("mobile");
    const away = gate();
    const socket = droppable();
    const hub = make({ inbox: user, user, token: away.token, WebSocket: socket.WebSocket });
    await Promise.all([hub.subscribe(red), hub.subscribe(blue)]);
    const seen: [string, unknown][] = [];
    hub.on("message", (frame) => seen.push([frame.room, frame.data]));
    const writer = make({ inbox: freshUser("writer"), user: undefined });
    await writer.publish("before", { room: red });
    await expect.poll(() => seen.length, { timeout: 10_000 }).toBe(1);

    // The network drops; the client stays away until the gate opens.
    away.close();
    const down = next(hub, "state", (state) => state === "reconnecting");
    socket.cut();
    await down;
    // Its own publish waits in the queue meanwhile.
    const own = hub.publish("mine, sent while away", { room: blue });
    await writer.publish("missed red", { room: red });
    await writer.publish("missed blue", { room: blue });
    const resubscribed = [next(hub, "subscribed", (frame) => frame.room === red), next(hub, "subscribed", (frame) => frame.room === blue)];
    away.open();
    for (const frame of await Promise.all(resubscribed)) expect(frame.recovered).toBe(true);
    await own;
    await writer.publish("after", { room: red });
    await expect.poll(() => seen.length, { timeout: 10_000 }).toBe(5);
    expect(seen).toEqual([
      [red, "before"],
      [red, "missed red"],
      [blue, "missed blue"],
      [blue, "mine, sent while away"],
      [red, "after"],
    ]);
  });

  it("paces sixty subscriptions under the relay's rate limit, and again after a reconnect", async () => {
    const user = freshUser("busy");
    const socket = droppable();
    const hub = make({ inbox: user, user, WebSocket: socket.WebSocket });
    const closes: CloseInfo[] = [];
    hub.on("close", (info) => closes.push(info));
    const rooms = Array.from({ length: 60 }, () => freshRoom("many"));
    // Sixty frames at once would be past the relay's burst (40), and it would close the socket 1008.
    await Promise.all(rooms.map((room) => hub.subscribe(room)));
    const again = new Set<string>();
    hub.on("subscribed", (frame) => again.add(frame.room));
    socket.cut();
    await expect.poll(() => again.size, { timeout: 30_000 }).toBe(60);
    expect(closes.map((info) => info.willReconnect)).toEqual([true]);
    expect(hub.state).toBe("open");
    const writer = make({ inbox: freshUser("writer"), user: undefined });
    const heard = next(hub, "message", (frame) => frame.room === rooms[59]);
    await writer.publish("still here", { room: rooms[59]! });
    expect((await heard).data).toBe("still here");
  });

  it("subscribes from a resume state across a reload, with the replay of what it missed", async () => {
    const room = freshRoom();
    const user = freshUser("reloader");
    const page = make({ inbox: user, user });
    await page.subscribe(room);
    const writer = make({ room, user: "writer" });
    const first = next(page, "message");
    await writer.publish("seen");
    await first;
    const saved = page.resumeState;
    page.close();
    await writer.publish("missed");

    const reloaded = make({ inbox: user, user, resume: saved });
    const seen = collect(reloaded);
    expect(await reloaded.subscribe(room)).toMatchObject({ recovered: true, seq: 2 });
    await expect.poll(() => seen, { timeout: 10_000 }).toEqual(["missed"]);
  });

  it("rejects a subscription to a bad room name with bad_frame, and keeps the connection", async () => {
    const user = freshUser("typo");
    const hub = make({ inbox: user, user });
    const failed = next(hub, "subscribeFailed");
    await expect(hub.subscribe("no spaces allowed")).rejects.toMatchObject({ code: "bad_frame" });
    expect((await failed).room).toBe("no spaces allowed");
    expect(hub.subscriptions).toEqual([]);
    expect(hub.state).toBe("open");
  });

  it("keeps presence state for a room client's own room", async () => {
    const room = freshRoom();
    const alice = make({ room, user: "alice" });
    await alice.ready();
    expect(alice.presenceState()).toEqual({ room, users: 1, members: ["alice"] });
    const joined = next(alice, "presenceChange", (state) => state.users === 2);
    const bob = make({ room, user: "bob" });
    expect(await joined).toEqual({ room, users: 2, members: ["alice", "bob"] });
    // The state is current when the raw presence event fires.
    const left = new Promise((resolve) => alice.once("presence", () => resolve(alice.presenceState())));
    bob.close();
    expect(await left).toEqual({ room, users: 1, members: ["alice"] });
  });
});

// ---- a relay with tokens and small limits ----

describe("RelayClient with tokens", () => {
  const SECRET = "client-token-secret";
  const LIMITS = { PRESENCE_LIST_LIMIT: "2", MAX_SUBSCRIPTIONS: "2", MAX_CONNECTIONS_PER_ROOM: "3" };
  let relay: Relay;
  const clients: { close(): void }[] = [];
  const make = <T = Json>(options: Omit<RelayClientOptions, "url">) => {
    const client = new RelayClient<T>({ url: relay.url, reconnect: FAST, ...options });
    clients.push(client);
    return client;
  };
  /** A token for `sub` that expires `seconds` from now. */
  const mint = (sub: string, seconds = 600, rooms?: string[]) =>
    sign({ sub, exp: Math.floor(Date.now() / 1000) + seconds, ...(rooms && { rooms }) }, SECRET, "HS256");

  beforeAll(async () => {
    // Heartbeats of a second: the relay's sweep closes an expired token's socket within two.
    relay = await startRelay({
      vars: { AUTH_SECRET: SECRET, HEARTBEAT_INTERVAL_MS: "1000", HEARTBEAT_TIMEOUT_MS: "4000", ...LIMITS },
    });
  });
  afterAll(async () => {
    for (const client of clients) client.close();
    await relay?.close();
  });

  it("rejects subscriptions the token forbids, past MAX_SUBSCRIPTIONS, and to a full room", async () => {
    const user = freshUser("limited");
    const hub = make({ inbox: user, token: await mint(user, 600, ["ok-*", "full-*"]) });
    await expect(hub.subscribe(freshRoom("secret"))).rejects.toMatchObject({ code: "forbidden" });
    const full = freshRoom("full");
    for (const name of ["a", "b", "c"]) await make({ room: full, token: await mint(name) }).ready();
    await expect(hub.subscribe(full)).rejects.toMatchObject({ code: "room_full" });
    await hub.subscribe(freshRoom("ok"));
    await hub.subscribe(freshRoom("ok"));
    await expect(hub.subscribe(freshRoom("ok"))).rejects.toMatchObject({ code: "too_many_subscriptions" });
    await expect(hub.publish("not mine", { room: freshRoom("secret") })).rejects.toMatchObject({ code: "forbidden" });
    expect(hub.subscriptions).toHaveLength(2);
  });

  it("says a room is full when it cannot get in, keeps trying, and gets in once a seat frees", async () => {
    const full = freshRoom("full");
    const members = [];
    for (const name of ["a", "b", "c"]) members.push(make({ room: full, token: await mint(name) }));
    await Promise.all(members.map((member) => member.ready()));
    const late = make({ room: full, token: () => mint("late") });
    const closes: CloseInfo[] = [];
    late.on("close", (info) => closes.push(info));
    await expect.poll(() => closes.length, { timeout: 10_000 }).toBeGreaterThan(0);
    expect(closes[0]).toMatchObject({ willReconnect: true, refusal: { status: 503, error: "room_full" } });
    members[0]!.close();
    expect(await late.ready()).toMatchObject({ type: "welcome", room: full, user: "late" });
  });

  it("counts users instead of listing them above PRESENCE_LIST_LIMIT", async () => {
    const room = freshRoom();
    const watcher = make({ room, token: await mint("watcher") });
    await watcher.ready();
    const states: unknown[] = [];
    watcher.on("presenceChange", (state) => states.push(state));
    const alice = make({ room, token: await mint("alice") });
    await expect.poll(() => watcher.presenceState(), { timeout: 10_000 }).toEqual({ room, users: 2, members: ["alice", "watcher"] });
    const bob = make({ room, token: await mint("bob") });
    expect((await bob.ready()).presence).toBeUndefined();
    expect(bob.presenceState()).toEqual({ room, users: 3 });
    await expect.poll(() => watcher.presenceState(), { timeout: 10_000 }).toEqual({ room, users: 3 });
    alice.close();
    await expect.poll(() => watcher.presenceState(), { timeout: 10_000 }).toEqual({ room, users: 2 });
    expect(states).toContainEqual({ room, users: 3 });
  });

  it("reads history with its token", async () => {
    const room = freshRoom();
    const alice = make({ room, token: () => mint("alice") });
    for (const n of [1, 2, 3]) await alice.publish(n);
    const page = await alice.history({ since: 1, limit: 1 });
    expect(page).toEqual([expect.objectContaining({ type: "message", room, seq: 2, data: 2, from: "alice" })]);
    expect((await alice.history()).map((message) => message.data)).toEqual([1, 2, 3]);
    const outsider = make({ room: freshRoom("other"), token: await mint("outsider", 600, ["other-*"]) });
    await expect(outsider.history({ room })).rejects.toMatchObject({ code: "forbidden", status: 403 });
  });

  it("gets a fresh token before exp and reconnects with it, so the relay never closes it 4001", async () => {
    const room = freshRoom();
    let minted = 0;
    const reader = make({ room, token: () => (minted++, mint("reader", 6)) });
    const closes: CloseInfo[] = [];
    reader.on("close", (info) => closes.push(info));
    const seen = collect(reader);
    await reader.ready();
    const writer = make({ room, token: await mint("writer") });
    // Messages keep coming over about three lifetimes of the reader's token.
    const sent: number[] = [];
    const deadline = Date.now() + 60_000;
    while (minted < 4 && Date.now() < deadline) {
      sent.push(await writer.publish(sent.length + 1));
      await sleep(100);
    }
    expect(minted).toBeGreaterThanOrEqual(4);
    const last = next(reader, "message", (frame) => frame.data === "last");
    await writer.publish("last");
    await last;
    expect(closes.length).toBeGreaterThanOrEqual(2);
    expect(closes).toEqual(closes.map(() => ({ code: 1000, reason: "token refresh", willReconnect: true })));
    expect(seen).toEqual([...sent.map((_, i) => i + 1), "last"]);
  });

  it("keeps a token that lasts longer than a timer can wait (30 days) without refreshing it at once", async () => {
    let minted = 0;
    const client = make({ room: freshRoom(), token: () => (minted++, mint("monthly", 30 * 24 * 3600)) });
    const closes: CloseInfo[] = [];
    client.on("close", (info) => closes.push(info));
    await client.ready();
    await sleep(1_500);
    expect({ minted, closes, state: client.state }).toEqual({ minted: 1, closes: [], state: "open" });
  });

  it("asks its token function again when the token it got had expired before the relay saw it", async () => {
    // A stale cache, or a stall longer than the token's life: the relay refuses the token 401,
    // which a token function can mend, so the client asks it again instead of giving up.
    let minted = 0;
    const client = make({ room: freshRoom(), token: () => (minted++ === 0 ? mint("stale", -5) : mint("stale")) });
    await client.ready();
    expect(minted).toBe(2);
    expect(client.state).toBe("open");
  });

  it("is closed 4001 for good when its fixed token expires", async () => {
    const client = make({ room: freshRoom(), token: await mint("fixed", 2) });
    const closed = next(client, "close", () => true, 30_000);
    await client.ready();
    expect(await closed).toMatchObject({ code: 4001, willReconnect: false });
    expect(client.state).toBe("closed");
  });

  it("rejects ready() when the relay refuses the token", async () => {
    const client = make({ room: freshRoom(), token: "not-a-token" });
    await expect(client.ready()).rejects.toMatchObject({ code: "unauthorized", status: 401 });
  });
});

// ---- a server that accepts the upgrade and never welcomes ----

describe("RelayClient under a low rate limit", () => {
  let relay: Relay;
  beforeAll(async () => {
    relay = await startRelay({ vars: { ALLOW_ANONYMOUS: "true", RATE_LIMIT_PER_SECOND: "5" } });
  });
  afterAll(async () => {
    await relay?.close();
  });

  it("counts its auto-acks in its pace, so publishing at full pace while directs arrive stays under the relay's limit", async () => {
    const user = freshUser("busy");
    const client = new RelayClient({ url: relay.url, inbox: user, user, pacedPerSecond: 5, reconnect: false });
    const errors: unknown[] = [];
    const closes: CloseInfo[] = [];
    client.on("error", (error) => errors.push(error));
    client.on("close", (info) => closes.push(info));
    let directs = 0;
    client.on("direct", () => directs++);
    await client.ready();
    const room = freshRoom("paced");
    // Ten directs a second from the server, acked at most four times a second, while the app
    // publishes 25 frames, five seconds at its pace.
    let stop = false;
    const feeding = (async () => {
      for (let n = 0; !stop && n < 100; n++) {
        await relay.fetch(`/users/${user}/messages`, { method: "POST", headers: SERVER_AUTH, body: JSON.stringify({ data: n }) });
        await sleep(100);
      }
    })();
    try {
      const seqs = await Promise.all(Array.from({ length: 25 }, (_, n) => client.publish(n, { room })));
      expect(seqs).toEqual(seqs.map((_, n) => n + 1));
    } finally {
      stop = true;
      await feeding;
    }
    expect(directs).toBeGreaterThan(20);
    expect({ errors, closes, state: client.state }).toEqual({ errors: [], closes: [], state: "open" });
    client.close();
  });
});

describe("RelayClient closing a connection that no longer answers", () => {
  it("ends the socket (ws terminate) a second after close() when no close frame comes back", async () => {
    let terminated = false;
    class Unanswering {
      readyState = 0;
      binaryType = "blob";
      onopen: ((event: unknown) => void) | null = null;
      onmessage: ((event: unknown) => void) | null = null;
      onclose: ((event: unknown) => void) | null = null;
      onerror: ((event: unknown) => void) | null = null;
      constructor(_url: string) {
        setTimeout(() => {
          this.readyState = 1;
          this.onopen?.({});
        }, 0);
      }
      send(): void {}
      close(): void {} // the peer is gone: no close frame will ever answer
      terminate(): void {
        terminated = true;
      }
    }
    const client = new RelayClient({ url: "http://127.0.0.1:9", room: "gone", WebSocket: Unanswering });
    await sleep(50);
    client.close();
    expect(client.state).toBe("closed");
    await expect.poll(() => terminated, { timeout: 3_000 }).toBe(true);
  });

  it("ends a history() request under way at close(), rejecting it closed", async () => {
    const server = createServer(() => {}); // takes requests and never answers
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const client = new RelayClient({ url, room: "hung", WebSocket: class { readyState = 0; send() {} close() {} } as never });
      const history = client.history();
      await sleep(100);
      client.close();
      await expect(history).rejects.toMatchObject({ code: "closed" });
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe("RelayClient against a silent server", () => {
  let server: WebSocketServer;
  let url: string;
  let connections = 0;

  beforeAll(async () => {
    server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    server.on("connection", () => connections++);
    await new Promise((resolve) => server.once("listening", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const socket of server.clients) socket.terminate();
    await new Promise((resolve) => server.close(resolve));
  });

  it("drops an attempt with no welcome within connectTimeoutMs, retries, and stops after maxRetries", async () => {
    connections = 0;
    const client = new RelayClient({ url, room: "silent", connectTimeoutMs: 1000, maxRetries: 2, reconnect: FAST });
    const closes: CloseInfo[] = [];
    client.on("close", (info) => closes.push(info));
    await expect(client.ready()).rejects.toMatchObject({ code: "closed", message: expect.stringContaining("no welcome within 1000 ms") });
    expect(client.state).toBe("closed");
    expect(closes.map((info) => info.willReconnect)).toEqual([true, true, false]);
    expect(closes.every((info) => info.reason === "no welcome within 1000 ms")).toBe(true);
    // The server saw the attempts whose handshakes finished in time: all of them, unless the machine crawls.
    expect(connections).toBeGreaterThan(0);
    expect(connections).toBeLessThanOrEqual(3);
  });
});
