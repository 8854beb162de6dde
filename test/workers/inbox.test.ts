import { env, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { floodWhileHeld, holdCalls } from "../support/hold";
import { connect, freshRoom, join, request } from "./connect";
import { itHandlesBadInputAndLimits } from "./socket.case";

// This project runs with INBOX_MAX_MESSAGES=6 (one sender's share: 3) and API_KEY=test-api-key (vitest.config.ts).
const KEY = { Authorization: "Bearer test-api-key", "Content-Type": "application/json" };

let users = 0;
const freshUser = (prefix = "user") => `${prefix}-${++users}-${crypto.randomUUID().slice(0, 6)}`;

/** Opens `user`'s own inbox socket and reads its welcome. */
async function inbox(user: string) {
  const client = await connect(`/users/${user}/ws?user=${user}`);
  const welcome = await client.json();
  expect(welcome.type).toBe("welcome");
  return { client, welcome };
}

/** Writes straight into the storage of `user`'s inbox, then evicts it: it starts again on those rows. */
async function restartWith(user: string, write: (sql: SqlStorage) => void): Promise<void> {
  await runInDurableObject(env.INBOXES.getByName(user), (_, state) => write(state.storage.sql));
  await evictDurableObject(env.INBOXES.getByName(user));
}

function post(path: string, body: unknown, headers: Record<string, string> = KEY) {
  return request(path, { method: "POST", headers, body: typeof body === "string" ? body : JSON.stringify(body) });
}

describe("user sockets", () => {
  it("welcome the user with the inbox's own seq and epoch, without room or presence", async () => {
    const user = freshUser();
    const { welcome } = await inbox(user);
    expect(welcome).toMatchObject({ type: "welcome", protocol: 1, user, seq: 0, heartbeat: { interval: 30_000 } });
    expect(welcome.epoch).toEqual(expect.any(String));
    expect(welcome).not.toHaveProperty("room");
    expect(welcome).not.toHaveProperty("presence");
  });

  it("refuse someone else's inbox with 403", async () => {
    const res = await request(`/users/${freshUser()}/ws?user=intruder`, { headers: { Upgrade: "websocket" } });
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ error: "forbidden" });
  });
});

describe("bad input and limits on user sockets", () => {
  itHandlesBadInputAndLimits({
    open: async () => (await inbox(freshUser())).client,
    probe: { type: "publish", room: "probe-room", data: "probe", id: "probe" },
    answered: (frame) => frame.type === "ack" && frame.id === "probe",
  });
});

