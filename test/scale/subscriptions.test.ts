// User sockets that carry many rooms (docs/protocol.md "User sockets subscribe to rooms").
import { env, evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { hubFor, shardName } from "../../src/objects/connect";
import { Feeds, SubscriptionTable } from "../../src/objects/feeds";
import type { Attachment } from "../../src/objects/session";
import { floodWhileHeld, holdCalls } from "../support/hold";
import { freshRoom, freshUser, holdJoins, info, join, openUser, serverPublish, subscribe, token } from "./connect";


function subscriptionRows(hub: DurableObjectStub, room: string) {
  return runInDurableObject(hub, (_, state) => state.storage.sql.exec<{ connection: string }>("SELECT connection FROM subscriptions WHERE room = ?", room).toArray());
}

/** The hub holding `user`'s subscription to `room`: its own, or an overflow hub if other tests filled it. */
async function hubOf(user: string, room: string): Promise<ReturnType<typeof env.HOLDERS.getByName>> {
  const names = [hubFor(user, 4), ...[2, 3, 4, 5, 6].map((n) => `${hubFor(user, 4)}~${n}`)];
  const hubs = names.map((name) => env.HOLDERS.getByName(name));
  return (await Promise.all(hubs.map(async (hub) => ((await subscriptionRows(hub, room)).length > 0 ? hub : undefined)))).find(Boolean)!;
}

/**
 * Two sockets of one fresh user, both on the same hub, and that hub's name. Other tests' sockets
 * may leave a hub with room for only one: those tries stay open, so the next land further on.
 */
async function twoOnOneHub() {
  for (let tries = 0; tries < 8; tries++) {
    const first = await openUser();
    const second = await openUser(first.user);
    const base = hubFor(first.user, 4);
    for (const hub of [base, ...Array.from({ length: 15 }, (_, i) => `${base}~${i + 2}`)]) {
      const held = await runInDurableObject(env.HOLDERS.getByName(hub), (_, state) =>
        state.getWebSockets().filter((ws) => (ws.deserializeAttachment() as Attachment).identity.user === first.user).length,
      );
      if (held === 2) return { first, second, hub };
      if (held === 1) break; // split over two hubs
    }
  }
  throw new Error("no hub took two sockets of one user in 8 tries");
}

describe("subscribing a user socket to rooms", () => {
  it("answers subscribed with the room's state and the frame's id, then delivers the room's messages", async () => {
    const room = freshRoom();
    const alice = await join(room, "alice");
    const { client, user } = await openUser();
    const subscribed = await subscribe(client, room, { id: "s1" });
    expect(subscribed).toEqual({
      type: "subscribed",
      room,
      seq: 0,
      epoch: alice.welcome.epoch,
      users: 2,
      presence: [
        { user: "alice", connections: 1 },
        { user, connections: 1 },
      ],
      id: "s1",
    });
    expect(await alice.client.json()).toEqual({ type: "presence", room, event: "join", user });
    alice.client.send({ type: "publish", data: "hello" });
    expect(await client.json()).toMatchObject({ type: "message", room, seq: 1, from: "alice", data: "hello" });
    expect(await info(room)).toMatchObject({ connections: 2, users: 2 });
  });

  it("carries several rooms on one socket, each frame naming its room", async () => {
    const [first, second] = [freshRoom(), freshRoom()];
    const { client } = await openUser();
    await subscribe(client, first);
    await subscribe(client, second);
    await serverPublish(first, 1);
    await serverPublish(second, 2);
    const got = [await client.nextOf("message"), await client.nextOf("message")];
    expect(got.map((frame) => [frame.room, frame.data]).sort()).toEqual([
      [first, 1],
      [second, 2],
    ]);
  });

  it("echoes a publish to a subscribed room and acks it with the room's seq", async () => {
    const room = freshRoom();
    const { client, user } = await openUser();
    await subscribe(client, room);
    client.send({ type: "publish", room, data: "mine", id: "p1" });
    const frames = [await client.json(), await client.json()];
    expect(frames).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ type: "message", room, seq: 1, from: user, data: "mine", id: "p1" }),
        { type: "ack", id: "p1", status: "delivered", seq: 1 },
      ]),
    );
  });

  it("replays what was missed after since and epoch, then live messages, with no gap", async () => {
    const room = freshRoom();
    for (let i = 1; i <= 3; i++) await serverPublish(room, i);
    const { epoch } = await info(room);
    const { client } = await openUser();
    expect(await subscribe(client, room, { since: 1, epoch })).toMatchObject({ seq: 3, recovered: true });
    await serverPublish(room, 4);
    const seqs = [];
    for (let i = 0; i < 3; i++) seqs.push((await client.nextOf("message")).seq);
    expect(seqs).toEqual([2, 3, 4]);
  });

  it("says recovered: false for another epoch and replays nothing", async () => {
    const room = freshRoom();
    await serverPublish(room, 1);
    const { client } = await openUser();
    expect(await subscribe(client, room, { since: 0, epoch: "another" })).toMatchObject({ seq: 1, recovered: false });
    await serverPublish(room, 2);
    expect(await client.nextOf("message")).toMatchObject({ seq: 2 });
  });

  it("answers a repeated subscribe again, without delivering anything twice", async () => {
    const room = freshRoom();
    const { client } = await openUser();
    await subscribe(client, room);
    await serverPublish(room, 1);
    expect(await client.nextOf("message")).toMatchObject({ seq: 1 });
    expect(await subscribe(client, room, { id: "again" })).toMatchObject({ room, seq: 1, users: 1, id: "again" });
    await serverPublish(room, 2);
    expect(await client.json()).toMatchObject({ type: "message", seq: 2 });
    expect(await info(room)).toMatchObject({ connections: 1 });
  });

  it("replays again for a repeated subscribe with since, then goes on live", async () => {
    const room = freshRoom();
    const { client } = await openUser();
    const { epoch } = await subscribe(client, room);
    await serverPublish(room, 1);
    await client.nextOf("message");
    expect(await subscribe(client, room, { since: 0, epoch })).toMatchObject({ recovered: true, seq: 1 });
    expect(await client.json()).toMatchObject({ type: "message", seq: 1 });
    await serverPublish(room, 2);
    expect(await client.json()).toMatchObject({ type: "message", seq: 2 });
  });

  it("unsubscribes: answers unsubscribed, sends nothing more of the room, and counts the user as left", async () => {
    const room = freshRoom();
    const alice = await join(room, "alice");
    const { client, user } = await openUser();
    await subscribe(client, room);
    await alice.client.nextOf("presence");
    client.send({ type: "unsubscribe", room, id: "u1" });
    expect(await client.json()).toEqual({ type: "unsubscribed", room, id: "u1" });
    expect(await alice.client.json()).toEqual({ type: "presence", room, event: "leave", user });
    alice.client.send({ type: "publish", data: "after" });
    await alice.client.nextOf("message");
    client.send({ type: "unsubscribe", room });
    // Nothing of the room arrived in between: the next frame answers the second unsubscribe.
    expect(await client.json()).toEqual({ type: "unsubscribed", room });
    expect(await info(room)).toMatchObject({ connections: 1, users: 1 });
  });

  it("applies a burst of subscribes and unsubscribes to one room in the order they were sent", async () => {
    for (const burst of [["s", "u", "s", "u"], ["s", "s", "u", "u"], ["u", "s", "u", "s", "u", "s"]]) {
      const room = freshRoom();
      const { client } = await openUser();
      burst.forEach((op, i) => client.send({ type: op === "s" ? "subscribe" : "unsubscribe", room, id: `${op}${i}` }));
      const answers = [];
      for (let i = 0; i < burst.length; i++) answers.push(await client.json());
      expect(answers.map((answer) => answer.id)).toEqual(burst.map((op, i) => `${op}${i}`));
      expect(answers.map((answer) => answer.type)).toEqual(burst.map((op) => (op === "s" ? "subscribed" : "unsubscribed")));
      // The last frame decides: subscribed once (counted once), or not at all.
      const subscribedAtEnd = burst.at(-1) === "s";
      expect(await info(room)).toMatchObject({ connections: subscribedAtEnd ? 1 : 0 });
      const seq = await serverPublish(room, "after the burst");
      if (subscribedAtEnd) expect(await client.json()).toMatchObject({ type: "message", room, seq });
      client.send("ping");
      expect(await client.next()).toBe("pong"); // nothing of the room came first
      await client.close();
    }
  });

  it("leaves a socket unsubscribed, and counted out, when a repeated subscribe fails, as its error says", async () => {
    const room = freshRoom();
    const { client } = await openUser();
    await subscribe(client, room);
    await serverPublish(room, "first");
    await client.nextOf("message");
    const rename = (from: string, to: string) =>
      runInDurableObject(env.ROOMS.getByName(room), (_, state) => void state.storage.sql.exec(`ALTER TABLE ${from} RENAME TO ${to}`));
    await rename("messages", "messages_away"); // the resume the repeat asks for now fails in the Room
    client.send({ type: "subscribe", room, since: 0, id: "again" });
    expect(await client.nextOf("error")).toMatchObject({ code: "internal", id: "again" });
    await rename("messages_away", "messages");
    expect(await info(room)).toMatchObject({ connections: 0 });
    await serverPublish(room, "not for it");
    client.send("ping");
    expect(await client.next()).toBe("pong");
  });

  it("keeps counting a subscription whose hub is handed a batch before the Room's answer to its join", async () => {
    const room = freshRoom();
    // The Room counts the join, and the join's own presence frame (then a message) goes out to
    // the hub before the hub has the answer (calls between objects do not keep their order): the
    // hub holds a joiner and no socket yet. Answering 0 there made the Room count it out.
    const { release, restore } = await holdJoins(room, (request, join) => {
      const answer = join(request);
      return (gate) => gate.then(() => answer);
    });
    const { client } = await openUser();
    client.send({ type: "subscribe", room, id: "s" });
    await expect.poll(() => info(room)).toMatchObject({ connections: 1 });
    await serverPublish(room, "before the answer");
    release();
    expect(await client.nextOf("subscribed")).toMatchObject({ id: "s" });
    expect(await client.nextOf("message")).toMatchObject({ data: "before the answer" });
    expect(await info(room)).toMatchObject({ connections: 1, users: 1 });
    restore();
  });

  it("sends no join a subscription's list already has, when that join reached the hub before the answer", async () => {
    const room = freshRoom();
    // A third user's socket already in the room makes its hub hear the room's frames; the first
    // user joins on that hub, the second on another. (A hub sends one room its joins in order, so
    // the second user's join must come from another hub to be counted while the first's is held.)
    const first = freshUser("first");
    let third = freshUser("third");
    while (hubFor(third, 4) !== hubFor(first, 4)) third = freshUser("third");
    let second = freshUser("second");
    while (hubFor(second, 4) === hubFor(first, 4)) second = freshUser("second");
    const c = await openUser(third);
    await subscribe(c.client, room);
    // The Room takes up the first user's join only when let go: meanwhile the second user joins,
    // and that join's presence frame reaches the hub while the first is still joining there.
    const { release, restore } = await holdJoins(room, (request, join) =>
      request.user === first ? (gate) => gate.then(() => join(request)) : undefined,
    );
    const a = await openUser(first);
    const b = await openUser(second);
    a.client.send({ type: "subscribe", room, id: "a" });
    await new Promise((resolve) => setTimeout(resolve, 100)); // a's join is at the Room, held
    expect(await subscribe(b.client, room)).toMatchObject({ users: 2 });
    expect(await c.client.nextOf("presence")).toMatchObject({ event: "join", user: second }); // and at the hub
    release();
    const subscribed = await a.client.nextOf("subscribed");
    expect(subscribed.presence.map((entry: { user: string }) => entry.user).sort()).toEqual([first, second, third].sort());
    // The next frame a gets is the message below, not a join of b, which its list already has.
    await serverPublish(room, "after");
    expect(await a.client.json()).toMatchObject({ type: "message", data: "after" });
    restore();
  });

  it("answers recovered false, with no replay, once a socket's subscribes replayed 16 Mi characters within 10 s", { timeout: 60_000 }, async () => {
    const room = freshRoom();
    for (let n = 0; n < 100; n += 10) await Promise.all(Array.from({ length: 10 }, () => serverPublish(room, "x".repeat(65_000))));
    const { client } = await openUser();
    // Each subscribe with since 0 replays the room's 100 messages, 6.5 Mi characters.
    for (const id of ["s1", "s2"]) {
      client.send({ type: "subscribe", room, since: 0, id });
      expect(await client.nextOf("subscribed")).toMatchObject({ id, recovered: true, seq: 100 });
      for (let seq = 1; seq <= 100; seq++) expect(await client.json()).toMatchObject({ type: "message", seq });
    }
    client.send({ type: "subscribe", room, since: 0, id: "s3" });
    expect(await client.nextOf("subscribed")).toMatchObject({ id: "s3", recovered: false, seq: 100 });
    client.send("ping");
    expect(await client.next()).toBe("pong"); // no replay came
  });

  it("counts a closed user socket as leaving every room it had", async () => {
    const [first, second] = [freshRoom(), freshRoom()];
    const watcher = await join(first, "watcher");
    const { client, user } = await openUser();
    await subscribe(client, first);
    await subscribe(client, second);
    await watcher.client.nextOf("presence");
    await client.close();
    expect(await watcher.client.json()).toEqual({ type: "presence", room: first, event: "leave", user });
    await expect.poll(() => info(second)).toMatchObject({ connections: 0, users: 0 });
  });

  it("keeps subscriptions across hibernation of the hub", async () => {
    const room = freshRoom();
    const { client, user } = await openUser();
    await subscribe(client, room);
    await evictDurableObject(env.HOLDERS.getByName(hubFor(user, 4)), { webSockets: "hibernate" });
    await serverPublish(room, "after");
    expect(await client.nextOf("message")).toMatchObject({ room, data: "after" });
    client.send({ type: "unsubscribe", room });
    expect(await client.nextOf("unsubscribed")).toMatchObject({ room });
    expect(await info(room)).toMatchObject({ connections: 0 });
  });

  it("forget, on waking, the subscriptions of sockets a restart ended without a close", async () => {
    const room = freshRoom();
    const { client, user } = await openUser();
    await subscribe(client, room);
    const hub = await hubOf(user, room);
    const rows = () => subscriptionRows(hub, room);
    // What a crash leaves: the row of a socket the platform no longer has.
    await runInDurableObject(hub, (_, state) => void state.storage.sql.exec("INSERT INTO subscriptions (connection, room, member) VALUES ('ghost', ?, NULL)", room));
    expect(await rows()).toHaveLength(2);
    await evictDurableObject(hub, { webSockets: "hibernate" });
    await serverPublish(room, "after");
    expect(await client.nextOf("message")).toMatchObject({ room, data: "after" });
    expect((await rows()).map((row) => row.connection)).not.toContain("ghost");
    expect(await rows()).toHaveLength(1);
  });

  it("close a flooding socket only once the echoes of its publishes to subscribed rooms reached it", async () => {
    const room = freshRoom();
    const { client, user } = await openUser();
    await subscribe(client, room);
    // Woken from hibernation, the hub knows no seq of the room yet (its feed's last is unknown).
    const hub = await hubOf(user, room);
    await evictDurableObject(hub, { webSockets: "hibernate" });
    // The Room's deliveries to the hub wait: the publishes are acked, their echoes are not in.
    // A bucket of 40 (2 x 20/s): 40 get in, and more than 40 dropped closes the socket.
    const publishes = Array.from({ length: 100 }, (_, i) => ({ type: "publish", room, data: i, id: `p${i}` }));
    const { code, received } = await floodWhileHeld(client, publishes, await holdCalls(hub, "deliver"));
    expect(code).toBe(1008);
    const echoes = received.filter((frame) => frame.type === "message");
    // The bucket refills a few more while the frames arrive; the first 40 got in for sure.
    expect(echoes.map((frame) => frame.id).slice(0, 40)).toEqual(Array.from({ length: 40 }, (_, i) => `p${i}`));
  });

  it("keep, on waking, the rows of sockets still closing: their close events need them", async () => {
    await runInDurableObject(env.HOLDERS.getByName(`feeds-${crypto.randomUUID()}`), (_, state) => {
      const table = new SubscriptionTable(state.storage.sql);
      for (const connection of ["closing", "gone"]) table.save({ connection, room: "r", member: null });
      new Feeds([], table, new Set(["closing"])); // the platform still lists "closing"
      expect(table.rows().map((row) => row.connection)).toEqual(["closing"]);
    });
  });

  describe("while a Room that just started takes its census of the hubs", () => {
    it("changes no counts for a repeated subscribe: the hub counts the socket as joining", async () => {
      const room = freshRoom();
      const watcher = await join(room, "watcher");
      const { client, user } = await openUser();
      await subscribe(client, room);
      expect(await watcher.client.json()).toEqual({ type: "presence", room, event: "join", user });
      await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });
      expect(await subscribe(client, room, { since: 0 })).toMatchObject({ users: 2 });
      await serverPublish(room, "marker"); // no leave and join of the user before it
      expect(await watcher.client.json()).toMatchObject({ type: "message", data: "marker" });
      expect(await info(room)).toMatchObject({ connections: 2, users: 2 });
    });

    it("applies a hub's join and its later report in the order the hub made them", async () => {
      const room = freshRoom();
      await join(room, "watcher");
      const { client: first, user } = await openUser();
      const { client: second } = await openUser(user);
      await subscribe(first, room);
      await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });
      second.send({ type: "subscribe", room }); // its join waits for the census...
      await new Promise((resolve) => setTimeout(resolve, 1));
      first.send({ type: "unsubscribe", room }); // ...and so does this report, made after it
      await second.nextOf("subscribed");
      await first.nextOf("unsubscribed");
      await expect.poll(() => info(room)).toMatchObject({ connections: 2, users: 2 });
    });

    it("stops waiting for a hub that does not answer in 2 s, and ends with the counts right", { timeout: 30_000 }, async () => {
      const room = freshRoom();
      const watcher = await join(room, "watcher");
      const { client, user } = await openUser();
      await subscribe(client, room);
      expect(await watcher.client.json()).toEqual({ type: "presence", room, event: "join", user });
      // A hub that answers after the 2 s are up, and wrongly (it holds the user).
      const restore = await runInDurableObject(await hubOf(user, room), (instance) => {
        const hubClass = Object.getPrototypeOf(instance) as typeof instance;
        const census = hubClass.census;
        const slow = async function (this: typeof instance, asked: string) {
          if (asked !== room) return census.call(this, asked);
          await new Promise((resolve) => setTimeout(resolve, 2_250));
          return { counts: {} };
        };
        hubClass.census = slow as unknown as typeof census;
        return () => void (hubClass.census = census);
      });
      try {
        await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });
        await subscribe(client, room, { since: 0 }); // answered once the wait ended
        await new Promise((resolve) => setTimeout(resolve, 800)); // the late answer arrives
      } finally {
        restore();
      }
      expect(await info(room)).toMatchObject({ connections: 2, users: 2 });
      await serverPublish(room, "after");
      expect(await client.nextOf("message")).toMatchObject({ room, data: "after" });
    });
  });

  it("leaves a socket still joining out of the alarm's census: its own join checks the room's limit", async () => {
    const room = freshRoom();
    // MAX_CONNECTIONS_PER_ROOM is 12 here: eleven room sockets, then one user's first subscription.
    for (let i = 0; i < 11; i++) await join(room, `member-${i}`);
    const { first, second, hub } = await twoOnOneHub();
    await subscribe(first.client, room);
    // The second subscribe's join waits at the Room while its alarm takes the census: the hub
    // counts that socket as joining.
    let held = false;
    const { release, restore } = await holdJoins(room, (request, realJoin) =>
      request.holder === hub ? (held = true) && ((gate) => gate.then(() => realJoin(request))) : undefined,
    );
    try {
      second.client.send({ type: "subscribe", room, id: "second" });
      await expect.poll(() => held, { timeout: 20_000 }).toBe(true); // a busy machine may take a while
      expect(await runDurableObjectAlarm(env.ROOMS.getByName(room))).toBe(true);
      expect(await info(room)).toMatchObject({ connections: 12 });
      release();
      expect(await second.client.json()).toMatchObject({ type: "error", code: "room_full", id: "second" });
    } finally {
      release();
      restore();
    }
    expect(await info(room)).toMatchObject({ connections: 12 });
  });

  it("still receives directs on a socket that subscribes", async () => {
    const room = freshRoom();
    const { client, user } = await openUser();
    await subscribe(client, room);
    const sender = await openUser();
    sender.client.send({ type: "direct", to: user, data: "psst", id: "d1" });
    expect(await client.nextOf("direct")).toMatchObject({ from: sender.user, data: "psst", id: "d1" });
  });
});

