// Liveness over real sockets: the relay closes a client that goes silent and keeps one that
// pings, with heartbeat timings short enough for a test.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { Closed, Received, TestClient } from "../support/client";
import { APP, pusherSocketPath, serverSdk, WebhookEndpoint } from "./pusher-support";
import { freshRoom, Relay, SERVER_AUTH, startRelay } from "./relay";

const INTERVAL_MS = 200;
const TIMEOUT_MS = 1000;
/** Long enough for any close the relay owes: it promises one within 1.5x the timeout. */
const CLOSE_WAIT_MS = 10 * TIMEOUT_MS;

let relay: Relay;
/**
 * The app's webhook endpoint, refusing every request unless a test says otherwise: the webhooks
 * of every room here are tried again for ~31 s, and no room may wait for them before it resets
 * (docs/pusher.md "Webhooks").
 */
let endpoint: WebhookEndpoint;

beforeAll(async () => {
  endpoint = await WebhookEndpoint.start(() => serverSdk(relay));
  endpoint.refuseNext = Number.POSITIVE_INFINITY;
  relay = await startRelay({
    vars: {
      ALLOW_ANONYMOUS: "true",
      HEARTBEAT_INTERVAL_MS: String(INTERVAL_MS),
      HEARTBEAT_TIMEOUT_MS: String(TIMEOUT_MS),
      // A bound this small looks at what waits for a client after every frame (session.ts), as
      // the hibernation test below needs; these clients read at once, so none is ever closed 1013.
      MAX_BACKLOG_BYTES: "64",
      PUSHER_APP_ID: APP.id,
      PUSHER_APP_KEY: APP.key,
      PUSHER_WEBHOOK_URL: endpoint.url,
    },
    secrets: { PUSHER_APP_SECRET: APP.secret },
  });
});

afterAll(async () => {
  await relay?.close();
  await endpoint?.close();
});

/** Sends "ping" every heartbeat interval, as a well-behaved client does, until stopped. */
function keepAlive(client: TestClient): () => void {
  const timer = setInterval(() => client.send("ping"), INTERVAL_MS);
  return () => clearInterval(timer);
}

/** The next JSON frame of `type`, skipping the "pong" answers (and other frames) in between. */
async function nextOf(client: TestClient, type: string): Promise<Record<string, any>> {
  for (;;) {
    const frame: Received = await client.next(CLOSE_WAIT_MS);
    if (typeof frame === "object" && !(frame instanceof Uint8Array) && frame.type === type) return frame;
  }
}

/** The close a client observed, or "still open" if none arrived within `ms`. */
async function closeWithin(client: TestClient, ms: number): Promise<Closed | "still open"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const wait = new Promise<"still open">((resolve) => (timer = setTimeout(() => resolve("still open"), ms)));
  try {
    return await Promise.race([client.closed, wait]);
  } finally {
    clearTimeout(timer);
  }
}

