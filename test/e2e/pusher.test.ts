// Pusher Channels compatibility (docs/pusher.md): pusher-js, the `pusher` server SDK and Laravel
// Echo, unchanged, against the relay over real TCP; a raw socket for the relay's own additions.
import { createHash, createHmac } from "node:crypto";
import Echo from "laravel-echo";
import Pusher, { type ChannelAuthorizationCallback, type Members, type Options } from "pusher-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  APP,
  nextPusherEvent,
  nextPusherFrame,
  PUSHER_RELAY,
  PusherClient,
  Queue,
  type Heard,
  type Member,
  type PusherFrame,
  rawPusher,
  restRequest,
  serverSdk,
  signedPath,
  signingHandler,
  withTimeout,
  WAIT_MS,
  pusherSocketPath,
} from "./pusher-support";
import type { TestClient } from "../support/client";
import { EventReader } from "../support/sse";
import { API_KEY, freshRoom, type Relay, SERVER_AUTH, startRelay } from "./relay";

let relay: Relay;
let sdk: ReturnType<typeof serverSdk>;
const clients: PusherClient[] = [];

beforeAll(async () => {
  relay = await startRelay(PUSHER_RELAY);
  sdk = serverSdk(relay);
});

afterAll(async () => {
  for (const client of clients) client.close();
  await relay?.close();
});

/** A pusher-js client that signs subscriptions as `member` (if given) and is closed after the file. */
async function connectClient(member?: Member, secret?: string): Promise<PusherClient> {
  const client = new PusherClient(relay, { authorize: signingHandler(secret ? serverSdk(relay, secret) : sdk, member) });
  clients.push(client);
  await client.connected();
  return client;
}

/** A channel name no other test uses. */
function channel(prefix = ""): string {
  return freshRoom(`${prefix}ch`);
}

/** Reads `queue` until an event named `event` comes, answering it and everything read before it. */
async function until(queue: Queue<Heard>, event: string): Promise<{ found: Heard; before: Heard[] }> {
  const before: Heard[] = [];
  for (;;) {
    const heard = await queue.next();
    if (heard.event === event) return { found: heard, before };
    before.push(heard);
  }
}

async function json(response: { json(): Promise<unknown> }): Promise<any> {
  return response.json();
}

describe("connecting", () => {
  it("gives pusher-js a socket id the server SDK accepts", async () => {
    const client = await connectClient();
    expect(client.pusher.connection.state).toBe("connected");
    expect(client.socketId).toMatch(/^\d+\.\d+$/);
  });

  it("sends connection_established with activity_timeout, the heartbeat interval in seconds, and answers pusher:ping", async () => {
    const { client, socketId, activityTimeout } = await rawPusher(relay);
    expect(socketId).toMatch(/^\d+\.\d+$/);
    expect(activityTimeout).toBe(30);
    client.send({ event: "pusher:ping", data: {} });
    expect(await nextPusherFrame(client)).toMatchObject({ event: "pusher:pong" });
    await client.close();
  });

  it("refuses an unknown app key with pusher:error 4001 and close 4001, and pusher-js stops", async () => {
    const raw = await relay.connect(pusherSocketPath("not-the-key"));
    expect(await nextPusherFrame(raw)).toMatchObject({ event: "pusher:error", data: { code: 4001 } });
    expect((await raw.closed).code).toBe(4001);

    const client = new PusherClient(relay, { key: "not-the-key" });
    clients.push(client);
    const error = await client.errors.next();
    expect(JSON.stringify(error)).toContain("4001");
    // 4000-4099: pusher-js gives up instead of reconnecting.
    for (;;) if ((await client.states.next()) === "disconnected") break;
  });

  it.each([
    ["a version it does not speak", "3", 4007],
    ["a version that is no number", "seven", 4006],
    ["a long version in many-byte characters", encodeURIComponent("€".repeat(80)), 4006],
  ])("refuses %s with pusher:error and the close Pusher sends", async (_kind, version, code) => {
    const raw = await relay.connect(pusherSocketPath().replace("protocol=7", `protocol=${version}`));
    expect(await nextPusherFrame(raw)).toMatchObject({ event: "pusher:error", data: { code } });
    expect((await raw.closed).code).toBe(code);
  });
});

