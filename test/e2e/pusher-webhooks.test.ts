// Pusher webhooks (docs/pusher.md "Webhooks"): a relay with PUSHER_WEBHOOK_URL posts what happens
// in its channels to an endpoint of the test's own, which checks them with the server SDK's
// `webhook()` as an app would.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Options } from "pusher-js";
import { nextPusherEvent, PUSHER_RELAY, PusherClient, rawPusher, serverSdk, signingHandler, WAIT_MS, WebhookEndpoint, type Member } from "./pusher-support";
import { freshRoom, type Relay, SERVER_AUTH, startPersistentRelay, startRelay, tempDir } from "./relay";

let relay: Relay;
let endpoint: WebhookEndpoint;
const clients: PusherClient[] = [];

beforeAll(async () => {
  endpoint = await WebhookEndpoint.start(() => serverSdk(relay));
  relay = await startRelay({ ...PUSHER_RELAY, vars: { ...PUSHER_RELAY.vars, PUSHER_WEBHOOK_URL: endpoint.url } });
});

afterAll(async () => {
  for (const client of clients) client.close();
  await relay?.close();
  await endpoint?.close();
});

async function connectClient(member?: Member): Promise<PusherClient> {
  const client = new PusherClient(relay, { authorize: signingHandler(serverSdk(relay), member) });
  clients.push(client);
  await client.connected();
  return client;
}

const next = (channel: string) => endpoint.next(channel);

/**
 * With the endpoint refusing, `senders` sockets trigger `count` client events (`{ n, filler }`,
 * taking turns) on a fresh private channel. Answers the channel and the order the Room put the
 * events in (sockets interleave; a listener hears them in it), once their handovers are under way.
 */
async function refusedClientEvents(senders: number, count: number, filler = ""): Promise<{ channel: string; order: number[] }> {
  const channel = `private-${freshRoom("hooks")}`;
  endpoint.refuseNext = Number.POSITIVE_INFINITY;
  const listener = await connectClient();
  await listener.subscribe(channel);
  const heard = listener.listen(channel, "client-event");
  const channels = [];
  for (let i = 0; i < senders; i++) channels.push(await (await connectClient()).subscribe(channel));
  for (let n = 0; n < count; ) for (const sender of channels) if (n < count) sender.trigger("client-event", { n: n++, filler });
  const order: number[] = [];
  for (let n = 0; n < count; n++) order.push(((await heard.next()).data as { n: number }).n);
  await new Promise((resolve) => setTimeout(resolve, 500));
  return { channel, order };
}

