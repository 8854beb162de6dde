// Hostile clients end to end: malformed and oversized frames, forged names, tokens, origins and
// API keys, floods, a thousand sockets dropped without a close handshake and a client that stops
// reading. One relay for the whole file, closed by default (no anonymous mode), with small limits
// so each abuse is cheap to reach (and one with the default limits for the client that stops
// reading); every socket is real `ws` over loopback TCP, and requests whose
// exact bytes matter (paths, Content-Length) are written by hand on a raw TCP socket.
import { randomBytes, randomUUID } from "node:crypto";
import { connect as tcpConnect } from "node:net";
import { sign } from "hono/jwt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { Closed, Received, TestClient } from "../support/client";
import { API_KEY, connect, freshRoom, type Relay, SERVER_AUTH, startRelay, UpgradeRefused } from "./relay";

const SECRET = "adversarial-secret";
const ORIGIN = "https://app.example";
const MAX_BYTES = 4096;
const RATE = 10;
const MAX_STREAMS = 2;

let relay: Relay;
/** Sockets opened by `openWith` (relay.connect's own are ended by relay.close). */
const ownSockets = new Set<WebSocket>();

beforeAll(async () => {
  relay = await startRelay({
    vars: {
      ALLOW_ANONYMOUS: "false",
      AUTH_SECRET: SECRET,
      ALLOWED_ORIGINS: ORIGIN,
      MAX_MESSAGE_BYTES: String(MAX_BYTES),
      MAX_STREAMS_PER_ROOM: String(MAX_STREAMS),
      RATE_LIMIT_PER_SECOND: String(RATE),
    },
  });
});

afterAll(async () => {
  for (const ws of ownSockets) ws.terminate();
  await relay?.close();
});

// ---- ids and tokens ----

const freshUser = (prefix = "user"): string => `${prefix}-${randomUUID().slice(0, 8)}`;
const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** An HS256 token (or another algorithm) over arbitrary claims, including ill-typed ones. */
function token(claims: Record<string, unknown>, secret = SECRET, alg: "HS256" | "HS384" | "HS512" = "HS256"): Promise<string> {
  return sign(claims as Parameters<typeof sign>[0], secret, alg);
}

const b64url = (value: unknown): string =>
  Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** A hand-built token: base64url JSON header and payload, then whatever signature is given. */
function forge(header: unknown, payload: unknown, signature = ""): string {
  return `${b64url(header)}.${b64url(payload)}.${signature}`;
}

const signatureOf = (jwt: string): string => jwt.slice(jwt.lastIndexOf(".") + 1);

/** A genuine HS256 signature (over alice's token), to graft onto forged headers and payloads. */
const aliceSignature = async (): Promise<string> => signatureOf(await token({ sub: "alice" }));

// ---- sockets ----

/**
 * A WebSocket client that may send its own headers (Authorization, Origin, forged ones), which
 * relay.connect cannot. Rejects with UpgradeRefused when the relay answers anything but 101.
 */
async function openWith(path: string, headers: Record<string, string>): Promise<TestClient> {
  const client = await connect(relay.url, path, headers);
  const ws = client.ws as WebSocket;
  ownSockets.add(ws);
  ws.once("close", () => ownSockets.delete(ws));
  return client;
}

/** The status and parsed JSON body of a refused upgrade; fails if the upgrade was accepted. */
async function refusal(attempt: Promise<TestClient>): Promise<{ status: number; body: unknown }> {
  const outcome = await attempt.then(
    (client) => {
      (client.ws as WebSocket).terminate();
      return new Error("the relay accepted the upgrade");
    },
    (error: unknown) => error,
  );
  if (!(outcome instanceof UpgradeRefused)) throw outcome;
  return { status: outcome.status, body: JSON.parse(outcome.body) };
}

/** What every HTTP refusal must look like: a status and `{"error": code, "message": text}`. */
const refused = (status: number, error: string) => ({ status, body: { error, message: expect.any(String) } });

async function answer(response: Response): Promise<{ status: number; body: unknown }> {
  return { status: response.status, body: await response.json() };
}

/** A POST to a server route with the API key. */
function serverPost(path: string, body: string): Promise<Response> {
  return relay.fetch(path, { method: "POST", headers: SERVER_AUTH, body });
}

/** Reads the welcome and checks it names `user` (and `room`, on room sockets). */
async function welcomed(client: TestClient, user: string, room?: string): Promise<Record<string, any>> {
  const welcome = await client.json();
  expect(welcome).toMatchObject({ type: "welcome", protocol: 1, user, ...(room !== undefined && { room }) });
  return welcome;
}

/** A room socket of a fresh user (or `user`) in a fresh room (or `room`), welcome read. */
async function roomSocket(room = freshRoom(), user = freshUser()): Promise<TestClient> {
  const client = await relay.connect(`/rooms/${room}/ws?token=${await token({ sub: user })}`);
  await welcomed(client, user, room);
  return client;
}

/** A user socket of a fresh user, welcome read. */
async function userSocket(user = freshUser(), claims: Record<string, unknown> = {}): Promise<TestClient> {
  const client = await relay.connect(`/users/${user}/ws?token=${await token({ sub: user, ...claims })}`);
  await welcomed(client, user);
  return client;
}

/** The exact error frame the relay owes for a refused frame. */
const errorFrame = (code: string, id?: string) => ({
  type: "error",
  code,
  message: expect.any(String),
  ...(id !== undefined && { id }),
});

let probes = 0;

/** The socket still works: a valid publish is answered, and it is the very next frame. */
async function expectRoomSocketServes(client: TestClient): Promise<void> {
  const id = `probe-${++probes}`;
  client.send({ type: "publish", data: { probe: id }, id });
  expect(await client.json()).toMatchObject({ type: "message", id, data: { probe: id } });
}

/** The user socket still works: a publish naming a room is acknowledged, as the very next frame. */
async function expectUserSocketServes(client: TestClient): Promise<void> {
  const id = `probe-${++probes}`;
  client.send({ type: "publish", room: freshRoom("probe"), data: { probe: id }, id });
  expect(await client.json()).toEqual({ type: "ack", id, status: "delivered", seq: 1 });
}

/** Every frame the socket received until it closed (within `timeoutMs`), and the close. */
async function framesUntilClose(client: TestClient, timeoutMs = 15_000): Promise<{ frames: Received[]; closed: Closed }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const closed = await Promise.race([
    client.closed,
    new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs))),
  ]).finally(() => clearTimeout(timer));
  if (closed === undefined) throw new Error(`socket still open after ${timeoutMs} ms`);
  // Nobody was reading, so every frame that came before the close is queued, in order.
  const frames: Received[] = [];
  while (client.pending.length > 0) frames.push(await client.next());
  return { frames, closed };
}

/** Polls `check` until it stops throwing, or throws its last error after `timeoutMs`. */
async function eventually<T>(check: () => Promise<T>, timeoutMs = 30_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  }
}

// ---- raw HTTP over TCP, for requests fetch() would normalise or refuse to send ----

interface RawResponse {
  status: number;
  headers: Map<string, string>;
  body: string;
  /** Bytes that followed the first response on the connection. */
  rest: string;
}

/** The first HTTP response in `bytes`, or undefined while it is incomplete. */
function parseResponse(bytes: Buffer): RawResponse | undefined {
  const end = bytes.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const lines = bytes.subarray(0, end).toString("latin1").split("\r\n");
  const status = Number(lines[0]!.split(" ")[1]);
  const headers = new Map(
    lines.slice(1).map((line): [string, string] => {
      const colon = line.indexOf(":");
      return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()];
    }),
  );
  const start = end + 4;
  if (status === 101) return { status, headers, body: "", rest: "" };
  const length = Number(headers.get("content-length") ?? NaN);
  if (Number.isNaN(length)) throw new Error(`response without Content-Length: ${lines.join(" | ")}`);
  if (bytes.length < start + length) return undefined;
  return {
    status,
    headers,
    body: bytes.subarray(start, start + length).toString("utf8"),
    rest: bytes.subarray(start + length).toString("latin1"),
  };
}

/**
 * Writes `request` as-is on a fresh TCP connection and answers the first response (with what
 * followed it once the connection closed), or "no answer" if none came within `timeoutMs`.
 * `halfClose` ends our side after writing, as a client that has nothing more to send.
 */
function rawHttp(request: string, options: { halfClose?: boolean; timeoutMs?: number } = {}): Promise<RawResponse | "no answer"> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(Number(relay.url.port), relay.url.hostname);
    let received = Buffer.alloc(0);
    const finish = (result: RawResponse | "no answer") => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish("no answer"), options.timeoutMs ?? 5_000);
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      try {
        const response = parseResponse(received);
        // An upgrade leaves the connection open: the 101 alone is the answer.
        if (response?.status === 101) finish(response);
      } catch (error) {
        reject(error);
        socket.destroy();
      }
    });
    socket.on("close", () => {
      try {
        finish(parseResponse(received) ?? "no answer");
      } catch (error) {
        reject(error);
      }
    });
    socket.on("error", () => {});
    socket.write(Buffer.from(request, "utf8"));
    if (options.halfClose) socket.end();
  });
}

