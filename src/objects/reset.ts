// An emptied object (a Room, a shard or a hub) resets itself (docs/design.md "Failures"): once
// the last socket it closed itself has answered and nothing else is under way there, it calls
// `ctx.abort()`. The runtime keeps the connection of a socket that never sent a frame up after
// the object closed it, until the object is evicted (docs/platform.md), so without the reset a
// silent client closed for its heartbeat sees its close event ~10 s late, or never while the
// object stays busy. A call that reaches the object as it resets ran nothing there that a reset
// loses, so its caller makes it once more (`againIfReset`; Links does the same).

/** The reason the object gives; its callers' errors carry it as their message. */
export const RESET_REASON = "edge-relay: the object reset itself once its sockets had closed";

/** How far apart an emptied object looks again whether its calls have finished, and how often. */
const POLL_MS = 100;
const TRIES = 20;

/** Whether a call failed because its object reset itself. */
export function wasReset(error: unknown): boolean {
  return error instanceof Error && error.message.includes(RESET_REASON);
}

/** `call` (which must get a fresh stub each time), made once more if its object was resetting. */
export async function againIfReset<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (!wasReset(error)) throw error;
    return await call();
  }
}

export class Reset {
  readonly #ctx: DurableObjectState;
  /** Whether a reset would lose nothing but memory (SocketHost `quiet`). */
  readonly #quiet: () => boolean;
  /** Looks left before the object is left to the platform; undefined while none is planned. */
  #looksLeft?: number;

  constructor(ctx: DurableObjectState, quiet: () => boolean) {
    this.#ctx = ctx;
    this.#quiet = quiet;
  }

  /**
   * Resets the object once it is quiet and its storage durable: at once, or after the calls and
   * webhooks under way have finished (looking every POLL_MS, TRIES times after the last socket
   * left; then the platform evicts it in its own time).
   */
  whenQuiet(): void {
    const planned = this.#looksLeft !== undefined;
    this.#looksLeft = TRIES;
    if (!planned) this.#look(0);
  }

  #look(afterMs: number): void {
    setTimeout(() => {
      void this.#ctx.storage.sync().then(
        () => {
          if (this.#quiet()) this.#ctx.abort(RESET_REASON);
          else if (--this.#looksLeft! > 0) this.#look(POLL_MS);
          else this.#looksLeft = undefined;
        },
        () => void (this.#looksLeft = undefined),
      );
    }, afterMs);
  }
}
