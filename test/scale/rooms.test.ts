// Rooms past one object and presence at scale (docs/protocol.md "Rooms past one object",
// "Presence at scale"), with SOCKETS_PER_OBJECT=3 and PRESENCE_LIST_LIMIT=3.
import { env, evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { shardName } from "../../src/objects/connect";
import type { TestClient } from "../support/client";
import { floodWhileHeld, holdCalls } from "../support/hold";
import { freshRoom, info, join, KEY, openUser, request, serverPublish, subscribe } from "./connect";

/** Joins `count` users to `room` one after another; answers their clients and welcomes. */
async function fill(room: string, count: number, prefix = "u") {
  const joined = [];
  for (let i = 0; i < count; i++) joined.push(await join(room, `${prefix}${i}`));
  return joined;
}

/** The next `count` message frames of `client`, skipping presence. */
async function messages(client: TestClient, count: number): Promise<Record<string, any>[]> {
  const out = [];
  while (out.length < count) out.push(await client.nextOf("message"));
  return out;
}

describe("a room past one object", () => {
  it("spreads sockets over shards and delivers every message to all of them once, in order", async () => {
    const room = freshRoom();
    const members = await fill(room, 8);
    expect(await info(room)).toMatchObject({ connections: 8, users: 8, objects: 3 });
    // Publishers on the Room (u0), on a shard (u7) and the server API, interleaved.
    for (let i = 0; i < 5; i++) {
      members[0]!.client.send({ type: "publish", data: `a${i}` });
      members[7]!.client.send({ type: "publish", data: `b${i}` });
      await serverPublish(room, `c${i}`);
    }
    const seen = await Promise.all(members.map(({ client }) => messages(client, 15)));
    for (const frames of seen) {
      expect(frames.map((frame) => frame.seq)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
      expect(frames).toEqual(seen[0]);
    }
    // Each sender's own messages keep the order they were sent in.
    expect(seen[0]!.filter((frame) => frame.from === "u7").map((frame) => frame.data)).toEqual(["b0", "b1", "b2", "b3", "b4"]);
  });

  it("welcomes a socket on a shard like one on the Room: seq, epoch, users and a gapless resume", async () => {
    const room = freshRoom();
    const [first] = await fill(room, 3);
    for (let i = 0; i < 4; i++) await serverPublish(room, i);
    const late = await join(room, "late", `&since=2&epoch=${first!.welcome.epoch}`);
    expect(late.welcome).toMatchObject({ room, seq: 4, epoch: first!.welcome.epoch, users: 4, recovered: true });
    expect(late.welcome.presence).toBeUndefined(); // 4 users > PRESENCE_LIST_LIMIT
    expect((await messages(late.client, 2)).map((frame) => frame.seq)).toEqual([3, 4]);
    expect(await info(room)).toMatchObject({ objects: 2 });
  });

  it("relays binary frames to room sockets on every object, not back to the sender", async () => {
    const room = freshRoom();
    const members = await fill(room, 4);
    members[3]!.client.send(new Uint8Array([1, 2, 3]));
    for (const { client } of members.slice(0, 3)) {
      let frame;
      do frame = await client.next();
      while (!(frame instanceof Uint8Array));
      expect([...frame]).toEqual([1, 2, 3]);
    }
  });

  it("counts closes on every object, and fills the Room first again as it shrinks", async () => {
    const room = freshRoom();
    const members = await fill(room, 7);
    expect(await info(room)).toMatchObject({ connections: 7, objects: 3 });
    await members[1]!.client.close(); // on the Room
    await members[6]!.client.close(); // on the second shard
    await expect.poll(() => info(room)).toMatchObject({ connections: 5, users: 5 });
    await members[4]!.client.close();
    await members[5]!.client.close();
    await expect.poll(() => info(room)).toMatchObject({ connections: 3, objects: 2 });
    await join(room, "back"); // the Room has a free seat again
    expect(await info(room)).toMatchObject({ connections: 4, objects: 2 });
  });

  it("keeps forwarding after the Room and a shard hibernate", async () => {
    const room = freshRoom();
    const members = await fill(room, 5);
    await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });
    await evictDurableObject(env.HOLDERS.getByName(shardName(room, 1)), { webSockets: "hibernate" });
    members[4]!.client.send({ type: "publish", data: "after" });
    for (const { client } of members) expect(await client.nextOf("message")).toMatchObject({ seq: 1, data: "after" });
    expect(await info(room)).toMatchObject({ connections: 5, objects: 2 });
  });

  it("answers concurrent server publishes with distinct seqs, all delivered in order", async () => {
    const room = freshRoom();
    const members = await fill(room, 4);
    const seqs = await Promise.all(Array.from({ length: 20 }, (_, i) => serverPublish(room, i)));
    expect([...seqs].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    for (const { client } of members) {
      expect((await messages(client, 20)).map((frame) => frame.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    }
  });

  it("corrects counts a shard no longer has when the Room's alarm takes its census", async () => {
    const room = freshRoom();
    await fill(room, 4);
    const shard = env.HOLDERS.getByName(shardName(room, 1));
    // As after a crash that closed the shard's socket without telling the Room.
    await evictDurableObject(shard, { webSockets: "close" });
    await runDurableObjectAlarm(env.ROOMS.getByName(room));
    await expect.poll(() => info(room)).toMatchObject({ connections: 3, objects: 1 });
  });

  it("closes a flooding socket on a shard only once the echoes of its publishes reached it", async () => {
    const room = freshRoom();
    const flooder = (await fill(room, 4))[3]!; // on the room's first shard
    const shard = shardName(room, 1);
    // The Room's deliveries to the shard wait: the publishes are answered, their echoes are not in.
    // A bucket of 40 (2 x 20/s): 40 get in, and more than 40 dropped closes the socket.
    const publishes = Array.from({ length: 100 }, (_, i) => ({ type: "publish", data: i, id: `p${i}` }));
    const { code, received } = await floodWhileHeld(flooder.client, publishes, await holdCalls(env.HOLDERS.getByName(shard), "deliver"));
    expect(code).toBe(1008);
    const echoes = received.filter((frame) => frame.type === "message");
    // The bucket refills a few more while the frames arrive; the first 40 got in for sure.
    expect(echoes.map((frame) => frame.id).slice(0, 40)).toEqual(Array.from({ length: 40 }, (_, i) => `p${i}`));
  });

  it("takes a census of its other holders as soon as the Room starts again, not at its next alarm", async () => {
    const room = freshRoom();
    await fill(room, 4);
    // A restart of the runtime: the shard lost its socket without a word, the Room starts afresh.
    await evictDurableObject(env.HOLDERS.getByName(shardName(room, 1)), { webSockets: "close" });
    await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });
    await expect.poll(() => info(room)).toMatchObject({ connections: 3, objects: 1 });
  });

  it("puts no more than SOCKETS_PER_OBJECT on the Room in a reconnect storm after a start", async () => {
    const room = freshRoom();
    const members = await fill(room, 5); // u3 and u4 on the first shard
    for (const { client } of members.slice(0, 3)) await client.close(); // the Room's seats free
    await expect.poll(() => info(room)).toMatchObject({ connections: 2 });
    // A restart of the runtime: the shard's sockets lost; then everyone comes back at once.
    await evictDurableObject(env.HOLDERS.getByName(shardName(room, 1)), { webSockets: "close" });
    await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });
    // The shard takes a while to answer the Room's census, so every join arrives while it waits.
    const restore = await runInDurableObject(env.HOLDERS.getByName(shardName(room, 1)), (instance) => {
      const holderClass = Object.getPrototypeOf(instance) as typeof instance;
      const census = holderClass.census;
      const slow = async function (this: typeof instance, asked: string) {
        if (asked === room) await new Promise((resolve) => setTimeout(resolve, 500));
        return census.call(this, asked);
      };
      holderClass.census = slow as unknown as typeof census;
      return () => void (holderClass.census = census);
    });
    await Promise.all(Array.from({ length: 7 }, (_, i) => join(room, `back${i}`))).finally(restore);
    const onRoom = await runInDurableObject(env.ROOMS.getByName(room), (_, state) => state.getWebSockets().length);
    expect(onRoom).toBeLessThanOrEqual(3);
    expect(await info(room)).toMatchObject({ connections: 7, users: 7 });
  });

  it("restores, when its sweep alarm wakes it, a user a shard holds that the roster lost", async () => {
    const room = freshRoom();
    await fill(room, 5); // u3 and u4 on the first shard
    const stub = env.ROOMS.getByName(room);
    await stub.count(shardName(room, 1), "u3", 0); // a stale report: u3 is still there
    expect(await info(room)).toMatchObject({ users: 4, connections: 4 });
    // The census after the start only takes counts down; the alarm's full census then restores u3.
    await evictDurableObject(stub, { webSockets: "hibernate" });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await info(room)).toMatchObject({ users: 5, connections: 5 });
  });

  it("counts no socket another holder lost in the first answers after a start", async () => {
    const room = freshRoom();
    const members = await fill(room, 4); // u3 on the first shard
    const restart = async () => {
      await evictDurableObject(env.HOLDERS.getByName(shardName(room, 1)), { webSockets: "close" });
      await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });
    };
    await restart();
    expect(await info(room)).toMatchObject({ connections: 3, users: 3, objects: 1 });
    await join(room, "lost"); // on the shard again
    await members[0]!.client.close(); // a seat on the Room for the newcomer below
    await expect.poll(() => info(room)).toMatchObject({ connections: 3 });
    await restart();
    const late = await join(room, "late"); // on the Room, the first after the start
    expect(late.welcome).toMatchObject({ users: 3 });
    expect(late.welcome.presence.map((entry: { user: string }) => entry.user)).toEqual(["late", "u1", "u2"]);
  });
});