describe("Pusher webhooks", () => {
  it("posts channel_occupied and channel_vacated, signed with the app's secret", async () => {
    const channel = freshRoom("hooks");
    const client = await connectClient();
    await client.subscribe(channel);
    expect(await next(channel)).toEqual({ name: "channel_occupied", channel });
    client.pusher.unsubscribe(channel);
    expect(await next(channel)).toEqual({ name: "channel_vacated", channel });
    expect(endpoint.invalid).toBe(0);
  });

  it("posts member_added, client_event with socket_id and user_id, and member_removed", async () => {
    const channel = `presence-${freshRoom("hooks")}`;
    const alice = await connectClient({ user_id: "alice", user_info: { name: "Alice" } });
    const bob = await connectClient({ user_id: "bob" });
    await alice.subscribe(channel);
    expect(await next(channel)).toEqual({ name: "channel_occupied", channel });
    expect(await next(channel)).toEqual({ name: "member_added", channel, user_id: "alice" });
    const bobs = await bob.subscribe(channel);
    expect(await next(channel)).toEqual({ name: "member_added", channel, user_id: "bob" });
    bobs.trigger("client-typing", { on: true });
    expect(await next(channel)).toEqual({ name: "client_event", channel, event: "client-typing", data: JSON.stringify({ on: true }), socket_id: bob.socketId, user_id: "bob" });
    bob.pusher.unsubscribe(channel);
    expect(await next(channel)).toEqual({ name: "member_removed", channel, user_id: "bob" });
    alice.pusher.unsubscribe(channel); // the last member: removed, then the channel vacated
    expect(await next(channel)).toEqual({ name: "member_removed", channel, user_id: "alice" });
    expect(await next(channel)).toEqual({ name: "channel_vacated", channel });
  });

  it("posts cache_miss when a subscriber of a cache channel finds no event to start from", async () => {
    const channel = `cache-${freshRoom("hooks")}`;
    const client = await connectClient();
    await client.subscribe(channel);
    expect(await next(channel)).toEqual({ name: "channel_occupied", channel });
    expect(await next(channel)).toEqual({ name: "cache_miss", channel });
    await serverSdk(relay).trigger(channel, "price", { usd: 1 });
    const late = await connectClient();
    await late.subscribe(channel); // gets the cached event: no miss
    late.pusher.unsubscribe(channel);
    client.pusher.unsubscribe(channel);
    expect(await next(channel)).toEqual({ name: "channel_vacated", channel });
  });

  it("tries a request the endpoint refused again, and keeps the events in order", { timeout: 60_000 }, async () => {
    const channel = freshRoom("hooks");
    endpoint.refuseNext = 2;
    const bodiesBefore = endpoint.bodies.length;
    const client = await connectClient();
    const madeBefore = Date.now();
    await client.subscribe(channel);
    client.pusher.unsubscribe(channel);
    // Refused twice (about 1 + 2 s of waiting), then taken.
    expect(await next(channel)).toEqual({ name: "channel_occupied", channel });
    expect(await next(channel)).toEqual({ name: "channel_vacated", channel });
    expect(endpoint.refused).toBe(2);
    // Each try is the same request, and time_ms says when it was made, as Pusher's does.
    const [first, second, taken] = endpoint.bodies.slice(bodiesBefore);
    expect(second).toBe(first);
    expect(taken).toBe(first);
    const { time_ms: made } = JSON.parse(first!) as { time_ms: number };
    expect(made).toBeGreaterThanOrEqual(madeBefore - 1_000); // clocks of two processes
    expect(made).toBeLessThan(madeBefore + 2_500); // the first try, not the third (3 s later)
  });

  it("keeps at most 4 Mi characters waiting while the endpoint refuses: the oldest client events go, the rest come in order", { timeout: 120_000 }, async () => {
    // 90 events of ~60 KB each (~5.4 M characters), 30 a socket: within each socket's burst.
    const { channel, order } = await refusedClientEvents(3, 90, "x".repeat(60_000));
    endpoint.refuseNext = 0;
    // Occupancy and member events are dropped last: channel_occupied is still there.
    expect(await next(channel)).toEqual({ name: "channel_occupied", channel });
    const posted: { n: number; chars: number }[] = [];
    for (;;) {
      const hook = await next(channel);
      posted.push({ n: (JSON.parse(hook.data as string) as { n: number }).n, chars: JSON.stringify(hook).length });
      if (posted.at(-1)!.n === order.at(-1)) break;
    }
    const first = order.indexOf(posted[0]!.n);
    expect(first).toBeGreaterThan(0); // the oldest were dropped
    expect(posted.map((event) => event.n)).toEqual(order.slice(first));
    expect(posted.reduce((sum, event) => sum + event.chars, 0)).toBeLessThanOrEqual(4 * 1024 * 1024);
  });

  it("sends a backlog in requests of at most 100 events, in the Room's order", { timeout: 120_000 }, async () => {
    const EVENTS = 245; // 35 a socket: within each socket's burst
    const { channel, order } = await refusedClientEvents(7, EVENTS);
    const takenBefore = endpoint.takenSizes.length;
    endpoint.refuseNext = 0;
    const posted: number[] = [];
    while (posted.length < EVENTS) {
      const hook = await next(channel);
      if (hook.name === "client_event") posted.push((JSON.parse(hook.data as string) as { n: number }).n);
    }
    expect(posted).toEqual(order);
    const sizes = endpoint.takenSizes.slice(takenBefore);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(100);
    expect(sizes.length).toBeGreaterThanOrEqual(3);
  });

  it("after a restart that lost the channel's sockets, says channel_vacated once", async () => {
    const channel = freshRoom("hooks");
    const members = [];
    for (const user of ["r0", "r1", "r2"]) members.push(await relay.connect(`/rooms/${channel}/ws?user=${user}`));
    expect(await next(channel)).toEqual({ name: "channel_occupied", channel });
    await relay.dropRoom(channel); // as a crash would: the Room's sockets gone without close events
    expect((await relay.fetch(`/rooms/${channel}`, { headers: SERVER_AUTH })).status).toBe(200); // the Room starts and recounts
    expect(await next(channel)).toEqual({ name: "channel_vacated", channel });
    await relay.connect(`/rooms/${channel}/ws?user=back`);
    expect(await next(channel)).toEqual({ name: "channel_occupied", channel }); // not a second vacated
    for (const member of members) member.close();
  });

  it("leaves a user's own channel out", async () => {
    const id = `user-${crypto.randomUUID().slice(0, 8)}`;
    const sdk = serverSdk(relay);
    const client = new PusherClient(relay, {
      extra: { userAuthentication: { customHandler: ({ socketId }, callback) => callback(null, sdk.authenticateUser(socketId, { id })) } } as Partial<Options>,
    });
    clients.push(client);
    await client.connected();
    client.pusher.signin();
    await client.pusher.user.signinDonePromise;
    expect(client.pusher.user.user_data).toMatchObject({ id });
    const marker = freshRoom("hooks");
    await client.subscribe(marker); // its occupied comes after any the user's channel would have made
    expect(await endpoint.hooks.next(WAIT_MS)).toEqual({ name: "channel_occupied", channel: marker });
  });
});