const host = (): string => `Host: ${relay.url.host}\r\n`;
const UPGRADE_HEADERS =
  "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/** A raw request, `path` put on the request line byte for byte. */
function rawRequest(method: string, path: string, headers: string, body = ""): string {
  const length = method === "POST" ? `Content-Length: ${Buffer.byteLength(body)}\r\n` : "";
  return `${method} ${path} HTTP/1.1\r\n${host()}${headers}${length}Connection: close\r\n\r\n${body}`;
}

/** Status and parsed JSON body of a raw response (fails on "no answer" or non-JSON). */
function rawAnswer(response: RawResponse | "no answer"): { status: number; body: unknown } {
  if (response === "no answer") throw new Error("the relay did not answer");
  return { status: response.status, body: response.status === 101 ? undefined : JSON.parse(response.body) };
}

// =====================================================================================
// 1. Frames
// =====================================================================================

describe("frames", () => {
  // Text that is not JSON at all: bad_json, the socket stays open.
  const notJson: [string, string][] = [
    ["a truncated object", "{"],
    ["an unterminated publish", '{"type":"publish","data":1'],
    ["a trailing comma", '{"type":"publish","data":1,}'],
    ["single quotes", "{'type':'publish','data':1}"],
    ["unquoted keys", '{type:"publish",data:1}'],
    ["NaN", '{"type":"publish","data":NaN}'],
    ["Infinity", '{"type":"publish","data":Infinity}'],
    ["undefined", '{"type":"publish","data":undefined}'],
    ["a hex number", '{"type":"publish","data":0x10}'],
    ["a raw control character in a string", '{"type":"publish","data":"a\u0001b"}'],
    ["an empty frame", ""],
    ["whitespace only", "   \n\t"],
    ["a byte order mark before the object", '\uFEFF{"type":"publish","data":1}'],
    ["two objects in one frame", '{"type":"publish","data":1}{"type":"publish","data":2}'],
    ["trailing garbage", '{"type":"publish","data":1} x'],
    ["an upper-case PING", "PING"],
    ["a ping with a trailing space", "ping "],
    ["a stray pong", "pong"],
  ];

  it.each(notJson)("answers %s with bad_json and keeps the socket", async (_name, text) => {
    const client = await roomSocket();
    client.send(text);
    expect(await client.json()).toEqual(errorFrame("bad_json"));
    await expectRoomSocketServes(client);
    await client.close();
  });

  // Valid JSON of the wrong shape on a room socket: bad_frame, with the frame's id when it had a valid one.
  const longType = "x".repeat(4000);
  const badShapes: [string, string, string?][] = [
    ["an array", "[]"],
    ["an array holding a valid frame", '[{"type":"publish","data":1}]'],
    ["a string", '"publish"'],
    ["a number", "42"],
    ["null", "null"],
    ["true", "true"],
    ["an empty object", "{}"],
    ["a frame without type", '{"data":1}'],
    ["type null", '{"type":null,"data":1}'],
    ["type a number", '{"type":1,"data":1}'],
    ["type an array", '{"type":["publish"],"data":1}'],
    ["type an object", '{"type":{},"data":1}'],
    ["type in upper case", '{"type":"PUBLISH","data":1}'],
    ["type with a leading space", '{"type":" publish","data":1}'],
    ["a publish without data", '{"type":"publish"}'],
    ["a publish without data carrying an id", '{"type":"publish","id":"x1"}', "x1"],
    ["a publish whose data hides in __proto__", '{"type":"publish","__proto__":{"data":1}}'],
    ["id a number", '{"type":"publish","data":1,"id":7}'],
    ["id empty", '{"type":"publish","data":1,"id":""}'],
    ["id of 257 characters", `{"type":"publish","data":1,"id":"${"i".repeat(257)}"}`],
    ["id null", '{"type":"publish","data":1,"id":null}'],
    ["id an array", '{"type":"publish","data":1,"id":["a"]}'],
    ["id an object", '{"type":"publish","data":1,"id":{}}'],
    ["id true", '{"type":"publish","data":1,"id":true}'],
    ["room a number", '{"type":"publish","data":1,"room":7}'],
    ["room empty", '{"type":"publish","data":1,"room":""}'],
    ["room with a slash", '{"type":"publish","data":1,"room":"a/b"}'],
    ["room of 165 characters", `{"type":"publish","data":1,"room":"${"r".repeat(165)}"}`],
    ["room null", '{"type":"publish","data":1,"room":null}'],
    ["room an array", '{"type":"publish","data":1,"room":["r"]}'],
    ["room a path traversal", '{"type":"publish","data":1,"room":"../admin"}'],
    ["room another valid room", '{"type":"publish","data":1,"room":"elsewhere","id":"r1"}', "r1"],
    ["a direct without to", '{"type":"direct","data":1}'],
    ["to a number", '{"type":"direct","to":7,"data":1}'],
    ["to empty", '{"type":"direct","to":"","data":1}'],
    ["to with a slash", '{"type":"direct","to":"a/b","data":1}'],
    ["to of 129 characters", `{"type":"direct","to":"${"u".repeat(129)}","data":1}`],
    ["to null", '{"type":"direct","to":null,"data":1}'],
    ["to an array", '{"type":"direct","to":["u"],"data":1}'],
    ["to with a leading dot", '{"type":"direct","to":".hidden","data":1}'],
    ["to with unicode", '{"type":"direct","to":"caf\u00e9","data":1}'],
    ["a direct without data", '{"type":"direct","to":"someone","id":"d1"}', "d1"],
    ["an ack on a room socket", '{"type":"ack","seq":1}'],
    ["an ack with seq a string on a room socket", '{"type":"ack","seq":"1"}'],
    ["unknown type subscribe", '{"type":"subscribe","data":1}'],
    ["unknown type welcome", '{"type":"welcome","data":1}'],
    ["unknown type message", '{"type":"message","data":1}'],
    ["unknown type presence", '{"type":"presence","data":1}'],
    ["unknown type error", '{"type":"error","data":1}'],
    ["unknown type empty", '{"type":"","data":1}'],
    ["unknown type constructor", '{"type":"constructor","data":1}'],
    ["unknown type __proto__", '{"type":"__proto__","data":1}'],
    ["unknown type toString", '{"type":"toString","data":1}'],
    ["unknown type with an id", '{"type":"subscribe","data":1,"id":"u1"}', "u1"],
    ["unknown type of 4,000 characters", `{"type":"${longType}"}`],
  ];

  it.each(badShapes)("answers %s with bad_frame and keeps the socket", async (_name, text, id) => {
    const client = await roomSocket();
    client.send(text);
    const error = await client.json();
    expect(error).toEqual(errorFrame("bad_frame", id));
    // An unknown type is never echoed back in full.
    expect(error.message.length).toBeLessThanOrEqual(200);
    await expectRoomSocketServes(client);
    await client.close();
  });

  // Valid frames at the edges: each is published, and the message carries only what the relay vouches for.
  const accepted: [string, Record<string, unknown>, unknown][] = [
    ["data null", { type: "publish", data: null }, null],
    ["data false", { type: "publish", data: false }, false],
    ["data an empty string", { type: "publish", data: "" }, ""],
    ["data with emoji and right-to-left text", { type: "publish", data: "😀 \u202Eevil" }, "😀 \u202Eevil"],
    ["an id of exactly 256 characters", { type: "publish", data: 1, id: "i".repeat(256) }, 1],
  ];

  it.each(accepted)("publishes a frame with %s", async (_name, frame, data) => {
    const room = freshRoom();
    const user = freshUser();
    const client = await roomSocket(room, user);
    client.send(frame);
    expect(await client.json()).toEqual({
      type: "message",
      room,
      seq: 1,
      from: user,
      data,
      ...(frame.id !== undefined && { id: frame.id }),
      ts: expect.any(Number),
    });
    await client.close();
  });

  it("publishes a lone surrogate escape as the same string", async () => {
    const client = await roomSocket();
    client.send('{"type":"publish","data":"\\ud800"}');
    expect(await client.json()).toMatchObject({ type: "message", seq: 1, data: "\ud800" });
    await client.close();
  });

  it("ignores forged from, seq, ts and room fields: identity and order come from the relay", async () => {
    const room = freshRoom();
    const user = freshUser("mallory");
    const client = await roomSocket(room, user);
    client.send({ type: "publish", data: "hi", from: "admin", seq: 999, ts: 1, room, extra: { x: 1 } });
    expect(await client.json()).toEqual({ type: "message", room, seq: 1, from: user, data: "hi", ts: expect.any(Number) });
    await client.close();
  });

  it("stamps a direct with the sender's identity whatever from it claims", async () => {
    const sender = freshUser("mallory");
    const recipient = freshUser("victim");
    const inbox = await userSocket(recipient);
    const client = await roomSocket(freshRoom(), sender);
    client.send({ type: "direct", to: recipient, data: "hello", from: "admin", id: "d1" });
    expect(await client.json()).toEqual({ type: "ack", id: "d1", status: "delivered", seq: 1 });
    expect(await inbox.json()).toEqual({ type: "direct", seq: 1, from: sender, data: "hello", id: "d1", ts: expect.any(Number) });
    await Promise.all([client.close(), inbox.close()]);
  });

  it("refuses a text frame one byte over MAX_MESSAGE_BYTES with too_large and keeps the socket", async () => {
    const client = await roomSocket();
    const text = JSON.stringify({ type: "publish", data: "" }).replace('""', `"${"x".repeat(MAX_BYTES)}"`);
    const frame = text.slice(0, MAX_BYTES - 2) + '"}';
    const over = frame.slice(0, -2) + 'x"}';
    expect(Buffer.byteLength(over)).toBe(MAX_BYTES + 1);
    client.send(over);
    expect(await client.json()).toEqual(errorFrame("too_large"));
    await expectRoomSocketServes(client);
    await client.close();
  });

  it("publishes a text frame of exactly MAX_MESSAGE_BYTES", async () => {
    const client = await roomSocket();
    const head = '{"type":"publish","data":"';
    const frame = head + "x".repeat(MAX_BYTES - head.length - 2) + '"}';
    expect(Buffer.byteLength(frame)).toBe(MAX_BYTES);
    client.send(frame);
    expect(await client.json()).toMatchObject({ type: "message", seq: 1, data: "x".repeat(MAX_BYTES - head.length - 2) });
    await client.close();
  });

  it("counts UTF-8 bytes, not characters: 1,400 euro signs (4,200 bytes) are too_large", async () => {
    const client = await roomSocket();
    const frame = JSON.stringify({ type: "publish", data: "€".repeat(1400) });
    expect(frame.length).toBeLessThan(MAX_BYTES);
    expect(Buffer.byteLength(frame)).toBeGreaterThan(MAX_BYTES);
    client.send(frame);
    expect(await client.json()).toEqual(errorFrame("too_large"));
    await expectRoomSocketServes(client);
    await client.close();
  });

  it("refuses a binary frame over MAX_MESSAGE_BYTES with too_large and relays nothing", async () => {
    const room = freshRoom();
    const client = await roomSocket(room);
    const other = await roomSocket(room);
    await client.nextOf("presence");
    client.send(new Uint8Array(MAX_BYTES + 1).fill(7));
    expect(await client.json()).toEqual(errorFrame("too_large"));
    await expectRoomSocketServes(client);
    // The other socket's next frame is that publish: the oversized bytes never reached it.
    expect(await other.json()).toMatchObject({ type: "message", seq: 1 });
    await Promise.all([client.close(), other.close()]);
  });

  it.each([
    ["1,000 levels of nested arrays", "[".repeat(1000) + "]".repeat(1000)],
    ["600 levels of nested objects", '{"a":'.repeat(600) + "1" + "}".repeat(600)],
  ])("answers %s within the size limit with a message", async (_, nested) => {
    const client = await roomSocket();
    const frame = `{"type":"publish","data":${nested}}`;
    expect(Buffer.byteLength(frame)).toBeLessThanOrEqual(MAX_BYTES);
    client.send(frame);
    const message = await client.json();
    expect(message).toMatchObject({ type: "message", seq: 1 });
    expect(JSON.stringify(message.data)).toBe(nested);
    await expectRoomSocketServes(client);
    await client.close();
  });

  it("delivers a direct with 1,000 levels of nested arrays through the recipient's inbox", async () => {
    const recipient = freshUser("deep");
    const inbox = await userSocket(recipient);
    const client = await roomSocket();
    const nested = "[".repeat(1000) + "]".repeat(1000);
    client.send(`{"type":"direct","to":"${recipient}","data":${nested},"id":"deep"}`);
    expect(await client.json()).toEqual({ type: "ack", id: "deep", status: "delivered", seq: 1 });
    const direct = await inbox.json();
    expect(direct).toMatchObject({ type: "direct", seq: 1, id: "deep" });
    expect(JSON.stringify(direct.data)).toBe(nested);
    await expectRoomSocketServes(client);
    await Promise.all([client.close(), inbox.close()]);
  });

  it("refuses data nested deeper than 1,000 levels with bad_frame and the frame's id, on room and user sockets", async () => {
    const recipient = freshUser("deeper");
    const inbox = await userSocket(recipient);
    const client = await roomSocket();
    const tooDeep = "[".repeat(1001) + "]".repeat(1001);
    client.send(`{"type":"direct","to":"${recipient}","data":${tooDeep},"id":"d1"}`);
    expect(await client.json()).toEqual(errorFrame("bad_frame", "d1"));
    client.send(`{"type":"publish","data":${tooDeep},"id":"p1"}`);
    expect(await client.json()).toEqual(errorFrame("bad_frame", "p1"));
    await expectRoomSocketServes(client);
    // A user socket's publish crosses from its hub to the room: 1,000 levels arrive whole, the
    // inner 480 of them objects (the serializer gives up on objects sooner than on arrays).
    const room = freshRoom();
    const reader = await roomSocket(room);
    const deep = "[".repeat(520) + '{"a":'.repeat(479) + "{}" + "}".repeat(479) + "]".repeat(520);
    inbox.send(`{"type":"publish","room":"${room}","data":${deep},"id":"p2"}`);
    expect(await inbox.json()).toMatchObject({ type: "ack", id: "p2", status: "delivered" });
    expect(JSON.stringify((await reader.json()).data)).toBe(deep);
    inbox.send(`{"type":"publish","room":"${room}","data":${tooDeep},"id":"p3"}`);
    const refusal = await inbox.json();
    expect(refusal).toEqual(errorFrame("bad_frame", "p3"));
    expect(refusal.message).toContain("1000 levels");
    await Promise.all([client.close(), inbox.close(), reader.close()]);
  });

  it("takes server publishes and directs nested 1,000 levels and answers deeper ones 400", async () => {
    const post = (path: string, levels: number) =>
      relay.fetch(path, { method: "POST", headers: SERVER_AUTH, body: `{"data":${"[".repeat(levels)}${"]".repeat(levels)}}` });
    const room = freshRoom();
    expect((await post(`/rooms/${room}/messages`, 1000)).status).toBe(200);
    expect((await post(`/users/${freshUser()}/messages`, 1000)).status).toBe(200);
    for (const path of [`/rooms/${room}/messages`, `/users/${freshUser()}/messages`]) {
      const res = await post(path, 1001);
      expect({ status: res.status, body: await res.json() }).toEqual(refused(400, "bad_request"));
    }
  });

  it("refuses data holding a number too large for a double (1e400 would reach everyone as null)", async () => {
    const room = freshRoom();
    for (const path of [`/rooms/${room}/messages`, `/users/${freshUser()}/messages`]) {
      const res = await relay.fetch(path, { method: "POST", headers: SERVER_AUTH, body: '{"data":{"n":1e400}}' });
      expect({ status: res.status, body: await res.json() }).toEqual(refused(400, "bad_request"));
    }
    const client = await roomSocket(room);
    client.send('{"type":"publish","data":[1e400],"id":"huge"}');
    expect(await client.json()).toEqual(errorFrame("bad_frame", "huge"));
    await expectRoomSocketServes(client);
    const info = await relay.fetch(`/rooms/${room}`, { headers: SERVER_AUTH });
    expect(await info.json()).toMatchObject({ seq: 1 }); // the probe's publish only
    await client.close();
  });

  // RFC 6455 (8.1) says an endpoint must fail a connection whose text frame is not UTF-8 (1007).
  // The local runtime instead decodes such a frame lossily (U+FFFD) before the relay sees it, so
  // the relay answers what it received: text that is not JSON. Observed, and harmless.
  it("answers a text frame of invalid UTF-8 with bad_json and keeps the socket", async () => {
    const client = await roomSocket();
    (client.ws as WebSocket).send(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), { binary: false });
    expect(await client.json()).toEqual(errorFrame("bad_json"));
    await expectRoomSocketServes(client);
    await client.close();
  });

  describe("on a user socket", () => {
    const userShapes: [string, string, string, string?][] = [
      ["an ack with seq a string", "bad_frame", '{"type":"ack","seq":"1"}'],
      ["an ack with a negative seq", "bad_frame", '{"type":"ack","seq":-1}'],
      ["an ack with a fractional seq", "bad_frame", '{"type":"ack","seq":1.5}'],
      ["an ack without seq", "bad_frame", '{"type":"ack"}'],
      ["an ack with seq null", "bad_frame", '{"type":"ack","seq":null}'],
      ["an ack with seq 1e400", "bad_frame", '{"type":"ack","seq":1e400}'],
      ["an ack with seq an array", "bad_frame", '{"type":"ack","seq":[1]}'],
      ["a publish without room", "bad_frame", '{"type":"publish","data":1,"id":"p1"}', "p1"],
      ["a publish with room a number", "bad_frame", '{"type":"publish","data":1,"room":7}'],
      ["a publish with room a traversal", "bad_frame", '{"type":"publish","data":1,"room":"..%2F..%2Fadmin"}'],
      ["a publish with room of 165 characters", "bad_frame", `{"type":"publish","data":1,"room":"${"r".repeat(165)}"}`],
      ["malformed JSON", "bad_json", '{"type":"ack",'],
    ];

    it.each(userShapes)("answers %s with %s and keeps the socket", async (_name, code, text, id) => {
      const client = await userSocket();
      client.send(text);
      expect(await client.json()).toEqual(errorFrame(code, id));
      await expectUserSocketServes(client);
      await client.close();
    });

    it("answers nothing to a valid ack and keeps the socket", async () => {
      const client = await userSocket();
      client.send({ type: "ack", seq: 0 });
      client.send({ type: "ack", seq: 5 });
      await expectUserSocketServes(client);
      await client.close();
    });

    it("refuses a publish to a room its token does not allow with forbidden", async () => {
      const client = await userSocket(freshUser(), { rooms: ["team-*"] });
      client.send({ type: "publish", room: "other-room", data: 1, id: "f1" });
      expect(await client.json()).toEqual(errorFrame("forbidden", "f1"));
      client.send({ type: "publish", room: "team-1", data: 1, id: "f2" });
      expect(await client.json()).toEqual({ type: "ack", id: "f2", status: "delivered", seq: expect.any(Number) });
      await client.close();
    });

    it("refuses a binary frame with bad_frame", async () => {
      const client = await userSocket();
      client.send(new Uint8Array([1, 2, 3]));
      expect(await client.json()).toEqual(errorFrame("bad_frame"));
      await expectUserSocketServes(client);
      await client.close();
    });

    it("refuses a text frame over MAX_MESSAGE_BYTES with too_large, with the frame's id when it had one", async () => {
      const client = await userSocket();
      client.send("x".repeat(MAX_BYTES + 1));
      expect(await client.json()).toEqual(errorFrame("too_large"));
      client.send(JSON.stringify({ type: "publish", room: freshRoom(), data: "x".repeat(MAX_BYTES), id: "big1" }));
      expect(await client.json()).toEqual(errorFrame("too_large", "big1"));
      await expectUserSocketServes(client);
      await client.close();
    });
  });
});