describe("public channels", () => {
  it("subscribes a pusher-js client to 100 channels at once, as it resubscribes after every reconnect", async () => {
    // 100 subscribes in one burst, five times the frame rate limit's burst: subscriptions have a
    // limit of their own (docs/pusher.md "Limits"), or pusher-js would lose channels and be closed.
    const client = new PusherClient(relay);
    clients.push(client);
    const names = Array.from({ length: 100 }, () => channel());
    const outcomes = await Promise.all(names.map((name) => client.subscribeOutcome(name)));
    expect(outcomes.filter((outcome) => !outcome.ok)).toEqual([]);
    expect(client.pusher.connection.state).toBe("connected");
    const heard = client.listen(names[99]!, "last");
    await sdk.trigger(names[99]!, "last", { ok: true });
    expect(await heard.next()).toMatchObject({ event: "last", data: { ok: true } });
  });

  it("leaves every channel pusher-js unsubscribes right after a burst that drained the subscription limit", async () => {
    // pusher-js forgets a channel as it sends the unsubscribe: one dropped by the rate limit left
    // the socket a member (and the channel occupied) until it closed (docs/protocol.md decision 48).
    const presence = channel("presence-");
    const watcher = await connectClient({ user_id: "watcher" });
    const removed = watcher.listen(presence, "pusher:member_removed");
    await watcher.subscribe(presence);
    const leaver = new PusherClient(relay, { authorize: signingHandler(sdk, { user_id: "leaver" }) });
    clients.push(leaver);
    const names = [...Array.from({ length: 99 }, () => channel()), presence];
    const outcomes = await Promise.all(names.map((name) => leaver.subscribeOutcome(name)));
    expect(outcomes.filter((outcome) => !outcome.ok)).toEqual([]);
    for (const name of names) leaver.pusher.unsubscribe(name);
    expect((await removed.next()).data).toMatchObject({ id: "leaver" });
    expect(await json(await sdk.get({ path: `/channels/${presence}/users` }))).toEqual({ users: [{ id: "watcher" }] });
    for (const name of names.slice(80, 99)) {
      await expect.poll(async () => (await json(await sdk.get({ path: `/channels/${name}` }))).occupied).toBe(false);
    }
    expect(leaver.pusher.connection.state).toBe("connected");
  });

  it("delivers a REST event to a subscriber, objects and strings as pusher-js hands them over", async () => {
    const name = channel();
    const client = await connectClient();
    const heard = client.listen(name, "greet");
    await client.subscribe(name);

    const response = await sdk.trigger(name, "greet", { hello: "world" });
    expect(response.status).toBe(200);
    expect(await json(response)).toEqual({});
    expect(await heard.next()).toMatchObject({ event: "greet", data: { hello: "world" } });
    await sdk.trigger(name, "greet", "plain text");
    expect((await heard.next()).data).toBe("plain text");
    // Data that is the JSON text of a string stays that string, as through Pusher itself.
    for (const value of ["123", "true", JSON.stringify({ a: 1 })]) {
      await sdk.trigger(name, "greet", JSON.stringify(value));
      expect((await heard.next()).data).toBe(value);
    }
  });

  it("triggers one event to several channels", async () => {
    const names = [channel(), channel(), channel()];
    const client = await connectClient();
    const queues = names.map((name) => client.listen(name, "multi"));
    for (const name of names) await client.subscribe(name);
    await sdk.trigger(names, "multi", { n: 1 });
    for (const queue of queues) expect((await queue.next()).data).toEqual({ n: 1 });
  });

  it("leaves out the socket named by socket_id", async () => {
    const name = channel();
    const [alice, bob] = await Promise.all([connectClient(), connectClient()]);
    const aliceHeard = alice.listen(name, "news", "marker");
    const bobHeard = bob.listen(name, "news", "marker");
    await Promise.all([alice.subscribe(name), bob.subscribe(name)]);

    await sdk.trigger(name, "news", { for: "bob only" }, { socket_id: alice.socketId });
    await sdk.trigger(name, "marker", {});
    expect((await bobHeard.next()).data).toEqual({ for: "bob only" });
    expect(await until(bobHeard, "marker")).toMatchObject({ before: [] });
    // Events of one channel arrive in order: had alice got "news", it would come before the marker.
    expect(await until(aliceHeard, "marker")).toMatchObject({ before: [] });
  });

  it("delivers batch_events in order", async () => {
    const [one, two] = [channel(), channel()];
    const client = await connectClient();
    const heardOne = client.listen(one, "a", "b");
    const heardTwo = client.listen(two, "c");
    await Promise.all([client.subscribe(one), client.subscribe(two)]);
    const response = await sdk.triggerBatch([
      { channel: one, name: "a", data: { i: 1 } },
      { channel: two, name: "c", data: { i: 2 } },
      { channel: one, name: "b", data: "three" },
    ]);
    expect(response.status).toBe(200);
    expect(await heardOne.next()).toMatchObject({ event: "a", data: { i: 1 } });
    expect(await heardOne.next()).toMatchObject({ event: "b", data: "three" });
    expect(await heardTwo.next()).toMatchObject({ event: "c", data: { i: 2 } });
  });

  it("applies subscribes and unsubscribes sent in one burst in order, auth checks included: the last one decides (raw protocol)", async () => {
    for (const name of [channel(), channel("private-")]) {
      const { client, socketId } = await rawPusher(relay);
      const auth = name.startsWith("private-") ? { auth: sdk.authorizeChannel(socketId, name).auth } : {};
      for (const event of ["pusher:subscribe", "pusher:unsubscribe", "pusher:subscribe", "pusher:unsubscribe"]) {
        client.send({ event, data: { channel: name, ...(event === "pusher:subscribe" && auth) } });
      }
      for (let i = 0; i < 2; i++) expect(await nextPusherFrame(client)).toMatchObject({ event: "pusher_internal:subscription_succeeded", channel: name });
      const info = await json(await sdk.get({ path: `/channels/${name}`, params: { info: "subscription_count" } }));
      expect(info).toMatchObject({ occupied: false });
      await sdk.trigger(name, "after", {});
      client.send({ event: "pusher:ping", data: {} });
      expect(await nextPusherFrame(client)).toMatchObject({ event: "pusher:pong" }); // not the event
      await client.close();
    }
  });

  it("stops delivering after pusher:unsubscribe", async () => {
    const name = channel();
    const client = await connectClient();
    await client.subscribe(name);
    client.pusher.unsubscribe(name);
    await expect
      .poll(async () => (await json(await sdk.get({ path: `/channels/${name}`, params: {} }))).occupied, { timeout: WAIT_MS })
      .toBe(false);
    await sdk.trigger(name, "missed", {});
    const again = client.listen(name, "missed", "after");
    await client.subscribe(name);
    await sdk.trigger(name, "after", {});
    // "missed" has the lower seq: delivered, it would come first.
    expect(await until(again, "after")).toMatchObject({ before: [] });
  });

  it("resubscribes pusher-js's channels after a reconnect, on a new socket id", async () => {
    const name = channel();
    const client = await connectClient();
    const heard = client.listen(name, "back");
    await client.subscribe(name);
    const firstId = client.socketId;

    const resubscribed = withTimeout(
      new Promise<void>((resolve) => client.pusher.channel(name).bind("pusher:subscription_succeeded", () => resolve())),
      WAIT_MS,
      "no resubscription",
    );
    client.pusher.disconnect();
    client.pusher.connect();
    await client.connected();
    await resubscribed;
    expect(client.socketId).not.toBe(firstId);
    await sdk.trigger(name, "back", { again: true });
    expect((await heard.next()).data).toEqual({ again: true });
  });

  it("refuses a client event on a public channel with pusher:error, keeping the connection", async () => {
    const name = channel();
    const { client } = await rawPusher(relay);
    client.send({ event: "pusher:subscribe", data: { channel: name } });
    await nextPusherEvent(client, "pusher_internal:subscription_succeeded");
    client.send({ event: "client-nope", channel: name, data: {} });
    expect(await nextPusherFrame(client)).toEqual({ event: "pusher:error", data: { code: null, message: expect.stringContaining("private and presence") } });
    client.send({ event: "pusher:ping", data: {} });
    expect(await nextPusherEvent(client, "pusher:pong")).toBeDefined();
    await client.close();
  });

  it("refuses a client event on an encrypted channel, as pusher-js does itself, keeping the connection", async () => {
    const name = channel("private-encrypted-");
    const { client, socketId } = await rawPusher(relay);
    const backend = serverSdk(relay, undefined, Buffer.alloc(32, 7).toString("base64"));
    client.send({ event: "pusher:subscribe", data: { channel: name, auth: backend.authorizeChannel(socketId, name).auth } });
    await nextPusherEvent(client, "pusher_internal:subscription_succeeded");
    client.send({ event: "client-plain", channel: name, data: { text: "not ciphertext" } });
    expect(await nextPusherFrame(client)).toEqual({ event: "pusher:error", data: { code: null, message: expect.stringContaining("encrypted") } });
    client.send({ event: "pusher:ping", data: {} });
    expect(await nextPusherEvent(client, "pusher:pong")).toBeDefined();
    await client.close();
  });

  it("refuses a binary frame with pusher:error, in Pusher's format, keeping the connection", async () => {
    const { client } = await rawPusher(relay);
    client.send(new Uint8Array([1, 2, 3]));
    expect(await nextPusherFrame(client)).toEqual({ event: "pusher:error", data: { code: null, message: expect.stringContaining("binary") } });
    client.send({ event: "pusher:ping", data: {} });
    expect(await nextPusherEvent(client, "pusher:pong")).toBeDefined();
    await client.close();
  });
});

describe("private channels", () => {
  it("subscribes with a valid signature and receives REST events", async () => {
    const name = channel("private-");
    const client = await connectClient();
    const heard = client.listen(name, "secret");
    await client.subscribe(name);
    await sdk.trigger(name, "secret", { s: 1 });
    expect((await heard.next()).data).toEqual({ s: 1 });
  });

  it("refuses a bad signature with an error pusher-js surfaces, and delivers nothing", async () => {
    const name = channel("private-");
    const client = await connectClient(undefined, "not-the-secret");
    const heard = client.listen(name, "secret", "marker");
    const outcome = await client.subscribeOutcome(name);
    expect(outcome.ok).toBe(false);
    expect(client.pusher.channel(name).subscribed).toBe(false);
    // Pusher keeps the connection open after a refused subscription.
    expect(client.pusher.connection.state).toBe("connected");
    await sdk.trigger(name, "secret", { s: 1 });
    const info = await json(await sdk.get({ path: `/channels/${name}`, params: { info: "subscription_count" } }));
    expect(info).toMatchObject({ occupied: false });
    expect(heard.received).toEqual([]);
  });

  it("refuses a subscription signed for another socket, or unsigned, and then accepts the right one (raw protocol)", async () => {
    const name = channel("private-");
    const { client, socketId } = await rawPusher(relay);
    client.send({ event: "pusher:subscribe", data: { channel: name, auth: sdk.authorizeChannel("123.456", name).auth } });
    client.send({ event: "pusher:subscribe", data: { channel: name } });
    client.send({ event: "pusher:subscribe", data: { channel: name, auth: sdk.authorizeChannel(socketId, name).auth } });
    const refusals: PusherFrame[] = [];
    for (;;) {
      const frame = await nextPusherFrame(client);
      if (frame.event === "pusher_internal:subscription_succeeded") break;
      refusals.push(frame);
    }
    // Each refusal: a subscription_error on the channel (pusher-js emits it there), then pusher:error 4009.
    expect(refusals).toHaveLength(4);
    for (const [error, general] of [refusals.slice(0, 2), refusals.slice(2)]) {
      expect(error).toMatchObject({ event: "pusher:subscription_error", channel: name, data: { type: "AuthError", status: 401 } });
      expect(general).toMatchObject({ event: "pusher:error", data: { code: 4009, message: expect.any(String) } });
    }
    await client.close();
  });

  it("relays client events to the other subscribers only", async () => {
    const name = channel("private-");
    const [alice, bob] = await Promise.all([connectClient(), connectClient()]);
    const aliceHeard = alice.listen(name, "client-ping", "client-pong");
    const bobHeard = bob.listen(name, "client-ping", "client-pong");
    await Promise.all([alice.subscribe(name), bob.subscribe(name)]);

    alice.pusher.channel(name).trigger("client-ping", { from: "alice" });
    expect(await bobHeard.next()).toMatchObject({ event: "client-ping", data: { from: "alice" } });
    bob.pusher.channel(name).trigger("client-pong", { from: "bob" });
    // Alice's own event never comes back to her: the first thing she hears is bob's answer.
    expect(await until(aliceHeard, "client-pong")).toMatchObject({ before: [], found: { data: { from: "bob" } } });
  });

  it("refuses a client event whose name is longer than Pusher's 200 characters, as REST does, or whose data nests too deep", async () => {
    const name = channel("private-");
    const { client, socketId } = await rawPusher(relay);
    client.send({ event: "pusher:subscribe", data: { channel: name, auth: sdk.authorizeChannel(socketId, name).auth } });
    await nextPusherEvent(client, "pusher_internal:subscription_succeeded");
    client.send({ event: `client-${"x".repeat(194)}`, channel: name, data: {} });
    expect(await nextPusherFrame(client)).toMatchObject({ event: "pusher:error", data: { message: expect.stringContaining("200") } });
    // Nor one whose data nests past MAX_DATA_DEPTH, as everywhere else (docs/protocol.md decision 47).
    client.send(`{"event":"client-deep","channel":"${name}","data":${"[".repeat(1001)}${"]".repeat(1001)}}`);
    expect(await nextPusherFrame(client)).toMatchObject({ event: "pusher:error", data: { message: expect.stringContaining("1000 levels") } });
    await client.close();
  });
});

