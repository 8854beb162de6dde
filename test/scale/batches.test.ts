// Writes that arrive together share one transaction (docs/design.md "The path of a message"):
// room messages from sockets and the server API, and directs into an inbox. Each is answered
// once stored, in order, and a batch that cannot be stored is refused whole.
import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { freshRoom, freshUser, info, join, KEY, openUser, request, serverPublish } from "./connect";

function serverDirect(to: string, data: unknown): Promise<Response> {
  return request(`/users/${to}/messages`, { method: "POST", headers: KEY, body: JSON.stringify({ data }) });
}

describe("batched writes", () => {
  it("stores concurrent server directs with consecutive seqs and delivers them in that order", async () => {
    const { client, user } = await openUser();
    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => serverDirect(user, i)));
    const seqs = await Promise.all(answers.map(async (res) => ((await res.json()) as { status: string; seq: number })));
    expect(seqs.every((answer) => answer.status === "delivered")).toBe(true);
    expect(seqs.map((answer) => answer.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    const received = [];
    for (let i = 0; i < 30; i++) received.push(await client.nextOf("direct"));
    expect(received.map((direct) => direct.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
  });

  it("keeps each sender's directs in the order sent when several senders' directs share batches", async () => {
    const recipient = await openUser();
    const senders = await Promise.all([1, 2, 3].map(() => openUser()));
    for (let i = 0; i < 10; i++) {
      for (const { client } of senders) client.send({ type: "direct", to: recipient.user, data: i, id: `${i}` });
    }
    const got = [];
    for (let i = 0; i < 30; i++) got.push(await recipient.client.nextOf("direct"));
    expect(got.map((direct) => direct.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    for (const { user } of senders) {
      expect(got.filter((direct) => direct.from === user).map((direct) => direct.data)).toEqual(Array.from({ length: 10 }, (_, i) => i));
    }
    for (const { client } of senders) {
      const acks = [];
      for (let i = 0; i < 10; i++) acks.push(await client.nextOf("ack"));
      expect(acks.map((ack) => ack.id)).toEqual(Array.from({ length: 10 }, (_, i) => `${i}`));
    }
  });

  it("refuses every server publish of a batch it cannot store, stores and sends none of them, and numbers on from the last stored", async () => {
    const room = freshRoom();
    const watcher = await join(room, "watcher");
    await serverPublish(room, "before");
    await watcher.client.nextOf("message");
    await runInDurableObject(env.ROOMS.getByName(room), (_, state) => {
      state.storage.sql.exec("ALTER TABLE messages RENAME TO messages_away");
    });
    const failed = await Promise.all(
      Array.from({ length: 5 }, (_, i) => request(`/rooms/${room}/messages`, { method: "POST", headers: KEY, body: JSON.stringify({ data: i }) })),
    );
    expect(failed.map((res) => res.status)).toEqual([500, 500, 500, 500, 500]);
    await runInDurableObject(env.ROOMS.getByName(room), (_, state) => {
      state.storage.sql.exec("ALTER TABLE messages_away RENAME TO messages");
    });
    expect(await info(room)).toMatchObject({ seq: 1 });
    expect(await serverPublish(room, "after")).toBe(2);
    // The watcher saw nothing of the failed batch: the next message it gets is seq 2.
    expect(await watcher.client.nextOf("message")).toMatchObject({ seq: 2, data: "after" });
  });

  it("stores a batch once it holds 256 messages, without waiting for the timer a flood can hold up", async () => {
    const room = freshRoom();
    const stored = await runInDurableObject(env.ROOMS.getByName(room), async (instance) => {
      const published = Array.from({ length: 600 }, (_, i) => instance.publish("flood", i));
      // Read a few microtasks later, before any timer could run: only size-bound flushes count.
      const { seq } = await instance.info();
      return Promise.all(published).then(() => seq);
    });
    expect(stored).toBe(512);
    expect(await info(room)).toMatchObject({ seq: 600 });
  });

  it("numbers directs on from the last stored after a batch that could not be stored", async () => {
    const user = freshUser();
    expect((await serverDirect(user, "first")).status).toBe(200);
    await runInDurableObject(env.INBOXES.getByName(user), (_, state) => {
      state.storage.sql.exec("ALTER TABLE directs RENAME TO directs_away");
    });
    const failed = await Promise.all([1, 2, 3].map((i) => serverDirect(user, i)));
    expect(failed.map((res) => res.status)).toEqual([500, 500, 500]);
    await runInDurableObject(env.INBOXES.getByName(user), (_, state) => {
      state.storage.sql.exec("ALTER TABLE directs_away RENAME TO directs");
    });
    expect(await (await serverDirect(user, "after")).json()).toMatchObject({ status: "queued", seq: 2 });
  });
});
