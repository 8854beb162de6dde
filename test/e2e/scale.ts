// Helpers for rooms past one object: many sockets of one room (room sockets and user sockets
// subscribed to it), each recording everything it receives across reconnects, so a test can ask
// what every client observed.
import { expect } from "vitest";
import type { Closed, Received, TestClient } from "../support/client";
import { type Relay, SERVER_AUTH } from "./relay";

export type Frame = Record<string, any>;

/** How long a test waits for something the relay owes before it fails (a busy 2-core machine). */
export const PATIENCE_MS = 60_000;

interface Waiter {
  done: () => boolean;
  resolve: () => void;
}

/**
 * One client of a room: a room socket (`/rooms/:room/ws`) or a user socket (`/users/:user/ws`)
 * subscribed to the room. It keeps every frame of the room it received, in order, across all
 * of its connections; with `resume` set it reconnects by itself whenever the relay closes it,
 * resuming from the last seq it saw (room sockets: `?since=&epoch=`, user sockets: subscribe
 * with `since` and `epoch`).
 */
export class Member {
  readonly relay: Relay;
  readonly room: string;
  readonly user: string;
  readonly kind: "room" | "user";
  client!: TestClient;
  /** The room's epoch, from the last welcome or subscribed frame. */
  epoch?: string;
  /** The seq of the last room message received, or of the first greeting before any message. */
  last = 0;
  /** Each message seq received, in arrival order, across connections. */
  readonly seqs: number[] = [];
  /** The first message frame received for each seq. */
  readonly messages = new Map<number, Frame>();
  /** Welcome frames (room sockets) or subscribed frames (user sockets), one per connection. */
  readonly greetings: Frame[] = [];
  /** Presence frames of the room. */
  readonly presence: Frame[] = [];
  /** The room's number of users as this client last heard it: its greeting's `users`, then each join, leave or count frame. */
  users?: number;
  /** Every other JSON frame (errors, acks, unsubscribed, the user socket's own welcome). */
  readonly others: Frame[] = [];
  /** Each close the relay (or the test) caused, in order. */
  readonly closes: Closed[] = [];
  /** Reconnect when the relay closes this socket. */
  resume = false;
  /** Failed reconnect attempts, for the failure message. */
  readonly reconnectErrors: string[] = [];
  #waiters: Waiter[] = [];
  #ping?: ReturnType<typeof setInterval>;
  #pingEveryMs?: number;
  #closing = false;
  #reconnecting?: Promise<void>;
  #nextId = 0;

  constructor(relay: Relay, room: string, user: string, kind: "room" | "user") {
    this.relay = relay;
    this.room = room;
    this.user = user;
    this.kind = kind;
  }

