// A room past one object, over real sockets: 150 room sockets spread over the Room and its
// shards, and 30 user sockets (on hubs) subscribed to it. Every socket gets every message once,
// in order; counts and presence stay right as sockets leave, time out, lose their object or all
// come back at once (docs/design.md; docs/protocol.md "Rooms past one object").
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hubFor } from "../../src/objects/connect";
import { freshRoom, Relay, SERVER_AUTH, startRelay } from "./relay";
import { type Member, eventually, populate, presencePages, roomInfo, serverPublish, sleep } from "./scale";

const PER_OBJECT = 20;
const PRESENCE_LIST_LIMIT = 10;
const USER_HUBS = 8;
const ROOM_SOCKETS = 150;
const USER_SOCKETS = 30;
const ALL = ROOM_SOCKETS + USER_SOCKETS;

let relay: Relay;

beforeAll(async () => {
  relay = await startRelay({
    vars: {
      ALLOW_ANONYMOUS: "true",
      SOCKETS_PER_OBJECT: String(PER_OBJECT),
      PRESENCE_LIST_LIMIT: String(PRESENCE_LIST_LIMIT),
      USER_HUBS: String(USER_HUBS),
      HISTORY_LIMIT: "1000",
      // No socket here stops pinging on purpose; the timeouts have a relay of their own below.
      HEARTBEAT_INTERVAL_MS: "30000",
      HEARTBEAT_TIMEOUT_MS: "600000",
    },
  });
});

afterAll(async () => {
  await relay?.close();
});