// =====================================================================================
// 2. Names
// =====================================================================================

describe("names", () => {
  // Segments that stay one path segment but are not a valid id: 400 bad_request on every route.
  const badSegments: [string, string][] = [
    ["an id of 165 characters", "a".repeat(165)],
    ["a percent-encoded space", "a%20b"],
    ["a dollar sign", "a$b"],
    ["a plus sign", "a+b"],
    ["a wildcard", "a*"],
    ["an encoded script tag", "%3Cscript%3E"],
    ["percent-encoded unicode", "caf%C3%A9"],
    ["raw UTF-8 bytes", "café"],
    ["a Cyrillic homoglyph", "r%D0%BEom"],
    ["an encoded traversal", "..%2F..%2F"],
    ["an encoded NUL", "%00"],
    ["an encoded slash", "a%2Fb"],
    ["a double-encoded slash", "a%252Fb"],
    ["an encoded backslash", "a%5Cb"],
    ["an encoded question mark", "a%3Fb"],
    ["an encoded hash", "a%23b"],
    ["a lone percent sign", "%"],
    ["a broken percent escape", "%zz"],
  ];

  type Route = "room socket" | "user socket" | "room events" | "room publish" | "user publish";
  const routes: Route[] = ["room socket", "user socket", "room events", "room publish", "user publish"];

  /** The request for `route` with `segment` as the room or user id, sent byte for byte. */
  async function requestFor(route: Route, segment: string): Promise<RawResponse | "no answer"> {
    const jwt = await token({ sub: "alice" });
    switch (route) {
      case "room socket":
        return rawHttp(rawRequest("GET", `/rooms/${segment}/ws?token=${jwt}`, UPGRADE_HEADERS));
      case "user socket":
        return rawHttp(rawRequest("GET", `/users/${segment}/ws?token=${jwt}`, UPGRADE_HEADERS));
      case "room events":
        return rawHttp(rawRequest("GET", `/rooms/${segment}/events?token=${jwt}`, ""));
      case "room publish":
        return rawHttp(rawRequest("POST", `/rooms/${segment}/messages`, `Authorization: Bearer ${API_KEY}\r\n`, '{"data":1}'));
      case "user publish":
        return rawHttp(rawRequest("POST", `/users/${segment}/messages`, `Authorization: Bearer ${API_KEY}\r\n`, '{"data":1}'));
    }
  }

  // Room ids (1.1) also take `= @ , ;`, any first character and up to 164 characters, so every
  // Pusher channel name is one; user ids keep the stricter rule.
  const badUserSegments: [string, string][] = [
    ["an id of 129 characters", "a".repeat(129)],
    ["an at sign", "a@b"],
    ["a semicolon", "a;b"],
    ["a leading dot", ".hidden"],
    ["a leading dash", "-dash"],
    ["a leading underscore", "_under"],
  ];
  const userRoutes: Route[] = ["user socket", "user publish"];

  const cases = [
    ...badSegments.flatMap(([name, segment]) => routes.map((route): [string, Route, string] => [name, route, segment])),
    ...badUserSegments.flatMap(([name, segment]) => userRoutes.map((route): [string, Route, string] => [name, route, segment])),
  ];

  it.each(cases)("refuses %s on the %s route with 400 bad_request", async (_name, route, segment) => {
    expect(rawAnswer(await requestFor(route, segment))).toEqual(refused(400, "bad_request"));
  });

  // Segments that change the path itself: the URL parser resolves them before routing, so the
  // request no longer names an id at all and lands on whatever the resolved path is.
  const resolved: [string, Route, number, string, string][] = [
    // `/rooms/../ws` and `/rooms/%2e%2e/ws` resolve to `/ws`.
    ["a dot-dot segment", "room socket", 404, "not_found", ".."],
    ["an encoded dot-dot segment", "room socket", 404, "not_found", "%2e%2e"],
    ["an encoded dot-dot segment", "user socket", 404, "not_found", "%2e%2e"],
    ["an encoded dot-dot segment", "room events", 404, "not_found", "%2e%2e"],
    ["an encoded dot-dot segment", "room publish", 404, "not_found", "%2e%2e"],
    // `/rooms/./ws` resolves to `/rooms/ws`: the info route of a room named "ws", which takes the API key.
    ["a dot segment", "room socket", 401, "unauthorized", "."],
    // `/users/./ws` resolves to `/users/ws`, which is no route.
    ["a dot segment", "user socket", 404, "not_found", "."],
    // A raw backslash is a path separator to the URL parser: `/rooms/a\b/ws` is `/rooms/a/b/ws`.
    ["a raw backslash", "room socket", 404, "not_found", "a\\b"],
    ["a raw backslash", "room publish", 404, "not_found", "a\\b"],
  ];

  // `/rooms//ws`: an empty segment is an empty id, which no name rule admits.
  it.each(["room socket", "user socket", "room publish", "user publish"] as const)("answers an empty segment on the %s route with 400 bad_request", async (route) => {
    expect(rawAnswer(await requestFor(route, ""))).toEqual(refused(400, "bad_request"));
  });

  it.each(resolved)(
    "answers %s on the %s route with %i %s (the path resolves to another)",
    async (_name, route, status, code, segment) => {
      expect(rawAnswer(await requestFor(route, segment))).toEqual(refused(status, code));
    },
  );

  it("accepts an id of exactly 128 characters on every route", async () => {
    const name = `n${"0".repeat(127)}`;
    const auth = `Authorization: Bearer ${API_KEY}\r\n`;
    const send = async (method: string, path: string, headers: string, body?: string) =>
      rawAnswer(await rawHttp(rawRequest(method, path, headers, body)));
    // The publishes first: with no socket open yet, the inbox answers "queued" for certain.
    expect(await send("POST", `/rooms/${name}/messages`, auth, '{"data":1}')).toEqual({ status: 200, body: { seq: 1 } });
    expect(await send("POST", `/users/${name}/messages`, auth, '{"data":1}')).toEqual({
      status: 200,
      body: { status: "queued", seq: 1 },
    });
    const upgraded = { status: 101, body: undefined };
    expect(await send("GET", `/rooms/${name}/ws?token=${await token({ sub: "alice" })}`, UPGRADE_HEADERS)).toEqual(upgraded);
    expect(await send("GET", `/users/${name}/ws?token=${await token({ sub: name })}`, UPGRADE_HEADERS)).toEqual(upgraded);
  });

  it.each([["-1"], ["abc"], ["1.5"], ["1e3"], ["0x10"], [""]])(
    "refuses since=%s on a room socket with 400 bad_request",
    async (since) => {
      const jwt = await token({ sub: freshUser() });
      const attempt = relay.connect(`/rooms/${freshRoom()}/ws?token=${jwt}&since=${since}`);
      expect(await refusal(attempt)).toEqual(refused(400, "bad_request"));
    },
  );

  it("reads a since past 2^53 - 1 as beyond every seq: a welcome that recovered nothing", async () => {
    const jwt = await token({ sub: freshUser() });
    const client = await relay.connect(`/rooms/${freshRoom()}/ws?token=${jwt}&since=99999999999999999999`);
    expect(await client.json()).toMatchObject({ type: "welcome", seq: 0, recovered: false });
    client.close();
  });

  it.each([["-1"], ["abc"], ["2.5"]])("refuses limit=%s on the history route with 400 bad_request", async (limit) => {
    expect(await answer(await relay.fetch(`/rooms/${freshRoom()}/messages?limit=${limit}`, { headers: SERVER_AUTH }))).toEqual(
      refused(400, "bad_request"),
    );
  });
});