describe("end-to-end encrypted channels", () => {
  it("relay the ciphertext of private-encrypted- channels, which pusher-js decrypts with the app's shared secret", async () => {
    // The app's backend holds the master key: it encrypts what it triggers, and its auth endpoint
    // hands each subscriber the channel's shared secret. The relay sees a private channel.
    const backend = serverSdk(relay, undefined, Buffer.alloc(32, 7).toString("base64"));
    const name = channel("private-encrypted-");
    const client = new PusherClient(relay, { authorize: signingHandler(backend) });
    clients.push(client);
    await client.connected();
    const heard = client.listen(name, "secret");
    await client.subscribe(name);
    await backend.trigger(name, "secret", { plain: "text" });
    expect((await heard.next()).data).toEqual({ plain: "text" });
    // What the relay stored is ciphertext: its history holds no plain text.
    const history = await (await relay.fetch(`/rooms/${name}/messages`, { headers: SERVER_AUTH })).text();
    expect(history).toContain("ciphertext");
    expect(history).not.toContain("plain");
  });
});

describe("cache channels", () => {
  it("give a new subscriber the channel's last event, or pusher:cache_miss when it has none", async () => {
    const name = channel("cache-");
    const first = await connectClient();
    const heardFirst = first.listen(name, "pusher:cache_miss", "update");
    await first.subscribe(name);
    expect((await heardFirst.next()).event).toBe("pusher:cache_miss");
    await sdk.trigger(name, "update", { n: 1 });
    await sdk.trigger(name, "update", { n: 2 });
    expect((await heardFirst.next()).data).toEqual({ n: 1 });
    expect((await heardFirst.next()).data).toEqual({ n: 2 });
    const second = await connectClient();
    const heardSecond = second.listen(name, "pusher:cache_miss", "update");
    await second.subscribe(name);
    await sdk.trigger(name, "update", { n: 3 });
    expect((await heardSecond.next()).data).toEqual({ n: 2 }); // the cached event first
    expect((await heardSecond.next()).data).toEqual({ n: 3 });
    expect(heardSecond.received.map((heard) => heard.event)).toEqual(["update", "update"]);
  });

  it("keep private cache channels private, and leave plain channels without a cache", async () => {
    const cached = channel("private-cache-");
    const plain = channel();
    await sdk.trigger(cached, "update", { n: 1 });
    await sdk.trigger(plain, "update", { n: 1 });
    const client = await connectClient();
    const heardCached = client.listen(cached, "pusher:cache_miss", "update");
    const heardPlain = client.listen(plain, "pusher:cache_miss", "update");
    await client.subscribe(cached);
    await client.subscribe(plain);
    expect(await heardCached.next()).toMatchObject({ event: "update", data: { n: 1 } });
    await sdk.trigger(plain, "update", { n: 2 });
    expect(await heardPlain.next()).toMatchObject({ event: "update", data: { n: 2 } });
  });
});

describe("presence channels", () => {
  const alice = { user_id: "alice", user_info: { name: "Alice" } };
  const bob = { user_id: "bob", user_info: { name: "Bob" } };

  it("lists members, announces arrivals and departures", async () => {
    const name = channel("presence-");
    const first = await connectClient(alice);
    const firstChannel = first.pusher.channel(name) ?? first.pusher.subscribe(name);
    const added: any[] = [];
    const removed: any[] = [];
    firstChannel.bind("pusher:member_added", (member: unknown) => added.push(member));
    firstChannel.bind("pusher:member_removed", (member: unknown) => removed.push(member));
    const mine = (await first.subscribeOutcome(name)) as { ok: true; data: Members };
    expect(mine.ok).toBe(true);
    expect(mine.data.count).toBe(1);
    expect(mine.data.me).toEqual({ id: "alice", info: { name: "Alice" } });

    const second = await connectClient(bob);
    const theirs = (await second.subscribeOutcome(name)) as { ok: true; data: Members };
    expect(theirs.data.count).toBe(2);
    expect(theirs.data.me).toEqual({ id: "bob", info: { name: "Bob" } });
    expect(theirs.data.members).toEqual({ alice: { name: "Alice" }, bob: { name: "Bob" } });
    await expect.poll(() => added, { timeout: WAIT_MS }).toEqual([{ id: "bob", info: { name: "Bob" } }]);

    second.close();
    await expect.poll(() => removed, { timeout: WAIT_MS }).toEqual([{ id: "bob", info: { name: "Bob" } }]);
    expect((firstChannel as unknown as { members: Members }).members.count).toBe(1);
  });

  it("sends subscription_succeeded with presence {ids, hash, count}, seq and epoch (raw protocol)", async () => {
    const name = channel("presence-");
    const { client, socketId } = await rawPusher(relay);
    const signed = sdk.authorizeChannel(socketId, name, alice);
    client.send({ event: "pusher:subscribe", data: { channel: name, ...signed } });
    const succeeded = await nextPusherEvent(client, "pusher_internal:subscription_succeeded");
    expect(succeeded).toMatchObject({
      channel: name,
      data: { presence: { ids: ["alice"], hash: { alice: { name: "Alice" } }, count: 1 } },
      seq: expect.any(Number),
      epoch: expect.any(String),
    });
    await client.close();
  });

  it("refuses presence channel_data that the signature does not cover", async () => {
    const name = channel("presence-");
    const { client, socketId } = await rawPusher(relay);
    const signed = sdk.authorizeChannel(socketId, name, alice);
    client.send({ event: "pusher:subscribe", data: { channel: name, auth: signed.auth, channel_data: JSON.stringify(bob) } });
    expect(await nextPusherFrame(client)).toMatchObject({ event: expect.stringMatching(/^pusher:(error|subscription_error)$/) });
    await client.close();
  });

  it("marks client events with the sender's user_id, and counts users once however many sockets", async () => {
    const name = channel("presence-");
    const [a1, a2, b] = await Promise.all([connectClient(alice), connectClient(alice), connectClient(bob)]);
    const bobHeard = b.listen(name, "client-wave");
    await Promise.all([a1.subscribe(name), a2.subscribe(name), b.subscribe(name)]);
    a1.pusher.channel(name).trigger("client-wave", { hi: 1 });
    expect(await bobHeard.next()).toMatchObject({ data: { hi: 1 }, metadata: { user_id: "alice" } });

    const info = await json(await sdk.get({ path: `/channels/${name}`, params: { info: "user_count,subscription_count" } }));
    expect(info).toEqual({ occupied: true, user_count: 2, subscription_count: 3 });
    const users = await json(await sdk.get({ path: `/channels/${name}/users`, params: {} }));
    expect(users.users.map((user: { id: string }) => user.id).sort()).toEqual(["alice", "bob"]);
  });
});

