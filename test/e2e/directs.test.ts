// Direct messages end to end: real `ws` clients on user sockets over loopback TCP, a restart of
// the whole runtime on persisted storage, and a many-to-many load that checks exactly-once,
// per-sender-ordered delivery from what the clients observe.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TestClient } from "../support/client";
import { freshRoom, Relay, SERVER_AUTH, startPersistentRelay, startRelay, tempDir } from "./relay";

/** A user id no other test uses (freshRoom only makes a random valid id). */
const freshUser = (prefix: string): string => freshRoom(prefix);

/** Opens `user`'s inbox socket (anonymous mode, identity = `:user`) and reads its welcome. */
async function openInbox(relay: Relay, user: string): Promise<{ client: TestClient; welcome: Record<string, any> }> {
  const client = await relay.connect(`/users/${user}/ws?user=${user}`);
  const welcome = await client.json();
  if (welcome.type !== "welcome") throw new Error(`expected welcome, got ${JSON.stringify(welcome)}`);
  return { client, welcome };
}

/**
 * Asserts that nothing else is waiting on `client`. The relay sends the replay before the upgrade
 * completes, and `pong` is only sent once our `ping` arrives after it, so a `pong` as the very
 * next frame proves no replayed or live frame was queued ahead of it.
 */
async function expectNothingMore(client: TestClient): Promise<void> {
  client.send("ping");
  expect(await client.next()).toBe("pong");
}

/**
 * Acks up to `seq` and closes the socket. Waiting for the close handshake orders the ack before
 * anything that follows: the relay handles the ack frame before it sees the close frame behind it.
 */
async function ackAndClose(client: TestClient, seq: number): Promise<void> {
  client.send({ type: "ack", seq });
  await client.close();
}

/** Sends a direct from `client` and reads the relay's answer to it. */
async function sendDirect(client: TestClient, to: string, data: unknown, id: string): Promise<Record<string, any>> {
  client.send({ type: "direct", to, data, id });
  return client.json();
}

describe("across a restart on persisted storage", () => {
  let storage: Awaited<ReturnType<typeof tempDir>> | undefined;
  // Each runtime is recorded as soon as it runs, so afterAll stops whichever a failure left behind.
  const relays: Relay[] = [];
  const start = async (): Promise<Relay> => {
    const relay = await startPersistentRelay(storage!.path, { vars: { ALLOW_ANONYMOUS: "true" } });
    relays.push(relay);
    return relay;
  };

  beforeAll(async () => {
    storage = await tempDir();
  });

  afterAll(async () => {
    for (const relay of relays) await relay.close();
    await storage?.remove();
  });

  it("a restart of the runtime between send and connect loses nothing", { timeout: 120_000 }, async () => {
    const sender = freshUser("sender");
    const recipient = freshUser("offline");
    const sent = [{ text: "one" }, ["two"], "three", 4];

    const first = await start();
    const { client: out } = await openInbox(first, sender);
    for (const [index, data] of sent.entries()) {
      // The recipient has no socket, so each is stored and queued, numbered by its inbox.
      expect(await sendDirect(out, recipient, data, `d${index}`)).toEqual({
        type: "ack",
        id: `d${index}`,
        status: "queued",
        seq: index + 1,
      });
    }
    const posted = await first.fetch(`/users/${recipient}/messages`, {
      method: "POST",
      headers: { ...SERVER_AUTH, "Content-Type": "application/json" },
      body: JSON.stringify({ data: { kind: "invoice" }, from: "billing" }),
    });
    expect(posted.status).toBe(200);
    expect(await posted.json()).toEqual({ status: "queued", seq: sent.length + 1 });
    await out.close();
    // Stops workerd itself: only what reached the persist directory can come back.
    await first.close();
    relays.length = 0;

    const second = await start();
    const { client: inbox, welcome } = await openInbox(second, recipient);
    expect(welcome).toMatchObject({ type: "welcome", protocol: 1, user: recipient, seq: sent.length + 1 });
    const replayed = [];
    for (let i = 0; i <= sent.length; i++) replayed.push(await inbox.json());
    // In order, each exactly once, with the sender's ids and the server publish last.
    expect(replayed).toEqual([
      ...sent.map((data, index) => ({
        type: "direct",
        seq: index + 1,
        from: sender,
        data,
        id: `d${index}`,
        ts: expect.any(Number),
      })),
      { type: "direct", seq: sent.length + 1, from: "billing", data: { kind: "invoice" }, ts: expect.any(Number) },
    ]);
    await expectNothingMore(inbox);
    await ackAndClose(inbox, sent.length + 1);

    const again = await openInbox(second, recipient);
    expect(again.welcome).toMatchObject({ seq: sent.length + 1, epoch: welcome.epoch });
    await expectNothingMore(again.client);
    await again.client.close();
  });
});