// =====================================================================================
// 3. Tokens
// =====================================================================================

describe("tokens", () => {
  const connectRoom = (jwt: string | undefined, room = freshRoom()): Promise<TestClient> =>
    relay.connect(`/rooms/${room}/ws${jwt === undefined ? "" : `?token=${encodeURIComponent(jwt)}`}`);

  it("refuses a room socket without a token with 401", async () => {
    expect(await refusal(connectRoom(undefined))).toEqual(refused(401, "unauthorized"));
  });

  it("refuses a user socket without a token with 401", async () => {
    expect(await refusal(relay.connect(`/users/${freshUser()}/ws`))).toEqual(refused(401, "unauthorized"));
  });

  it("ignores ?user= when anonymous mode is off: 401 without a token", async () => {
    expect(await refusal(relay.connect(`/rooms/${freshRoom()}/ws?user=admin`))).toEqual(refused(401, "unauthorized"));
  });

  // Each entry builds a token the relay must refuse with 401.
  const invalid: [string, () => Promise<string>][] = [
    ["an empty ?token=", async () => ""],
    ["a plain string", async () => "not-a-jwt"],
    ["two parts", async () => "a.b"],
    ["three junk parts", async () => "a.b.c"],
    ["four parts", async () => `${await token({ sub: "alice" })}.extra`],
    ["only dots", async () => ".."],
    ["4,000 characters of junk", async () => "x".repeat(4000)],
    ["a header that is not JSON", async () => `${b64url("not json")}.${b64url({ sub: "alice" })}.${await aliceSignature()}`],
    ["a payload that is not JSON", async () => `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url("not json")}.abc`],
    ["a signature that is not base64url", async () => `${(await token({ sub: "alice" })).replace(/\.[^.]*$/, "")}.!!!!`],
    [
      "a tampered signature",
      async () => {
        const jwt = await token({ sub: "alice" });
        const signature = signatureOf(jwt);
        return jwt.slice(0, -signature.length) + (signature[0] === "A" ? "B" : "A") + signature.slice(1);
      },
    ],
    [
      "a payload swapped under a valid signature",
      async () => forge({ alg: "HS256", typ: "JWT" }, { sub: "admin" }, await aliceSignature()),
    ],
    ["the wrong secret", () => token({ sub: "alice" }, "not-the-secret")],
    ['alg "none" with an empty signature', async () => forge({ alg: "none", typ: "JWT" }, { sub: "alice" })],
    ['alg "none" without typ', async () => forge({ alg: "none" }, { sub: "alice" })],
    ['alg "NONE"', async () => forge({ alg: "NONE", typ: "JWT" }, { sub: "alice" })],
    [
      'alg "none" carrying another token\'s HS256 signature',
      async () => forge({ alg: "none", typ: "JWT" }, { sub: "alice" }, await aliceSignature()),
    ],
    ["alg HS512 (signed with the secret)", () => token({ sub: "alice" }, SECRET, "HS512")],
    ["alg HS384 (signed with the secret)", () => token({ sub: "alice" }, SECRET, "HS384")],
    [
      'alg "RS256" over an HMAC signature (key confusion)',
      async () => {
        const good = await token({ sub: "alice" });
        return forge({ alg: "RS256", typ: "JWT" }, { sub: "alice" }, signatureOf(good));
      },
    ],
    ["a header without alg", async () => forge({ typ: "JWT" }, { sub: "alice" }, await aliceSignature())],
    ['lower-case alg "hs256"', async () => forge({ alg: "hs256", typ: "JWT" }, { sub: "alice" }, await aliceSignature())],
    ["an exp an hour ago", () => token({ sub: "alice", exp: nowSeconds() - 3600 })],
    ["an exp of now minus one second", () => token({ sub: "alice", exp: nowSeconds() - 1 })],
    ["an exp of exactly now", () => token({ sub: "alice", exp: nowSeconds() })],
    ["an exp that is a string", () => token({ sub: "alice", exp: String(nowSeconds() + 3600) })],
    ["an nbf an hour ahead", () => token({ sub: "alice", nbf: nowSeconds() + 3600 })],
    ['a typ other than "JWT"', async () => forge({ alg: "HS256", typ: "at+jwt" }, { sub: "alice" }, await aliceSignature())],
    ["no sub", () => token({ rooms: ["*"] })],
    ["sub empty", () => token({ sub: "" })],
    ["sub a number", () => token({ sub: 42 })],
    ["sub null", () => token({ sub: null })],
    ["sub an array", () => token({ sub: ["alice"] })],
    ["sub with a slash", () => token({ sub: "a/b" })],
    ["sub with a leading dot", () => token({ sub: ".hidden" })],
    ["sub of 129 characters", () => token({ sub: "s".repeat(129) })],
    ["sub with a NUL", () => token({ sub: "alice\u0000" })],
    ["sub in full-width unicode", () => token({ sub: "ａlice" })],
    ["rooms a string", () => token({ sub: "alice", rooms: "lobby" })],
    ["rooms an object", () => token({ sub: "alice", rooms: { lobby: true } })],
    ["rooms null", () => token({ sub: "alice", rooms: null })],
    ["rooms holding a number", () => token({ sub: "alice", rooms: [1] })],
    ["rooms holding null", () => token({ sub: "alice", rooms: [null] })],
    ["rooms holding an array", () => token({ sub: "alice", rooms: [["lobby"]] })],
    ["rooms of 65 entries", () => token({ sub: "alice", rooms: Array.from({ length: 65 }, (_, i) => `r${i}`) })],
    ["rooms holding an entry of 166 characters", () => token({ sub: "alice", rooms: ["r".repeat(166)] })],
  ];

  it.each(invalid)("refuses a token with %s with 401", async (_name, make) => {
    expect(await refusal(connectRoom(await make()))).toEqual(refused(401, "unauthorized"));
  });

  it("refuses an invalid token sent as Authorization: Bearer with 401", async () => {
    const header = { Authorization: `Bearer ${forge({ alg: "none", typ: "JWT" }, { sub: "alice" })}` };
    expect(await refusal(openWith(`/rooms/${freshRoom()}/ws`, header))).toEqual(refused(401, "unauthorized"));
  });

  it("accepts an exp a minute ahead and a rooms claim of exactly 64 entries", async () => {
    const room = freshRoom();
    const user = freshUser();
    const rooms = [...Array.from({ length: 63 }, (_, i) => `r${i}`), room];
    const client = await connectRoom(await token({ sub: user, exp: nowSeconds() + 60, rooms }), room);
    await welcomed(client, user, room);
    await client.close();
  });

  it.each([
    ["a*", "b"],
    ["a*", "A1"],
    ["lobby", "lobby2"],
    ["lobby", "Lobby"],
  ])('refuses a token for room "%s" on room "%s" with 403', async (claim, room) => {
    expect(await refusal(connectRoom(await token({ sub: "alice", rooms: [claim] }), room))).toEqual(refused(403, "forbidden"));
  });

  it("refuses a token with an empty rooms claim on any room with 403", async () => {
    expect(await refusal(connectRoom(await token({ sub: "alice", rooms: [] })))).toEqual(refused(403, "forbidden"));
  });

  // docs/protocol.md: "An `iat` in the future is accepted, since the issuer's clock may run a little ahead."
  it("accepts a token whose iat is an hour ahead (iat grants nothing)", async () => {
    const user = freshUser();
    const client = await connectRoom(await token({ sub: user, iat: nowSeconds() + 3600 }));
    await welcomed(client, user);
    await client.close();
  });

  it('accepts a token for room "a*" on room "a-1"', async () => {
    const client = await connectRoom(await token({ sub: "alice", rooms: ["a*"] }), "a-1");
    await welcomed(client, "alice", "a-1");
    await client.close();
  });

  it("refuses a user token on someone else's user socket with 403", async () => {
    const jwt = await token({ sub: "mallory" });
    expect(await refusal(relay.connect(`/users/victim/ws?token=${jwt}`))).toEqual(refused(403, "forbidden"));
    expect(await refusal(openWith("/users/victim/ws", { Authorization: `Bearer ${jwt}` }))).toEqual(refused(403, "forbidden"));
  });

  it("accepts a token via ?token= and via Authorization: Bearer", async () => {
    const user = freshUser();
    const jwt = await token({ sub: user });
    const room = freshRoom();
    const viaQuery = await relay.connect(`/rooms/${room}/ws?token=${jwt}`);
    await welcomed(viaQuery, user, room);
    const viaHeader = await openWith(`/rooms/${room}/ws`, { Authorization: `Bearer ${jwt}` });
    await welcomed(viaHeader, user, room);
    const inbox = await openWith(`/users/${user}/ws`, { Authorization: `Bearer ${jwt}` });
    await welcomed(inbox, user);
    await Promise.all([viaQuery.close(), viaHeader.close(), inbox.close()]);
  });

  it("verifies ?token= even when a valid Bearer token is also sent: 401", async () => {
    // ?token= wins over the header; a bad one is refused rather than skipped for the good one.
    const good = await token({ sub: "alice" });
    const headers = { Authorization: `Bearer ${good}` };
    expect(await refusal(openWith(`/rooms/${freshRoom()}/ws?token=junk`, headers))).toEqual(refused(401, "unauthorized"));
  });

  it("ignores a forged X-Edge-Relay-Connect header: identity comes only from the token", async () => {
    const user = freshUser("mallory");
    const jwt = await token({ sub: user, rooms: ["granted"] });
    const forged = { "X-Edge-Relay-Connect": JSON.stringify({ user: "admin", rooms: ["*"], since: 0 }) };

    const room = await openWith(`/rooms/granted/ws?token=${jwt}`, forged);
    const welcome = await welcomed(room, user, "granted");
    expect(welcome.recovered).toBeUndefined();
    const forgedInbox = { "X-Edge-Relay-Connect": JSON.stringify({ user: "victim" }) };
    const inbox = await openWith(`/users/${user}/ws?token=${jwt}`, forgedInbox);
    await welcomed(inbox, user);
    // The forged claim does not widen the token's rooms.
    expect(await refusal(openWith(`/rooms/secret/ws?token=${jwt}`, forged))).toEqual(refused(403, "forbidden"));
    // Nor does it stand in for a token.
    expect(await refusal(openWith(`/rooms/${freshRoom()}/ws`, forged))).toEqual(refused(401, "unauthorized"));
    await Promise.all([room.close(), inbox.close()]);
  });

  it("ignores ?user= next to a token: identity comes only from the token", async () => {
    const user = freshUser();
    const client = await relay.connect(`/rooms/${freshRoom()}/ws?token=${await token({ sub: user })}&user=admin`);
    await welcomed(client, user);
    await client.close();
  });
});

