// Nothing acknowledged is lost when the runtime dies in the middle of a batch: a room flooded by
// server publishes and a socket, and an inbox flooded by server directs and a socket, all sharing
// write batches, lose their workerd to SIGKILL while writes are in flight. After a restart on the
// same storage, every write answered before the stop is there at the seq it was answered with,
// seqs run on with no hole, and resume and replay hand a client everything (docs/design.md "The
// path of a message"; docs/protocol.md "Delivery guarantees (rooms)" and "Direct messages").
import { readdirSync, readFileSync, readlinkSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TestClient } from "../support/client";
import { freshRoom, Relay, SERVER_AUTH, startPersistentRelay, tempDir } from "./relay";

/** Writes of each kind in the flood; together they fill several batches of each object. */
const ROOM_POSTS = 300;
const ROOM_FRAMES = 300;
const DIRECT_POSTS = 200;
const DIRECT_FRAMES = 200;
const ALL_WRITES = ROOM_POSTS + ROOM_FRAMES + DIRECT_POSTS + DIRECT_FRAMES;
/** The flood is sent in this many waves, this far apart, so every kind keeps arriving with the others. */
const WAVES = 30;
const WAVE_GAP_MS = 10;
/**
 * The runtime is killed once every kind of write has been answered and this many writes in all:
 * well into the flood, with hundreds still in flight (HTTP answers come in bursts, so waiting for
 * more of them would often find the flood over).
 */
const STOP_AFTER = Math.floor(ALL_WRITES / 4);
/** Pages of history read after the restart (fewer than the messages, so paging is exercised). */
const PAGE = 250;

const OPTIONS = {
  vars: {
    ALLOW_ANONYMOUS: "true",
    // The two sockets send hundreds of frames at once; none may be dropped by the rate limit.
    RATE_LIMIT_PER_SECOND: "1000000",
    // Room history and the inbox hold the whole flood, so every answered write can be looked up.
    HISTORY_LIMIT: "100000",
    INBOX_MAX_MESSAGES: "100000",
  },
};

const room = freshRoom("batch");
const recipient = freshRoom("inbox");
const PUBLISHER = "publisher";
const SENDER = freshRoom("sender");
const POST_JSON = { ...SERVER_AUTH, "Content-Type": "application/json" };

/** A room write answered before the stop: its seq, and the frame that proves it (echo) or its data. */
interface RoomAck {
  seq: number;
  from: string;
  data: unknown;
  /** The socket's echo, exactly as history must hold it; absent for server publishes. */
  echo?: Record<string, any>;
}

/** A direct answered before the stop. */
interface DirectAck {
  seq: number;
  from: string;
  data: unknown;
  id?: string;
  /** "queued": the recipient has no socket until after the restart. */
  status: string;
}

let storage: Awaited<ReturnType<typeof tempDir>>;
// Each runtime is recorded as soon as it runs, so afterAll stops whichever a failure left behind.
const relays: Relay[] = [];
let relay: Relay;
const roomAcks: RoomAck[] = [];
const directAcks: DirectAck[] = [];
/** The room's epoch and the last seq the publisher saw before the stop. */
let epoch: string;
let lastSeen = 0;

/** Parses every JSON text frame `client` receives, alongside its own queue. */
function onFrame(client: TestClient, handle: (frame: Record<string, any>) => void): void {
  client.ws.addEventListener("message", (event) => {
    if (typeof event.data !== "string") return;
    try {
      handle(JSON.parse(event.data));
    } catch {
      // `pong` and other non-JSON text.
    }
  });
}

/**
 * The workerd process serving `persistDir`: a child of this process with a file open under that
 * directory (the wrangler proxy in front of it, also a workerd, opens none). Linux only; undefined
 * where /proc cannot tell.
 */
