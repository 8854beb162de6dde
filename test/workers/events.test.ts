import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { app } from "../../src/routes";
import { EventReader } from "../support/sse";
import { freshRoom, join, ORIGIN, request } from "./connect";

async function events(path: string, headers: Record<string, string> = {}) {
  const res = await request(path, { headers });
  expect(res.status).toBe(200);
  expect(res.headers.get("Content-Type")).toContain("text/event-stream");
  return new EventReader(res.body!);
}

describe("Server-Sent Events", () => {
  it("starts with a welcome, then carries messages with their seq as id, as WebSocket clients see them", async () => {
    const room = freshRoom();
    const stream = await events(`/rooms/${room}/events`);
    const welcome = await stream.next();
    expect(welcome).toMatchObject({ event: "welcome", data: { seq: 0, epoch: expect.any(String) } });
    expect(welcome.data).not.toHaveProperty("recovered");
    const alice = await join(room, "alice");
    alice.client.send({ type: "publish", data: { text: "hi" }, id: "m1" });
    const frame = await alice.client.nextOf("message");
    expect(await stream.next()).toEqual({ event: "presence", data: { type: "presence", room, event: "join", user: "alice" } });
    expect(await stream.next()).toEqual({ event: "message", id: "1", data: frame });
    await alice.client.close();
    expect(await stream.next()).toMatchObject({ event: "presence", data: { event: "leave", user: "alice" } });
    await stream.cancel();
  });

  it("resumes from ?since= and from Last-Event-ID, which wins", async () => {
    const room = freshRoom();
    const alice = await join(room, "alice");
    for (let i = 1; i <= 4; i++) alice.client.send({ type: "publish", data: i });
    for (let i = 1; i <= 4; i++) await alice.client.nextOf("message");

    const fromQuery = await events(`/rooms/${room}/events?since=2&epoch=${alice.welcome.epoch}`);
    expect(await fromQuery.next()).toMatchObject({ event: "welcome", data: { seq: 4, recovered: true } });
    expect((await fromQuery.next()).id).toBe("3");
    expect((await fromQuery.next()).id).toBe("4");
    await fromQuery.cancel();

    const fromHeader = await events(`/rooms/${room}/events?since=0`, { "Last-Event-ID": "3" });
    expect(await fromHeader.next()).toMatchObject({ event: "welcome", data: { recovered: true } });
    expect(await fromHeader.next()).toMatchObject({ id: "4", data: { seq: 4, data: 4 } });
    alice.client.send({ type: "publish", data: 5 });
    expect(await fromHeader.next()).toMatchObject({ id: "5", data: { seq: 5 } });
    await fromHeader.cancel();

    // A polyfill that cannot send the header cross-origin puts it in ?lastEventId=.
    const fromPolyfill = await events(`/rooms/${room}/events?since=0&lastEventId=4`);
    expect(await fromPolyfill.next()).toMatchObject({ event: "welcome", data: { recovered: true } });
    expect(await fromPolyfill.next()).toMatchObject({ id: "5", data: { seq: 5 } });
    await fromPolyfill.cancel();
  });

  it("says recovered: false when the epoch differs", async () => {
    const stream = await events(`/rooms/${freshRoom()}/events?since=0&epoch=other`);
    expect(await stream.next()).toMatchObject({ event: "welcome", data: { recovered: false } });
    await stream.cancel();
  });

  it("is not counted as a connection or as presence", async () => {
    const room = freshRoom();
    const stream = await events(`/rooms/${room}/events`);
    await stream.next();
    const info = await env.ROOMS.getByName(room).info();
    expect(info).toMatchObject({ connections: 0, presence: [] });
    await stream.cancel();
  });

  it("serves streams past a full room's connection limit, up to MAX_STREAMS_PER_ROOM (4 here) of its own", async () => {
    const room = freshRoom();
    const members = await Promise.all(["a", "b", "c"].map((user) => join(room, user)));
    const streams = [];
    for (let i = 0; i < 4; i++) {
      const stream = await events(`/rooms/${room}/events`);
      expect(await stream.next()).toMatchObject({ event: "welcome" });
      streams.push(stream);
    }
    const refused = await request(`/rooms/${room}/events`);
    expect(refused.status).toBe(503);
    expect(await refused.json()).toEqual({ error: "room_full", message: expect.stringContaining("MAX_STREAMS_PER_ROOM") });
    await streams[0]!.cancel();
    // The Room notices a cancelled stream on its next write; a message makes one.
    members[0]!.client.send({ type: "publish", data: "tick" });
    await members[0]!.client.nextOf("message");
    await expect.poll(async () => {
      const res = await request(`/rooms/${room}/events`);
      await res.body?.cancel();
      return res.status;
    }).toBe(200);
    for (const stream of streams.slice(1)) await stream.cancel();
    for (const { client } of members) await client.close();
  });

  it("answers 400 for a Last-Event-ID that is not a seq", async () => {
    const res = await request(`/rooms/${freshRoom()}/events`, { headers: { "Last-Event-ID": "abc" } });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: "bad_request" });
  });

  it("takes the same authentication as WebSockets", async () => {
    const closed = await app.fetch(new Request(`${ORIGIN}/rooms/r/events`), { ...env, ALLOW_ANONYMOUS: "false" });
    expect(closed.status).toBe(401);
    const foreign = await app.fetch(new Request(`${ORIGIN}/rooms/r/events`, { headers: { Origin: "https://evil.example" } }), {
      ...env,
      ALLOWED_ORIGINS: "https://app.example",
    });
    expect(foreign.status).toBe(403);
  });
});
