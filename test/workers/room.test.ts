import { env, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it, vi } from "vitest";
import { MessageLog } from "../../src/objects/message-log";
import { Roster } from "../../src/objects/roster";
import { userChannel } from "../../src/protocol/pusher";
import { connect, freshRoom, join, request } from "./connect";
import { itHandlesBadInputAndLimits } from "./socket.case";

// This project runs with RATE_LIMIT_PER_SECOND=5, MAX_MESSAGE_BYTES=1024, HISTORY_LIMIT=5,
// MAX_CONNECTIONS_PER_ROOM=3 (vitest.config.ts).

describe("joining a room", () => {
  it("sends a welcome first, with presence that includes the newcomer", async () => {
    const room = freshRoom();
    const { welcome } = await join(room, "alice");
    expect(welcome).toMatchObject({
      type: "welcome",
      protocol: 1,
      room,
      user: "alice",
      seq: 0,
      presence: [{ user: "alice", connections: 1 }],
      heartbeat: { interval: 30_000, timeout: 90_000 },
    });
    expect(welcome.connection).toEqual(expect.any(String));
    expect(welcome.epoch).toEqual(expect.any(String));
    expect(welcome).not.toHaveProperty("recovered");
  });

  it("announces a user's first socket to the others, not to the newcomer", async () => {
    const room = freshRoom();
    const alice = await join(room, "alice");
    const bob = await join(room, "bob");
    expect(await alice.client.json()).toEqual({ type: "presence", room, event: "join", user: "bob" });
    expect(bob.welcome.presence).toEqual([
      { user: "alice", connections: 1 },
      { user: "bob", connections: 1 },
    ]);
    // A second socket of the same user is not a join.
    await join(room, "bob");
    alice.client.send({ type: "publish", data: "marker" });
    expect(await alice.client.json()).toMatchObject({ type: "message", data: "marker" });
  });

  it("announces leave only when a user's last socket closes", async () => {
    const room = freshRoom();
    const alice = await join(room, "alice");
    const bob1 = await join(room, "bob");
    const bob2 = await join(room, "bob");
    await alice.client.nextOf("presence");
    await bob1.client.close(1000, "bye");
    alice.client.send({ type: "publish", data: "still here" });
    expect(await alice.client.json()).toMatchObject({ type: "message", data: "still here" });
    await bob2.client.close();
    expect(await alice.client.json()).toEqual({ type: "presence", room, event: "leave", user: "bob" });
  });

  it("refuses an upgrade with 503 when the room is full, and says so to a plain GET of the same URL", async () => {
    const room = freshRoom();
    const [first] = [await join(room, "a"), await join(room, "b"), await join(room, "c")];
    const error = await connect(`/rooms/${room}/ws?user=d`).catch((e: Error) => e);
    expect(String(error)).toContain("503");
    expect(String(error)).toContain("room_full");
    // The client library asks this way why an upgrade failed (browsers do not tell).
    const asked = await request(`/rooms/${room}/ws?user=d`);
    expect(asked.status).toBe(503);
    expect(await asked.json()).toEqual({ error: "room_full", message: expect.stringContaining("connections, its limit") });
    await first.client.close();
    await expect.poll(async () => (await request(`/rooms/${room}/ws?user=d`)).status).toBe(426);
  });
});