describe("REST channel queries", () => {
  it("lists occupied channels by prefix, with user_count for presence channels and subscription_count", async () => {
    const prefix = `presence-${freshRoom("q")}-`;
    const client = await connectClient({ user_id: "quinn" });
    await client.subscribe(`${prefix}a`);
    await client.subscribe(`${prefix}b`);
    const counted = await json(await sdk.get({ path: "/channels", params: { filter_by_prefix: prefix, info: "user_count" } }));
    expect(counted).toEqual({ channels: { [`${prefix}a`]: { user_count: 1 }, [`${prefix}b`]: { user_count: 1 } } });
    const plain = await json(await sdk.get({ path: "/channels", params: { filter_by_prefix: prefix } }));
    expect(plain).toEqual({ channels: { [`${prefix}a`]: {}, [`${prefix}b`]: {} } });
    // subscription_count, every socket and subscription, for any prefix (as for one channel).
    const second = await connectClient({ user_id: "quinn" });
    await second.subscribe(`${prefix}b`);
    const both = await json(await sdk.get({ path: "/channels", params: { filter_by_prefix: prefix, info: "user_count,subscription_count" } }));
    expect(both).toEqual({ channels: { [`${prefix}a`]: { user_count: 1, subscription_count: 1 }, [`${prefix}b`]: { user_count: 1, subscription_count: 2 } } });
    const everywhere = await json(await sdk.get({ path: "/channels", params: { info: "subscription_count" } }));
    expect(everywhere.channels[`${prefix}b`]).toEqual({ subscription_count: 2 });

    client.pusher.unsubscribe(`${prefix}a`);
    await expect
      .poll(async () => Object.keys((await json(await sdk.get({ path: "/channels", params: { filter_by_prefix: prefix } }))).channels), {
        timeout: WAIT_MS,
      })
      .toEqual([`${prefix}b`]);
  });

  it("lists a channel by the time its first subscriber is answered, over pusher-js and room sockets", async () => {
    const listed = async (name: string) => Object.keys((await json(await sdk.get({ path: "/channels", params: { filter_by_prefix: name } }))).channels);
    // Each round's client goes as the next comes: the directory also hears of the channels they leave.
    for (let i = 0; i < 12; i++) {
      const name = channel();
      const client = await connectClient();
      await client.subscribe(name);
      expect(await listed(name)).toEqual([name]);
      client.close();
    }
    for (let i = 0; i < 4; i++) {
      const name = channel();
      const socket = await relay.connect(`/rooms/${name}/ws?user=r${i}`);
      expect(await socket.json()).toMatchObject({ type: "welcome" });
      expect(await listed(name)).toEqual([name]);
      await socket.close();
    }
  });

  it("answers a public channel's occupancy and subscription_count", async () => {
    const name = channel();
    const empty = await json(await sdk.get({ path: `/channels/${name}`, params: { info: "subscription_count" } }));
    expect(empty).toMatchObject({ occupied: false });
    const [a, b] = await Promise.all([connectClient(), connectClient()]);
    await Promise.all([a.subscribe(name), b.subscribe(name)]);
    const full = await json(await sdk.get({ path: `/channels/${name}`, params: { info: "subscription_count" } }));
    expect(full).toEqual({ occupied: true, subscription_count: 2 });
  });

  it("follows Pusher's rules: user_count only for presence channels, /users of an empty presence channel is []", async () => {
    const name = channel();
    await expect(sdk.get({ path: "/channels", params: { info: "user_count" } })).rejects.toMatchObject({ status: 400 });
    await expect(sdk.get({ path: `/channels/${name}`, params: { info: "user_count" } })).rejects.toMatchObject({ status: 400 });
    const users = await json(await sdk.get({ path: `/channels/${channel("presence-")}/users`, params: {} }));
    expect(users).toEqual({ users: [] });
  });

  it("answers a trigger's and a batch's `info` with each channel's attributes once the event is in", async () => {
    const [plain, present] = [channel(), channel("presence-")];
    const [a, b] = await Promise.all([connectClient({ user_id: "ines" }), connectClient({ user_id: "ines" })]);
    await Promise.all([a.subscribe(plain), a.subscribe(present), b.subscribe(present)]);
    const asked = await sdk.trigger([plain, present], "news", { n: 1 }, { info: "user_count,subscription_count" });
    // user_count is a presence channel's alone, as Pusher gives it.
    expect(await json(asked)).toEqual({
      channels: { [plain]: { subscription_count: 1 }, [present]: { user_count: 1, subscription_count: 2 } },
    });
    expect(await json(await sdk.trigger(plain, "news", { n: 2 }))).toEqual({});

    const batch = await sdk.triggerBatch([
      { channel: present, name: "a", data: 1, info: "user_count" },
      { channel: plain, name: "b", data: 2 },
      { channel: channel(), name: "c", data: 3, info: "subscription_count" },
    ]);
    expect(await json(batch)).toEqual({ batch: [{ user_count: 1 }, {}, { subscription_count: 0 }] });
    await expect(sdk.trigger(plain, "news", 3, { info: "user_count,listeners" })).rejects.toMatchObject({ status: 400 });
    // A channel named `__proto__` is a channel like any other in the answer.
    const odd = await json(await sdk.trigger("__proto__", "news", 4, { info: "subscription_count" }));
    expect(Object.keys(odd.channels)).toEqual(["__proto__"]);
  });

  it("refuses an event larger than MAX_MESSAGE_BYTES with 413", async () => {
    await expect(sdk.trigger(channel(), "big", "x".repeat(70_000))).rejects.toMatchObject({ status: 413 });
  });

  it("stores event data nested 1,000 levels and refuses deeper data with 400 (docs/protocol.md decision 47)", async () => {
    const name = channel();
    const nested = (levels: number) => "[".repeat(levels) + "]".repeat(levels);
    await sdk.trigger(name, "deep", nested(1000));
    await expect(sdk.trigger(name, "deeper", nested(1001))).rejects.toMatchObject({ status: 400, body: expect.stringContaining("1000 levels") });
    const history = await json(await relay.fetch(`/rooms/${name}/messages`, { headers: SERVER_AUTH }));
    expect(history.messages.map((m: { data: { event: string } }) => m.data.event)).toEqual(["deep"]);
  });

  it("hands Pusher subscribers a REST event's data as the text it was sent as, live and on a resume (decision 58)", async () => {
    const name = channel();
    const sent = '{"id": 1234567890123456789012, "price": 1.50, "2": "two",\n "tags": ["\\u00e9"]}';
    const live = await rawPusher(relay);
    live.client.send({ event: "pusher:subscribe", data: { channel: name } });
    const { epoch } = await nextPusherEvent(live.client, "pusher_internal:subscription_succeeded");
    const room = await relay.connect(`/rooms/${name}/ws?user=reader`);
    expect(await room.json()).toMatchObject({ type: "welcome" });
    const stream = new EventReader((await relay.fetch(`/rooms/${name}/events`)).body!);
    await sdk.trigger(name, "order", sent);
    expect(await live.client.json()).toEqual({ event: "order", channel: name, data: sent, seq: 1 });
    // Room sockets, streams (the payload's line break split over data lines) and history: the same value.
    expect(await room.nextOf("message")).toMatchObject({ data: { event: "order", data: JSON.parse(sent) } });
    for (let event = await stream.next(WAIT_MS); ; event = await stream.next(WAIT_MS)) {
      if (event.event !== "message") continue;
      expect(event.data).toMatchObject({ seq: 1, data: { event: "order", data: JSON.parse(sent) } });
      break;
    }
    await stream.cancel();
    const history = await relay.fetch(`/rooms/${name}/messages`, { headers: SERVER_AUTH });
    expect(await history.text()).toContain(sent);
    const back = await rawPusher(relay);
    back.client.send({ event: "pusher:subscribe", data: { channel: name, since: 0, epoch } });
    await nextPusherEvent(back.client, "pusher_internal:subscription_succeeded");
    expect(await back.client.json()).toEqual({ event: "order", channel: name, data: sent, seq: 1 });
    await Promise.all([live.client.close(), back.client.close(), room.close()]);
  });

  it("keeps event data whose JSON holds a number too large for a double as the string it came as", async () => {
    const name = channel();
    await sdk.trigger(name, "huge", '{"n":1e400}');
    const history = await json(await relay.fetch(`/rooms/${name}/messages`, { headers: SERVER_AUTH }));
    expect(history.messages.map((m: { data: unknown }) => m.data)).toEqual([{ event: "huge", data: '{"n":1e400}' }]);
  });

  it("refuses a body that is not UTF-8 with 400, whatever its body_md5, and stores nothing", async () => {
    const name = channel();
    const bytes = Buffer.concat([Buffer.from(`{"name":"e","channel":"${name}","data":"`), Buffer.from([0xff, 0xfe]), Buffer.from(`"}`)]);
    const path = signedPath({ method: "POST", path: "/events", body: "", bodyMd5: createHash("md5").update(bytes).digest("hex") });
    const response = await relay.fetch(path, { method: "POST", body: bytes, headers: { "Content-Type": "application/json" } });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: "bad_request", message: expect.stringContaining("UTF-8") });
    expect(await json(await relay.fetch(`/rooms/${name}`, { headers: SERVER_AUTH }))).toMatchObject({ seq: 0 });
  });

  it("refuses an event naming both channel and channels, or no data, and sends one event to a channel named twice", async () => {
    const [a, b] = [channel(), channel()];
    const both = JSON.stringify({ name: "e", channel: a, channels: [b], data: "x" });
    expect((await restRequest(relay, { method: "POST", path: "/events", body: both })).status).toBe(400);
    const noData = JSON.stringify({ name: "e", channel: a });
    const refused = await restRequest(relay, { method: "POST", path: "/events", body: noData });
    expect([refused.status, await refused.json()]).toEqual([400, { error: "bad_request", message: expect.stringContaining('"data"') }]);
    const batchNoData = JSON.stringify({ batch: [{ name: "e", channel: a, data: "x" }, { name: "e", channel: b }] });
    expect((await restRequest(relay, { method: "POST", path: "/batch_events", body: batchNoData })).status).toBe(400);
    const twice = JSON.stringify({ name: "e", channels: [a, a, a], data: "x" });
    expect((await restRequest(relay, { method: "POST", path: "/events", body: twice })).status).toBe(200);
    expect(await json(await relay.fetch(`/rooms/${a}`, { headers: SERVER_AUTH }))).toMatchObject({ seq: 1 });
  });

  it("refuses a body larger than a full batch could be with 413, before reading it", async () => {
    const body = JSON.stringify({ name: "e", channel: channel(), data: "x", padding: "p".repeat(2 * 1024 * 1024) });
    const response = await restRequest(relay, { method: "POST", path: "/events", body });
    expect(response.status).toBe(413);
    expect(await response.json()).toMatchObject({ error: "too_large" });
  });
});

