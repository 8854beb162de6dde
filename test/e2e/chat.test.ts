// Chat over real TCP sockets: the relay as wrangler runs it, `ws` clients, plain HTTP requests.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TestClient } from "../support/client";
import { freshRoom, Relay, SERVER_AUTH, startRelay, UpgradeRefused } from "./relay";

let relay: Relay;

beforeAll(async () => {
  relay = await startRelay({ vars: { ALLOW_ANONYMOUS: "true" } });
});

afterAll(async () => {
  await relay?.close();
});

/** Publishes `data` from `client` and reads the relay's broadcast of it back on `client`. */
async function publish(client: TestClient, data: unknown): Promise<Record<string, any>> {
  client.send({ type: "publish", data });
  return client.nextOf("message");
}

describe("chatting in a room", () => {
  it("welcomes each client and announces the second to the first", async () => {
    const room = freshRoom();
    const alice = await relay.join(room, "alice");
    expect(alice.welcome).toMatchObject({
      type: "welcome",
      protocol: 1,
      room,
      user: "alice",
      seq: 0,
      presence: [{ user: "alice", connections: 1 }],
    });
    expect(alice.welcome.epoch).toEqual(expect.any(String));

    const bob = await relay.join(room, "bob");
    expect(bob.welcome).toMatchObject({ room, user: "bob", seq: 0, epoch: alice.welcome.epoch });
    expect(bob.welcome.presence).toEqual([
      { user: "alice", connections: 1 },
      { user: "bob", connections: 1 },
    ]);
    expect(await alice.client.json()).toEqual({ type: "presence", room, event: "join", user: "bob" });
    await Promise.all([alice.client.close(), bob.client.close()]);
  });

  it("delivers every message to both clients in seq order, sender included", async () => {
    const room = freshRoom();
    const alice = await relay.join(room, "alice");
    const bob = await relay.join(room, "bob");
    await alice.client.nextOf("presence");

    alice.client.send({ type: "publish", data: { text: "hi bob" }, id: "a1" });
    bob.client.send({ type: "publish", data: { text: "hi alice" }, id: "b1" });
    alice.client.send({ type: "publish", data: { text: "how are you?" }, id: "a2" });

    const seen = await Promise.all(
      [alice.client, bob.client].map(async (client) => [await client.json(), await client.json(), await client.json()]),
    );
    // Both clients see the same three frames in the same order, numbered 1, 2, 3.
    expect(seen[0]).toEqual(seen[1]);
    expect(seen[0]!.map((frame) => frame.seq)).toEqual([1, 2, 3]);
    for (const frame of seen[0]!) {
      expect(frame).toMatchObject({ type: "message", room, ts: expect.any(Number) });
    }
    // Alice's own frames are sequenced in the order she sent them.
    const alices = seen[0]!.filter((frame) => frame.from === "alice");
    expect(alices.map((frame) => [frame.id, frame.data])).toEqual([
      ["a1", { text: "hi bob" }],
      ["a2", { text: "how are you?" }],
    ]);
    expect(seen[0]!.find((frame) => frame.from === "bob")).toMatchObject({ id: "b1", data: { text: "hi alice" } });
    await Promise.all([alice.client.close(), bob.client.close()]);
  });

  it("relays binary frames as-is to the other clients only", async () => {
    const room = freshRoom();
    const alice = await relay.join(room, "alice");
    const bob = await relay.join(room, "bob");
    await alice.client.nextOf("presence");

    alice.client.send(new Uint8Array([0, 1, 2, 255]));
    expect(await bob.client.next()).toEqual(new Uint8Array([0, 1, 2, 255]));
    // Alice's next frame is her own text message, not an echo of the bytes.
    const marker = await publish(alice.client, "after the bytes");
    expect(marker).toMatchObject({ seq: 1, data: "after the bytes" });
    await Promise.all([alice.client.close(), bob.client.close()]);
  });

  it("replays exactly the missed messages after a reconnect, then live ones", async () => {
    const room = freshRoom();
    const alice = await relay.join(room, "alice");
    const bob = await relay.join(room, "bob");
    const carol = await relay.join(room, "carol");
    await alice.client.nextOf("presence"); // bob
    await alice.client.nextOf("presence"); // carol
    await bob.client.nextOf("presence"); // carol

    await publish(alice.client, "one");
    const lastSeen = await carol.client.nextOf("message");
    expect(lastSeen).toMatchObject({ seq: 1, data: "one" });
    await carol.client.close();
    expect(await alice.client.json()).toEqual({ type: "presence", room, event: "leave", user: "carol" });

    // Carol misses three messages.
    const missed = [await publish(alice.client, "two"), await publish(alice.client, "three")];
    bob.client.send({ type: "publish", data: "four" });
    missed.push(await alice.client.nextOf("message"));
    expect(missed.map((frame) => frame.seq)).toEqual([2, 3, 4]);

    const back = await relay.join(room, "carol", `&since=${lastSeen.seq}&epoch=${carol.welcome.epoch}`);
    expect(back.welcome).toMatchObject({ seq: 4, epoch: carol.welcome.epoch, recovered: true });
    // The replay is the very frames the others received: same seq, ts and order, no duplicate.
    for (const frame of missed) expect(await back.client.json()).toEqual(frame);

    const live = await publish(alice.client, "five");
    expect(live.seq).toBe(5);
    expect(await back.client.json()).toEqual(live);
    await Promise.all([alice.client.close(), bob.client.close(), back.client.close()]);
  });

  it("reports recovered false and replays nothing when the epoch is not the room's", async () => {
    const room = freshRoom();
    const alice = await relay.join(room, "alice");
    await publish(alice.client, "one");
    await publish(alice.client, "two");

    const stale = await relay.join(room, "bob", "&since=1&epoch=some-other-epoch");
    expect(stale.welcome).toMatchObject({ seq: 2, recovered: false });
    // The first frame after the welcome is live, not message 2.
    const live = await publish(alice.client, "three");
    expect(await stale.client.json()).toEqual(live);
    await Promise.all([alice.client.close(), stale.client.close()]);
  });
});