describe("publishing", () => {
  it("broadcasts to every socket, sender included, in seq order", async () => {
    const room = freshRoom();
    const alice = await join(room, "alice");
    const bob = await join(room, "bob");
    await alice.client.nextOf("presence");
    for (let i = 1; i <= 3; i++) alice.client.send({ type: "publish", data: { n: i }, id: `m${i}` });
    for (const client of [alice.client, bob.client]) {
      for (let i = 1; i <= 3; i++) {
        const frame = await client.json();
        expect(frame).toMatchObject({ type: "message", room, seq: i, from: "alice", data: { n: i }, id: `m${i}` });
        expect(frame.ts).toEqual(expect.any(Number));
      }
    }
  });

  it("relays binary frames as-is to the other sockets only", async () => {
    const room = freshRoom();
    const alice = await join(room, "alice");
    const bob = await join(room, "bob");
    await alice.client.nextOf("presence");
    alice.client.send(new Uint8Array([1, 2, 3, 255]));
    expect(await bob.client.next()).toEqual(new Uint8Array([1, 2, 3, 255]));
    alice.client.send({ type: "publish", data: "after" });
    // Alice's next frame is her own message: the binary frame was not echoed to her.
    expect(await alice.client.json()).toMatchObject({ type: "message", data: "after", seq: 1 });
  });

  it("refuses publishing to another room from a room socket", async () => {
    const { client } = await join(freshRoom(), "alice");
    client.send({ type: "publish", room: "elsewhere", data: 1, id: "x" });
    expect(await client.json()).toMatchObject({ type: "error", code: "bad_frame", id: "x" });
  });
});

describe("bad input and limits on room sockets", () => {
  itHandlesBadInputAndLimits({
    open: async () => (await join(freshRoom(), "alice")).client,
    probe: { type: "publish", data: "probe" },
    answered: (frame) => frame.type === "message" && frame.data === "probe",
  });

  it("refuses an ack, a subscribe and an unsubscribe, which only user sockets take, naming each frame's id", async () => {
    const { client } = await join(freshRoom(), "alice");
    client.send({ type: "ack", seq: 1 });
    expect(await client.json()).toMatchObject({ type: "error", code: "bad_frame" });
    client.send({ type: "ack", seq: 1, id: "a1" });
    expect(await client.json()).toMatchObject({ type: "error", code: "bad_frame", id: "a1" });
    client.send({ type: "subscribe", room: "other", id: "s1" });
    expect(await client.json()).toMatchObject({ type: "error", code: "bad_frame", id: "s1" });
    client.send({ type: "unsubscribe", room: "other", id: "u1" });
    expect(await client.json()).toMatchObject({ type: "error", code: "bad_frame", id: "u1" });
  });
});