// =====================================================================================
// 4. Origins
// =====================================================================================

describe("origins", () => {
  const foreign = [
    "https://evil.example",
    "null",
    "https://app.example.evil.com",
    "https://evil.app.example",
    "http://app.example",
    "https://app.example:8443",
    "https://app.example/",
  ];

  it.each(foreign)("refuses Origin %s on a room socket with 403", async (origin) => {
    const jwt = await token({ sub: "alice" });
    const attempt = openWith(`/rooms/${freshRoom()}/ws?token=${jwt}`, { Origin: origin });
    expect(await refusal(attempt)).toEqual(refused(403, "forbidden"));
  });

  it.each(foreign)("refuses Origin %s on a user socket with 403", async (origin) => {
    const jwt = await token({ sub: "alice" });
    expect(await refusal(openWith(`/users/alice/ws?token=${jwt}`, { Origin: origin }))).toEqual(refused(403, "forbidden"));
  });

  it.each(foreign)("refuses Origin %s on a room event stream with 403", async (origin) => {
    const jwt = await token({ sub: "alice" });
    const response = await relay.fetch(`/rooms/${freshRoom()}/events?token=${jwt}`, { headers: { Origin: origin } });
    expect(await answer(response)).toEqual(refused(403, "forbidden"));
  });

  it("opens a room event stream for the listed origin and for no Origin header", async () => {
    const jwt = await token({ sub: "alice" });
    const variants: Record<string, string>[] = [{ Origin: ORIGIN }, {}];
    for (const headers of variants) {
      const response = await relay.fetch(`/rooms/${freshRoom()}/events?token=${jwt}`, { headers });
      expect(response.status).toBe(200);
      expect(response.headers.get("Content-Type")).toMatch(/^text\/event-stream/);
      await response.body?.cancel();
    }
  });

  it("refuses a foreign Origin with 403 before looking for a token", async () => {
    const attempt = openWith(`/rooms/${freshRoom()}/ws`, { Origin: "https://evil.example" });
    expect(await refusal(attempt)).toEqual(refused(403, "forbidden"));
  });

  it("accepts the listed origin and no Origin header on both socket routes", async () => {
    const user = freshUser();
    const jwt = await token({ sub: user });
    const clients = [
      await openWith(`/rooms/${freshRoom()}/ws?token=${jwt}`, { Origin: ORIGIN }),
      await openWith(`/users/${user}/ws?token=${jwt}`, { Origin: ORIGIN }),
      await openWith(`/rooms/${freshRoom()}/ws?token=${jwt}`, {}),
      await openWith(`/users/${user}/ws?token=${jwt}`, {}),
    ];
    for (const client of clients) await welcomed(client, user);
    await Promise.all(clients.map((client) => client.close()));
  });

  it("does not check Origin on server routes, which take the API key instead", async () => {
    const response = await relay.fetch(`/rooms/${freshRoom()}/messages`, {
      method: "POST",
      headers: { ...SERVER_AUTH, Origin: "https://evil.example" },
      body: '{"data":1}',
    });
    expect(await answer(response)).toEqual({ status: 200, body: { seq: 1 } });
  });
});