describe("heartbeat", () => {
  it("announces the configured heartbeat in the welcome", async () => {
    const { client, welcome } = await relay.join(freshRoom(), "alice");
    expect(welcome.heartbeat).toEqual({ interval: INTERVAL_MS, timeout: TIMEOUT_MS });
    await client.close();
  });

  it("closes a silent client with 4000 heartbeat timeout and tells the others it left", async () => {
    const room = freshRoom();
    const watcher = await relay.join(room, "watcher");
    const stop = keepAlive(watcher.client);
    try {
      const silent = await relay.join(room, "silent");
      expect(await nextOf(watcher.client, "presence")).toMatchObject({ event: "join", user: "silent" });

      // `closed` resolves from the relay's close frame (see finishClosingHandshakes in relay.ts).
      expect(await closeWithin(silent.client, CLOSE_WAIT_MS)).toEqual({ code: 4000, reason: "heartbeat timeout" });
      expect(await nextOf(watcher.client, "presence")).toEqual({ type: "presence", room, event: "leave", user: "silent" });
    } finally {
      stop();
    }
    await watcher.client.close();
  });

  it("answers ping with pong and keeps a pinging client open past the timeout", async () => {
    const room = freshRoom();
    const pinger = await relay.join(room, "pinger");
    const silent = await relay.join(room, "silent");
    const stop = keepAlive(pinger.client);
    try {
      // The silent client joined at the same moment; once it is gone the timeout has surely
      // passed for the pinger too. Then wait out the relay's whole allowance once more.
      expect(await closeWithin(silent.client, CLOSE_WAIT_MS)).toMatchObject({ code: 4000 });
      expect(await closeWithin(pinger.client, 1.5 * TIMEOUT_MS + INTERVAL_MS)).toBe("still open");
    } finally {
      stop();
    }
    // The pings were answered "pong", nothing else arrived but the silent client's comings and
    // goings, and the socket still carries messages.
    const frames: Received[] = [];
    pinger.client.send({ type: "publish", data: "still here" });
    for (;;) {
      const frame = await pinger.client.next();
      if (typeof frame === "object" && !(frame instanceof Uint8Array) && frame.type === "message") {
        expect(frame).toMatchObject({ seq: 1, from: "pinger", data: "still here" });
        break;
      }
      frames.push(frame);
    }
    const pongs = frames.filter((frame) => frame === "pong");
    expect(pongs.length).toBeGreaterThan(0);
    expect(frames.filter((frame) => frame !== "pong")).toEqual([
      { type: "presence", room, event: "join", user: "silent" },
      { type: "presence", room, event: "leave", user: "silent" },
    ]);
    await pinger.client.close();
  });

  it("counts any frame as activity, not only ping", async () => {
    const room = freshRoom();
    const talker = await relay.join(room, "talker");
    const silent = await relay.join(room, "silent");
    let n = 0;
    const timer = setInterval(() => talker.client.send({ type: "publish", data: ++n }), INTERVAL_MS);
    try {
      expect(await closeWithin(silent.client, CLOSE_WAIT_MS)).toMatchObject({ code: 4000 });
      expect(await closeWithin(talker.client, 1.5 * TIMEOUT_MS + INTERVAL_MS)).toBe("still open");
    } finally {
      clearInterval(timer);
    }
    await talker.client.close();
  });

  // The objects here read every socket's bufferedAmount after every frame (MAX_BACKLOG_BYTES 64):
  // hibernation must still work (docs/platform.md).
  it("still times out a silent socket, and serves a pinging one, after the Room hibernated", async () => {
    const room = freshRoom();
    const alive = await relay.join(room, "alive");
    const stop = keepAlive(alive.client);
    try {
      const silent = await relay.join(room, "silent");
      expect(await nextOf(alive.client, "presence")).toMatchObject({ event: "join", user: "silent" });
      await relay.hibernate("Room", room);
      expect(await closeWithin(silent.client, CLOSE_WAIT_MS)).toEqual({ code: 4000, reason: "heartbeat timeout" });
      expect(await nextOf(alive.client, "presence")).toEqual({ type: "presence", room, event: "leave", user: "silent" });
      expect(await closeWithin(alive.client, 1.5 * TIMEOUT_MS + INTERVAL_MS)).toBe("still open");
    } finally {
      stop();
    }
    alive.client.send({ type: "publish", data: "after" });
    expect(await nextOf(alive.client, "message")).toMatchObject({ seq: 1, from: "alive", data: "after" });
    await alive.client.close();
  });

  // A plain `ws` client, as an app's, without the test clients' help (finishClosingHandshakes in
  // relay.ts): its 'close' event waits for the TCP connection to end. The runtime keeps that up
  // for a socket that never sent a frame until its object is evicted, ~10 s after the close
  // (docs/platform.md); an object left with no socket resets itself instead, even while the
  // app's endpoint refuses the room's webhooks (their object tries them again). A user socket and
  // a Pusher socket live on hubs, a room socket on its Room.
  it.each([
    ["a room socket", (room: string) => `/rooms/${room}/ws?user=loner`, { code: 4000, reason: "heartbeat timeout" }],
    ["a user socket", (room: string) => `/users/${room}-user/ws`, { code: 4000, reason: "heartbeat timeout" }],
    ["a Pusher socket", () => pusherSocketPath(), { code: 4201, reason: "heartbeat timeout" }],
  ])("ends %s that never sent a frame with its close: the close event comes at once, not ~10 s later", async (_kind, path, expected) => {
    const room = freshRoom();
    await relay.fetch(`/rooms/${room}/messages`, { method: "POST", headers: SERVER_AUTH, body: JSON.stringify({ data: "before" }) });
    const url = new URL(path(room), relay.url);
    url.protocol = "ws:";
    const ws = new WebSocket(url);
    const closed = new Promise<{ code: number; reason: string; at: number }>((resolve) =>
      ws.once("close", (code, reason) => resolve({ code, reason: reason.toString(), at: Date.now() })),
    );
    const opened = await new Promise<number>((resolve, reject) => {
      ws.once("open", () => resolve(Date.now()));
      ws.once("error", reject);
    });
    const { code, reason, at } = await closed;
    expect({ code, reason }).toEqual(expected);
    // Within the contract's 1.5x and a margin for a busy machine, well short of the ~10 s.
    expect(at - opened).toBeLessThan(1.5 * TIMEOUT_MS + 3_000);
    // The room carries on from its storage: same history, and the next message after it.
    const history = (await (await relay.fetch(`/rooms/${room}/messages`, { headers: SERVER_AUTH })).json()) as { messages: { data: unknown }[] };
    expect(history.messages.map((message) => message.data)).toEqual(["before"]);
    const { client, welcome } = await relay.join(room, "next");
    expect(welcome).toMatchObject({ seq: 1, users: 1 });
    await client.close();
  });

  it("keeps a reset Room's webhooks the endpoint refused, and delivers them once it takes them", { timeout: 60_000 }, async () => {
    const room = freshRoom();
    const url = new URL(`/rooms/${room}/ws?user=loner`, relay.url);
    url.protocol = "ws:";
    const ws = new WebSocket(url);
    const closed = new Promise<{ code: number; at: number }>((resolve) => ws.once("close", (code) => resolve({ code, at: Date.now() })));
    const opened = await new Promise<number>((resolve, reject) => ws.once("open", () => resolve(Date.now())).once("error", reject));
    // At once: the Room reset while the endpoint refused its webhooks.
    const { code, at } = await closed;
    expect(code).toBe(4000);
    expect(at - opened).toBeLessThan(1.5 * TIMEOUT_MS + 3_000);
    endpoint.refuseNext = 0;
    // Tried again by the channel's Webhooks object (within the next wait of 1-16 s), in order.
    expect(await endpoint.next(room)).toEqual({ name: "channel_occupied", channel: room });
    expect(await endpoint.next(room)).toEqual({ name: "channel_vacated", channel: room });
  });
});