  /** Opens the socket (and subscribes, for a user socket); answers its welcome or subscribed frame. */
  async open(resumeFrom?: { since: number; epoch: string }): Promise<Frame> {
    const greetings = this.greetings.length;
    if (this.kind === "room") {
      const query = resumeFrom ? `&since=${resumeFrom.since}&epoch=${resumeFrom.epoch}` : "";
      this.#attach(await this.relay.connect(`/rooms/${this.room}/ws?user=${this.user}${query}`));
    } else {
      const others = this.others.length;
      this.#attach(await this.relay.connect(`/users/${this.user}/ws`));
      await this.until(() => this.others.slice(others).some((frame) => frame.type === "welcome"), "its user socket's welcome");
      this.client.send({ type: "subscribe", room: this.room, id: this.#id("sub"), ...resumeFrom });
    }
    await this.until(() => this.greetings.length > greetings || this.#closedNow(), "its welcome or subscribed frame");
    if (this.greetings.length === greetings) throw new Error(`${this.user} was closed before its greeting: ${JSON.stringify(this.closes.at(-1))}`);
    return this.greetings.at(-1)!;
  }

  #id(prefix: string): string {
    return `${prefix}-${this.user}-${this.#nextId++}`;
  }

  #connected = 0;
  #closedConnections = 0;
  #closedNow(): boolean {
    return this.#closedConnections >= this.#connected;
  }

  /** Takes over a fresh client: the frames it already queued, then every later one. */
  #attach(client: TestClient): void {
    this.client = client;
    this.#connected++;
    const early = [...client.pending];
    client.ws.addEventListener("message", (event) => this.#frame(decode(event.data)));
    for (const frame of early) this.#frame(frame);
    this.#startPinging();
    void client.closed.then((closed) => this.#closed(client, closed));
  }

  #frame(frame: Received): void {
    if (typeof frame !== "object" || frame instanceof Uint8Array) return; // "pong"
    const room = frame.room === this.room;
    if (frame.type === "message" && room) {
      this.seqs.push(frame.seq);
      if (!this.messages.has(frame.seq)) this.messages.set(frame.seq, frame);
      this.last = frame.seq;
    } else if (frame.type === "presence" && room) {
      this.presence.push(frame);
      if (frame.event === "count") this.users = frame.users;
      else if (this.users !== undefined) this.users += frame.event === "join" ? 1 : frame.event === "leave" ? -1 : 0;
    } else if ((this.kind === "room" && frame.type === "welcome") || (frame.type === "subscribed" && room)) {
      // The first greeting sets the starting point; later ones resume from `last`.
      if (this.greetings.length === 0) this.last = frame.seq;
      this.greetings.push(frame);
      this.epoch = frame.epoch;
      this.users = frame.users;
    } else {
      this.others.push(frame);
    }
    this.#wake();
  }

  #closed(client: TestClient, closed: Closed): void {
    this.#closedConnections++;
    this.closes.push(closed);
    if (client === this.client) this.#stopPinging();
    this.#wake();
    if (this.resume && !this.#closing && client === this.client) this.#reconnecting = this.#reconnect();
  }

  /** Reconnects until the relay takes the socket again, resuming from the last seq seen. */
  async #reconnect(): Promise<void> {
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        await this.open({ since: this.last, epoch: this.epoch! });
        return;
      } catch (error) {
        this.reconnectErrors.push(String(error));
        if (this.#closing) return;
        await sleep(200 + 100 * attempt);
      }
    }
  }

  /** Resolves once `done()` holds; fails after `timeoutMs` naming what was awaited. */
  until(done: () => boolean, what: string, timeoutMs = PATIENCE_MS): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        done,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(new Error(`${this.kind} socket of ${this.user}: no ${what} within ${timeoutMs} ms (${this.describe()})`));
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) {
      if (waiter.done()) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  }

  /** Resolves once message `seq` (or a later one) arrived. */
  reach(seq: number, timeoutMs?: number): Promise<void> {
    return this.until(() => this.last >= seq, `message ${seq}`, timeoutMs);
  }

  /** The seqs received after the first greeting's seq: gapless and without repeats when all is well. */
  get firstSeq(): number {
    return this.greetings[0]?.seq ?? 0;
  }

  /** Whether the current connection is open and greeted, so a publish can go out on it. */
  get ready(): boolean {
    return this.greetings.length >= this.#connected && !this.#closedNow();
  }

  /**
   * Publishes `data` and answers its seq: the echo on a room socket, the ack on a user socket.
   * Throws when the relay refuses it or the connection closes before the answer.
   */
  async publish(data: unknown): Promise<number> {
    const id = this.#id("pub");
    const connection = this.#connected;
    const gone = () => this.#closedConnections >= connection;
    const answer = () =>
      this.kind === "room"
        ? ([...this.messages.values()].find((frame) => frame.id === id) ?? this.#error(id))
        : this.others.find((frame) => frame.id === id);
    this.client.send(this.kind === "room" ? { type: "publish", data, id } : { type: "publish", room: this.room, data, id });
    await this.until(() => answer() !== undefined || gone(), `answer to ${id}`);
    const frame = answer();
    if (frame === undefined) throw new Error(`publish ${id}: connection closed before its answer`);
    if (frame.type === "message" || frame.type === "ack") return frame.seq;
    throw new Error(`publish ${id} refused: ${JSON.stringify(frame)}`);
  }

  /** Publishes until acknowledged, waiting for reconnects in between; answers the seq and the failed tries. */
  async publishUntilAcked(data: unknown): Promise<{ seq: number; failures: string[] }> {
    const failures: string[] = [];
    for (;;) {
      await this.until(() => this.ready, "an open connection to publish on");
      try {
        return { seq: await this.publish(data), failures };
      } catch (error) {
        failures.push(String(error));
        if (failures.length > 50) throw new Error(`never acknowledged: ${failures.slice(-3).join("; ")}`);
        await sleep(100);
      }
    }
  }

  #error(id: string): Frame | undefined {
    return this.others.find((frame) => frame.type === "error" && frame.id === id);
  }

  /** Unsubscribes a user socket and answers the `unsubscribed` frame. */
  async unsubscribe(): Promise<Frame> {
    const id = this.#id("unsub");
    this.client.send({ type: "unsubscribe", room: this.room, id });
    await this.until(() => this.others.some((frame) => frame.id === id), `unsubscribed ${id}`);
    return this.others.find((frame) => frame.id === id)!;
  }

  /** Pings every `ms` from now on, on this and later connections, as a well-behaved client does. */
  keepAlive(ms: number): void {
    this.#pingEveryMs = ms;
    this.#startPinging();
  }

  /** Stops pinging: the relay will time this socket out. */
  silence(): void {
    this.#pingEveryMs = undefined;
    this.#stopPinging();
  }

  #startPinging(): void {
    this.#stopPinging();
    if (this.#pingEveryMs === undefined || this.client === undefined) return;
    const client = this.client;
    this.#ping = setInterval(() => {
      if (client.ws.readyState === 1) client.send("ping");
    }, this.#pingEveryMs);
  }

  #stopPinging(): void {
    clearInterval(this.#ping);
    this.#ping = undefined;
  }

  /** Closes the socket from the client side, with no reconnect. */
  async close(): Promise<Closed> {
    this.#closing = true;
    this.#stopPinging();
    await this.#reconnecting;
    return this.client.close();
  }

  /** Drops the socket from the client side without a reconnect of its own. */
  async drop(): Promise<void> {
    const resume = this.resume;
    this.resume = false;
    this.#stopPinging();
    await this.client.close();
    this.resume = resume;
  }

  /** Drops the TCP connection at once, as a lost network or a crashed client would (no reconnect). */
  terminate(): void {
    this.resume = false;
    this.#stopPinging();
    (this.client.ws as unknown as { terminate(): void }).terminate();
  }

  /** The first place its seqs stop being one after the other, or undefined when they never do. */
  gap(): string | undefined {
    let expected = this.firstSeq + 1;
    for (const [i, seq] of this.seqs.entries()) {
      if (seq !== expected) return `at index ${i}: seq ${seq} where ${expected} was due`;
      expected++;
    }
    return undefined;
  }

  describe(): string {
    return JSON.stringify({
      user: this.user,
      kind: this.kind,
      last: this.last,
      received: this.seqs.length,
      gap: this.gap(),
      greetings: this.greetings.map(({ seq, recovered, users }) => ({ seq, recovered, users })),
      closes: this.closes,
      reconnectErrors: this.reconnectErrors.slice(-3),
      others: this.others.slice(-3),
    });
  }
}