// =====================================================================================
// 5. Server routes
// =====================================================================================

describe("server routes", () => {
  type ServerRoute = { name: string; method: string; path: () => string; body?: string };
  const serverRoutes: ServerRoute[] = [
    { name: "POST /rooms/:room/messages", method: "POST", path: () => `/rooms/${freshRoom()}/messages`, body: '{"data":1}' },
    { name: "POST /users/:user/messages", method: "POST", path: () => `/users/${freshUser()}/messages`, body: '{"data":1}' },
    { name: "GET /rooms/:room", method: "GET", path: () => `/rooms/${freshRoom()}` },
    { name: "GET /rooms/:room/messages", method: "GET", path: () => `/rooms/${freshRoom()}/messages` },
  ];

  const b64 = (text: string): string => Buffer.from(text).toString("base64");
  const sameLengthWrongKey = API_KEY.slice(0, -1) + (API_KEY.endsWith("x") ? "y" : "x");
  const badKeys: [string, (jwt: string) => { headers: Record<string, string>; query?: string }][] = [
    ["no key", () => ({ headers: {} })],
    ["a wrong key of the same length", () => ({ headers: { Authorization: `Bearer ${sameLengthWrongKey}` } })],
    ["a wrong key of another length", () => ({ headers: { Authorization: "Bearer e2e" } })],
    ["the key with a suffix", () => ({ headers: { Authorization: `Bearer ${API_KEY}-and-more` } })],
    ["the key followed by another word", () => ({ headers: { Authorization: `Bearer ${API_KEY} extra` } })],
    ["the key in the Basic scheme", () => ({ headers: { Authorization: `Basic ${b64(`:${API_KEY}`)}` } })],
    ["the bare key without a scheme", () => ({ headers: { Authorization: API_KEY } })],
    ["the key in X-API-Key", () => ({ headers: { "X-API-Key": API_KEY } })],
    ["the key in ?token=", () => ({ headers: {}, query: `?token=${API_KEY}` })],
    ["a valid user token as the bearer", (jwt) => ({ headers: { Authorization: `Bearer ${jwt}` } })],
  ];

  const cases = serverRoutes.flatMap((route) =>
    badKeys
      // A user token may read a room's history (docs/protocol.md "Authentication"): tested on its own below.
      .filter(([name]) => !(route.name === "GET /rooms/:room/messages" && name === "a valid user token as the bearer"))
      .map(([name, make]): [string, string, ServerRoute, typeof make] => [route.name, name, route, make]),
  );

  it.each(cases)("refuses %s with %s with 401", async (_route, _name, route, make) => {
    const { headers, query = "" } = make(await token({ sub: "alice" }));
    const response = await relay.fetch(route.path() + query, {
      method: route.method,
      headers,
      ...(route.body !== undefined && { body: route.body }),
    });
    expect(await answer(response)).toEqual(refused(401, "unauthorized"));
  });

  it('accepts the API key under a lower-case "bearer" scheme (auth schemes are case-insensitive, RFC 9110 11.1)', async () => {
    const response = await relay.fetch(`/rooms/${freshRoom()}/messages`, {
      method: "POST",
      headers: { Authorization: `bearer ${API_KEY}` },
      body: '{"data":1}',
    });
    expect(await answer(response)).toEqual({ status: 200, body: { seq: 1 } });
  });

  it("lets a user token read the history of a room it allows, and refuses other rooms with 403", async () => {
    const jwt = await token({ sub: "reader", rooms: ["team-*"] });
    const headers = { Authorization: `Bearer ${jwt}` };
    const allowed = await relay.fetch(`/rooms/team-${randomUUID().slice(0, 8)}/messages`, { headers });
    expect(await answer(allowed)).toEqual({ status: 200, body: { messages: [] } });
    const other = await relay.fetch(`/rooms/${freshRoom()}/messages?token=${jwt}`);
    expect(await answer(other)).toEqual(refused(403, "forbidden"));
    const expired = await token({ sub: "reader", exp: nowSeconds() - 1 });
    // The message says why the token failed, not only that no API key came.
    expect(await answer(await relay.fetch(`/rooms/team-1/messages?token=${expired}`))).toEqual({
      status: 401,
      body: { error: "unauthorized", message: "token expired, and it is not the API key either" },
    });
  });

  const badBodies: [string, string][] = [
    ["invalid JSON", "{"],
    ["plain text", "hello"],
    ["an empty body", ""],
    ["an array", "[1]"],
    ["a string", '"data"'],
    ["a number", "42"],
    ["null", "null"],
    ["an object without data", "{}"],
    ["data hidden in __proto__", '{"__proto__":{"data":1}}'],
    ["from with a slash", '{"data":1,"from":"a/b"}'],
    ["from a number", '{"data":1,"from":42}'],
    ["from empty", '{"data":1,"from":""}'],
    ["from of 129 characters", `{"data":1,"from":"${"f".repeat(129)}"}`],
    ["from with a newline", '{"data":1,"from":"server\\nX-Injected: 1"}'],
  ];

  const bodyCases = badBodies.flatMap(([name, body]): [string, string, string][] => [
    ["room", name, body],
    ["user", name, body],
  ]);

  it.each(bodyCases)("refuses a %s publish with %s with 400 bad_request", async (kind, _name, body) => {
    const path = kind === "room" ? `/rooms/${freshRoom()}/messages` : `/users/${freshUser()}/messages`;
    const response = await serverPost(path, body);
    expect(await answer(response)).toEqual(refused(400, "bad_request"));
  });

  it.each([["room"], ["user"]])("refuses a %s publish one byte over MAX_MESSAGE_BYTES with 413 too_large", async (kind) => {
    const path = kind === "room" ? `/rooms/${freshRoom()}/messages` : `/users/${freshUser()}/messages`;
    const body = `{"data":"${"x".repeat(MAX_BYTES + 1 - 11)}"}`;
    expect(Buffer.byteLength(body)).toBe(MAX_BYTES + 1);
    expect(await answer(await serverPost(path, body))).toEqual(refused(413, "too_large"));
  });

  it("publishes a body of exactly MAX_MESSAGE_BYTES", async () => {
    const body = `{"data":"${"x".repeat(MAX_BYTES - 11)}"}`;
    expect(Buffer.byteLength(body)).toBe(MAX_BYTES);
    const response = await serverPost(`/rooms/${freshRoom()}/messages`, body);
    expect(await answer(response)).toEqual({ status: 200, body: { seq: 1 } });
  });

  it("counts body bytes, not characters: 1,400 euro signs are 413 too_large", async () => {
    const body = JSON.stringify({ data: "€".repeat(1400) });
    const response = await serverPost(`/rooms/${freshRoom()}/messages`, body);
    expect(await answer(response)).toEqual(refused(413, "too_large"));
  });

  it("refuses a 1 MB chunked body without Content-Length with 413 too_large", async () => {
    const chunk = new TextEncoder().encode("x".repeat(10_000));
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 100; i++) controller.enqueue(chunk);
        controller.close();
      },
    });
    const response = await relay.fetch(`/rooms/${freshRoom()}/messages`, {
      method: "POST",
      headers: SERVER_AUTH,
      body,
      duplex: "half",
    } as RequestInit);
    expect(await answer(response)).toEqual(refused(413, "too_large"));
  });

  it("publishes 1,000 levels of nested arrays sent to the server route", async () => {
    const room = freshRoom();
    const nested = "[".repeat(1000) + "]".repeat(1000);
    const response = await serverPost(`/rooms/${room}/messages`, `{"data":${nested}}`);
    expect(await answer(response)).toEqual({ status: 200, body: { seq: 1 } });
    const history = (await (await relay.fetch(`/rooms/${room}/messages`, { headers: SERVER_AUTH })).json()) as {
      messages: { data: unknown }[];
    };
    expect(JSON.stringify(history.messages[0]!.data)).toBe(nested);
  });

  it("reads only Content-Length bytes of a longer body: the truncated JSON is 400 bad_request", async () => {
    const room = freshRoom();
    const request =
      `POST /rooms/${room}/messages HTTP/1.1\r\n${host()}Authorization: Bearer ${API_KEY}\r\n` +
      `Content-Length: 5\r\nConnection: close\r\n\r\n{"data":"the rest is ignored"}`;
    expect(rawAnswer(await rawHttp(request))).toEqual(refused(400, "bad_request"));
    // Nothing was published.
    expect(await (await relay.fetch(`/rooms/${room}`, { headers: SERVER_AUTH })).json()).toMatchObject({ seq: 0 });
  });

  it("refuses a Content-Length over the limit with 413 too_large when the body is all there", async () => {
    const request =
      `POST /rooms/${freshRoom()}/messages HTTP/1.1\r\n${host()}Authorization: Bearer ${API_KEY}\r\n` +
      `Content-Length: 100000\r\nConnection: close\r\n\r\n${"x".repeat(100_000)}`;
    expect(rawAnswer(await rawHttp(request))).toEqual(refused(413, "too_large"));
  });

  // The relay throws 413 from the Content-Length header alone, before reading the body. But the
  // local runtime's entry worker (miniflare) only hands the Worker's answer back once the request
  // body has been received; a client that then gives up gets miniflare's own 500 text/plain
  // "Network connection lost" instead of the relay's 413. Asserts the contract, so it is marked
  // it.fails until the local runtime passes the early answer through (then drop the marker).
  it.fails("refuses a Content-Length over the limit with 413 too_large when the body never comes", async () => {
    const request =
      `POST /rooms/${freshRoom()}/messages HTTP/1.1\r\n${host()}Authorization: Bearer ${API_KEY}\r\n` +
      `Content-Length: 100000\r\n\r\n{"data":1}`;
    const response = await rawHttp(request, { halfClose: true, timeoutMs: 3_000 });
    expect(response).not.toBe("no answer");
    // Observed: 500, Content-Type text/plain, body "Error: Network connection lost." with a stack
    // in miniflare's entry.worker.js.
    const { status, headers, body } = response as RawResponse;
    expect({ status, type: headers.get("content-type") }).toEqual({ status: 413, type: "application/json" });
    expect(JSON.parse(body)).toEqual({ error: "too_large", message: expect.any(String) });
  });

  it.each([
    ["PUT", "/rooms/lobby/messages"],
    ["DELETE", "/rooms/lobby"],
    ["PATCH", "/users/alice/messages"],
    ["POST", "/rooms/lobby/ws"],
  ])("answers %s %s with 404 not_found", async (method, path) => {
    expect(await answer(await relay.fetch(path, { method, headers: SERVER_AUTH }))).toEqual(refused(404, "not_found"));
  });

  it("answers a plain GET on the socket routes with 426 upgrade_required", async () => {
    const user = freshUser();
    const jwt = await token({ sub: user });
    expect(await answer(await relay.fetch(`/rooms/${freshRoom()}/ws?token=${jwt}`))).toEqual(refused(426, "upgrade_required"));
    expect(await answer(await relay.fetch(`/users/${user}/ws?token=${jwt}`))).toEqual(refused(426, "upgrade_required"));
  });
});