describe("the REST signature", () => {
  const name = "sig-channel";
  const body = JSON.stringify({ name: "e", channels: [name], data: "{}" });
  const batch = JSON.stringify({ batch: [{ channel: name, name: "e", data: "{}" }] });
  const routes = [
    { method: "POST", path: "/events", body },
    { method: "POST", path: "/batch_events", body: batch },
    { method: "GET", path: "/channels" },
    { method: "GET", path: `/channels/${name}`, params: { info: "subscription_count" } },
    { method: "GET", path: `/channels/presence-${name}/users` },
  ] as const;

  it.each(routes)("$method $path answers 200 when signed right", async (route) => {
    const response = await restRequest(relay, { ...route });
    expect(response.status).toBe(200);
  });

  it.each(routes)("$method $path refuses a wrong signature, key, timestamp or body_md5 with 401", async (route) => {
    const good = signedPath({ ...route });
    const wrongSignature = good.replace(/auth_signature=[0-9a-f]+$/, `auth_signature=${"0".repeat(64)}`);
    const tries = [
      wrongSignature,
      signedPath({ ...route, secret: "not-the-secret" }),
      signedPath({ ...route, key: "not-the-key" }),
      signedPath({ ...route, timestamp: Math.floor(Date.now() / 1000) - 1_000 }),
      good.replace(/&auth_signature=.*$/, ""),
      ...("body" in route ? [signedPath({ ...route, bodyMd5: "0".repeat(32) })] : []),
    ];
    for (const path of tries) {
      const response = await relay.fetch(path, {
        method: route.method,
        ...("body" in route && { body: route.body, headers: { "Content-Type": "application/json" } }),
      });
      expect({ path, status: response.status }).toEqual({ path, status: 401 });
    }
    // A body other than the one signed.
    if ("body" in route) {
      const response = await relay.fetch(good, { method: "POST", body: `${route.body} `, headers: { "Content-Type": "application/json" } });
      expect(response.status).toBe(401);
    }
  });

  it("rejects the server SDK configured with the wrong secret", async () => {
    const wrong = serverSdk(relay, "not-the-secret");
    await expect(wrong.trigger(name, "e", {})).rejects.toMatchObject({ status: 401 });
    await expect(wrong.get({ path: "/channels", params: {} })).rejects.toMatchObject({ status: 401 });
  });

  it("does not know another app id", async () => {
    const response = await restRequest(relay, { method: "GET", path: "/channels", appId: "another-app" });
    expect(response.status).toBeGreaterThanOrEqual(400);
    expect(response.status).toBeLessThan(500);
  });
});

describe("Pusher channels are rooms", () => {
  it("shows a Pusher REST event to a room socket as a message with {event, data}", async () => {
    const name = channel();
    const { client } = await relay.join(name, "watcher");
    await sdk.trigger(name, "greet", { hello: "room" });
    expect(await client.nextOf("message")).toMatchObject({
      type: "message",
      room: name,
      seq: expect.any(Number),
      from: "server",
      data: { event: "greet", data: { hello: "room" } },
    });
    await sdk.trigger(name, "greet", "not json");
    expect((await client.nextOf("message")).data).toEqual({ event: "greet", data: "not json" });
    await client.close();
  });

  it("shows a room socket's publish to pusher-js as the event data.event names, else as 'message'", async () => {
    const name = channel();
    const listener = await connectClient();
    const heard = listener.listen(name, "news", "message");
    await listener.subscribe(name);
    const { client } = await relay.join(name, "writer");
    client.send({ type: "publish", data: { event: "news", data: { n: 1 } } });
    expect(await heard.next()).toMatchObject({ event: "news", data: { n: 1 } });
    client.send({ type: "publish", data: "plain" });
    expect(await heard.next()).toMatchObject({ event: "message", data: "plain" });
    client.send({ type: "publish", data: { event: "pusher:subscribe", data: 1 } });
    expect(await heard.next()).toMatchObject({ event: "message", data: { event: "pusher:subscribe", data: 1 } });
    await client.close();
  });

  it("puts top-level seq on channel events, the room's seq", async () => {
    const name = channel();
    const { client } = await rawPusher(relay);
    client.send({ event: "pusher:subscribe", data: { channel: name } });
    const succeeded = await nextPusherEvent(client, "pusher_internal:subscription_succeeded");
    expect(succeeded).toMatchObject({ seq: 0, epoch: expect.any(String) });
    const history = await (await relay.fetch(`/rooms/${name}`, { headers: SERVER_AUTH })).json();
    expect(history).toMatchObject({ seq: 0 });
    await sdk.trigger(name, "one", {});
    expect(await nextPusherFrame(client)).toMatchObject({ event: "one", channel: name, seq: 1 });
    await client.close();
  });

  it("keeps private and presence rooms away from anonymous v1 sockets and streams", async () => {
    for (const name of [channel("private-"), channel("presence-")]) {
      // No token at all: 401, as for any missing token (a token without the claim gets 403).
      await expect(relay.join(name, "snoop")).rejects.toMatchObject({ status: 401 });
      const stream = await relay.fetch(`/rooms/${name}/events?user=snoop`);
      expect(stream.status).toBe(401);
      await stream.body?.cancel();
      expect((await relay.fetch(`/rooms/${name}`, { headers: SERVER_AUTH })).status).toBe(200);
    }
  });
});