function decode(data: unknown): Received {
  if (typeof data !== "string") return new Uint8Array();
  try {
    const parsed = JSON.parse(data);
    return typeof parsed === "object" && parsed !== null ? parsed : data;
  } catch {
    return data;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs `fn` on every item, at most `size` at a time, batch after batch (so batch k finishes before k+1 starts). */
export async function inBatches<T, R>(items: readonly T[], size: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (let start = 0; start < items.length; start += size) {
    results.push(...(await Promise.all(items.slice(start, start + size).map((item, i) => fn(item, start + i)))));
  }
  return results;
}

/** Retries `check` until it passes; its last failure is the test's. */
export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = PATIENCE_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(250);
    }
  }
}

/** GET /rooms/:room. */
export async function roomInfo(relay: Relay, room: string): Promise<Frame> {
  const res = await relay.fetch(`/rooms/${room}`, { headers: SERVER_AUTH });
  expect(res.status).toBe(200);
  return (await res.json()) as Frame;
}

/** Every page of GET /rooms/:room/presence, `limit` users a page. */
export async function presencePages(relay: Relay, room: string, limit: number): Promise<Frame[]> {
  const pages: Frame[] = [];
  let after: string | undefined;
  for (;;) {
    const query = new URLSearchParams({ limit: String(limit), ...(after !== undefined && { after }) });
    const res = await relay.fetch(`/rooms/${room}/presence?${query}`, { headers: SERVER_AUTH });
    expect(res.status).toBe(200);
    const page = (await res.json()) as Frame;
    pages.push(page);
    if (page.next === undefined) return pages;
    if (pages.length > 1_000) throw new Error("presence pages never end");
    after = page.next;
  }
}

/** POST /rooms/:room/messages: answers the status and body. */
export async function serverPublish(relay: Relay, room: string, data: unknown): Promise<{ status: number; body: Frame | string }> {
  const res = await relay.fetch(`/rooms/${room}/messages`, {
    method: "POST",
    headers: { ...SERVER_AUTH, "Content-Type": "application/json" },
    body: JSON.stringify({ data }),
  });
  const text = await res.text();
  let body: Frame | string = text;
  try {
    body = JSON.parse(text) as Frame;
  } catch {
    // Not JSON: kept as text for the failure message.
  }
  return { status: res.status, body };
}

/**
 * Opens a room of `roomSockets` room sockets (users `<prefix>r000`...) in batches of
 * `perObject`, so batch k lands on object k (the Room, then shard #1, #2...), and
 * `userSockets` user sockets (users `<prefix>u00`...) subscribed to it, `perObject` at a time.
 */
export async function populate(
  relay: Relay,
  room: string,
  {
    roomSockets,
    userSockets,
    perObject,
    prefix,
    pingEveryMs,
  }: { roomSockets: number; userSockets: number; perObject: number; prefix: string; pingEveryMs?: number },
): Promise<{ rooms: Member[]; users: Member[]; all: Member[] }> {
  const rooms = Array.from({ length: roomSockets }, (_, i) => new Member(relay, room, `${prefix}r${String(i).padStart(3, "0")}`, "room"));
  const users = Array.from({ length: userSockets }, (_, i) => new Member(relay, room, `${prefix}u${String(i).padStart(2, "0")}`, "user"));
  const open = async (member: Member) => {
    if (pingEveryMs !== undefined) member.keepAlive(pingEveryMs);
    await member.open();
  };
  await inBatches(rooms, perObject, open);
  await inBatches(users, perObject, open);
  return { rooms, users, all: [...rooms, ...users] };
}