// =====================================================================================
// 6. Floods
// =====================================================================================

describe("floods", () => {
  it("answers 200 publishes sent at once with exactly one rate_limited error, then closes 1008", async () => {
    const room = freshRoom();
    const flooder = await roomSocket(room);
    const observer = await roomSocket(room);
    await flooder.nextOf("presence");
    for (let i = 0; i < 200; i++) flooder.send({ type: "publish", data: i });
    const { frames, closed } = await framesUntilClose(flooder);
    expect(closed.code).toBe(1008);
    const errors = frames.filter((frame) => (frame as Record<string, unknown>).type === "error");
    expect(errors).toEqual([errorFrame("rate_limited")]);
    const messages = frames.filter((frame) => (frame as Record<string, unknown>).type === "message") as Record<string, any>[];
    // The burst (2x the rate) gets through, in order, and far from all 200 do.
    expect(messages.length).toBeGreaterThanOrEqual(2 * RATE);
    expect(messages.length).toBeLessThan(200);
    // The first 2x RATE frames are the burst; later ones got through only on a token refilled
    // meanwhile, so the accepted frames are the burst and then a strictly increasing few.
    const accepted = messages.map((message) => message.data as number);
    expect(accepted.slice(0, 2 * RATE)).toEqual(Array.from({ length: 2 * RATE }, (_, i) => i));
    expect(accepted).toEqual([...accepted].sort((a, b) => a - b));
    expect(new Set(accepted).size).toBe(accepted.length);
    // The observer saw those messages and then the flooder leave; the room is fine.
    const seen = [];
    for (let i = 0; i < messages.length; i++) seen.push(await observer.json());
    expect(seen).toEqual(messages);
    expect(await observer.json()).toMatchObject({ type: "presence", event: "leave" });
    await expectRoomSocketServes(observer);
    await observer.close();
  });

  it("answers 200 acks sent at once on a user socket with one rate_limited error, then closes 1008", async () => {
    const client = await userSocket();
    for (let i = 0; i < 200; i++) client.send({ type: "ack", seq: i });
    const { frames, closed } = await framesUntilClose(client);
    expect(closed.code).toBe(1008);
    expect(frames).toEqual([errorFrame("rate_limited")]);
  });

  // docs/protocol.md decision 7: binary frames are rate limited like text, or they would be a way around it.
  it("answers 200 binary frames sent at once with one rate_limited error, then closes 1008", async () => {
    const client = await roomSocket();
    for (let i = 0; i < 200; i++) client.send(new Uint8Array([i]));
    const { frames, closed } = await framesUntilClose(client);
    expect(closed.code).toBe(1008);
    // Alone in its room, the flooder is relayed its own binary frames by no one.
    expect(frames).toEqual([errorFrame("rate_limited")]);
  });

  it("answers 200 pings sent at once with 200 pongs and no rate limit", async () => {
    const client = await roomSocket();
    for (let i = 0; i < 200; i++) client.send("ping");
    for (let i = 0; i < 200; i++) expect(await client.next()).toBe("pong");
    await expectRoomSocketServes(client);
    await client.close();
  });

  it.each([["room"], ["user"]])("closes a %s socket 1009 on the third oversized frame within 10 s", async (kind) => {
    const client = kind === "room" ? await roomSocket() : await userSocket();
    const over = "x".repeat(MAX_BYTES + 1);
    for (let i = 0; i < 3; i++) client.send(over);
    const { frames, closed } = await framesUntilClose(client);
    // Two errors, then the third closes without one (docs/protocol.md decision 10).
    expect(frames).toEqual([errorFrame("too_large"), errorFrame("too_large")]);
    expect(closed.code).toBe(1009);
  });
});

