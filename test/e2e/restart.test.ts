// A restart of the whole runtime on persisted storage: rooms keep their seq, epoch and history,
// so clients resume across it as if nothing happened.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshRoom, Relay, SERVER_AUTH, startPersistentRelay, tempDir } from "./relay";

const OPTIONS = { vars: { ALLOW_ANONYMOUS: "true" } };
const room = freshRoom();
/** A user whose socket is open when the runtime stops. */
const dave = `dave-${room}`;

let storage: Awaited<ReturnType<typeof tempDir>>;
let relay: Relay | undefined;
/** What the first runtime served before it stopped. */
let before: { info: Record<string, any>; messages: Record<string, any>[] };

beforeAll(async () => {
  storage = await tempDir();
  const first = await startPersistentRelay(storage.path, OPTIONS);
  try {
    const { client, welcome } = await first.join(room, "alice");
    for (const data of ["one", { two: 2 }, ["three"]]) {
      client.send({ type: "publish", data });
      await client.nextOf("message");
    }
    await client.close();
    const info = (await (await first.fetch(`/rooms/${room}`, { headers: SERVER_AUTH })).json()) as Record<string, any>;
    const history = await first.fetch(`/rooms/${room}/messages`, { headers: SERVER_AUTH });
    const { messages } = (await history.json()) as { messages: Record<string, any>[] };
    before = { info, messages };
    // The baseline every test below compares with.
    expect(info).toMatchObject({ room, seq: 3, epoch: welcome.epoch });
    expect(messages.map((frame) => frame.seq)).toEqual([1, 2, 3]);
    // Left open: the restart takes it without a close.
    const inbox = await first.connect(`/users/${dave}/ws?user=${dave}`);
    expect(await inbox.json()).toMatchObject({ type: "welcome", user: dave });
  } finally {
    // Stops workerd itself: nothing of the room survives in memory.
    await first.close();
  }
  relay = await startPersistentRelay(storage.path, OPTIONS);
});

afterAll(async () => {
  await relay?.close();
  await storage?.remove();
});

describe("after a restart on the same storage", () => {
  it("reports the room's same seq and epoch", async () => {
    const res = await relay!.fetch(`/rooms/${room}`, { headers: SERVER_AUTH });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ room, seq: 3, epoch: before.info.epoch, connections: 0, users: 0, presence: [], objects: 0 });
  });

  it("serves the same history", async () => {
    const res = await relay!.fetch(`/rooms/${room}/messages`, { headers: SERVER_AUTH });
    expect(await res.json()).toEqual({ messages: before.messages });
  });

  it("resumes a client from before the restart with recovered true and the messages it missed", async () => {
    const { client, welcome } = await relay!.join(room, "bob", `&since=1&epoch=${before.info.epoch}`);
    expect(welcome).toMatchObject({ seq: 3, epoch: before.info.epoch, recovered: true });
    expect(await client.json()).toEqual(before.messages[1]);
    expect(await client.json()).toEqual(before.messages[2]);
    await client.close();
  });

  it("answers a direct to a user whose socket was open when the runtime stopped as queued, and replays it on connect", async () => {
    const res = await relay!.fetch(`/users/${dave}/messages`, {
      method: "POST",
      headers: { ...SERVER_AUTH, "Content-Type": "application/json" },
      body: JSON.stringify({ data: "while you were out" }),
    });
    expect(await res.json()).toEqual({ status: "queued", seq: 1 });
    const inbox = await relay!.connect(`/users/${dave}/ws?user=${dave}`);
    expect(await inbox.json()).toMatchObject({ type: "welcome", user: dave, seq: 1 });
    expect(await inbox.json()).toMatchObject({ type: "direct", seq: 1, from: "server", data: "while you were out" });
    await inbox.close();
  });

  it("numbers the next message seq + 1", async () => {
    const { client, welcome } = await relay!.join(room, "carol");
    expect(welcome).toMatchObject({ seq: 3, epoch: before.info.epoch });
    client.send({ type: "publish", data: "four" });
    expect(await client.nextOf("message")).toMatchObject({ room, seq: 4, from: "carol", data: "four" });
    await client.close();
  });
});
