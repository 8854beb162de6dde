// The rooms a client follows: where each was left (last seq seen and its epoch: the resume point),
// a user socket's subscriptions with the promises waiting on them, and the replays that outgoing
// frames wait for after a reconnect (our own unconfirmed messages may be among them).
import type { ErrorFrame, ResumePoint, SubscribedFrame, SubscribeFrame, UnsubscribeFrame } from "../src/protocol/frames";
import { RelayError } from "./errors";
import { newId } from "./id";
import type { Pace } from "./pace";
import type { Settle } from "./queue";
import type { ResumeState } from "./types";

interface Room {
  seq?: number;
  epoch?: string;
  /** A user socket wants this room: it subscribes on every connection. */
  wanted: boolean;
  /** A subscribe waits for its turn (see pace.ts). */
  queued?: boolean;
  /** The id of the subscribe in flight on this connection, and the seq it resumes after. */
  asking?: string;
  askedSince?: number;
  /** The subscription as answered on this connection. */
  answer?: SubscribedFrame;
  waiters: Settle[];
  leaving: Settle[];
}

/** A promise whose rejection, if nobody awaits it, is told by an event instead of going unhandled. */
function waiting<R>(list: Settle[]): Promise<R> {
  const promise = new Promise<R>((resolve, reject) => list.push({ resolve, reject }));
  promise.catch(() => {});
  return promise;
}

export class Rooms {
  readonly #rooms = new Map<string, Room>();
  /** Per room, the seq a replay must reach before frames go out again (Infinity: not answered yet). */
  readonly #holds = new Map<string, number>();
  readonly #send: (frame: SubscribeFrame | UnsubscribeFrame) => boolean;
  readonly #released: () => void;
  readonly #pace: Pace;
  /** Rooms whose subscribe waits for its turn, and the timer of that turn. */
  #queue: string[] = [];
  #timer?: ReturnType<typeof setTimeout>;

  /** `send` writes a frame if the connection is up; `released` runs when the last replay is done. */
  constructor(send: (frame: SubscribeFrame | UnsubscribeFrame) => boolean, released: () => void, pace: Pace) {
    this.#send = send;
    this.#released = released;
    this.#pace = pace;
  }

  // ---- resume points ----

  seed(state: ResumeState | undefined): void {
    for (const [room, point] of Object.entries(state ?? {})) this.setPoint(room, point);
  }

  setPoint(room: string, { since, epoch }: ResumePoint): void {
    const entry = this.#entry(room);
    entry.seq = since;
    entry.epoch = epoch;
  }

  point(room: string): ResumePoint {
    const entry = this.#rooms.get(room);
    return { ...(entry?.seq !== undefined && { since: entry.seq }), ...(entry?.epoch !== undefined && { epoch: entry.epoch }) };
  }

  get resumeState(): ResumeState {
    const state: ResumeState = {};
    for (const room of this.#rooms.keys()) {
      const point = this.point(room);
      if (point.since !== undefined) state[room] = point;
    }
    return state;
  }

  /**
   * A welcome or `subscribed` frame: where the room's numbering goes on. A resume that worked
   * replays from our seq; anything else (a first join, a lost history, a new epoch) starts from
   * the room's seq now.
   */
  joined(room: string, frame: { seq: number; epoch: string; recovered?: boolean }, since: number | undefined): void {
    const entry = this.#entry(room);
    if (frame.recovered !== true) entry.seq = frame.seq;
    entry.epoch = frame.epoch;
    if (frame.recovered === true && since !== undefined && frame.seq > since) this.#holds.set(room, frame.seq);
    else this.#release(room);
  }

  /** Whether the app left `room` and its `unsubscribed` answer is still on its way: its frames are not shown. */
  leaving(room: string): boolean {
    const entry = this.#rooms.get(room);
    return entry !== undefined && !entry.wanted && entry.leaving.length > 0;
  }