describe("the HTTP surface", () => {
  it("answers /healthz with ok", async () => {
    const res = await relay.fetch("/healthz");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
  });

  it("refuses a bad room name with 400 before any upgrade", async () => {
    const error = await relay.connect("/rooms/has%20a%20space/ws?user=alice").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UpgradeRefused);
    expect((error as UpgradeRefused).status).toBe(400);
    expect(JSON.parse((error as UpgradeRefused).body)).toMatchObject({ error: "bad_request", message: expect.any(String) });

    const res = await relay.fetch("/rooms/has%20a%20space", { headers: SERVER_AUTH });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: "bad_request" });
  });

  it("answers 426 to a request for the socket route without an upgrade", async () => {
    const res = await relay.fetch(`/rooms/${freshRoom()}/ws`);
    expect(res.status).toBe(426);
    expect(res.headers.get("Content-Type")).toMatch(/^application\/json/);
    expect(await res.json()).toMatchObject({ error: "upgrade_required", message: expect.any(String) });
  });

  it("answers 404 with a JSON error to an unknown path", async () => {
    const res = await relay.fetch("/no/such/route");
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: "not_found", message: expect.any(String) });
  });

  it("shows a room's seq, epoch, connections and presence to the API key", async () => {
    const room = freshRoom();
    const alice = await relay.join(room, "alice");
    await publish(alice.client, "one");
    await publish(alice.client, "two");

    const res = await relay.fetch(`/rooms/${room}`, { headers: SERVER_AUTH });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      room,
      seq: 2,
      epoch: alice.welcome.epoch,
      connections: 1,
      users: 1,
      presence: [{ user: "alice", connections: 1 }],
      objects: 1,
    });
    await alice.client.close();
  });

  it("serves a room's history after `since`, oldest first, up to `limit`", async () => {
    const room = freshRoom();
    const alice = await relay.join(room, "alice");
    const sent = [];
    for (const data of ["one", "two", "three", "four"]) sent.push(await publish(alice.client, data));
    await alice.client.close();

    const all = await relay.fetch(`/rooms/${room}/messages`, { headers: SERVER_AUTH });
    expect(all.status).toBe(200);
    expect(await all.json()).toEqual({ messages: sent });

    const page = await relay.fetch(`/rooms/${room}/messages?since=1&limit=2`, { headers: SERVER_AUTH });
    expect(await page.json()).toEqual({ messages: sent.slice(1, 3) });
  });

  it("serves a full history of messages that grew when stored, past the 32 MiB one call between objects carries", { timeout: 120_000 }, async () => {
    // 64,993 bytes sent, stored as ~286,000 characters (1e20 written out) of a two-byte string (the €):
    // a hundred are ~57 MB to hand from the Room to the Worker.
    const room = freshRoom("grown");
    const body = JSON.stringify({ data: [...Array.from({ length: 12_992 }, () => 0), "€"] }).replaceAll("0,", "1e20,");
    expect(new TextEncoder().encode(body).length).toBeLessThan(65_536 + 20);
    for (let n = 0; n < 100; n += 10) {
      const posts = Array.from({ length: 10 }, () => relay.fetch(`/rooms/${room}/messages`, { method: "POST", headers: SERVER_AUTH, body }));
      for (const answer of await Promise.all(posts)) expect(answer.status).toBe(200);
    }
    const history = await relay.fetch(`/rooms/${room}/messages`, { headers: SERVER_AUTH });
    expect(history.status).toBe(200);
    const { messages } = (await history.json()) as { messages: { seq: number; data: unknown[] }[] };
    expect(messages.map((message) => message.seq)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(messages[99]!.data).toHaveLength(12_993);
    expect(messages[99]!.data[0]).toBe(1e20);
  });

  it("refuses the server routes with 401 without the API key", async () => {
    const room = freshRoom();
    const refused: Record<string, string>[] = [{}, { Authorization: "Bearer not-the-key" }];
    for (const path of [`/rooms/${room}`, `/rooms/${room}/messages`]) {
      for (const headers of refused) {
        const res = await relay.fetch(path, { headers });
        expect(res.status, `${path} ${JSON.stringify(headers)}`).toBe(401);
        expect(await res.json()).toMatchObject({ error: "unauthorized", message: expect.any(String) });
      }
    }
  });
});