function runtimePid(persistDir: string): number | undefined {
  const root = `${realpathSync(persistDir)}/`;
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((name) => /^\d+$/.test(name));
  } catch {
    return undefined;
  }
  const found = pids.filter((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      // Fields after the command name, which is in parentheses: state, then the parent's pid.
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) !== process.pid) return false;
      return readdirSync(`/proc/${pid}/fd`).some((fd) => {
        try {
          return readlinkSync(join(`/proc/${pid}/fd`, fd)).startsWith(root);
        } catch {
          return false;
        }
      });
    } catch {
      return false; // gone meanwhile
    }
  });
  return found.length === 1 ? Number(found[0]) : undefined;
}

/** Every retained message of the room, page by page. */
async function history(relay: Relay): Promise<Record<string, any>[]> {
  const messages: Record<string, any>[] = [];
  for (;;) {
    const since = messages.at(-1)?.seq ?? 0;
    const res = await relay.fetch(`/rooms/${room}/messages?since=${since}&limit=${PAGE}`, { headers: SERVER_AUTH });
    expect(res.status).toBe(200);
    const page = ((await res.json()) as { messages: Record<string, any>[] }).messages;
    if (page.length === 0) return messages;
    messages.push(...page);
  }
}

/** 1, 2, ... n. */
const upTo = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);

beforeAll(async () => {
  storage = await tempDir();
  const first = await startPersistentRelay(storage.path, OPTIONS);
  relays.push(first);

  const { client: publisher, welcome } = await first.join(room, PUBLISHER);
  epoch = welcome.epoch;
  const sender = await first.connect(`/users/${SENDER}/ws?user=${SENDER}`);
  expect(await sender.json()).toMatchObject({ type: "welcome", user: SENDER });
  // Looked up now that the room's and the inboxes' objects have opened their storage.
  const pid = runtimePid(storage.path);
  if (process.platform === "linux") expect(pid, "the workerd process of the first runtime").toBeDefined();

  /** Answers so far, by kind of write. */
  const answered = { roomPosts: 0, roomFrames: 0, directPosts: 0, directFrames: 0 };
  let sent = 0;
  let stopping: Promise<void> | undefined;
  let stopped!: () => void;
  const stop = new Promise<void>((resolve) => (stopped = resolve));
  const kill = (): void => {
    if (stopping) return;
    // As abrupt as it gets: workerd dies between two instructions, whatever batch is pending or
    // committing. The harness's dispose then only tidies up (where there is no pid, it is the stop).
    if (pid !== undefined) process.kill(pid, "SIGKILL");
    stopping = first.close();
    stopped();
  };
  const answer = (kind: keyof typeof answered): void => {
    answered[kind]++;
    const counts = Object.values(answered);
    if (counts.every((count) => count > 0) && counts.reduce((a, b) => a + b) >= STOP_AFTER) kill();
  };

  onFrame(publisher, (frame) => {
    if (frame.type !== "message" || frame.from !== PUBLISHER) return;
    roomAcks.push({ seq: frame.seq, from: PUBLISHER, data: frame.data, echo: frame });
    lastSeen = Math.max(lastSeen, frame.seq);
    answer("roomFrames");
  });
  onFrame(sender, (frame) => {
    if (frame.type !== "ack") return;
    const i = Number(String(frame.id).slice(1));
    directAcks.push({ seq: frame.seq, from: SENDER, data: { via: "socket", i }, id: frame.id, status: frame.status });
    answer("directFrames");
  });

  const posts: Promise<void>[] = [];
  const post = (path: string, body: object, record: (answer: Record<string, any>) => void): void => {
    sent++;
    const posted = (async () => {
      try {
        const res = await first.fetch(path, { method: "POST", headers: POST_JSON, body: JSON.stringify(body) });
        // Anything but 200 (the proxy's 503 once the runtime is gone) is not an acknowledgement.
        if (res.status === 200) record((await res.json()) as Record<string, any>);
      } catch {
        // The connection died with the runtime: not acknowledged.
      }
    })();
    posts.push(posted);
  };

  // Waves of all four kinds: the HTTP writes of a wave are concurrent, its frames go out back to
  // back, and each wave lands while the ones before are still being stored, so the writes of
  // every kind share batches all along.
  const slice = (total: number, wave: number): number[] => {
    const [from, to] = [Math.floor((total * wave) / WAVES), Math.floor((total * (wave + 1)) / WAVES)];
    return Array.from({ length: to - from }, (_, k) => from + k);
  };
  // Should the flood end below the threshold (every write of a kind refused, say), stop anyway.
  const deadline = setTimeout(kill, 20_000);
  for (let wave = 0; wave < WAVES && !stopping; wave++) {
    for (const i of slice(ROOM_POSTS, wave)) {
      const data = { via: "post", i };
      post(`/rooms/${room}/messages`, { data, from: "poster" }, ({ seq }) => {
        roomAcks.push({ seq, from: "poster", data });
        answer("roomPosts");
      });
    }
    for (const i of slice(DIRECT_POSTS, wave)) {
      const data = { via: "post", i };
      post(`/users/${recipient}/messages`, { data, from: "billing" }, ({ status, seq }) => {
        directAcks.push({ seq, from: "billing", data, status });
        answer("directPosts");
      });
    }
    for (const i of slice(ROOM_FRAMES, wave)) publisher.send({ type: "publish", data: { via: "socket", i }, id: `p${i}` });
    for (const i of slice(DIRECT_FRAMES, wave)) sender.send({ type: "direct", to: recipient, data: { via: "socket", i }, id: `d${i}` });
    sent += slice(ROOM_FRAMES, wave).length + slice(DIRECT_FRAMES, wave).length;
    await new Promise((resolve) => setTimeout(resolve, WAVE_GAP_MS));
  }

  await stop;
  clearTimeout(deadline);
  await stopping;
  relays.length = 0;
  // Every answer the clients will ever see is in: the requests settled, the sockets closed.
  await Promise.allSettled(posts);
  await Promise.all([publisher.closed, sender.closed]);
  const acknowledged = roomAcks.length + directAcks.length;
  console.info(
    `restart-batch: ${pid === undefined ? "disposed" : "SIGKILLed"} the runtime after ${sent} of ${ALL_WRITES} writes were sent; ` +
      `${acknowledged} acknowledged (room ${answered.roomPosts} posts + ${answered.roomFrames} frames, ` +
      `directs ${answered.directPosts} posts + ${answered.directFrames} frames), ${sent - acknowledged} in flight`,
  );
  expect(acknowledged).toBeGreaterThan(0);

  relay = await startPersistentRelay(storage.path, OPTIONS);
  relays.push(relay);
}, 120_000);