  /** A message of `room`: false when it was seen already (seqs only grow within an epoch). */
  advance(room: string, seq: number): boolean {
    const entry = this.#rooms.get(room);
    if (!entry) return true;
    if (entry.seq !== undefined && seq <= entry.seq) return false;
    entry.seq = seq;
    if (seq >= (this.#holds.get(room) ?? Infinity)) this.#release(room);
    return true;
  }

  /** Whether outgoing frames wait for a replay. */
  get holding(): boolean {
    return this.#holds.size > 0;
  }

  #release(room: string): void {
    if (this.#holds.delete(room) && this.#holds.size === 0) this.#released();
  }

  // ---- subscriptions (user sockets) ----

  /** Subscribes now if connected, else on the next connection; resolves with the answer. */
  subscribe(room: string, resume: ResumePoint = {}): Promise<SubscribedFrame> {
    const entry = this.#entry(room);
    const again = resume.since !== undefined;
    if (again) this.setPoint(room, resume);
    entry.wanted = true;
    if (entry.answer && !again) return Promise.resolve(entry.answer);
    const promise = waiting<SubscribedFrame>(entry.waiters);
    if (entry.asking === undefined || again) this.#ask(room);
    return promise;
  }

  /** Leaves `room` and forgets where it was; resolves when the relay confirmed (or at once offline). */
  unsubscribe(room: string): Promise<void> {
    const entry = this.#rooms.get(room);
    if (entry?.wanted === false && entry.leaving.length > 0) return waiting<void>(entry.leaving); // on its way out
    this.#rooms.delete(room);
    if (!entry?.wanted) return Promise.resolve();
    this.#release(room);
    for (const waiter of entry.waiters) waiter.reject(new RelayError("unsubscribed", `unsubscribed from ${room} before it was answered`));
    if (!this.#send({ type: "unsubscribe", room, id: newId() })) return Promise.resolve();
    // Kept aside, so the `unsubscribed` answer still finds it.
    this.#rooms.set(room, { wanted: false, waiters: [], leaving: [] });
    return waiting<void>(this.#rooms.get(room)!.leaving);
  }

  /** A new connection: subscribe again to every room wanted, resuming where each was left. */
  resubscribe(): void {
    for (const [room, entry] of this.#rooms) {
      if (!entry.wanted) continue;
      this.#holds.set(room, Infinity);
      this.#ask(room);
    }
  }

  /**
   * The relay's answer: `stands` for a subscription we want, `stale` for one being left or
   * replaced by a later request (its answer follows), `stray` for a room we do not follow (a
   * subscribe that crossed an unsubscribe: the caller leaves it again).
   */
  subscribed(frame: SubscribedFrame): "stands" | "stale" | "stray" {
    const entry = this.#rooms.get(frame.room);
    if (!entry) return "stray";
    if (!entry.wanted || (frame.id !== undefined && entry.asking !== undefined && frame.id !== entry.asking)) return "stale";
    const since = entry.askedSince;
    entry.asking = undefined;
    entry.answer = frame;
    this.joined(frame.room, frame, since);
    for (const waiter of entry.waiters.splice(0)) waiter.resolve(frame);
    return "stands";
  }

  unsubscribed(room: string): void {
    const entry = this.#rooms.get(room);
    if (!entry) return;
    // Subscribed again meanwhile: that subscribe follows this answer and stands.
    if (!entry.wanted) this.#rooms.delete(room);
    for (const waiter of entry.leaving.splice(0)) waiter.resolve(undefined);
  }

  /** An error frame: if it refused one of our subscribes, the room is dropped and named. */
  refused(frame: ErrorFrame): { room: string; error: RelayError } | undefined {
    if (frame.id === undefined) return undefined;
    for (const [room, entry] of this.#rooms) {
      if (entry.asking !== frame.id) continue;
      const error = new RelayError(frame.code, frame.message);
      this.#rooms.delete(room);
      this.#release(room);
      for (const waiter of entry.waiters) waiter.reject(error);
      return { room, error };
    }
    return undefined;
  }

  /** The connection is gone, and every subscription with it (the next one subscribes again). */
  disconnected(): void {
    this.#holds.clear();
    this.#stopAsking();
    for (const [room, entry] of this.#rooms) {
      delete entry.asking;
      delete entry.answer;
      if (entry.leaving.length === 0) continue;
      for (const waiter of entry.leaving.splice(0)) waiter.resolve(undefined);
      if (!entry.wanted) this.#rooms.delete(room);
    }
  }

  /** The client stopped for good. */
  stop(error: RelayError): void {
    this.#stopAsking();
    for (const entry of this.#rooms.values()) {
      for (const waiter of entry.waiters.splice(0)) waiter.reject(error);
      for (const waiter of entry.leaving.splice(0)) waiter.resolve(undefined);
    }
  }

  /** The rooms subscribed (or to subscribe at the next connection). */
  get subscriptions(): string[] {
    return [...this.#rooms].filter(([, entry]) => entry.wanted).map(([room]) => room);
  }

  /** Subscribes to `room` when the pace allows; a frame the socket cannot take waits for the next connection. */
  #ask(room: string): void {
    const entry = this.#rooms.get(room)!;
    if (!entry.queued) this.#queue.push(room);
    entry.queued = true;
    this.#pump();
  }

  #pump(): void {
    if (this.#timer !== undefined) return; // a turn is due
    while (this.#queue.length > 0) {
      const entry = this.#rooms.get(this.#queue[0]!);
      if (!entry?.wanted || !entry.queued) {
        this.#queue.shift();
        continue;
      }
      if (!this.#pace.take()) {
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.#pump();
        }, this.#pace.wait);
        return;
      }
      const room = this.#queue.shift()!;
      const id = newId();
      const frame: SubscribeFrame = { type: "subscribe", room, id };
      if (entry.seq !== undefined) frame.since = entry.seq;
      if (entry.epoch !== undefined) frame.epoch = entry.epoch;
      entry.queued = false;
      entry.askedSince = entry.seq;
      if (!this.#send(frame)) return this.#stopAsking(); // offline: the next welcome subscribes again
      entry.asking = id;
    }
  }

  #stopAsking(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const room of this.#queue) delete this.#rooms.get(room)?.queued;
    this.#queue = [];
  }

  #entry(room: string): Room {
    let entry = this.#rooms.get(room);
    if (!entry) this.#rooms.set(room, (entry = { wanted: false, waiters: [], leaving: [] }));
    return entry;
  }
}
