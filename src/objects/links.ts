// Every call from one object to another goes through here: one cached stub per target, a retry
// for errors the platform marks retryable, and ordered queues for streams of deliveries.
//
// Calls made on one stub reach their object in the order they were made (E-order); calls on
// different stubs may not (docs/platform.md). So each target keeps one stub while it works,
// which lets a socket's frames to one target go out without waiting for each answer and still
// arrive in order. A stub whose call failed may be broken for good, so it is dropped and the
// next call makes a fresh one.
import { log } from "../log";
import { wasReset } from "./reset";

/** Past this many targets the cache starts over (targets come and go). */
const MAX_CACHED_STUBS = 1_000;

/** Each kind of object and its binding. The stubs' types come from the generated Env, so this
 * module needs none of the object classes, which all use it. */
const BINDINGS = { room: "ROOMS", holder: "HOLDERS", inbox: "INBOXES", directory: "DIRECTORY", webhooks: "WEBHOOKS" } as const;
type Kind = keyof typeof BINDINGS;
export type StubOf<K extends Kind> = ReturnType<Env[(typeof BINDINGS)[K]]["getByName"]>;

/** Whether the platform says a failed call may succeed if made again. */
function retryable(error: unknown): boolean {
  const flags = error as { retryable?: boolean; overloaded?: boolean } | null;
  return flags?.retryable === true && flags.overloaded !== true;
}

export class Links {
  readonly #env: Env;
  readonly #cache = new Map<string, DurableObjectStub>();
  /** Calls under way. */
  #calls = 0;

  constructor(env: Env) {
    this.#env = env;
  }

  /** Whether no call is under way (an object resets itself only then: SocketHost `quiet`). */
  get idle(): boolean {
    return this.#calls === 0;
  }

  /** Calls `fn` on the target's stub; a retryable failure, or a reset target (reset.ts), is tried once more on a fresh stub. */
  async call<K extends Kind, T>(kind: K, name: string, fn: (stub: StubOf<K>) => Promise<T> | T): Promise<T> {
    this.#calls++;
    try {
      return await fn(this.#stub(kind, name));
    } catch (error) {
      this.#cache.delete(`${kind}:${name}`);
      if (!retryable(error) && !wasReset(error)) throw error;
      return await fn(this.#stub(kind, name));
    } finally {
      this.#calls--;
    }
  }

  #stub<K extends Kind>(kind: K, name: string): StubOf<K> {
    const key = `${kind}:${name}`;
    let stub = this.#cache.get(key);
    if (!stub) {
      if (this.#cache.size >= MAX_CACHED_STUBS) this.#cache.clear();
      const namespace: DurableObjectNamespace = this.#env[BINDINGS[kind]];
      stub = namespace.getByName(name) as DurableObjectStub;
      this.#cache.set(key, stub);
    }
    return stub as StubOf<K>;
  }
}

/** The most entries waiting for one target; past it the oldest are dropped (docs/design.md "Failures"). */
const MAX_QUEUED = 10_000;

interface StreamOptions<E> {
  /** The most entries one call carries; the rest wait for the next call. Default: all queued. */
  perCall?: number;
  /** Entries dropped from a queue past MAX_QUEUED (or MAX_QUEUED_SIZE). Default: none told. */
  dropped?: (entries: E[]) => void;
  /**
   * An entry's size, so one call carries at most MAX_CALL_SIZE of them and a queue holds at most
   * MAX_QUEUED_SIZE. Default: not counted.
   */
  sizeOf?: (entry: E) => number;
}

/**
 * What one call carries at most, in sizeOf's units (characters): a call between objects may be at
 * most 32 MiB serialized (docs/platform.md), and a queue that grew under a flood of big frames
 * would otherwise go out in one call that fails.
 */
const MAX_CALL_SIZE = 8 * 1024 * 1024;

/**
 * What one target's queue holds at most, in sizeOf's units, past which its oldest entries are
 * dropped as past MAX_QUEUED: 10,000 frames of 64 KiB would be over a gigabyte of memory (strings
 * of two bytes a character) for one target that stopped answering.
 */
const MAX_QUEUED_SIZE = 32 * 1024 * 1024;

interface Queue<E> {
  entries: E[];
  /** The entries' total size (0 without sizeOf). */
  size: number;
  busy: boolean;
}

/**
 * One ordered stream of entries per target object, with at most one call in flight each: what
 * arrives while a call is out goes in the next one, so under load one call carries many entries
 * and the cost grows with the number of targets, not of entries.
 */
export class Streams<E> {
  readonly #send: (target: string, entries: E[]) => Promise<unknown>;
  readonly #perCall: number;
  readonly #dropped: (entries: E[]) => void;
  readonly #sizeOf?: (entry: E) => number;
  readonly #queues = new Map<string, Queue<E>>();

  constructor(send: (target: string, entries: E[]) => Promise<unknown>, { perCall = Infinity, dropped = () => {}, sizeOf }: StreamOptions<E> = {}) {
    this.#send = send;
    this.#perCall = perCall;
    this.#dropped = dropped;
    this.#sizeOf = sizeOf;
  }

  push(target: string, entries: E[]): void {
    let queue = this.#queues.get(target);
    if (!queue) this.#queues.set(target, (queue = { entries: [], size: 0, busy: false }));
    queue.entries.push(...entries);
    queue.size += this.#total(entries);
    // A target that stopped answering must not grow the queue without bound: a room's receiver
    // notices the hole in the seqs and has its clients resume from history.
    const excess = this.#excess(queue);
    if (excess > 0) this.#dropped(this.#take(queue, excess));
    this.#pump(target, queue);
  }

  #pump(target: string, queue: Queue<E>): void {
    if (queue.busy) return;
    if (queue.entries.length === 0) {
      this.#queues.delete(target);
      return;
    }
    queue.busy = true;
    const entries = this.#take(queue, this.#taken(queue.entries));
    this.#send(target, entries)
      .catch((error: unknown) => log("error", "delivery to another object failed", { target, entries: entries.length, error }))
      .finally(() => {
        queue.busy = false;
        this.#pump(target, queue);
      });
  }

  /** How many of the oldest entries must go for `queue` to be within MAX_QUEUED and MAX_QUEUED_SIZE (never the newest). */
  #excess({ entries, size }: Queue<E>): number {
    let excess = 0;
    while (excess < entries.length - 1 && (entries.length - excess > MAX_QUEUED || size > MAX_QUEUED_SIZE)) {
      size -= this.#sizeOf?.(entries[excess]!) ?? 0;
      excess++;
    }
    return excess;
  }