describe("on one running relay", () => {
  let relay: Relay;

  beforeAll(async () => {
    // High enough that 100 sends plus ~100 acks from one socket never meet the limit, so the
    // load test needs no sleeping; the limit itself is covered by the workers tests.
    relay = await startRelay({ vars: { ALLOW_ANONYMOUS: "true", RATE_LIMIT_PER_SECOND: "1000" } });
  });

  afterAll(async () => {
    await relay?.close();
  });

  it("1,000 direct messages among 10 users arrive exactly once each, in per-sender order", { timeout: 50_000 }, async () => {
    const USERS = 10;
    const PER_SENDER = 100;
    const users = Array.from({ length: USERS }, (_, i) => freshUser(`mesh${i}`));
    // Sender i's k-th message goes to the (k mod 9)-th other user after it, so each sender
    // spreads its 100 messages over all 9 others.
    const target = (sender: number, k: number): number => (sender + 1 + (k % (USERS - 1))) % USERS;
    /** For each recipient, per sender, the counters it must receive, in order. */
    const expected = users.map(() => new Map<string, number[]>());
    for (let s = 0; s < USERS; s++) {
      for (let k = 0; k < PER_SENDER; k++) {
        const byFrom = expected[target(s, k)]!;
        byFrom.set(users[s]!, [...(byFrom.get(users[s]!) ?? []), k]);
      }
    }
    const expectedCount = expected.map((byFrom) => [...byFrom.values()].reduce((sum, list) => sum + list.length, 0));

    const sockets = await Promise.all(users.map((user) => openInbox(relay, user)));
    for (const { welcome } of sockets) expect(welcome.seq).toBe(0);

    // Everyone is connected before the first send, so every ack must say "delivered".
    for (const [s, { client }] of sockets.entries()) {
      for (let k = 0; k < PER_SENDER; k++) {
        client.send({ type: "direct", to: users[target(s, k)], data: { from: users[s], n: k }, id: `${s}:${k}` });
      }
    }

    interface Seen {
      acks: Map<string, Record<string, any>>;
      directs: Record<string, any>[];
    }
    // Each socket carries both its own acks and the directs addressed to it, interleaved; read
    // until it has all of both, acking each direct as it arrives.
    const seen = await Promise.all(
      sockets.map(async ({ client }, r): Promise<Seen> => {
        const acks = new Map<string, Record<string, any>>();
        const directs: Record<string, any>[] = [];
        while (acks.size < PER_SENDER || directs.length < expectedCount[r]!) {
          const frame = await client.json();
          if (frame.type === "ack") {
            if (acks.has(frame.id)) throw new Error(`second ack for ${frame.id}: ${JSON.stringify(frame)}`);
            acks.set(frame.id, frame);
          } else if (frame.type === "direct") {
            directs.push(frame);
            client.send({ type: "ack", seq: frame.seq });
          } else {
            throw new Error(`${users[r]} got ${JSON.stringify(frame)}`);
          }
        }
        return { acks, directs };
      }),
    );

    for (const [r, { acks, directs }] of seen.entries()) {
      // The inbox numbers what it holds 1, 2, 3...: no gap, no duplicate, in arrival order.
      expect(directs.map((frame) => frame.seq)).toEqual(Array.from({ length: expectedCount[r]! }, (_, i) => i + 1));
      const received = new Map<string, number[]>();
      for (const frame of directs) {
        expect(frame.from).toBe(frame.data.from);
        expect(frame.id).toBe(`${users.indexOf(frame.from)}:${frame.data.n}`);
        received.set(frame.from, [...(received.get(frame.from) ?? []), frame.data.n]);
      }
      // Exactly the messages addressed to r, each once, in the order each sender sent them.
      expect(received).toEqual(expected[r]);
      // Every one of r's own sends was acknowledged delivered, with the seq its recipient saw.
      for (let k = 0; k < PER_SENDER; k++) {
        const recipient = seen[target(r, k)]!.directs.find((frame) => frame.id === `${r}:${k}`);
        expect(acks.get(`${r}:${k}`)).toEqual({ type: "ack", id: `${r}:${k}`, status: "delivered", seq: recipient?.seq });
      }
    }

    // Closing orders each socket's acks before the reconnect below (see ackAndClose).
    await Promise.all(sockets.map(({ client }) => client.close()));
    const fresh = await Promise.all(users.map((user) => openInbox(relay, user)));
    for (const [r, { client, welcome }] of fresh.entries()) {
      expect(welcome.seq).toBe(expectedCount[r]);
      await expectNothingMore(client);
    }
    await Promise.all(fresh.map(({ client }) => client.close()));
  });

  it("refuses directs past 4 Mi characters held, so the user's connect (which replays them all in one call) still works", { timeout: 60_000 }, async () => {
    const user = freshUser("flooded");
    const body = JSON.stringify({ data: "x".repeat(64_000) });
    const statuses: number[] = [];
    for (let n = 0; n < 80; n += 8) {
      const answers = await Promise.all(
        Array.from({ length: 8 }, () => relay.fetch(`/users/${user}/messages`, { method: "POST", headers: SERVER_AUTH, body })),
      );
      for (const answer of answers) {
        statuses.push(answer.status);
        await answer.body?.cancel();
      }
    }
    // ~66 fit under 4 Mi characters (each stored frame is a little over 64,000), and a few more
    // that were on their way together; far from INBOX_MAX_MESSAGES (1,000).
    expect(statuses.filter((status) => status === 200).length).toBeLessThan(76);
    expect(statuses.slice(-1)).toEqual([429]);
    const { client, welcome } = await openInbox(relay, user);
    const replayed = [];
    for (let seq = 1; seq <= welcome.seq; seq++) replayed.push((await client.json()).seq);
    expect(replayed).toEqual(Array.from({ length: welcome.seq }, (_, i) => i + 1));
    await ackAndClose(client, welcome.seq);
  });

  it("delivers a direct to both devices of a user", async () => {
    const sender = freshUser("sender");
    const dana = freshUser("dana");
    const phone = await openInbox(relay, dana);
    const laptop = await openInbox(relay, dana);
    const out = await openInbox(relay, sender);

    expect(await sendDirect(out.client, dana, { text: "hi" }, "m1")).toEqual({
      type: "ack",
      id: "m1",
      status: "delivered",
      seq: 1,
    });
    const frame = { type: "direct", seq: 1, from: sender, data: { text: "hi" }, id: "m1", ts: expect.any(Number) };
    expect(await phone.client.json()).toEqual(frame);
    expect(await laptop.client.json()).toEqual(frame);
    await Promise.all([phone.client.close(), laptop.client.close(), out.client.close()]);
  });

  it("queues a direct to a user with no open socket and delivers it on connect", async () => {
    const sender = freshUser("sender");
    const erin = freshUser("erin");
    const out = await openInbox(relay, sender);

    expect(await sendDirect(out.client, erin, "while you were out", "q1")).toEqual({
      type: "ack",
      id: "q1",
      status: "queued",
      seq: 1,
    });
    const { client, welcome } = await openInbox(relay, erin);
    expect(welcome).toMatchObject({ user: erin, seq: 1 });
    expect(await client.json()).toEqual({
      type: "direct",
      seq: 1,
      from: sender,
      data: "while you were out",
      id: "q1",
      ts: expect.any(Number),
    });
    await expectNothingMore(client);
    await Promise.all([client.close(), out.client.close()]);
  });
});
