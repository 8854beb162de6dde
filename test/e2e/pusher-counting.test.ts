// Pusher's subscription counting (docs/pusher.md "Subscription counting"): with
// PUSHER_SUBSCRIPTION_COUNT=true a channel's Pusher subscribers hear pusher:subscription_count as
// its number of subscriptions changes, and the app gets subscription_count webhooks.
import type { Members } from "pusher-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Heard, PUSHER_RELAY, PusherClient, type Queue, serverSdk, signingHandler, WebhookEndpoint } from "./pusher-support";
import { freshRoom, type Relay, startRelay } from "./relay";

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

    // Within a second of the last count: held back to the second's end, then said to both.
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

  it("counts presence channels' subscriptions, not their members", async () => {
    const name = `presence-${freshRoom("count")}`;
    const [a, b] = await Promise.all([connectClient(), connectClient()]); // one member, two subscriptions
    const aHeard = a.listen(name, "pusher:subscription_count");
    await a.subscribe(name);
    expect(await nextCount(aHeard)).toBe(1);
    await b.subscribe(name);
    expect(await nextCount(aHeard)).toBe(2);
    expect((a.pusher.channel(name) as unknown as { members: Members }).members.count).toBe(1);
  });
});