afterAll(async () => {
  for (const running of relays) await running.close();
  await storage?.remove();
}, 60_000);

describe("after the runtime died in the middle of a flood of batched writes", () => {
  it("keeps the room's epoch, and its seqs run 1..N with no hole", { timeout: 30_000 }, async () => {
    const info = (await (await relay.fetch(`/rooms/${room}`, { headers: SERVER_AUTH })).json()) as Record<string, any>;
    expect(info).toMatchObject({ room, epoch });
    const messages = await history(relay);
    expect(messages.map((message) => message.seq)).toEqual(upTo(info.seq));
    // Nothing stored is anything but one of the writes sent.
    for (const message of messages) {
      expect(["poster", PUBLISHER]).toContain(message.from);
      expect(message.data).toMatchObject({ via: message.from === PUBLISHER ? "socket" : "post" });
    }
  });

  it("holds every acknowledged room message at the seq it was answered with, with its data", { timeout: 30_000 }, async () => {
    const messages = await history(relay);
    const bySeq = new Map(messages.map((message) => [message.seq, message]));
    expect(new Set(roomAcks.map((ack) => ack.seq)).size).toBe(roomAcks.length);
    for (const ack of roomAcks) {
      const stored = bySeq.get(ack.seq);
      if (ack.echo) expect(stored).toEqual(ack.echo);
      else expect(stored).toMatchObject({ type: "message", room, seq: ack.seq, from: ack.from, data: ack.data });
    }
    expect(messages.length).toBeGreaterThanOrEqual(Math.max(0, ...roomAcks.map((ack) => ack.seq)));
  });

  it("resumes clients from 0 and from before the stop with no gap, then numbers the next message N + 1", { timeout: 30_000 }, async () => {
    const messages = await history(relay);
    const n = messages.length;
    const fromZero = await relay.join(room, "late", `&since=0&epoch=${epoch}`);
    expect(fromZero.welcome).toMatchObject({ seq: n, epoch, recovered: true });
    const fromBefore = await relay.join(room, "back", `&since=${lastSeen}&epoch=${epoch}`);
    expect(fromBefore.welcome).toMatchObject({ seq: n, epoch, recovered: true });
    for (const message of messages) expect(await fromZero.client.nextOf("message")).toEqual(message);
    for (const message of messages.slice(lastSeen)) expect(await fromBefore.client.nextOf("message")).toEqual(message);

    const res = await relay.fetch(`/rooms/${room}/messages`, {
      method: "POST",
      headers: POST_JSON,
      body: JSON.stringify({ data: "after the restart" }),
    });
    expect(await res.json()).toEqual({ seq: n + 1 });
    // Live, right after the replay: both clients see it next.
    for (const { client } of [fromZero, fromBefore]) {
      expect(await client.nextOf("message")).toMatchObject({ seq: n + 1, from: "server", data: "after the restart" });
      await client.close();
    }
  });

  it("answers a direct to the sender, whose socket died with the runtime, as queued: its inbox recounts its hubs", { timeout: 30_000 }, async () => {
    const res = await relay.fetch(`/users/${SENDER}/messages`, { method: "POST", headers: POST_JSON, body: JSON.stringify({ data: "after" }) });
    expect(await res.json()).toMatchObject({ status: "queued" });
  });

  it("replays every acknowledged direct to the recipient, seqs 1..M in order, none lost", { timeout: 30_000 }, async () => {
    expect(directAcks.every((ack) => ack.status === "queued")).toBe(true);
    expect(new Set(directAcks.map((ack) => ack.seq)).size).toBe(directAcks.length);
    const inbox = await relay.connect(`/users/${recipient}/ws?user=${recipient}`);
    const welcome = await inbox.json();
    expect(welcome).toMatchObject({ type: "welcome", user: recipient });
    const m: number = welcome.seq;
    // Nothing was ever acknowledged by the recipient, so the inbox holds every direct it stored.
    const replayed: Record<string, any>[] = [];
    for (let i = 0; i < m; i++) replayed.push(await inbox.json());
    expect(replayed.map((direct) => [direct.type, direct.seq])).toEqual(upTo(m).map((seq) => ["direct", seq]));
    const bySeq = new Map(replayed.map((direct) => [direct.seq, direct]));
    for (const ack of directAcks) {
      expect(bySeq.get(ack.seq)).toEqual({
        type: "direct",
        seq: ack.seq,
        from: ack.from,
        data: ack.data,
        ...(ack.id !== undefined && { id: ack.id }),
        ts: expect.any(Number),
      });
    }
    // The replay was all: a ping sent now is answered before anything else.
    inbox.send("ping");
    expect(await inbox.next()).toBe("pong");

    const res = await relay.fetch(`/users/${recipient}/messages`, {
      method: "POST",
      headers: POST_JSON,
      body: JSON.stringify({ data: "after the restart" }),
    });
    expect(await res.json()).toEqual({ status: "delivered", seq: m + 1 });
    expect(await inbox.json()).toMatchObject({ type: "direct", seq: m + 1, data: "after the restart" });
    await inbox.close();
  });
});