// =====================================================================================
// 7. Abrupt disconnects
// =====================================================================================

describe("1,000 abrupt disconnects", () => {
  // 1,000 sockets of 50 users, 20 sockets each. Every user's first socket is announced to the
  // whole room, so with 1,000 distinct users the joins alone are ~500,000 frames (n^2/2):
  // filling the room took 50-65 s here, much of it the test's own clients decoding those frames.
  // 50 users keep the runtime bounded while the room still counts 1,000 sockets and must see
  // every user's last one go.
  it("forgets every socket dropped without a close handshake and announces each user's leave", async () => {
    const room = freshRoom("crowd");
    const count = 1000;
    const batch = 50;
    const users = Array.from({ length: 50 }, (_, i) => `ghost-${i}`);
    const observer = await roomSocket(room, "observer");
    const tokens = await Promise.all(users.map((user) => token({ sub: user, rooms: [room] })));

    const sockets: WebSocket[] = [];
    for (let i = 0; i < count; i += batch) {
      const opened = await Promise.all(
        Array.from({ length: batch }, async (_, j) => {
          const client = await relay.connect(`/rooms/${room}/ws?token=${tokens[(i + j) % users.length]}`);
          expect(await client.json()).toMatchObject({ type: "welcome", room });
          return client.ws as WebSocket;
        }),
      );
      sockets.push(...opened);
    }
    const full = (await (await relay.fetch(`/rooms/${room}`, { headers: SERVER_AUTH })).json()) as Record<string, any>;
    expect(full.connections).toBe(count + 1);
    expect(full.presence).toHaveLength(users.length + 1);
    for (const user of users) expect(full.presence).toContainEqual({ user, connections: count / users.length });

    // No close frame: the TCP connections just go away.
    for (const ws of sockets) ws.terminate();

    // Each user's join, then its leave; bounded by one deadline, not a timing assertion.
    const joins: string[] = [];
    const leaves: string[] = [];
    const deadline = Date.now() + 30_000;
    while (leaves.length < users.length) {
      const frame = await observer.json(Math.max(1, deadline - Date.now()));
      expect(frame).toMatchObject({ type: "presence", room });
      (frame.event === "join" ? joins : leaves).push(frame.user);
    }
    expect(joins.sort()).toEqual([...users].sort());
    expect(leaves.sort()).toEqual([...users].sort());

    await eventually(async () => {
      const info = await (await relay.fetch(`/rooms/${room}`, { headers: SERVER_AUTH })).json();
      expect(info).toMatchObject({ connections: 1, presence: [{ user: "observer", connections: 1 }] });
    });
    // Nothing more for the observer: a pong as the very next frame proves no stray frame was queued.
    observer.send("ping");
    expect(await observer.next()).toBe("pong");
    await observer.close();
    await eventually(async () => {
      const info = await (await relay.fetch(`/rooms/${room}`, { headers: SERVER_AUTH })).json();
      expect(info).toMatchObject({ connections: 0, presence: [] });
    });
  });
});

// =====================================================================================
// 8. A client that never reads
// =====================================================================================

describe("a client that never reads", () => {
  // A relay of its own, taking the default 64 KiB messages: a few hundred make the megabytes
  // that fill the loopback's socket buffers (a few MiB) and then pass MAX_BACKLOG_BYTES (1 MiB
  // by default, docs/protocol.md decision 60).
  let open: Relay;
  beforeAll(async () => {
    open = await startRelay({ vars: { ALLOW_ANONYMOUS: "true" } });
  });
  afterAll(async () => {
    await open?.close();
  });

  it("closes a stalled reader's socket 1013 once it stops catching up, and keeps serving the room and the Worker", async () => {
    const room = freshRoom("stall");
    const { client: stalled } = await open.join(room, "stalled");
    const { client: reader } = await open.join(room, "reader");
    expect(await stalled.json()).toMatchObject({ type: "presence", event: "join", user: "reader" });
    const tcp = (stalled.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    tcp.pause();

    // ~16 MB through the server API: 320 messages of ~48 KB, 8 requests in flight at a time. The
    // payloads are random so that permessage-deflate (which `ws` and the runtime negotiate)
    // cannot shrink them.
    const count = 320;
    const payload = (): string => randomBytes(36_000).toString("base64");
    let sent = 0;
    const publishers = Array.from({ length: 8 }, async () => {
      while (sent < count) {
        sent++;
        const response = await open.fetch(`/rooms/${room}/messages`, { method: "POST", headers: SERVER_AUTH, body: JSON.stringify({ data: payload() }) });
        expect(response.status).toBe(200);
        await response.body?.cancel();
      }
    });
    // The Worker answers while the flood is on.
    expect(await answer(await open.fetch("/healthz"))).toEqual({ status: 200, body: { ok: true } });
    await Promise.all(publishers);

    // The reading client gets every message, in order, and (the relay looks ~6 s after a socket
    // fell behind) hears that the stalled user left: the relay closed its socket.
    const seqs: number[] = [];
    let left = false;
    while (seqs.length < count || !left) {
      const frame = await reader.json(30_000);
      if (frame.type === "message") seqs.push(frame.seq);
      else if (frame.type === "presence" && frame.event === "leave") left = frame.user === "stalled";
    }
    expect(seqs).toEqual(Array.from({ length: count }, (_, i) => i + 1));
    const info = await answer(await open.fetch(`/rooms/${room}`, { headers: SERVER_AUTH }));
    expect(info.body).toMatchObject({ connections: 1, presence: [{ user: "reader", connections: 1 }] });
    // Another client can still join and talk; its message is one the closed socket never gets.
    const { client: late } = await open.join(room, "late");
    late.send({ type: "publish", data: { probe: "late" }, id: "late-1" });
    expect(await late.json()).toMatchObject({ type: "message", seq: count + 1, id: "late-1", data: { probe: "late" } });
    // The reader, which took the whole burst as it came, is still served.
    expect(await reader.nextOf("message")).toMatchObject({ seq: count + 1 });

    // Reading again, the stalled client gets what was sent before the close (here the whole
    // flood, which went out before the relay's look), in order, and then the close: 1013 ("try
    // again later"), on which a client reconnects and resumes. Nothing sent after it.
    tcp.resume();
    const stalledSeqs: number[] = [];
    const closed = stalled.closed.then((close) => ({ close }));
    for (;;) {
      const next = await Promise.race([stalled.json(30_000).then((frame) => ({ frame })), closed]);
      if ("close" in next) {
        expect(next.close).toMatchObject({ code: 1013, reason: expect.stringMatching(/^too slow: \d+ bytes sent and not read$/) });
        break;
      }
      if (next.frame.type === "message") stalledSeqs.push(next.frame.seq);
    }
    expect(stalledSeqs).toEqual(seqs.slice(0, stalledSeqs.length));
    await Promise.all([reader.close(), late.close()]);
  });
});

describe("event stream readers that leave", () => {
  it("serves a reader that reconnects to a room at MAX_STREAMS_PER_ROOM once its old stream is gone", async () => {
    const room = freshRoom("streams");
    const jwt = await token({ sub: freshUser() });
    const open = async () => {
      const controller = new AbortController();
      const response = await relay.fetch(`/rooms/${room}/events?token=${jwt}`, { signal: controller.signal });
      return { response, controller };
    };
    const readers = [await open(), await open()];
    for (const { response } of readers) expect(response.status).toBe(200);
    const full = await open();
    expect(await answer(full.response)).toEqual(refused(503, "room_full"));
    // The first reader goes away (a page reload, a dropped network) in a room where nothing is
    // published: no write has noticed yet that its connection is gone.
    readers[0]!.controller.abort();
    const back = await open();
    expect(back.response.status).toBe(200);
    for (const { controller } of [readers[1]!, back]) controller.abort();
  });
});