describe("presence at scale", () => {
  it("lists users while there are at most PRESENCE_LIST_LIMIT, and only counts them above", async () => {
    const room = freshRoom();
    const [, , third] = await fill(room, 3);
    expect(third!.welcome).toMatchObject({ users: 3, presence: expect.any(Array) });
    expect(third!.welcome.presence).toHaveLength(3);
    const fourth = await join(room, "fourth");
    expect(fourth.welcome.users).toBe(4);
    expect(fourth.welcome).not.toHaveProperty("presence");
    const roomInfo = await info(room);
    expect(roomInfo).toMatchObject({ users: 4, connections: 4 });
    expect(roomInfo).not.toHaveProperty("presence");
  });

  it("sends join and leave up to the limit, then count frames at most once a second", async () => {
    const room = freshRoom();
    const watcher = await join(room, "watcher");
    await fill(room, 2, "early");
    expect(await watcher.client.json()).toEqual({ type: "presence", room, event: "join", user: "early0" });
    expect(await watcher.client.json()).toEqual({ type: "presence", room, event: "join", user: "early1" });
    // The fourth, fifth and sixth users arrive within a second: counts, not names, and fewer frames than joins.
    const started = Date.now();
    await fill(room, 3, "late");
    const first = await watcher.client.json();
    expect(first).toEqual({ type: "presence", room, event: "count", users: expect.any(Number) });
    let last = first;
    while (last.users !== 6) last = await watcher.client.json();
    expect(last).toEqual({ type: "presence", room, event: "count", users: 6 });
    if (last !== first) expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it("does not send a newcomer a count frame repeating its welcome's users", async () => {
    const room = freshRoom();
    const [watcher] = await fill(room, 3);
    await watcher!.client.nextOf("presence"); // u1's join
    await watcher!.client.nextOf("presence"); // u2's
    const fourth = await join(room, "fourth"); // a count at once: none sent for a while
    expect(await watcher!.client.json()).toEqual({ type: "presence", room, event: "count", users: 4 });
    const fifth = await join(room, "fifth"); // within the second: its count waits for the timer
    expect(await watcher!.client.json()).toEqual({ type: "presence", room, event: "count", users: 5 });
    await serverPublish(room, "after the counts");
    expect(await fourth.client.json()).toEqual({ type: "presence", room, event: "count", users: 5 });
    // Each newcomer's welcome said the count its join made: no frame repeats it.
    expect(await fourth.client.json()).toMatchObject({ type: "message", data: "after the counts" });
    expect(await fifth.client.json()).toMatchObject({ type: "message", data: "after the counts" });
  });

  it("names a leave at once while a count is held back, which follows at its second's end with the right number", async () => {
    const room = freshRoom();
    const [watcher, , third] = await fill(room, 3);
    await watcher!.client.nextOf("presence"); // u1's join
    await watcher!.client.nextOf("presence"); // u2's
    const fourth = await join(room, "fourth");
    expect(await watcher!.client.json()).toEqual({ type: "presence", room, event: "count", users: 4 });
    const countedAt = Date.now();
    await fourth.client.close(); // 4 to 3 users: a count, held back for the rest of the second
    await expect.poll(() => info(room)).toMatchObject({ users: 3 });
    await third!.client.close(); // 3 to 2: a leave, named at once
    expect(await watcher!.client.json()).toEqual({ type: "presence", room, event: "leave", user: "u2" });
    // The watcher counted on from 4 to 3; the held count puts it right, a second after the last.
    expect(await watcher!.client.json()).toEqual({ type: "presence", room, event: "count", users: 2 });
    expect(Date.now() - countedAt).toBeGreaterThanOrEqual(900);
  });

  it("tells a newcomer the count a leave brought back within the second", async () => {
    const room = freshRoom();
    const [watcher] = await fill(room, 3);
    await watcher!.client.nextOf("presence"); // u1's join
    await watcher!.client.nextOf("presence"); // u2's
    const fourth = await join(room, "fourth");
    expect(await watcher!.client.json()).toEqual({ type: "presence", room, event: "count", users: 4 });
    const fifth = await join(room, "fifth");
    expect(fifth.welcome.users).toBe(5);
    await fourth.client.close(); // back to the 4 the others heard last
    expect(await fifth.client.json()).toEqual({ type: "presence", room, event: "count", users: 4 });
    // Only to the newcomer: the watcher holds 4 already, and its next frame is the next message.
    await serverPublish(room, "after the count");
    expect(await watcher!.client.json()).toMatchObject({ type: "message", data: "after the count" });
  });

  it("sends no socket a count it holds already, however joins and leaves fall within a second", async () => {
    const room = freshRoom();
    const [watcher, , third] = await fill(room, 3);
    const held = new Map<TestClient, number>([[watcher!.client, 3]]);
    await watcher!.client.nextOf("presence"); // u1's join
    await watcher!.client.nextOf("presence"); // u2's
    const fourth = await join(room, "fourth");
    held.set(fourth.client, fourth.welcome.users);
    // Within about a second (the machine may stretch it; what each socket gets is checked, not when):
    const fifth = await join(room, "fifth"); // 5: its welcome says so
    held.set(fifth.client, fifth.welcome.users);
    await third!.client.close(); // 4, not named above the limit
    await expect.poll(() => info(room)).toMatchObject({ users: 4 });
    const sixth = await join(room, "sixth"); // 5 again: fifth and sixth hold what the others have not heard
    held.set(sixth.client, sixth.welcome.users);
    await new Promise((resolve) => setTimeout(resolve, 1_200)); // the held count's second is over
    await serverPublish(room, "after the counts");
    for (const [client, start] of held) {
      let users = start;
      for (let frame = await client.json(); frame.type !== "message"; frame = await client.json()) {
        expect(frame).toMatchObject({ type: "presence", event: "count" });
        expect(frame.users).not.toBe(users); // news to this socket, or not sent to it
        users = frame.users;
      }
      expect(users).toBe(5);
    }
  });

  it("weighs a user's second socket and a repeated subscribe, told the number while a count is held back, on their own", async () => {
    const room = freshRoom();
    const [watcher] = await fill(room, 3);
    const { client: subscriber } = await openUser();
    await subscribe(subscriber, room); // a fourth user: a count at once
    expect(await watcher!.client.nextOf("presence")).toMatchObject({ event: "join", user: "u1" });
    expect(await watcher!.client.nextOf("presence")).toMatchObject({ event: "join", user: "u2" });
    expect(await watcher!.client.json()).toEqual({ type: "presence", room, event: "count", users: 4 });
    const fifth = await join(room, "fifth"); // 5, held back for the rest of the second
    const second = await join(room, "u0"); // u0's second socket: welcomed with 5, no presence change
    expect(second.welcome.users).toBe(5);
    const again = await subscribe(subscriber, room); // a repeated subscribe says 5 too
    expect(again.users).toBe(5);
    await fifth.client.close(); // back to the 4 the watcher holds
    // The count goes to the sockets told 5 (the watcher holds 4 already): the second socket and
    // the subscriber get it, then the next message; the watcher only the message.
    expect(await second.client.json()).toEqual({ type: "presence", room, event: "count", users: 4 });
    expect(await subscriber.nextOf("presence")).toEqual({ type: "presence", room, event: "count", users: 4 });
    await serverPublish(room, "after the count");
    expect(await watcher!.client.json()).toMatchObject({ type: "message", data: "after the count" });
    expect(await second.client.json()).toMatchObject({ type: "message", data: "after the count" });
  });

  it("counts a subscription as a user like a room socket", async () => {
    const room = freshRoom();
    const watcher = await join(room, "watcher");
    const { client, user } = await openUser();
    const subscribed = await subscribe(client, room);
    expect(subscribed).toMatchObject({ users: 2 });
    expect(await watcher.client.json()).toEqual({ type: "presence", room, event: "join", user });
  });

  it("pages every user in id order with next, at most limit a page", async () => {
    const room = freshRoom();
    await fill(room, 5, "p");
    const page = async (query: string) => (await request(`/rooms/${room}/presence${query}`, { headers: KEY })).json() as Promise<any>;
    const first = await page("?limit=2");
    expect(first).toEqual({ presence: [{ user: "p0", connections: 1 }, { user: "p1", connections: 1 }], next: "p1" });
    const second = await page(`?after=${first.next}&limit=2`);
    expect(second.presence.map((entry: any) => entry.user)).toEqual(["p2", "p3"]);
    const last = await page(`?after=${second.next}&limit=2`);
    expect(last).toEqual({ presence: [{ user: "p4", connections: 1 }] });
    expect((await page("")).presence).toHaveLength(5);
  });

  it("refuses the presence route without the API key, and an empty or over-long cursor with 400", async () => {
    const room = freshRoom();
    expect((await request(`/rooms/${room}/presence`)).status).toBe(401);
    for (const after of ["", "x".repeat(129)]) {
      const res = await request(`/rooms/${room}/presence?after=${after}`, { headers: KEY });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: "bad_request" });
    }
  });

  it("takes any member id as a cursor, as a Pusher user_id may hold any character", async () => {
    const room = freshRoom();
    await fill(room, 3, "q");
    const res = await request(`/rooms/${room}/presence?after=${encodeURIComponent(".a b/ç#")}&limit=2`, { headers: KEY });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ presence: [{ user: "q0", connections: 1 }, { user: "q1", connections: 1 }], next: "q1" });
  });
});
