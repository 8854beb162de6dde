// What a socket has been sent and not yet read waits in the runtime, in its object's memory
// (`bufferedAmount`, docs/platform.md). A client that stops reading while its rooms stay busy
// would grow that without bound, until the object runs out of memory and every socket it holds
// is lost. So a socket more than MAX_BACKLOG_BYTES behind is watched, and closed `1013` if it is
// still that far behind LOOK_AFTER_MS after it was first looked at (the tick after it passed the
// bound) and no less behind than then: it is not catching up.
// A burst (a resume's replay, a big batch) passes the bound for a moment and drains; a client on a
// slow link that keeps draining is left alone (docs/protocol.md decision 60).
import { log } from "../log";

/** How long a watched socket has to show it is catching up. */
export const LOOK_AFTER_MS = 5_000;

/** How often the watched sockets are looked at while there are any. */
const TICK_MS = 1_000;

interface Watch {
  /** Bytes not yet read when last looked at. */
  unsent: number;
  /** When that was, ms. */
  at: number;
}

/** A socket found past the bound while frames were going out, not looked at yet. */
const PASSED = undefined;

export class Backlog {
  /** MAX_BACKLOG_BYTES: how far behind a socket may fall before it is watched. */
  readonly #bound: number;
  /** How much may go out on a socket between two looks at how far behind it is: a quarter of the bound. */
  readonly lookEvery: number;
  /** Closes a socket found too slow, with `reason`. */
  readonly #tooSlow: (ws: WebSocket, reason: string) => void;
  readonly #watched = new Map<WebSocket, Watch | typeof PASSED>();
  #timer?: ReturnType<typeof setTimeout>;

  constructor(bound: number, tooSlow: (ws: WebSocket, reason: string) => void) {
    this.#bound = bound;
    this.lookEvery = Math.floor(bound / 4);
    this.#tooSlow = tooSlow;
  }

  /** After frames went out on `ws` (`lookEvery` of them): starts watching it if it is now past the bound. */
  sent(ws: WebSocket): void {
    if (ws.bufferedAmount <= this.#bound || this.#watched.has(ws)) return;
    // How far behind it is counts from the next look, once the turn sending now is over: read in
    // the middle of a burst (a resume's replay goes out in one turn), it would be the figure where
    // the burst passed the bound, not its peak, and a client draining the rest would look stalled.
    this.#watched.set(ws, PASSED);
    this.#timer ??= setTimeout(() => this.#look(), TICK_MS);
  }

  #look(): void {
    this.#timer = undefined;
    const now = Date.now();
    for (const [ws, watch] of [...this.#watched]) {
      const unsent = ws.readyState === WebSocket.OPEN ? ws.bufferedAmount : 0;
      if (unsent <= this.#bound) {
        this.#watched.delete(ws);
      } else if (watch === PASSED) {
        this.#watched.set(ws, { unsent, at: now });
      } else if (now - watch.at < LOOK_AFTER_MS) {
        continue;
      } else if (unsent >= watch.unsent) {
        this.#watched.delete(ws);
        log("warn", "closing a socket whose client stopped reading", { unsent });
        this.#tooSlow(ws, `too slow: ${unsent} bytes sent and not read`);
      } else {
        this.#watched.set(ws, { unsent, at: now });
      }
    }
    if (this.#watched.size > 0) this.#timer = setTimeout(() => this.#look(), TICK_MS);
  }
}