describe("resuming a channel (beyond Pusher)", () => {
  it("replays the events missed since `since`, in order, then live ones", async () => {
    const name = channel();
    const first = await rawPusher(relay);
    first.client.send({ event: "pusher:subscribe", data: { channel: name } });
    const { epoch } = await nextPusherEvent(first.client, "pusher_internal:subscription_succeeded");
    await sdk.trigger(name, "e", { i: 1 });
    const seen = await nextPusherEvent(first.client, "e");
    await first.client.close();

    for (const i of [2, 3, 4]) await sdk.trigger(name, "e", { i });
    const back = await rawPusher(relay);
    back.client.send({ event: "pusher:subscribe", data: { channel: name, since: seen.seq, epoch } });
    expect(await nextPusherFrame(back.client)).toMatchObject({ event: "pusher_internal:subscription_succeeded", seq: 4, epoch, recovered: true });
    for (const i of [2, 3, 4]) expect(await nextPusherFrame(back.client)).toMatchObject({ event: "e", data: { i }, seq: i });
    await sdk.trigger(name, "e", { i: 5 });
    expect(await nextPusherFrame(back.client)).toMatchObject({ event: "e", data: { i: 5 }, seq: 5 });
    await back.client.close();
  });

  it("replays nothing for another epoch, nor without `since`", async () => {
    const name = channel();
    for (const i of [1, 2]) await sdk.trigger(name, "e", { i });
    let seq = 2;
    for (const extra of [{ since: 0, epoch: "not-the-epoch" }, {}]) {
      const { client } = await rawPusher(relay);
      client.send({ event: "pusher:subscribe", data: { channel: name, ...extra } });
      const succeeded = await nextPusherFrame(client);
      expect(succeeded).toMatchObject({ event: "pusher_internal:subscription_succeeded", seq });
      // `recovered` answers a `since`, as in a room socket's welcome.
      if ("since" in extra) expect(succeeded.recovered).toBe(false);
      else expect(succeeded).not.toHaveProperty("recovered");
      await sdk.trigger(name, "live", {});
      expect(await nextPusherFrame(client)).toMatchObject({ event: "live", seq: ++seq });
      await client.close();
    }
  });
});

describe("resume points a Pusher subscribe may carry", () => {
  it("refuses a since, epoch or channel name a user socket's subscribe would refuse, on the channel too, keeping the connection", async () => {
    const { client } = await rawPusher(relay);
    const refusals = [{ since: -1 }, { since: "3" }, { since: 0, epoch: 5 }, { since: 0, epoch: "e".repeat(300) }].map((resume) => ({ channel: channel(), ...resume }));
    for (const data of [...refusals, { channel: "bad#name" }, { channel: "c".repeat(165) }]) {
      client.send({ event: "pusher:subscribe", data });
      // pusher-js gives the first to the channel's handlers (Echo's .error()), the second to the connection's.
      expect(await nextPusherFrame(client)).toMatchObject({ event: "pusher:subscription_error", channel: data.channel, data: { status: 400 } });
      expect(await nextPusherFrame(client)).toMatchObject({ event: "pusher:error", data: { code: null } });
    }
    client.send({ event: "pusher:ping", data: {} });
    expect(await nextPusherEvent(client, "pusher:pong")).toBeDefined();
    await client.close();
  });

  it("refuses a subscribe over MAX_MESSAGE_BYTES on its channel too (413), unread", async () => {
    const { client } = await rawPusher(relay);
    const name = `presence-${channel()}`;
    client.send({ event: "pusher:subscribe", data: { channel: name, auth: "k:s", channel_data: JSON.stringify({ user_id: "u", user_info: "x".repeat(70_000) }) } });
    expect(await nextPusherFrame(client)).toMatchObject({ event: "pusher:subscription_error", channel: name, data: { status: 413 } });
    expect(await nextPusherFrame(client)).toMatchObject({ event: "pusher:error", data: { code: null, message: expect.stringContaining("65536 bytes") } });
    await client.close();
  });

  it("tells a subscribe dropped by the rate limit on its channel too (429)", async () => {
    const { client } = await rawPusher(relay);
    const names = Array.from({ length: 250 }, () => channel()); // well past the bucket's 100 at once
    for (const name of names) client.send({ event: "pusher:subscribe", data: { channel: name } });
    let previous: Record<string, any> | undefined;
    let frame = await nextPusherFrame(client);
    while (!(frame.event === "pusher:error" && frame.data.code === 4301)) [previous, frame] = [frame, await nextPusherFrame(client)];
    expect(previous).toMatchObject({ event: "pusher:subscription_error", channel: expect.any(String), data: { status: 429 } });
    expect(names).toContain(previous!.channel);
    await client.close();
  });
});

describe("a full channel", () => {
  let small: Relay;
  beforeAll(async () => {
    small = await startRelay({ ...PUSHER_RELAY, vars: { ...PUSHER_RELAY.vars, MAX_CONNECTIONS_PER_ROOM: "1", PRESENCE_LIST_LIMIT: "0" } });
  });
  afterAll(async () => {
    await small?.close();
  });

  it("refuses a subscription over capacity with subscription_error, pusher:error 4100 and a 4100 close", async () => {
    const name = channel();
    const first = await rawPusher(small);
    first.client.send({ event: "pusher:subscribe", data: { channel: name } });
    await nextPusherEvent(first.client, "pusher_internal:subscription_succeeded");
    const second = await rawPusher(small);
    second.client.send({ event: "pusher:subscribe", data: { channel: name } });
    expect(await nextPusherFrame(second.client)).toMatchObject({ event: "pusher:subscription_error", channel: name, data: { status: 503 } });
    expect(await nextPusherFrame(second.client)).toMatchObject({ event: "pusher:error", data: { code: 4100 } });
    expect(await second.client.closed).toEqual({ code: 4100, reason: "over capacity" });
    await first.client.close();
  });

  it("leaves a channel whose first subscriber was refused out of the channel list", async () => {
    // PRESENCE_LIST_LIMIT=0: a presence channel has no room for a first member.
    const name = freshRoom("presence-none");
    const smallSdk = serverSdk(small);
    const { client, socketId } = await rawPusher(small);
    client.send({ event: "pusher:subscribe", data: { channel: name, ...smallSdk.authorizeChannel(socketId, name, { user_id: "a" }) } });
    expect(await nextPusherEvent(client, "pusher:subscription_error")).toMatchObject({ data: { status: 403 } });
    // Like a channel that empties, it leaves the list a moment after the refusal.
    const listed = async () => Object.keys((await json(await smallSdk.get({ path: "/channels", params: { filter_by_prefix: "presence-" } }))).channels);
    await expect.poll(listed, { timeout: WAIT_MS }).not.toContain(name);
    expect(await json(await smallSdk.get({ path: `/channels/${name}`, params: {} }))).toEqual({ occupied: false });
    await client.close();
  });
});

describe("Laravel Echo", () => {
  it("listens on a public and a private channel with broadcaster pusher", async () => {
    const [pub, priv] = [channel(), channel()];
    const echo = new Echo({
      broadcaster: "pusher",
      key: APP.key,
      cluster: "relay",
      wsHost: relay.url.hostname,
      wsPort: Number(relay.url.port),
      forceTLS: false,
      enabledTransports: ["ws"],
      Pusher,
      // What a Laravel backend's /broadcasting/auth answers, computed here with the server SDK.
      authorizer: (ch: { name: string }) => ({
        authorize: (socketId: string, callback: ChannelAuthorizationCallback) =>
          callback(null, sdk.authorizeChannel(socketId, ch.name)),
      }),
    });
    try {
      const shipped = new Promise<unknown>((resolve) => echo.channel(pub).listen("OrderShipped", resolve));
      const status = new Promise<unknown>((resolve) => echo.private(priv).listen(".status", resolve));
      await Promise.all([
        new Promise<void>((resolve) => echo.channel(pub).subscribed(() => resolve())),
        new Promise<void>((resolve) => echo.private(priv).subscribed(() => resolve())),
      ]);
      // Laravel names an event by its class; a leading dot in listen() opts out of the namespace.
      await sdk.trigger(pub, "App\\Events\\OrderShipped", { order: 7 });
      await sdk.trigger(`private-${priv}`, "status", { ok: true });
      expect(await withTimeout(shipped, WAIT_MS, "no OrderShipped")).toEqual({ order: 7 });
      expect(await withTimeout(status, WAIT_MS, "no status")).toEqual({ ok: true });
      expect(echo.socketId()).toMatch(/^\d+\.\d+$/);
    } finally {
      echo.disconnect();
    }
  });
});

describe("a relay without the Pusher app", () => {
  let bare: Relay;
  beforeAll(async () => {
    bare = await startRelay({ vars: { ALLOW_ANONYMOUS: "true" } });
  });
  afterAll(async () => {
    await bare?.close();
  });

  it("answers 404 on the Pusher routes", async () => {
    await expect(bare.connect(pusherSocketPath())).rejects.toMatchObject({ status: 404 });
    for (const route of [
      { method: "POST", path: "/events", body: JSON.stringify({ name: "e", channels: ["c"], data: "{}" }) },
      { method: "GET", path: "/channels" },
    ] as const) {
      expect((await restRequest(bare, route)).status).toBe(404);
    }
  });
});