describe("publishing in bursts", () => {
  it("names the dropped frame's id on its rate_limited error", async () => {
    const { client } = await join(freshRoom(), "hasty");
    // A bucket of 10 (2 x RATE_LIMIT_PER_SECOND=5): the eleventh frame is the first dropped.
    for (let i = 0; i < 11; i++) client.send({ type: "publish", data: i, id: `p${i}` });
    expect(await client.nextOf("error")).toMatchObject({ code: "rate_limited", id: "p10" });
  });

  it("delivers a burst from several senders to everyone in one seq order, with no gap", async () => {
    const room = freshRoom();
    const alice = await join(room, "alice");
    const bob = await join(room, "bob");
    await alice.client.nextOf("presence");
    for (let i = 0; i < 8; i++) {
      alice.client.send({ type: "publish", data: `a${i}` });
      bob.client.send({ type: "publish", data: `b${i}` });
    }
    const seen = async (client: typeof alice.client) => {
      const frames: Record<string, any>[] = [];
      while (frames.length < 16) frames.push(await client.nextOf("message"));
      return frames;
    };
    const [forAlice, forBob] = await Promise.all([seen(alice.client), seen(bob.client)]);
    expect(forAlice.map((f) => f.seq)).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    expect(forBob).toEqual(forAlice);
    // Each sender's own messages keep their order.
    expect(forAlice.filter((f) => f.from === "alice").map((f) => f.data)).toEqual(Array.from({ length: 8 }, (_, i) => `a${i}`));
  });

  it("never shows a newcomer a message that is numbered but not yet stored", async () => {
    const room = freshRoom();
    const alice = await join(room, "alice");
    for (let i = 1; i <= 5; i++) alice.client.send({ type: "publish", data: i });
    // Joins while the burst may still be pending: its welcome seq and replay must agree.
    const bob = await join(room, "bob", `&since=0&epoch=${alice.welcome.epoch}`);
    expect(bob.welcome.recovered).toBe(true);
    for (let i = 1; i <= 5; i++) await alice.client.nextOf("message");
    alice.client.send({ type: "publish", data: "next" });
    // Replay and live messages together: every seq once, in order, whatever the welcome said.
    const seqs: number[] = [];
    while (seqs.at(-1) !== 6) seqs.push((await bob.client.nextOf("message")).seq);
    expect(seqs).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it("gives a flooding sender every message it got in, before its rate-limit error and close", async () => {
    const { client } = await join(freshRoom(), "flooder");
    for (let i = 0; i < 200; i++) client.send({ type: "publish", data: i });
    const closed = await client.closed;
    expect(closed.code).toBe(1008);
    const frames = client.pending as Record<string, any>[];
    const firstError = frames.findIndex((frame) => frame.type === "error");
    const messages = frames.filter((frame) => frame.type === "message");
    // The burst of 10 (2 x RATE_LIMIT_PER_SECOND=5) is echoed, in order, ahead of the error.
    expect(messages.slice(0, 10).map((frame) => frame.data)).toEqual(Array.from({ length: 10 }, (_, i) => i));
    expect(frames.slice(0, firstError).filter((frame) => frame.type === "message").length).toBeGreaterThanOrEqual(10);
  });

  it("tells the sender, with its id, when the room cannot store its message", async () => {
    const room = freshRoom();
    const alice = await join(room, "alice");
    await runInDurableObject(env.ROOMS.getByName(room), (_, state) => {
      state.storage.sql.exec("DROP TABLE messages");
    });
    alice.client.send({ type: "publish", data: "lost", id: "m1" });
    expect(await alice.client.json()).toMatchObject({ type: "error", code: "internal", id: "m1" });
  });
});

describe("history and resume", () => {
  it("serves no history with HISTORY_LIMIT=0, and still counts on across a restart", async () => {
    const room = freshRoom("no-history");
    await runInDurableObject(env.ROOMS.getByName(room), (_, state) => {
      const stored: number[] = [];
      const log = new MessageLog(state.storage, room, 0, (batch) => stored.push(...batch.map((message) => message.seq)));
      for (const n of [1, 2, 3]) void log.append("server", String(n));
      log.flush();
      expect(stored).toEqual([1, 2, 3]);
      expect(log.after(0, 10)).toEqual([]);
      expect(log.resume(1, undefined)).toEqual({ recovered: false, messages: [] });
      expect(log.resume(3, log.epoch)).toEqual({ recovered: true, messages: [] });
      // One row stays, unserved: it holds the seq (sequence.ts).
      expect(state.storage.sql.exec("SELECT seq FROM messages").toArray()).toEqual([{ seq: 3 }]);
      expect(new MessageLog(state.storage, room, 0, () => {}).seq).toBe(3);
      expect(log.newest(60_000)).toBeUndefined(); // nor a Pusher cache channel's last event
    });
  });

  it("serves its newest message to a Pusher cache channel only while it is fresh", async () => {
    const room = freshRoom("cache-");
    await runInDurableObject(env.ROOMS.getByName(room), (_, state) => {
      const log = new MessageLog(state.storage, room, 5, () => {});
      expect(log.newest(60_000)).toBeUndefined();
      for (const n of [1, 2]) void log.append("server", String(n));
      log.flush();
      expect(log.newest(60_000)).toMatchObject({ seq: 2 });
      expect(JSON.parse(log.newest(60_000)!.frame)).toMatchObject({ seq: 2, data: 2 });
      expect(log.newest(-1)).toBeUndefined(); // older than the cache keeps events
    });
  });

  async function roomWith(count: number) {
    const room = freshRoom();
    const alice = await join(room, "alice");
    for (let i = 1; i <= count; i++) alice.client.send({ type: "publish", data: i });
    for (let i = 1; i <= count; i++) await alice.client.nextOf("message");
    return { room, epoch: alice.welcome.epoch as string, alice };
  }

  it("replays exactly the messages after since, then live ones", async () => {
    const { room, epoch, alice } = await roomWith(4);
    const { client, welcome } = await join(room, "bob", `&since=1&epoch=${epoch}`);
    expect(welcome).toMatchObject({ seq: 4, recovered: true });
    for (const seq of [2, 3, 4]) expect(await client.json()).toMatchObject({ type: "message", seq, data: seq });
    alice.client.send({ type: "publish", data: 5 });
    expect(await client.json()).toMatchObject({ type: "message", seq: 5 });
  });

  it("recovers with nothing to replay when the client is up to date", async () => {
    const { room, epoch, alice } = await roomWith(2);
    const { client, welcome } = await join(room, "bob", `&since=2&epoch=${epoch}`);
    expect(welcome).toMatchObject({ recovered: true });
    alice.client.send({ type: "publish", data: "live" });
    expect(await client.json()).toMatchObject({ seq: 3, data: "live" });
  });

  it("says recovered: false and replays nothing when missed messages are gone", async () => {
    // HISTORY_LIMIT is 5: after 8 messages, 4..8 remain.
    const { room, epoch } = await roomWith(8);
    const resumable = await join(room, "bob", `&since=3&epoch=${epoch}`);
    expect(resumable.welcome).toMatchObject({ recovered: true });
    expect(await resumable.client.json()).toMatchObject({ seq: 4 });
    const { client, welcome } = await join(room, "carol", `&since=2&epoch=${epoch}`);
    expect(welcome).toMatchObject({ recovered: false, seq: 8 });
    expect(client.pending).toEqual([]);
  });

  it("says recovered: false when the epoch differs", async () => {
    const { room } = await roomWith(2);
    const { client, welcome } = await join(room, "bob", "&since=1&epoch=another-epoch");
    expect(welcome).toMatchObject({ recovered: false });
    expect(client.pending).toEqual([]);
  });

  it("skips the epoch check when since comes without epoch", async () => {
    const { room } = await roomWith(3);
    const { client, welcome } = await join(room, "bob", "&since=2");
    expect(welcome).toMatchObject({ recovered: true });
    expect(await client.json()).toMatchObject({ seq: 3 });
  });

  it("says recovered: false for a since beyond the room's seq", async () => {
    const { room, epoch } = await roomWith(1);
    const { welcome } = await join(room, "bob", `&since=9&epoch=${epoch}`);
    expect(welcome).toMatchObject({ recovered: false, seq: 1 });
  });
});

describe("hibernation", () => {
  it("announces a user's leave once, when the last of their sockets closes while the room hibernates", async () => {
    // The Room keeps a row per user present, not per socket (src/objects/roster.ts); counts come
    // from the platform's socket list after a wake-up.
    const room = freshRoom();
    const bob = await join(room, "bob");
    const first = await join(room, "alice");
    expect(await bob.client.json()).toEqual({ type: "presence", room, event: "join", user: "alice" });
    const second = await join(room, "alice");
    await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });
    await first.client.close();
    expect(await env.ROOMS.getByName(room).info()).toMatchObject({ connections: 2, users: 2 });
    await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });
    await second.client.close();
    expect(await bob.client.json()).toEqual({ type: "presence", room, event: "leave", user: "alice" });
    expect(await env.ROOMS.getByName(room).info()).toMatchObject({ connections: 1, users: 1, presence: [{ user: "bob", connections: 1 }] });
    bob.client.send({ type: "publish", data: "still here" });
    expect(await bob.client.json()).toMatchObject({ type: "message", data: "still here" });
  });

  it("counts users named like Object's own properties (constructor, toString) as any others across a wake-up", async () => {
    const room = freshRoom();
    const first = await join(room, "constructor");
    await join(room, "constructor");
    await join(room, "toString");
    await first.client.nextOf("presence");
    await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });
    expect(await env.ROOMS.getByName(room).info()).toMatchObject({
      connections: 3,
      users: 2,
      presence: [
        { user: "constructor", connections: 2 },
        { user: "toString", connections: 1 },
      ],
    });
    // Still full at MAX_CONNECTIONS_PER_ROOM (3): the count is a number, not "[object]1".
    await expect(join(room, "valueOf")).rejects.toThrow(/503/);
  });

  it("keeps presence, seq and history right after the object is evicted mid-conversation", async () => {
    const room = freshRoom();
    const alice = await join(room, "alice");
    const bob = await join(room, "bob");
    await alice.client.nextOf("presence");
    alice.client.send({ type: "publish", data: "before" });
    await alice.client.nextOf("message");
    await bob.client.nextOf("message");

    await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });

    // The sockets survived; the rebuilt object still knows who is here and what seq is next.
    bob.client.send({ type: "publish", data: "after" });
    expect(await alice.client.json()).toMatchObject({ type: "message", seq: 2, from: "bob", data: "after" });
    const info = await env.ROOMS.getByName(room).info();
    expect(info).toMatchObject({ seq: 2, connections: 2 });
    expect(info.presence).toHaveLength(2);
    expect(info.presence).toEqual(
      expect.arrayContaining([
        { user: "alice", connections: 1 },
        { user: "bob", connections: 1 },
      ]),
    );
    const carol = await join(room, "carol", `&since=0&epoch=${alice.welcome.epoch}`);
    expect(carol.welcome).toMatchObject({ recovered: true, seq: 2 });
    expect(await carol.client.json()).toMatchObject({ seq: 1, data: "before" });
    expect(await carol.client.json()).toMatchObject({ seq: 2, data: "after" });

    await evictDurableObject(env.ROOMS.getByName(room), { webSockets: "hibernate" });
    expect(await alice.client.json()).toEqual({ type: "presence", room, event: "join", user: "carol" });
    await bob.client.close();
    expect(await alice.client.json()).toEqual({ type: "presence", room, event: "leave", user: "bob" });
    expect(await env.ROOMS.getByName(room).info()).toMatchObject({ connections: 2 });
  });
});