describe("direct messages", () => {
  it("queue for an offline user, replay in order on connect, and stop after ack", async () => {
    const to = freshUser("bob");
    const sender = await join(freshRoom(), "alice");
    for (let i = 1; i <= 3; i++) sender.client.send({ type: "direct", to, data: { n: i }, id: `d${i}` });
    for (let i = 1; i <= 3; i++) {
      expect(await sender.client.json()).toEqual({ type: "ack", id: `d${i}`, status: "queued", seq: i });
    }
    const first = await inbox(to);
    expect(first.welcome.seq).toBe(3);
    for (let i = 1; i <= 3; i++) {
      const frame = await first.client.json();
      expect(frame).toMatchObject({ type: "direct", seq: i, from: "alice", data: { n: i }, id: `d${i}` });
      expect(frame.ts).toEqual(expect.any(Number));
    }
    first.client.send({ type: "ack", seq: 2 });
    await first.client.close();
    const second = await inbox(to);
    expect(await second.client.json()).toMatchObject({ type: "direct", seq: 3 });
    second.client.send({ type: "ack", seq: 3 });
    await second.client.close();
    const third = await inbox(to);
    expect(third.client.pending).toEqual([]);
  });

  it("number on from the last seq after every direct was acked and the inbox was evicted", async () => {
    // The seq lives in the newest row (src/objects/sequence.ts); acking them all must not lose it.
    const to = freshUser("bob");
    for (let i = 1; i <= 2; i++) expect(await (await post(`/users/${to}/messages`, { data: i })).json()).toMatchObject({ seq: i });
    const first = await inbox(to);
    expect((await first.client.json()).seq).toBe(1);
    expect((await first.client.json()).seq).toBe(2);
    first.client.send({ type: "ack", seq: 2 });
    const held = () => runInDurableObject(env.INBOXES.getByName(to), (_, state) => state.storage.sql.exec("SELECT seq FROM directs").toArray().length);
    await expect.poll(held, { timeout: 10_000 }).toBe(0);
    await first.client.close();
    await evictDurableObject(env.INBOXES.getByName(to));
    const second = await inbox(to);
    expect(second.welcome).toMatchObject({ seq: 2, epoch: first.welcome.epoch });
    expect(second.client.pending).toEqual([]);
    expect(await (await post(`/users/${to}/messages`, { data: 3 })).json()).toMatchObject({ seq: 3 });
    expect(await second.client.json()).toMatchObject({ type: "direct", seq: 3, data: 3 });
  });

  it("drop from their table a hub that no longer holds the user's sockets, once it answers a direct with 0", async () => {
    const to = freshUser("lost");
    // As if a hub lost the user's sockets without a word (a crash while the inbox stayed awake).
    await runInDurableObject(env.INBOXES.getByName(to), (inbox) => inbox.detach("users-gone", 1));
    expect(await (await post(`/users/${to}/messages`, { data: 1 })).json()).toMatchObject({ status: "delivered", seq: 1 });
    // The hub answers that batch with 0, and the inbox forgets it.
    const hubsKnown = () =>
      runInDurableObject(env.INBOXES.getByName(to), (_, state) => state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM hubs").one().n);
    await expect.poll(hubsKnown, { timeout: 10_000 }).toBe(0);
    expect(await (await post(`/users/${to}/messages`, { data: 2 })).json()).toMatchObject({ status: "queued", seq: 2 });
  });

  it("keep a hub whose user socket is still joining when a direct reaches it", async () => {
    const to = freshUser("joining");
    // The inbox counts the attach, and a direct reaches the hub before the hub has the answer:
    // the hub holds a joiner and no socket yet. Answering 0 there made the inbox drop the hub.
    let release!: () => void;
    const answered = new Promise<void>((resolve) => (release = resolve));
    const restore = await runInDurableObject(env.INBOXES.getByName(to), (instance) => {
      const inboxClass = Object.getPrototypeOf(instance) as typeof instance;
      const attach = inboxClass.attach;
      inboxClass.attach = function (this: typeof instance, hub, sockets) {
        const answer = attach.call(this, hub, sockets);
        return this.ctx.id.name === to ? (answered.then(() => answer) as unknown as typeof answer) : answer;
      };
      return () => void (inboxClass.attach = attach);
    });
    const opening = inbox(to);
    const hubsKnown = () =>
      runInDurableObject(env.INBOXES.getByName(to), (_, state) => state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM hubs").one().n);
    await expect.poll(hubsKnown).toBe(1);
    expect(await (await post(`/users/${to}/messages`, { data: 1 })).json()).toMatchObject({ status: "delivered", seq: 1 });
    await new Promise((resolve) => setTimeout(resolve, 200)); // the hub's answer to that direct is in
    release();
    const { client } = await opening;
    expect(await client.json()).toMatchObject({ type: "direct", seq: 1, data: 1 });
    expect(await hubsKnown()).toBe(1);
    expect(await (await post(`/users/${to}/messages`, { data: 2 })).json()).toMatchObject({ status: "delivered", seq: 2 });
    expect(await client.json()).toMatchObject({ type: "direct", seq: 2, data: 2 });
    restore();
  });

  it("answer every direct a flooding socket got in before it is closed 1008", async () => {
    const to = freshUser("slow");
    const sender = await inbox(freshUser("flood"));
    // The inbox answers once released: the close used to overtake these acks. A bucket of 10
    // (2 x 5/s): 10 directs get in, and more than 10 dropped closes the socket.
    const directs = Array.from({ length: 25 }, (_, i) => ({ type: "direct", to, data: i, id: `d${i}` }));
    const { code, received } = await floodWhileHeld(sender.client, directs, await holdCalls(env.INBOXES.getByName(to), "deliverAll"));
    expect(code).toBe(1008);
    // One sender's share of an inbox is 3 here: 3 acks, then inbox_full; each one answered, and
    // nothing else.
    const answers = received.filter((frame) => frame.code !== "rate_limited");
    expect(answers.map((frame) => [frame.id, frame.type === "ack" ? "ack" : frame.code])).toEqual(
      Array.from({ length: 10 }, (_, i) => [`d${i}`, i < 3 ? "ack" : "inbox_full"]),
    );
  });

  it("ack every publish a flooding user socket got in before it is closed 1008", async () => {
    const room = freshRoom("slow");
    const sender = await inbox(freshUser("flood"));
    const publishes = Array.from({ length: 25 }, (_, i) => ({ type: "publish", room, data: i, id: `p${i}` }));
    const { code, received } = await floodWhileHeld(sender.client, publishes, await holdCalls(env.ROOMS.getByName(room), "publish"));
    expect(code).toBe(1008);
    const acks = received.filter((frame) => frame.type === "ack");
    expect(acks.map((frame) => [frame.id, frame.seq])).toEqual(Array.from({ length: 10 }, (_, i) => [`p${i}`, i + 1]));
  });

  it("reach every device of the recipient and ack delivered", async () => {
    const to = freshUser("bob");
    const phone = await inbox(to);
    const laptop = await inbox(to);
    const sender = await inbox(freshUser("alice"));
    sender.client.send({ type: "direct", to, data: "hi", id: "x" });
    expect(await sender.client.json()).toEqual({ type: "ack", id: "x", status: "delivered", seq: 1 });
    for (const device of [phone, laptop]) {
      expect(await device.client.json()).toMatchObject({ type: "direct", seq: 1, data: "hi", from: sender.welcome.user });
    }
  });

  it("answer a bad recipient name with bad_frame and the frame's id", async () => {
    const sender = await join(freshRoom(), "alice");
    sender.client.send({ type: "direct", to: "no such/user", data: 1, id: "q" });
    expect(await sender.client.json()).toMatchObject({ type: "error", code: "bad_frame", id: "q" });
  });

  it("refuse a direct to a full inbox with inbox_full, losing none already held", async () => {
    const to = freshUser("full");
    const senders = [await join(freshRoom(), "alice"), await join(freshRoom(), "bob")];
    for (const [s, sender] of senders.entries()) {
      for (let i = 1; i <= 3; i++) sender.client.send({ type: "direct", to, data: 3 * s + i, id: `f${i}` });
      for (let i = 1; i <= 3; i++) expect(await sender.client.json()).toMatchObject({ type: "ack", id: `f${i}` });
    }
    // Full, for a third sender too; the server is refused 429.
    const carol = await join(freshRoom(), "carol");
    carol.client.send({ type: "direct", to, data: 7, id: "f7" });
    expect(await carol.client.json()).toMatchObject({ type: "error", code: "inbox_full", id: "f7" });
    expect((await post(`/users/${to}/messages`, { data: 7 })).status).toBe(429);
    const { client } = await inbox(to);
    for (let i = 1; i <= 6; i++) expect(await client.json()).toMatchObject({ type: "direct", data: i });
  });

  it("let one sender fill at most half of an inbox, others and the server the rest, and take its directs again once acked", async () => {
    const to = freshUser("shared");
    const mallory = await join(freshRoom(), "mallory");
    for (const id of ["m1", "m2", "m3", "m4"]) mallory.client.send({ type: "direct", to, data: id, id });
    for (const [i, id] of ["m1", "m2", "m3"].entries()) expect(await mallory.client.json()).toMatchObject({ type: "ack", id, status: "queued", seq: i + 1 });
    expect(await mallory.client.json()).toMatchObject({ type: "error", code: "inbox_full", id: "m4" });
    // Another sender, and the server, still get in, up to the whole inbox.
    const bob = await join(freshRoom(), "bob");
    for (const id of ["b1", "b2"]) bob.client.send({ type: "direct", to, data: id, id });
    expect(await bob.client.json()).toMatchObject({ type: "ack", id: "b1", seq: 4 });
    expect(await bob.client.json()).toMatchObject({ type: "ack", id: "b2", seq: 5 });
    expect(await (await post(`/users/${to}/messages`, { data: "s1" })).json()).toMatchObject({ status: "queued", seq: 6 });
    bob.client.send({ type: "direct", to, data: "b3", id: "b3" });
    expect(await bob.client.json()).toMatchObject({ type: "error", code: "inbox_full", id: "b3" });
    // The recipient acks mallory's three: she may send three more, no more.
    const { client } = await inbox(to);
    for (let i = 1; i <= 6; i++) await client.nextOf("direct");
    client.send({ type: "ack", seq: 3 });
    await client.close(); // the ack is handled before the close behind it
    for (const id of ["m5", "m6", "m7", "m8"]) mallory.client.send({ type: "direct", to, data: id, id });
    for (const [i, id] of ["m5", "m6", "m7"].entries()) expect(await mallory.client.json()).toMatchObject({ type: "ack", id, seq: i + 7 });
    expect(await mallory.client.json()).toMatchObject({ type: "error", code: "inbox_full", id: "m8" });
  });

  it("take directs into an inbox stored before senders were recorded, keeping what it held", async () => {
    const to = freshUser("older");
    const frame = JSON.stringify({ type: "direct", seq: 1, from: "alice", data: "old", ts: Date.now() });
    await restartWith(to, (sql) => {
      sql.exec("DROP TABLE directs");
      sql.exec("CREATE TABLE directs (seq INTEGER PRIMARY KEY, frame TEXT NOT NULL, expires INTEGER NOT NULL)");
      sql.exec("INSERT INTO directs VALUES (1, ?, ?)", frame, Date.now() + 60_000);
    });
    const sender = await join(freshRoom(), "alice");
    sender.client.send({ type: "direct", to, data: "new", id: "n" });
    expect(await sender.client.json()).toMatchObject({ type: "ack", id: "n", seq: 2 });
    const { client } = await inbox(to);
    expect(await client.json()).toMatchObject({ type: "direct", seq: 1, data: "old" });
    expect(await client.json()).toMatchObject({ type: "direct", seq: 2, data: "new" });
  });

  it("count the characters of a sender's directs not yet stored against its share", async () => {
    // Directs that arrive in one call are stored together: the share must count those waiting.
    const to = freshUser("big");
    const big = "x".repeat(1_400_000); // half an inbox is 2 Mi characters: two of these, not three
    const outcomes = await runInDurableObject(env.INBOXES.getByName(to), (instance) =>
      instance.deliverAll(["m1", "m2", "m3"].map((id) => ({ from: "mallory", data: big, id }))),
    );
    expect(outcomes.map((outcome) => ("refused" in outcome ? outcome.refused : outcome.status))).toEqual(["queued", "queued", "inbox_full"]);
    const bob = await runInDurableObject(env.INBOXES.getByName(to), (instance) => instance.deliverAll([{ from: "bob", data: "hi" }]));
    expect(bob).toEqual([{ status: "queued", seq: 3 }]);
  });

  it("make room from expired directs when a share or the whole inbox is full", async () => {
    const to = freshUser("stale");
    const frame = JSON.stringify({ type: "direct", seq: 1, from: "mallory", data: "old", ts: 0 });
    await restartWith(to, (sql) => {
      for (let seq = 1; seq <= 6; seq++) sql.exec("INSERT INTO directs (seq, frame, expires, sender) VALUES (?, ?, ?, ?)", seq, frame, Date.now() - 1, "mallory");
    });
    const mallory = await join(freshRoom(), "mallory");
    mallory.client.send({ type: "direct", to, data: "new", id: "n" });
    expect(await mallory.client.json()).toMatchObject({ type: "ack", id: "n", seq: 7 });
    const { client } = await inbox(to);
    expect(await client.json()).toMatchObject({ type: "direct", seq: 7, data: "new" });
  });

  it("count a sender's share from storage after the inbox was evicted", async () => {
    const to = freshUser("evicted");
    const mallory = await join(freshRoom(), "mallory");
    for (const id of ["m1", "m2", "m3"]) mallory.client.send({ type: "direct", to, data: id, id });
    for (const id of ["m1", "m2", "m3"]) expect(await mallory.client.json()).toMatchObject({ type: "ack", id });
    await evictDurableObject(env.INBOXES.getByName(to));
    mallory.client.send({ type: "direct", to, data: "m4", id: "m4" });
    expect(await mallory.client.json()).toMatchObject({ type: "error", code: "inbox_full", id: "m4" });
  });

  it("report a failed call to the recipient's object as an error carrying the id", async () => {
    const to = freshUser("broken");
    // Break the recipient's storage for real, so its deliver() throws inside the object.
    await runInDurableObject(env.INBOXES.getByName(to), (_, state) => {
      state.storage.sql.exec("DROP TABLE directs");
    });
    const sender = await join(freshRoom(), "alice");
    sender.client.send({ type: "direct", to, data: 1, id: "lost" });
    expect(await sender.client.json()).toMatchObject({ type: "error", code: "internal", id: "lost" });
    // Back to back, they travel in one batched call (links.ts `Batches`): each still gets its own answer.
    for (let i = 1; i <= 3; i++) sender.client.send({ type: "direct", to, data: i, id: `lost${i}` });
    for (let i = 1; i <= 3; i++) expect(await sender.client.json()).toMatchObject({ type: "error", code: "internal", id: `lost${i}` });
  });
});

describe("publishing from a user socket", () => {
  it("sequences the message in the named room and acks it with the room's seq", async () => {
    const room = freshRoom();
    const member = await join(room, "carol");
    const { client } = await inbox(freshUser("dave"));
    client.send({ type: "publish", room, data: "from afar", id: "p1" });
    expect(await client.json()).toEqual({ type: "ack", id: "p1", status: "delivered", seq: 1 });
    expect(await member.client.json()).toMatchObject({ type: "message", room, seq: 1, data: "from afar", id: "p1" });
  });

  it("needs a room", async () => {
    const { client } = await inbox(freshUser());
    client.send({ type: "publish", data: 1, id: "n" });
    expect(await client.json()).toMatchObject({ type: "error", code: "bad_frame", id: "n" });
  });
});

describe("server API", () => {
  it("publishes into a room as the server and answers its seq", async () => {
    const room = freshRoom();
    const member = await join(room, "carol");
    const res = await post(`/rooms/${room}/messages`, { data: { price: 42 } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ seq: 1 });
    expect(await member.client.json()).toMatchObject({ type: "message", seq: 1, from: "server", data: { price: 42 } });
    await post(`/rooms/${room}/messages`, { data: 2, from: "billing" });
    expect(await member.client.json()).toMatchObject({ seq: 2, from: "billing" });
    // A null "from" is an absent one, as serializers that write unset fields as null mean it.
    expect((await post(`/rooms/${room}/messages`, { data: 3, from: null })).status).toBe(200);
    expect(await member.client.json()).toMatchObject({ seq: 3, from: "server" });
  });

  it("sends a direct to a user and says whether it was delivered or queued", async () => {
    const user = freshUser();
    const queued = await post(`/users/${user}/messages`, { data: "later" });
    expect(await queued.json()).toEqual({ status: "queued", seq: 1 });
    const { client } = await inbox(user);
    expect(await client.json()).toMatchObject({ type: "direct", seq: 1, from: "server", data: "later" });
    const delivered = await post(`/users/${user}/messages`, { data: "now" });
    expect(await delivered.json()).toEqual({ status: "delivered", seq: 2 });
    expect(await client.json()).toMatchObject({ seq: 2, data: "now" });
  });

  it.each([
    ["invalid JSON", "{nope", 400, "bad_request"],
    ["no data", { from: "x" }, 400, "bad_request"],
    ["an array", [1], 400, "bad_request"],
    ["a bad from", { data: 1, from: "a b" }, 400, "bad_request"],
    ["a body over MAX_MESSAGE_BYTES", { data: "x".repeat(2000) }, 413, "too_large"],
  ])("answers %s with %i", async (_, body, status, code) => {
    for (const path of [`/rooms/${freshRoom()}/messages`, `/users/${freshUser()}/messages`]) {
      const res = await post(path, body);
      expect(res.status).toBe(status);
      expect(await res.json()).toMatchObject({ error: code });
    }
  });

  it("answers 400 for a body that is not UTF-8, and 413 for a chunked body past the limit", async () => {
    const invalid = await request(`/rooms/${freshRoom()}/messages`, {
      method: "POST",
      headers: KEY,
      body: new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]),
    });
    expect(invalid.status).toBe(400);
    const chunks = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 5; i++) controller.enqueue(new TextEncoder().encode("x".repeat(400)));
        controller.close();
      },
    });
    const chunked = await request(`/rooms/${freshRoom()}/messages`, { method: "POST", headers: KEY, body: chunks });
    expect(chunked.status).toBe(413);
    expect(await chunked.json()).toMatchObject({ error: "too_large" });
  });

  it("refuses callers without the API key", async () => {
    const res = await post(`/rooms/${freshRoom()}/messages`, { data: 1 }, { Authorization: "Bearer nope" });
    expect(res.status).toBe(401);
  });

  it("answers 429 inbox_full once the inbox holds its limit", async () => {
    const user = freshUser();
    for (let i = 0; i < 6; i++) expect((await post(`/users/${user}/messages`, { data: i })).status).toBe(200);
    const res = await post(`/users/${user}/messages`, { data: "one too many" });
    expect(res.status).toBe(429);
    expect(await res.json()).toMatchObject({ error: "inbox_full" });
  });
});