/** How many objects hold a room's sockets: ceil(room sockets / PER_OBJECT) plus the hubs of the users. */
function objectsFor(roomSockets: number, users: Member[]): number {
  return Math.ceil(roomSockets / PER_OBJECT) + new Set(users.map((member) => hubFor(member.user, USER_HUBS))).size;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

describe("a room of 180 sockets over the Room, its shards and hubs", () => {
  it("delivers 100 messages from room sockets, user sockets and the server to all 180 sockets once each, in order", async () => {
    const room = freshRoom("big");
    const { rooms, users, all } = await populate(relay, room, { roomSockets: ROOM_SOCKETS, userSockets: USER_SOCKETS, perObject: PER_OBJECT, prefix: "a" });
    for (const member of all) expect(member.greetings[0]).toMatchObject({ seq: 0, users: expect.any(Number) });

    // 4 room sockets on the Room and on shards #1, #3 and #7; 3 user sockets; 3 server publishers.
    const roomPublishers = [rooms[0]!, rooms[30]!, rooms[70]!, rooms[149]!];
    const userPublishers = [users[0]!, users[1]!, users[2]!];
    const sent = new Map<string, unknown[]>();
    const publishing = [
      ...[...roomPublishers, ...userPublishers].map(async (member) => {
        const data = range(1, 10).map((n) => ({ by: member.user, n }));
        sent.set(member.user, data);
        return Promise.all(data.map((item) => member.publish(item)));
      }),
      ...["server-a", "server-b", "server-c"].map(async (by) => {
        const data = range(1, 10).map((n) => ({ by, n }));
        sent.set(by, data);
        const seqs: number[] = [];
        for (const item of data) {
          const { status, body } = await serverPublish(relay, room, item);
          expect(status, JSON.stringify(body)).toBe(200);
          seqs.push((body as Record<string, number>).seq!);
        }
        return seqs;
      }),
    ];
    const acknowledged = await Promise.all(publishing);
    expect(acknowledged.flat().sort((a, b) => a - b)).toEqual(range(1, 100));

    await Promise.all(all.map((member) => member.reach(100)));
    const reference = rooms[0]!;
    for (const member of all) {
      expect(member.seqs, member.user).toEqual(range(1, 100));
      // The very frames the Room stored: same seq, sender, data, id and ts everywhere.
      expect([...member.messages.values()], member.user).toEqual([...reference.messages.values()]);
    }
    // Each publisher's messages are numbered in the order it sent them, with the seq it was told.
    const frames = [...reference.messages.values()];
    for (const [by, data] of sent) {
      const mine = frames.filter((frame) => frame.data.by === by);
      expect(mine.map((frame) => frame.data)).toEqual(data);
    }
    for (const [i, member] of [...roomPublishers, ...userPublishers].entries()) {
      expect(frames.filter((frame) => frame.data.by === member.user).map((frame) => frame.seq)).toEqual(acknowledged[i]);
      expect(frames.filter((frame) => frame.data.by === member.user).every((frame) => frame.from === member.user)).toBe(true);
    }

    const info = await roomInfo(relay, room);
    expect(info).toMatchObject({ room, seq: 100, epoch: reference.epoch, connections: ALL, users: ALL });
    expect(info.presence).toBeUndefined();
    expect(info.objects).toBeGreaterThan(1);
    expect(info.objects).toBe(objectsFor(ROOM_SOCKETS, users));

    // Nothing arrives twice: a last message is the next frame of the room everywhere.
    const { body } = await serverPublish(relay, room, "last");
    expect(body).toEqual({ seq: 101 });
    await Promise.all(all.map((member) => member.reach(101)));
    for (const member of all) expect(member.seqs, member.user).toEqual(range(1, 101));
    await Promise.all(all.map((member) => member.close()));
  }, 120_000);
});

describe("losing a shard and the Room mid-stream", () => {
  it("loses no acknowledged message, and every client resumes with recovered true and no gap", async () => {
    const room = freshRoom("evict");
    // The Room, shards #1 and #2, and 10 user sockets on hubs; all reconnect and resume when closed
    // (room sockets with ?since=&epoch=, user sockets by subscribing with since and epoch).
    const { rooms, users, all } = await populate(relay, room, { roomSockets: 60, userSockets: 10, perObject: PER_OBJECT, prefix: "e" });
    for (const member of all) member.resume = true;

    // Three server publishers and three sockets (on the Room, on shard #2, on a hub) publish at
    // once; what is not acknowledged is sent again, as a client or server would.
    const acked: { seq: number; data: unknown }[] = [];
    const failures: string[] = [];
    const fromServer = async (by: string, count: number) => {
      for (let n = 1; n <= count; n++) {
        const data = { by, n };
        for (let attempt = 0; ; attempt++) {
          const answer = await serverPublish(relay, room, data).catch((error: unknown) => ({ status: 0, body: String(error) }));
          if (answer.status === 200) {
            acked.push({ seq: (answer.body as Record<string, number>).seq!, data });
            break;
          }
          failures.push(`${by}: ${answer.status} ${JSON.stringify(answer.body)}`);
          if (attempt > 50) throw new Error(`${by} ${n} never acknowledged: ${failures.slice(-3).join("; ")}`);
          await sleep(100);
        }
      }
    };
    const fromSocket = async (member: Member, count: number) => {
      for (let n = 1; n <= count; n++) {
        const data = { by: member.user, n };
        const { seq, failures: failed } = await member.publishUntilAcked(data);
        acked.push({ seq, data });
        failures.push(...failed.map((failure) => `${member.user}: ${failure}`));
        await sleep(50); // well within the rate limit
      }
    };
    const publishers = Promise.all([
      fromServer("server-a", 25),
      fromServer("server-b", 25),
      fromServer("server-c", 25),
      fromSocket(rooms[5]!, 15),
      fromSocket(rooms[45]!, 15),
      fromSocket(users[0]!, 15),
    ]);
    const ackedAtLeast = (n: number) => eventually(() => expect(acked.length).toBeGreaterThanOrEqual(n));

    await ackedAtLeast(20);
    await relay.evict("Holder", `${room}#1`);
    await ackedAtLeast(50);
    await relay.evict("Room", room);
    // Then the hub of the publishing user socket, with the user sockets it holds.
    const hub = hubFor(users[0]!.user, USER_HUBS);
    await ackedAtLeast(80);
    await relay.evict("Holder", hub);
    await publishers;
    expect(acked).toHaveLength(120);

    const last = Math.max(...acked.map(({ seq }) => seq));
    // Each publisher's acknowledged messages are numbered in the order it sent them.
    for (const by of ["server-a", "server-b", "server-c", rooms[5]!.user, rooms[45]!.user, users[0]!.user]) {
      const seqs = acked.filter(({ data }) => (data as { by: string }).by === by).map(({ seq }) => seq);
      expect(seqs, by).toEqual([...seqs].sort((a, b) => a - b));
    }
    await Promise.all(all.map((member) => member.reach(last)));

    // The shard's, the Room's and the hub's sockets were closed and came back, resuming.
    const onHub = users.filter((member) => hubFor(member.user, USER_HUBS) === hub);
    for (const member of [...rooms.slice(0, 20), ...rooms.slice(20, 40), ...onHub]) {
      expect(member.closes.length, member.user).toBeGreaterThan(0);
    }
    for (const member of all) {
      expect(member.gap(), member.describe()).toBeUndefined();
      expect(member.greetings.slice(1).map((greeting) => greeting.recovered), member.user).toEqual(
        member.greetings.slice(1).map(() => true),
      );
      // Every acknowledged message reached every client, as acknowledged.
      for (const { seq, data } of acked) expect(member.messages.get(seq)?.data, `${member.user} seq ${seq}`).toEqual(data);
    }

    const history = await relay.fetch(`/rooms/${room}/messages?since=0`, { headers: SERVER_AUTH });
    const { messages } = (await history.json()) as { messages: Record<string, any>[] };
    expect(messages.map((frame) => frame.seq)).toEqual(range(1, last));
    for (const { seq, data } of acked) expect(messages[seq - 1]!.data).toEqual(data);

    await eventually(async () => expect(await roomInfo(relay, room)).toMatchObject({ seq: last, connections: 70, users: 70 }));
    await Promise.all(all.map((member) => member.close()));
  }, 120_000);
});

describe("a reconnect storm", () => {
  it("welcomes all 180 sockets back with recovered true and sends presence counts, not a flood of joins", async () => {
    const room = freshRoom("storm");
    const { all } = await populate(relay, room, { roomSockets: ROOM_SOCKETS, userSockets: USER_SOCKETS, perObject: PER_OBJECT, prefix: "s" });
    for (let n = 1; n <= 10; n++) expect((await serverPublish(relay, room, { n })).body).toEqual({ seq: n });
    await Promise.all(all.map((member) => member.reach(10)));

    // Every connection drops at once, and 5 messages are published while they are gone.
    for (const member of all) member.terminate();
    for (let n = 11; n <= 15; n++) expect((await serverPublish(relay, room, { n })).body).toEqual({ seq: n });

    const presenceBefore = all.map((member) => member.presence.length);
    const greetings = await Promise.all(all.map((member) => member.open({ since: 10, epoch: member.epoch! })));
    for (const [i, greeting] of greetings.entries()) {
      expect(greeting, all[i]!.user).toMatchObject({ seq: 15, epoch: all[i]!.epoch, recovered: true, users: expect.any(Number) });
    }
    await Promise.all(all.map((member) => member.reach(15)));
    await eventually(async () => expect(await roomInfo(relay, room)).toMatchObject({ seq: 15, connections: ALL, users: ALL }));

    // Every client hears the final number of users (its greeting's, or a later count frame).
    await eventually(() => expect(all.filter((member) => member.users !== ALL).map((member) => [member.user, member.users])).toEqual([]), 15_000);
    expect((await serverPublish(relay, room, "after the storm")).body).toEqual({ seq: 16 });
    await Promise.all(all.map((member) => member.reach(16)));
    for (const member of all) expect(member.seqs, member.user).toEqual(range(1, 16));

    const stormPresence = all.flatMap((member, i) => member.presence.slice(presenceBefore[i]));
    // n joins cost O(n) presence frames, not n²: far below one frame per pair of sockets.
    expect(stormPresence.length).toBeLessThan(ALL * 20);
    // Above PRESENCE_LIST_LIMIT users, only count frames; join and leave only while the room is small.
    const named = stormPresence.filter((frame) => frame.event !== "count");
    expect(named.length).toBeLessThanOrEqual(PRESENCE_LIST_LIMIT * PRESENCE_LIST_LIMIT);
    await Promise.all(all.map((member) => member.close()));
  }, 120_000);
});

describe("counts as sockets unsubscribe, close and time out", () => {
  const INTERVAL_MS = 1000;
  const TIMEOUT_MS = 4000;
  let short: Relay;

  beforeAll(async () => {
    short = await startRelay({
      vars: {
        ALLOW_ANONYMOUS: "true",
        SOCKETS_PER_OBJECT: String(PER_OBJECT),
        PRESENCE_LIST_LIMIT: String(PRESENCE_LIST_LIMIT),
        USER_HUBS: String(USER_HUBS),
        HEARTBEAT_INTERVAL_MS: String(INTERVAL_MS),
        HEARTBEAT_TIMEOUT_MS: String(TIMEOUT_MS),
      },
    });
  });

  afterAll(async () => {
    await short?.close();
  });

  it("drops connections and users as they go, and the presence pages list exactly who is left", async () => {
    const room = freshRoom("counts");
    // 60 room sockets: 20 on the Room, 20 on shard #1, 20 on shard #2; 20 user sockets on hubs.
    const { rooms, users, all } = await populate(short, room, {
      roomSockets: 60,
      userSockets: 20,
      perObject: PER_OBJECT,
      prefix: "c",
      pingEveryMs: INTERVAL_MS / 2,
    });
    expect(await roomInfo(short, room)).toMatchObject({ connections: 80, users: 80, objects: objectsFor(60, users) });
    const present = new Set(all);
    const expectCounts = async (n: number) => {
      await eventually(async () => expect(await roomInfo(short, room)).toMatchObject({ connections: n, users: n }));
      // Every client still there hears the new number in a count frame.
      await eventually(() => expect([...present].filter((member) => member.users !== n).map((member) => member.user)).toEqual([]), 15_000);
    };

    // 10 user sockets unsubscribe.
    const unsubscribed = users.slice(0, 10);
    for (const member of unsubscribed) {
      expect(await member.unsubscribe()).toEqual({ type: "unsubscribed", room, id: expect.any(String) });
      present.delete(member);
    }
    await expectCounts(70);
    const { body } = await serverPublish(short, room, "after the unsubscribes");
    const marker = (body as Record<string, number>).seq!;
    await Promise.all([...present].map((member) => member.reach(marker)));
    for (const member of unsubscribed) expect(member.messages.has(marker), member.user).toBe(false);

    // Room sockets close on the Room and on both shards, and one subscribed user socket closes.
    const closing = [rooms[0]!, rooms[1]!, rooms[20]!, rooms[21]!, rooms[40]!, rooms[41]!, users[10]!];
    await Promise.all(closing.map((member) => member.close()));
    for (const member of closing) present.delete(member);
    await expectCounts(63);

    // Sockets on the Room, both shards and a hub stop pinging: each is closed 4000.
    const silent = [rooms[2]!, rooms[3]!, rooms[22]!, rooms[23]!, rooms[42]!, users[11]!, users[12]!];
    for (const member of silent) {
      member.silence();
      present.delete(member);
    }
    for (const member of silent) {
      expect(await member.client.closed, member.user).toEqual({ code: 4000, reason: "heartbeat timeout" });
    }
    await expectCounts(56);
    expect((await roomInfo(short, room)).objects).toBe(objectsFor(60, users.slice(13)));

    const pages = await presencePages(short, room, 7);
    expect(pages).toHaveLength(8);
    for (const page of pages.slice(0, -1)) expect(page.next).toBe(page.presence.at(-1).user);
    expect(pages.at(-1)!.next).toBeUndefined();
    const listed = pages.flatMap((page) => page.presence);
    const left = [...present].map((member) => member.user).sort();
    expect(listed).toEqual(left.map((user) => ({ user, connections: 1 })));

    // Still one object's worth of messages for everyone left, in order.
    const { body: last } = await serverPublish(short, room, "the end");
    await Promise.all([...present].map((member) => member.reach((last as Record<string, number>).seq!)));
    for (const member of present) expect(member.gap(), member.describe()).toBeUndefined();
    await Promise.all(all.filter((member) => !closing.includes(member) && !silent.includes(member)).map((member) => member.close()));
  }, 120_000);
});

describe("sockets that join a shard or a hub while messages flow", () => {
  it("get every message after their welcome's seq exactly once, in order", async () => {
    const room = freshRoom("flow");
    // The Room is full from the start, so every later room socket opens on a shard.
    const { all: first } = await populate(relay, room, { roomSockets: PER_OBJECT, userSockets: 0, perObject: PER_OBJECT, prefix: "f" });
    let publishing = true;
    const publisher = async (by: string) => {
      for (let n = 1; publishing; n++) {
        const { status, body } = await serverPublish(relay, room, { by, n });
        expect(status, JSON.stringify(body)).toBe(200);
      }
    };
    const publishers = Promise.all(["server-a", "server-b", "server-c", "server-d"].map(publisher));
    // 40 room sockets (shards #1 and #2) opening at once, then 20 user sockets (hubs) at once.
    const { all: joiners } = await populate(relay, room, { roomSockets: 40, userSockets: 20, perObject: 60, prefix: "g" });
    publishing = false;
    await publishers;
    const { body } = await serverPublish(relay, room, "the end");
    const last = (body as Record<string, number>).seq!;
    const everyone = [...first, ...joiners];
    await Promise.all(everyone.map((member) => member.reach(last)));

    const gaps = everyone.filter((member) => member.gap() !== undefined).map((member) => `${member.user} ${member.gap()} after welcome seq ${member.firstSeq}`);
    expect(gaps).toEqual([]);
    for (const member of everyone) expect(member.seqs, member.user).toEqual(range(member.firstSeq + 1, last));
    await Promise.all(everyone.map((member) => member.close()));
  }, 120_000);
});

describe("a room shrinking back to PRESENCE_LIST_LIMIT users", () => {
  it("tells every client still there how many users remain", async () => {
    const room = freshRoom("shrink");
    // 11 users, one more than the list limit: 6 room sockets on the Room, 5 user sockets on hubs.
    const { rooms, all } = await populate(relay, room, { roomSockets: 6, userSockets: 5, perObject: PER_OBJECT, prefix: "k" });
    // Each client knows there are 11: from its greeting, the joins after it, then a count frame.
    await eventually(() => expect(all.map((member) => member.users)).toEqual(all.map(() => PRESENCE_LIST_LIMIT + 1)));
    expect(await roomInfo(relay, room)).toMatchObject({ connections: 11, users: 11 });

    await rooms[0]!.close();
    await eventually(async () => expect(await roomInfo(relay, room)).toMatchObject({ connections: 10, users: 10 }));
    // Counting before the leave the room had 11 users, so a count frame says 10 (a leave frame would do too).
    const rest = all.slice(1);
    await eventually(
      () => expect(rest.map((member) => [member.user, member.users])).toEqual(rest.map((member) => [member.user, PRESENCE_LIST_LIMIT])),
      15_000,
    );
    await Promise.all(rest.map((member) => member.close()));
  }, 120_000);
});

describe("a room whose sockets all drop and come back at once", () => {
  it("ends with every client knowing the room's number of users", async () => {
    const room = freshRoom("blink");
    const { all } = await populate(relay, room, { roomSockets: 30, userSockets: 10, perObject: PER_OBJECT, prefix: "b" });
    await eventually(() => expect(all.filter((member) => member.users !== 40).map((member) => member.user)).toEqual([]));

    for (const member of all) member.terminate();
    const greetings = await Promise.all(all.map((member) => member.open({ since: 0, epoch: member.epoch! })));
    for (const greeting of greetings) expect(greeting).toMatchObject({ seq: 0, recovered: true });
    await eventually(async () => expect(await roomInfo(relay, room)).toMatchObject({ connections: 40, users: 40 }));
    // Greeted while the room refilled, each client hears the final 40 in a count frame.
    await eventually(() => expect(all.filter((member) => member.users !== 40).map((member) => [member.user, member.users])).toEqual([]), 15_000);
    await Promise.all(all.map((member) => member.close()));
  }, 120_000);
});