describe("Pusher webhooks across a restart of the runtime", () => {
  let storage: Awaited<ReturnType<typeof tempDir>>;
  let endpoint: WebhookEndpoint;
  let relay: Relay | undefined;

  /** (Re)starts the relay on the test's storage, posting to the test's endpoint. */
  async function start(): Promise<Relay> {
    await relay?.close();
    relay = await startPersistentRelay(storage.path, { ...PUSHER_RELAY, vars: { ...PUSHER_RELAY.vars, PUSHER_WEBHOOK_URL: endpoint.url } });
    return relay;
  }

  /** Waits until the channel's Room counts no connection: it has taken the last leave. */
  async function emptied(relay: Relay, channel: string): Promise<void> {
    const connections = async () => ((await (await relay.fetch(`/rooms/${channel}`, { headers: SERVER_AUTH })).json()) as { connections: number }).connections;
    await expect.poll(connections).toBe(0);
  }

  beforeEach(async () => {
    storage = await tempDir();
    endpoint = await WebhookEndpoint.start(() => serverSdk(relay!));
  });

  afterEach(async () => {
    await relay?.close();
    relay = undefined;
    await endpoint.close();
    await storage.remove();
  });

  // Here for its storage on disk: the directory's writes are slow enough to lose the race without the wait.
  it("lists each channel in GET channels by the time its first subscriber is answered, the directory busy with others", { timeout: 120_000 }, async () => {
    const relay = await start();
    const sdk = serverSdk(relay);
    const round = async (i: number) => {
      const channel = i % 2 === 0 ? freshRoom("listed") : `presence-${freshRoom("listed")}`;
      const { client, socketId } = await rawPusher(relay);
      const signed = channel.startsWith("presence-") ? sdk.authorizeChannel(socketId, channel, { user_id: `u${i}` }) : {};
      client.send({ event: "pusher:subscribe", data: { channel, ...signed } });
      await nextPusherEvent(client, "pusher_internal:subscription_succeeded");
      const { channels } = (await (await sdk.get({ path: "/channels", params: { filter_by_prefix: channel } })).json()) as { channels: object };
      void client.close();
      return Object.keys(channels).length === 1;
    };
    // Rounds side by side, so the directory is busy with others' changes as each lists its channel.
    for (let wave = 0; wave < 3; wave++) {
      const listed = await Promise.all(Array.from({ length: 10 }, (_, i) => round(wave * 10 + i)));
      expect(listed.filter((found) => !found)).toEqual([]);
    }
  });

  it("keeps the events the endpoint refused, and posts them in order after the restart", { timeout: 120_000 }, async () => {
    endpoint.refuseNext = Number.POSITIVE_INFINITY;
    const channel = freshRoom("hooks");
    const first = await start();
    const socket = await first.connect(`/rooms/${channel}/ws?user=brief`);
    expect(await endpoint.refusedHooks.next()).toEqual([{ name: "channel_occupied", channel }]); // stored by the Webhooks object
    await socket.close();
    await emptied(first, channel);
    endpoint.refuseNext = 0;
    const restarted = await start(); // workerd stopped while they waited for the next try
    // Nothing touches the channel: the Webhooks object's alarm brings the stored event back.
    expect(await endpoint.next(channel)).toEqual({ name: "channel_occupied", channel });
    // Stored by the Webhooks object too, or still in the Room's storage: handed over as it starts.
    expect((await restarted.fetch(`/rooms/${channel}`, { headers: SERVER_AUTH })).status).toBe(200);
    expect(await endpoint.next(channel)).toEqual({ name: "channel_vacated", channel });
    expect(endpoint.invalid).toBe(0);
  });

  it("makes a request a restart cut short again with the same body: what came meanwhile waits for the next", { timeout: 120_000 }, async () => {
    endpoint.hangNext = 1;
    const channel = freshRoom("hooks");
    const first = await start();
    const socket = await first.connect(`/rooms/${channel}/ws?user=brief`);
    while (endpoint.bodies.length === 0) await new Promise((resolve) => setTimeout(resolve, 50)); // channel_occupied, unanswered
    const [cutShort] = endpoint.bodies;
    await socket.close(); // channel_vacated, waiting behind it
    await emptied(first, channel);
    await new Promise((resolve) => setTimeout(resolve, 500)); // its handover to the Webhooks object
    const restarted = await start();
    expect(await endpoint.next(channel)).toEqual({ name: "channel_occupied", channel });
    expect(endpoint.bodies[1]).toBe(cutShort);
    expect((await restarted.fetch(`/rooms/${channel}`, { headers: SERVER_AUTH })).status).toBe(200); // in case the handover had not happened
    expect(await endpoint.next(channel)).toEqual({ name: "channel_vacated", channel });
  });

  it("says channel_vacated, and the channel list forgets it, after the runtime stopped with a member on it", { timeout: 120_000 }, async () => {
    const channel = freshRoom("hooks");
    await (await start()).connect(`/rooms/${channel}/ws?user=stays`);
    expect(await endpoint.next(channel)).toEqual({ name: "channel_occupied", channel });
    // The shutdown may close the socket before workerd goes: its leave is then stored, with the
    // Room's roster, and handed over at the Room's next start; if not, that start finds it gone.
    const restarted = await start();
    expect((await restarted.fetch(`/rooms/${channel}`, { headers: SERVER_AUTH })).status).toBe(200); // the Room starts
    let hook = await endpoint.next(channel);
    // Said again if workerd stopped as the endpoint answered, before the Webhooks object stored that it had (docs/pusher.md).
    if (hook.name === "channel_occupied") hook = await endpoint.next(channel);
    expect(hook).toEqual({ name: "channel_vacated", channel });
    const { channels } = (await (await serverSdk(restarted).get({ path: "/channels" })).json()) as { channels: Record<string, unknown> };
    expect(Object.keys(channels)).not.toContain(channel);
  });
});