describe("a relay with MAX_MESSAGE_BYTES at its most, 1 MiB", () => {
  let big: Relay;
  beforeAll(async () => {
    big = await startRelay({ vars: { ...PUSHER_RELAY.vars, MAX_MESSAGE_BYTES: "1048576" }, secrets: PUSHER_RELAY.secrets });
  });
  afterAll(async () => {
    await big?.close();
  });

  it("refuses alone, too_large, a message under the limit that stored would not fit a storage row (decision 59)", async () => {
    const name = freshRoom("grows");
    // 500 KB sent, 2.2 MB stored: 1e20 is written out in full.
    const grows = `[${Array.from({ length: 100_000 }, () => "1e20").join(",")}]`;
    const socket = await big.connect(`/rooms/${name}/ws?user=big`);
    expect(await socket.json()).toMatchObject({ type: "welcome" });
    socket.send(`{"type":"publish","id":"p1","data":${grows}}`);
    expect(await socket.nextOf("error")).toMatchObject({ code: "too_large", id: "p1", message: expect.stringContaining("storage row") });
    socket.send({ type: "publish", id: "p2", data: "small" });
    expect(await socket.nextOf("message")).toMatchObject({ seq: 1, id: "p2", data: "small" });

    const posted = await big.fetch(`/rooms/${name}/messages`, { method: "POST", headers: SERVER_AUTH, body: `{"data":${grows}}` });
    expect(posted.status).toBe(413);
    expect(await posted.json()).toMatchObject({ error: "too_large" });
    // A REST event's control characters are stored escaped, six characters each.
    const triggered = await serverSdk(big).trigger(name, "e", "\u0001".repeat(400_000)).catch((error: { status: number }) => error);
    expect(triggered).toMatchObject({ status: 413 });

    const history = await json(await big.fetch(`/rooms/${name}/messages`, { headers: SERVER_AUTH }));
    expect(history.messages.map((message: { data: unknown }) => message.data)).toEqual(["small"]);
    await socket.close();
  });

  it("refuses alone, too_large, a direct that stored would not fit a storage row", async () => {
    const grows = `[${Array.from({ length: 100_000 }, () => "1e20").join(",")}]`;
    const [sender, recipient] = [freshRoom("sender"), freshRoom("recipient")];
    const posted = await big.fetch(`/users/${recipient}/messages`, { method: "POST", headers: SERVER_AUTH, body: `{"data":${grows}}` });
    expect(posted.status).toBe(413);
    expect(await posted.json()).toMatchObject({ error: "too_large", message: expect.stringContaining("storage row") });
    const socket = await big.connect(`/users/${sender}/ws?user=${sender}`);
    expect(await socket.json()).toMatchObject({ type: "welcome" });
    socket.send(`{"type":"direct","id":"d1","to":"${recipient}","data":${grows}}`);
    expect(await socket.nextOf("error")).toMatchObject({ code: "too_large", id: "d1" });
    socket.send({ type: "direct", id: "d2", to: recipient, data: "small" });
    expect(await socket.nextOf("ack")).toMatchObject({ id: "d2", status: "queued", seq: 1 });
    await socket.close();
  });
});

describe("a relay with short heartbeats and presence lists of 2", () => {
  let quick: Relay;
  beforeAll(async () => {
    quick = await startRelay({
      vars: { ...PUSHER_RELAY.vars, HEARTBEAT_INTERVAL_MS: "1000", HEARTBEAT_TIMEOUT_MS: "3000", PRESENCE_LIST_LIMIT: "2" },
      secrets: PUSHER_RELAY.secrets,
    });
  });

  it("refuses a new member of a presence channel at PRESENCE_LIST_LIMIT members, as Pusher caps them, and keeps the socket", async () => {
    const name = freshRoom("presence-capped");
    const member = (id: string) => ({ user_id: id, user_info: { name: id } });
    const signed = (id: string) => {
      const client = new PusherClient(quick, { authorize: signingHandler(serverSdk(quick), member(id)) });
      clients.push(client);
      return client;
    };
    const [a, b, c, a2] = [signed("a"), signed("b"), signed("c"), signed("a")];
    expect((await a.subscribeOutcome(name)).ok).toBe(true);
    expect((await b.subscribeOutcome(name)).ok).toBe(true);
    const refused = await c.subscribeOutcome(name);
    expect(refused).toMatchObject({ ok: false, error: { status: 403, error: expect.stringContaining("PRESENCE_LIST_LIMIT") } });
    expect(c.pusher.connection.state).toBe("connected");
    // A member already present may add a device: every client still sees the whole list.
    const again = (await a2.subscribeOutcome(name)) as { ok: true; data: Members };
    expect(again.data.count).toBe(2);
    expect(again.data.me).toEqual({ id: "a", info: { name: "a" } });
  });

  it("counts a socket out when its subscribe again, as a new member of a full presence channel, is refused", async () => {
    const name = freshRoom("presence-again");
    const quickSdk = serverSdk(quick);
    const subscribe = (client: TestClient, socketId: string, id: string) =>
      client.send({ event: "pusher:subscribe", data: { channel: name, ...quickSdk.authorizeChannel(socketId, name, { user_id: id }) } });
    const [first, second] = [await rawPusher(quick), await rawPusher(quick)];
    subscribe(first.client, first.socketId, "a");
    await nextPusherEvent(first.client, "pusher_internal:subscription_succeeded");
    subscribe(second.client, second.socketId, "b");
    await nextPusherEvent(second.client, "pusher_internal:subscription_succeeded");
    // The first socket asks again as "c": the channel has its 2 members, so c is refused, and
    // the socket is no longer subscribed at all (its error says so), so "a" leaves.
    subscribe(first.client, first.socketId, "c");
    expect(await nextPusherEvent(first.client, "pusher:subscription_error")).toMatchObject({ data: { status: 403 } });
    expect(await nextPusherEvent(second.client, "pusher_internal:member_removed")).toMatchObject({ data: { user_id: "a" } });
    const users = await json(await quickSdk.get({ path: `/channels/${name}/users`, params: {} }));
    expect(users).toEqual({ users: [{ id: "b" }] });
    await Promise.all([first.client.close(), second.client.close()]);
  });

  it("takes a member who leaves off pusher-js's list while relay sockets keep the channel past the limit", async () => {
    const name = freshRoom("presence-over");
    const quickSdk = serverSdk(quick);
    const [first, second] = [await rawPusher(quick), await rawPusher(quick)];
    for (const [{ client, socketId }, id] of [[first, "a"], [second, "b"]] as const) {
      client.send({ event: "pusher:subscribe", data: { channel: name, ...quickSdk.authorizeChannel(socketId, name, { user_id: id }) } });
      await nextPusherEvent(client, "pusher_internal:subscription_succeeded");
    }
    // A room socket with the API key makes 3 users, past the limit of 2: counts, not names, from here.
    const roomSocket = await quick.connect(`/rooms/${name}/ws?token=${API_KEY}&user=x1`);
    expect(await roomSocket.json()).toMatchObject({ type: "welcome", users: 3 });
    await second.client.close();
    expect(await roomSocket.json()).toEqual({ type: "presence", room: name, event: "count", users: 2 });
    // pusher-js cannot count: it still hears that b left, so its list does not keep b for ever.
    expect(await nextPusherEvent(first.client, "pusher_internal:member_removed")).toMatchObject({ data: { user_id: "b" } });
    await Promise.all([first.client.close(), roomSocket.close()]);
  });
  afterAll(async () => {
    await quick?.close();
  });

  it("closes a silent Pusher socket with 4201, which pusher-js answers by reconnecting at once", async () => {
    const { client, activityTimeout } = await rawPusher(quick);
    expect(activityTimeout).toBe(1);
    expect((await client.closed).code).toBe(4201);
  });

  it("asks a client that only listens with pusher:ping, and keeps it while it answers pusher:pong", async () => {
    const { client } = await rawPusher(quick);
    let pings = 0;
    client.ws.addEventListener("message", (event: { data: unknown }) => {
      if (String(event.data).includes('"pusher:ping"')) {
        pings++;
        client.send({ event: "pusher:pong", data: {} });
      }
    });
    await new Promise((resolve) => setTimeout(resolve, 7_000));
    expect(pings).toBeGreaterThan(0);
    expect(client.ws.readyState).toBe(1);
    await client.close();
  });

  it("keeps pusher-js connected: its pusher:ping counts as activity", async () => {
    const client = new PusherClient(quick);
    try {
      const id = await client.connected();
      await new Promise((resolve) => setTimeout(resolve, 7_000));
      expect(client.pusher.connection.state).toBe("connected");
      expect(client.socketId).toBe(id);
    } finally {
      client.close();
    }
  });
});

