// Pusher's subscription counting (docs/pusher.md "Subscription counting"): with
// PUSHER_SUBSCRIPTION_COUNT=true a channel's Pusher subscribers hear pusher:subscription_count as
// its number of subscriptions changes, and the app gets subscription_count webhooks.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Heard, nextPusherFrame, PUSHER_RELAY, PusherClient, type Queue, rawPusher, serverSdk, signingHandler, WebhookEndpoint } from "./pusher-support";
import { freshRoom, type Relay, SERVER_AUTH, startRelay } from "./relay";

let relay: Relay;
let endpoint: WebhookEndpoint;
const clients: PusherClient[] = [];

beforeAll(async () => {
  endpoint = await WebhookEndpoint.start(() => serverSdk(relay));
  relay = await startRelay({ ...PUSHER_RELAY, vars: { ...PUSHER_RELAY.vars, PUSHER_WEBHOOK_URL: endpoint.url, PUSHER_SUBSCRIPTION_COUNT: "true" } });
});

afterAll(async () => {
  for (const client of clients) client.close();
  await relay?.close();
  await endpoint?.close();
});

async function connectClient(): Promise<PusherClient> {
  const client = new PusherClient(relay, { authorize: signingHandler(serverSdk(relay), { user_id: "counted" }) });
  clients.push(client);
  await client.connected();
  return client;
}

/** The count the next pusher:subscription_count event says. */
async function nextCount(heard: Queue<Heard>): Promise<number> {
  return ((await heard.next()).data as { subscription_count: number }).subscription_count;
}

describe("Pusher subscription counting", () => {
  it("tells every subscriber the channel's count as it changes, room sockets included, and the app", async () => {
    const name = freshRoom("count");
    const [a, b] = await Promise.all([connectClient(), connectClient()]);
    const aHeard = a.listen(name, "pusher:subscription_count");
    await a.subscribe(name);
    expect(await nextCount(aHeard)).toBe(1);

    // Within a second of the last count: held back to the second's end, then said to both, the
    // newcomer after its subscription_succeeded (pusher-js would take a count before it, too).
    const bHeard = b.listen(name, "pusher:subscription_count");
    await b.subscribe(name);
    expect(await nextCount(aHeard)).toBe(2);
    expect(await nextCount(bHeard)).toBe(2); // the newcomer too, after its subscription_succeeded
    expect(a.pusher.channel(name).subscriptionCount).toBe(2);

    const socket = await relay.connect(`/rooms/${name}/ws?user=r`); // every protocol's subscribers count
    expect(await nextCount(aHeard)).toBe(3);
    socket.close();
    expect(await nextCount(aHeard)).toBe(2);
    b.pusher.unsubscribe(name);
    expect(await nextCount(aHeard)).toBe(1);

    expect(await endpoint.next(name)).toEqual({ name: "channel_occupied", channel: name });
    for (const count of [1, 2, 3, 2, 1]) expect(await endpoint.next(name)).toEqual({ name: "subscription_count", channel: name, subscription_count: count });
    expect(endpoint.invalid).toBe(0);
  });

  it("says the count to a newcomer after its subscription_succeeded, even when it is the last count said", async () => {
    const name = freshRoom("count");
    const [a, b] = await Promise.all([connectClient(), connectClient()]);
    const aHeard = a.listen(name, "pusher:subscription_count");
    await a.subscribe(name);
    expect(await nextCount(aHeard)).toBe(1);
    await b.subscribe(name);
    expect(await nextCount(aHeard)).toBe(2);
    // One leaves and one comes, most likely within the same second: the count says 2 again.
    const { client: raw } = await rawPusher(relay);
    b.pusher.unsubscribe(name);
    raw.send({ event: "pusher:subscribe", data: { channel: name } });
    expect(await nextPusherFrame(raw)).toMatchObject({ event: "pusher_internal:subscription_succeeded", channel: name });
    expect(await nextPusherFrame(raw)).toMatchObject({ event: "pusher_internal:subscription_count", channel: name, data: { subscription_count: 2 } });
    await raw.close();
  });

  it("after a restart that lost the Room's own sockets, says the count without them", async () => {
    const name = freshRoom("count");
    const a = await connectClient();
    const heard = a.listen(name, "pusher:subscription_count");
    await a.subscribe(name);
    expect(await nextCount(heard)).toBe(1);
    const lost = [await relay.connect(`/rooms/${name}/ws?user=r1`), await relay.connect(`/rooms/${name}/ws?user=r2`)];
    while ((await nextCount(heard)) !== 3); // 2 may be skipped: both can come within one second
    await relay.dropRoom(name); // as a crash would: the Room's sockets gone without close events
    expect((await relay.fetch(`/rooms/${name}`, { headers: SERVER_AUTH })).status).toBe(200); // it starts and recounts
    expect(await nextCount(heard)).toBe(1);
    for (const socket of lost) socket.close();
  });

  it("leaves presence channels out, as Pusher does: their members are the count", async () => {
    const name = `presence-${freshRoom("count")}`;
    const [a, b] = await Promise.all([connectClient(), connectClient()]); // one member, two subscriptions
    await a.subscribe(name);
    await b.subscribe(name);
    a.pusher.unsubscribe(name);
    b.pusher.unsubscribe(name);
    // Every webhook of the channel, in order: no subscription_count among them.
    expect(await endpoint.next(name)).toEqual({ name: "channel_occupied", channel: name });
    expect(await endpoint.next(name)).toEqual({ name: "member_added", channel: name, user_id: "counted" });
    expect(await endpoint.next(name)).toEqual({ name: "member_removed", channel: name, user_id: "counted" });
    expect(await endpoint.next(name)).toEqual({ name: "channel_vacated", channel: name });
  });
});
