// Per-socket abuse limits (docs/protocol.md "Limits and close codes"). Plain state machines over
// timestamps so they are cheap per frame and need no timers. They live in memory only: an
// object is evicted only after ~10 s without events, by which time every window below has
// emptied and the bucket has refilled, so starting afresh after hibernation is exact (a Pusher
// socket's subscription bucket, MAX_SUBSCRIPTIONS deep, may take longer to refill: a little generous).
import type { Config } from "../config";
import { isPusherSubscription, utf8Length, type TooLarge } from "../protocol";

const WINDOW_MS = 10_000;

/**
 * A socket hears `rate_limited` at most this often: a second, and a little more, so that two
 * errors sent apart arrive a second apart too (as count frames, count-frames.ts).
 */
const TELL_EVERY_MS = 1_050;

/** What to do with a frame that arrived. */
export type RateVerdict = "accept" | "drop" | "drop-and-tell" | "close";

/** Timestamps within the last WINDOW_MS, oldest first, bounded by `max` entries. */
class Window {
  #times: number[] = [];
  /** Records an event at `now` and answers how many fall within the window. */
  add(now: number, max: number): number {
    const times = this.#times;
    while (times.length > 0 && now - times[0]! >= WINDOW_MS) times.shift();
    times.push(now);
    if (times.length > max) times.shift();
    return times.length;
  }
}

/**
 * Token bucket of `perSecond` tokens a second holding at most `burst` (by default twice the
 * rate). A frame without a token is dropped; the client hears about it at most once a second;
 * more than `burst` drops within 10 s ends the connection (close 1008).
 */
export class RateLimiter {
  readonly #perSecond: number;
  readonly #burst: number;
  #tokens: number;
  #refilledAt: number;
  #toldAt = -Infinity;
  #drops = new Window();

  constructor(perSecond: number, now: number, burst = 2 * perSecond) {
    this.#perSecond = perSecond;
    this.#burst = burst;
    this.#tokens = burst;
    this.#refilledAt = now;
  }

  take(now: number): RateVerdict {
    const capacity = this.#burst;
    this.#tokens = Math.min(capacity, this.#tokens + ((now - this.#refilledAt) * this.#perSecond) / 1000);
    this.#refilledAt = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return "accept";
    }
    if (this.#drops.add(now, capacity + 1) > capacity) return "close";
    if (now - this.#toldAt < TELL_EVERY_MS) return "drop";
    this.#toldAt = now;
    return "drop-and-tell";
  }
}

/** Oversized frames: each is refused with an error; the third within 10 s closes 1009. */
export class OversizeCounter {
  static readonly CLOSE_AT = 3;
  #window = new Window();

  /** Records one oversized frame; true when the connection must now close. */
  add(now: number): boolean {
    return this.#window.add(now, OversizeCounter.CLOSE_AT) >= OversizeCounter.CLOSE_AT;
  }
}

/** History one socket's subscriptions may replay within WINDOW_MS, in characters. */
const MAX_REPLAY_CHARS = 16 * 1024 * 1024;

/**
 * What a socket's subscribes replay: each may ask for up to HISTORY_LIMIT messages, so a socket
 * that subscribes again and again (or to a hundred rooms) with `since` could have the hub queue
 * gigabytes for it, and the runtime holds what a socket has not read. Past the budget a
 * subscribe is answered `recovered: false` with no replay: the client reloads the room's state
 * (docs/protocol.md decision 50).
 */
export class ReplayBudget {
  #since = -Infinity;
  #chars = 0;

  /** Takes `chars` from the budget; false when they do not fit (nothing is taken then). */
  take(chars: number, now: number): boolean {
    if (now - this.#since >= WINDOW_MS) {
      this.#since = now;
      this.#chars = 0;
    }
    if (this.#chars + chars > MAX_REPLAY_CHARS) return false;
    this.#chars += chars;
    return true;
  }
}

/** The limits one socket carries (a `Session`, session.ts). */
export interface Limited {
  readonly pusher?: true;
  readonly rate: RateLimiter;
  subscribing?: RateLimiter;
  replays?: ReplayBudget;
}

/**
 * `admission` as `session` may have it: its replay, or `recovered: false` once the budget is
 * spent. Only resumes draw from it: a replay without `recovered` is a Pusher cache channel's one
 * last event, at most one message.
 */
export function withinReplayBudget<A extends { replay: string[]; recovered?: boolean }>(session: Limited, admission: A): A {
  if (admission.replay.length === 0 || admission.recovered === undefined) return admission;
  const chars = admission.replay.reduce((sum, frame) => sum + frame.length, 0);
  if ((session.replays ??= new ReplayBudget()).take(chars, Date.now())) return admission;
  return { ...admission, replay: [], recovered: false };
}

/**
 * Sockets an object has begun to open and not yet accepted or refused: each open awaits a call
 * (the Room's answer to a join, the inbox's to an attach), so opens overlap, and each counts
 * against SOCKETS_PER_OBJECT from the start, or a burst would all see the same free seats.
 */
export class Opens {
  #count = 0;

  get size(): number {
    return this.#count;
  }

  async during<T>(open: () => T | Promise<T>): Promise<T> {
    this.#count++;
    try {
      return await open();
    } finally {
      this.#count--;
    }
  }
}

/**
 * The rate limit a frame counts toward. pusher-js sends a subscribe for every channel at once,
 * on each connect: those draw from a bucket of their own that holds a full set of
 * subscriptions, refilled at the same rate (docs/protocol.md decision 48).
 */
export function rateFor(session: Limited, message: string | ArrayBuffer, config: Config, now: number): RateLimiter {
  if (!session.pusher || typeof message !== "string" || !isPusherSubscription(message)) return session.rate;
  const { rateLimitPerSecond, maxSubscriptions } = config;
  return (session.subscribing ??= new RateLimiter(rateLimitPerSecond, now, Math.max(2 * rateLimitPerSecond, maxSubscriptions)));
}

/** The most bytes a stored frame takes: a storage row holds 2 MB (docs/platform.md), its other columns included. */
const MAX_STORED_FRAME_BYTES = 2_000_000;

/** A frame's fields around its data at their largest (room 164, from 128, id 256 characters, each escaped six bytes a character at worst) and the rest. */
const MAX_ENVELOPE_BYTES = 4_096;

/**
 * A refusal for a message or direct whose stored frame would not fit a row, or undefined: what
 * was sent is at most MAX_MESSAGE_BYTES, but numbers such as 1e20 and escaped characters grow
 * when the relay writes them (docs/protocol.md decision 59). `envelope` is the frame without
 * its data, made only for a long text (three bytes a character at most).
 */
export function tooBigToStore(dataText: string, envelope: () => string): TooLarge | undefined {
  if (dataText.length * 3 + MAX_ENVELOPE_BYTES <= MAX_STORED_FRAME_BYTES) return undefined;
  const bytes = utf8Length(dataText) + utf8Length(envelope());
  if (bytes <= MAX_STORED_FRAME_BYTES) return undefined;
  return {
    refused: "too_large",
    message: `stored, this message would take ${bytes} bytes, over the ${MAX_STORED_FRAME_BYTES} a storage row holds (numbers such as 1e20 and escaped characters grow when stored)`,
  };
}