  /** Takes the first `count` entries off `queue`. */
  #take(queue: Queue<E>, count: number): E[] {
    let taken = queue.entries;
    if (taken.length <= count) queue.entries = [];
    else taken = queue.entries.splice(0, count);
    queue.size = queue.entries.length === 0 ? 0 : queue.size - this.#total(taken);
    return taken;
  }

  #total(entries: E[]): number {
    let size = 0;
    if (this.#sizeOf) for (const entry of entries) size += this.#sizeOf(entry);
    return size;
  }

  /** How many of `entries` the next call carries: at most perCall, and MAX_CALL_SIZE (one at least). */
  #taken(entries: E[]): number {
    const count = Math.min(entries.length, this.#perCall);
    if (!this.#sizeOf) return count;
    let size = 0;
    for (let i = 0; i < count; i++) {
      size += this.#sizeOf(entries[i]!);
      if (size > MAX_CALL_SIZE && i > 0) return i;
    }
    return count;
  }
}

/** The most items one batched call carries. */
const MAX_BATCH = 256;

/** What a batched item dropped from its queue (past MAX_QUEUED or MAX_QUEUED_SIZE) fails with: it was never sent. */
export class QueueFull extends Error {
  constructor() {
    super("too many calls, or too much, queued for one object");
  }
}

/**
 * Calls whose items each want an answer, batched per target over a Streams queue: `send` answers
 * one result per item, and each push gets its own. A failed call fails each of its items; an
 * item dropped from a queue past MAX_QUEUED or MAX_QUEUED_SIZE fails too, so every push is
 * answered. Each push names its item's size (the frame's length it came in, so nothing is
 * serialized to measure it): one call then carries at most MAX_CALL_SIZE of them.
 */
export class Batches<I, R> {
  readonly #streams: Streams<{ item: I; size: number; answer: PromiseWithResolvers<R> }>;

  constructor(send: (target: string, items: I[]) => Promise<R[]>) {
    this.#streams = new Streams(
      async (target, asked) => {
        try {
          const results = await send(target, asked.map(({ item }) => item));
          asked.forEach(({ answer }, i) => answer.resolve(results[i]!));
        } catch (error) {
          for (const { answer } of asked) answer.reject(error);
        }
      },
      {
        perCall: MAX_BATCH,
        sizeOf: ({ size }) => size,
        dropped: (asked) => asked.forEach(({ answer }) => answer.reject(new QueueFull())),
      },
    );
  }

  push(target: string, item: I, size: number): Promise<R> {
    const answer = Promise.withResolvers<R>();
    this.#streams.push(target, [{ item, size, answer }]);
    return answer.promise;
  }
}

/** `promise`'s answer, or a rejection once `ms` have passed without one (a call that hangs). */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  const { promise: late, reject } = Promise.withResolvers<never>();
  const timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms);
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}