describe("refusing subscriptions", () => {
  it("refuses a room the token does not allow with forbidden and the frame's id", async () => {
    const user = freshUser();
    const jwt = await token({ sub: user, rooms: ["allowed-*"] });
    const { client } = await openUser(user, `token=${jwt}`);
    client.send({ type: "subscribe", room: "secret", id: "x" });
    expect(await client.json()).toMatchObject({ type: "error", code: "forbidden", id: "x" });
    expect(await subscribe(client, "allowed-1")).toMatchObject({ room: "allowed-1" });
  });

  it.each([
    ["an invalid room name", { type: "subscribe", room: "a/b", id: "b1" }],
    ["a missing room", { type: "subscribe", id: "b1" }],
    ["a negative since", { type: "subscribe", room: "r", since: -1, id: "b1" }],
    ["an unsubscribe without room", { type: "unsubscribe", id: "b1" }],
  ])("answers %s with bad_frame and the frame's id", async (_, frame) => {
    const { client } = await openUser();
    client.send(frame);
    expect(await client.json()).toMatchObject({ type: "error", code: "bad_frame", id: "b1" });
  });

  it("refuses one room past MAX_SUBSCRIPTIONS with too_many_subscriptions; re-subscribing a held room is not one more", async () => {
    const { client } = await openUser();
    const rooms = [freshRoom(), freshRoom(), freshRoom()];
    for (const room of rooms) await subscribe(client, room);
    await subscribe(client, rooms[0]!);
    client.send({ type: "subscribe", room: freshRoom(), id: "fourth" });
    expect(await client.json()).toMatchObject({ type: "error", code: "too_many_subscriptions", id: "fourth" });
    client.send({ type: "unsubscribe", room: rooms[1] });
    await client.nextOf("unsubscribed");
    expect(await subscribe(client, freshRoom())).toMatchObject({ type: "subscribed" });
  });

  it("refuses a full room with room_full", async () => {
    const room = freshRoom();
    // MAX_CONNECTIONS_PER_ROOM is 12 here: four subscriptions and eight room sockets fill it.
    for (let i = 0; i < 4; i++) await subscribe((await openUser()).client, room);
    for (let i = 0; i < 8; i++) await join(room, `member-${i}`);
    expect(await info(room)).toMatchObject({ connections: 12 });
    const late = await openUser();
    late.client.send({ type: "subscribe", room, id: "late" });
    expect(await late.client.json()).toMatchObject({ type: "error", code: "room_full", id: "late" });
  });

  it("frees the seat it promised a shard when it refuses that socket's join", async () => {
    const room = freshRoom();
    for (let i = 0; i < 3; i++) await join(room, `member-${i}`); // the Room is full of sockets
    let held = false;
    const { release, restore } = await holdJoins(room, (request, realJoin) =>
      request.holder === shardName(room, 1) ? (held = true) && ((gate) => gate.then(() => realJoin(request))) : undefined,
    );
    const late = join(room, "late").catch((error: unknown) => error); // a seat on the first shard, its join held
    await expect.poll(() => held, { timeout: 20_000 }).toBe(true); // a busy machine may take a while
    const subscribers = [];
    for (let i = 0; i < 9; i++) {
      const { client } = await openUser();
      await subscribe(client, room);
      subscribers.push(client);
    }
    release();
    expect(String(await late)).toContain("503"); // 12 connections: the held join is refused
    restore();
    subscribers[0]!.send({ type: "unsubscribe", room });
    await subscribers[0]!.nextOf("unsubscribed");
    await expect.poll(() => info(room)).toMatchObject({ connections: 11 }); // the hub's report is in
    expect((await join(room, "next")).welcome).toMatchObject({ users: 12 }); // the seat is not still held
  });

  it("refuses subscribe and unsubscribe on a room socket with bad_frame", async () => {
    const room = freshRoom();
    const { client } = await join(room, "alice");
    client.send({ type: "subscribe", room: freshRoom(), id: "s" });
    expect(await client.json()).toMatchObject({ type: "error", code: "bad_frame", id: "s" });
    client.send({ type: "unsubscribe", room, id: "u" });
    expect(await client.json()).toMatchObject({ type: "error", code: "bad_frame", id: "u" });
  });
});