describe("user authentication (pusher:signin)", () => {
  /** A user id no other test uses. */
  const freshId = (name: string) => `${name}-${crypto.randomUUID().slice(0, 8)}`;

  /** A pusher-js client signed in as `id` by the server SDK's authenticateUser, as an app's endpoint would. */
  async function signedIn(id: string, watchlist?: string[]): Promise<{ client: PusherClient; heard: Queue<unknown>; watched: Queue<[string, string[]]> }> {
    const userAuthentication = {
      customHandler: ({ socketId }: { socketId: string }, callback: (error: Error | null, data: unknown) => void) =>
        callback(null, sdk.authenticateUser(socketId, { id, user_info: { name: id }, ...(watchlist && { watchlist }) })),
    };
    const client = new PusherClient(relay, { extra: { userAuthentication } as Partial<Options> });
    clients.push(client);
    const heard = new Queue<unknown>();
    client.pusher.user.bind("note", (data: unknown) => heard.push(data));
    const watched = new Queue<[string, string[]]>();
    for (const name of ["online", "offline"]) {
      client.pusher.user.watchlist.bind(name, (event: { user_ids: string[] }) => watched.push([name, event.user_ids]));
    }
    await client.connected();
    client.pusher.signin();
    await withTimeout(client.pusher.user.signinDonePromise!, WAIT_MS, "pusher-js did not finish signing in");
    expect(client.pusher.user.user_data).toMatchObject({ id });
    return { client, heard, watched };
  }

  /** A raw Pusher socket signed in as `id` (signin_success read). */
  async function rawSignedIn(id: string): Promise<TestClient> {
    const { client, socketId } = await rawPusher(relay);
    client.send({ event: "pusher:signin", data: sdk.authenticateUser(socketId, { id }) });
    expect(await nextPusherEvent(client, "pusher:signin_success")).toMatchObject({ data: { user_data: JSON.stringify({ id }) } });
    return client;
  }

  it("signs pusher-js in, and sendToUser reaches every connection of that user and no other", async () => {
    const [alice, bob] = [freshId("alice"), freshId("bob")];
    const first = await signedIn(alice);
    const second = await signedIn(alice);
    const other = await signedIn(bob);
    await sdk.sendToUser(alice, "note", { n: 1 });
    await sdk.sendToUser(bob, "note", { n: 2 });
    expect(await first.heard.next()).toEqual({ n: 1 });
    expect(await second.heard.next()).toEqual({ n: 1 });
    expect(await other.heard.next()).toEqual({ n: 2 }); // alice's note never came
    // pusher-js subscribes to its user channel after signing in; the relay answers it.
    await expect.poll(() => first.client.pusher.user.serverToUserChannel?.subscribed, { timeout: WAIT_MS }).toBe(true);
    // A user's channel is nobody's business in the channel list.
    const { channels } = (await (await sdk.get({ path: "/channels" })).json()) as { channels: Record<string, unknown> };
    expect(Object.keys(channels).filter((name) => name.startsWith("#"))).toEqual([]);
  });

  it("signs in a socket that holds MAX_SUBSCRIPTIONS channels: its user's channel is not one of them", async () => {
    const { client, socketId } = await rawPusher(relay);
    const prefix = channel("full");
    for (let i = 0; i < 100; i++) client.send({ event: "pusher:subscribe", data: { channel: `${prefix}-${i}` } });
    for (let i = 0; i < 100; i++) await nextPusherEvent(client, "pusher_internal:subscription_succeeded");
    const id = freshId("busy");
    client.send({ event: "pusher:signin", data: sdk.authenticateUser(socketId, { id }) });
    await nextPusherEvent(client, "pusher:signin_success");
    await sdk.sendToUser(id, "note", "reached");
    expect(await nextPusherEvent(client, "note")).toMatchObject({ data: "reached" });
  });

  it("tells a signed-in user when users of its watchlist come online and go offline", async () => {
    const [alice, bob, carol] = [freshId("alice"), freshId("bob"), freshId("carol")];
    const watcher = await signedIn(alice, [bob, carol]);
    const first = await signedIn(bob);
    expect(await watcher.watched.next()).toEqual(["online", [bob]]);
    await signedIn(bob); // a second connection: bob was online already
    await signedIn(carol);
    expect(await watcher.watched.next()).toEqual(["online", [carol]]);
    // Someone signing in later hears at once who of its list is online.
    const late = await signedIn(freshId("dave"), [alice, bob, freshId("nobody")]);
    const heard = [await late.watched.next(), await late.watched.next()];
    expect(heard.sort()).toEqual([["online", [alice]], ["online", [bob]]].sort());
    first.client.close();
    for (const client of clients.filter((c) => c.pusher.user.user_data?.id === bob)) client.close();
    expect(await watcher.watched.next()).toEqual(["offline", [bob]]); // once, when the last left
    // A later sign-in's watchlist replaces the last: carol is no longer watched.
    await signedIn(alice, [bob]);
    for (const client of clients.filter((c) => c.pusher.user.user_data?.id === carol)) client.close();
    await signedIn(bob);
    expect(await watcher.watched.next()).toEqual(["online", [bob]]); // not carol's offline first
  });

  it("refuses a bad signature, user_data without a usable id, and someone else's user channel", async () => {
    const { client, socketId } = await rawPusher(relay);
    client.send({ event: "pusher:signin", data: { auth: `${APP.key}:${"0".repeat(64)}`, user_data: JSON.stringify({ id: "mallory" }) } });
    expect(await nextPusherEvent(client, "pusher:error")).toMatchObject({ data: { code: 4009, message: expect.stringContaining("invalid signature") } });
    const userData = JSON.stringify({ name: "no id" });
    const auth = `${APP.key}:${createHmac("sha256", APP.secret).update(`${socketId}::user::${userData}`).digest("hex")}`;
    client.send({ event: "pusher:signin", data: { auth, user_data: userData } });
    expect(await nextPusherEvent(client, "pusher:error")).toMatchObject({ data: { code: 4009, message: expect.stringContaining('"id"') } });
    client.send({ event: "pusher:subscribe", data: { channel: "#server-to-user-alice" } });
    expect(await nextPusherEvent(client, "pusher:subscription_error")).toMatchObject({ channel: "#server-to-user-alice", data: { status: 403 } });
    const invalid = await sdk.sendToUser("not valid!", "note", {}).catch((error: { status: number }) => error);
    expect(invalid).toMatchObject({ status: 400 });
  });

  it("terminateUserConnections closes the user's connections with 4200; pusher-js reconnects and signs in again", async () => {
    const [alice, bob] = [freshId("alice"), freshId("bob")];
    const raw = await rawSignedIn(alice);
    // A signed-in socket cannot leave its user's channel to dodge the terminate.
    raw.send({ event: "pusher:unsubscribe", data: { channel: `#server-to-user-${alice}` } });
    expect(await nextPusherEvent(raw, "pusher:error")).toMatchObject({ data: { code: 4009 } });
    const { client, heard } = await signedIn(alice);
    const other = await rawSignedIn(bob);
    await sdk.terminateUserConnections(alice);
    expect((await withTimeout(raw.closed, WAIT_MS, "the raw socket was not closed")).code).toBe(4200);
    // pusher-js reconnects at once (4200) and signs in again on its new connection.
    await expect.poll(() => client.states.received.filter((state) => state === "connected").length, { timeout: WAIT_MS }).toBe(2);
    await expect.poll(() => client.pusher.user.serverToUserChannel?.subscribed, { timeout: WAIT_MS }).toBe(true);
    await sdk.sendToUser(alice, "note", "after");
    expect(await heard.next()).toBe("after");
    await sdk.sendToUser(bob, "note", "still here");
    expect(await nextPusherEvent(other, "note")).toMatchObject({ channel: `#server-to-user-${bob}`, data: "still here" });
  });
});