describe("a census answer (Roster.replace)", () => {
  it("lowers counts to what a holder has, joiners included, and raises them only to its admitted sockets", async () => {
    await runInDurableObject(env.ROOMS.getByName(freshRoom()), (_, state) => {
      const roster = new Roster(state.storage.sql);
      roster.set("shard", "a", 3);
      roster.set("shard", "b", 1);
      const at = (...users: string[]) => users.map((user) => roster.at("shard", user));
      const changes: [string, string][] = [];
      const changed = (user: string, change: string) => void changes.push([user, change]);
      // a: 2 there (one joining), lowered; b: 3 there (one joining), raised to its 2 admitted;
      // c: only joining, left to its own join, which counts it with the room's limits.
      roster.replace("shard", { counts: { a: 2, b: 3, c: 1 }, joining: { a: 1, b: 1, c: 1 } }, false, changed);
      expect(changes).toEqual([]);
      expect(at("a", "b", "c")).toEqual([2, 2, 0]);
      // The census after a start only lowers.
      roster.replace("shard", { counts: { a: 5, d: 1 } }, true, changed);
      expect(changes).toEqual([["b", "left"]]);
      expect(at("a", "b", "d")).toEqual([2, 0, 0]);
    });
  });
});

describe("a signed-in user's watchers (Pusher watchlists)", () => {
  it("are told after a restart of a change stored before it, which is then forgotten", async () => {
    const stub = env.ROOMS.getByName(userChannel(`watched-${freshRoom()}`));
    // As a start would find it had the object stopped between a roster change and its telling:
    // the change stored, a watcher (signed in nowhere) still to hear it.
    await runInDurableObject(stub, (_, state) => {
      state.storage.sql.exec("INSERT INTO watchers (user, signup) VALUES ('gone', 'signup-1')");
      state.storage.sql.exec("INSERT INTO watch_news (online) VALUES (0)");
    });
    await evictDurableObject(stub);
    await runInDurableObject(stub, () => {}); // starts it
    // Told, the watcher answers that it is nowhere: it is forgotten, and so is the change.
    await vi.waitFor(
      () =>
        runInDurableObject(stub, (_, state) => {
          expect(state.storage.sql.exec("SELECT * FROM watch_news").toArray()).toEqual([]);
          expect(state.storage.sql.exec("SELECT * FROM watchers").toArray()).toEqual([]);
        }),
      { timeout: 10_000 },
    );
  });
});
