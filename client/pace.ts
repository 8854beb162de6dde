// A token bucket for every frame the client sends but pings: the app's publishes and directs,
// what waited (sent after a connect), subscribe frames (many at once after a reconnect), and
// auto-acks (one at most every 250 ms, but the relay counts them too). The relay drops frames past its RATE_LIMIT_PER_SECOND (20 by default, bursts of 2x)
// and closes 1008 a socket that keeps on, after which the client stops: so a loop of a hundred
// publishes, or a user socket's hundred subscriptions, goes out at the relay's pace instead.

export class Pace {
  readonly #perSecond: number;
  #tokens: number;
  #at = Date.now();

  /** `perSecond` frames a second, in bursts of as many. */
  constructor(perSecond: number) {
    this.#perSecond = Math.max(1, perSecond);
    this.#tokens = this.#perSecond;
  }

  /** Takes a token if there is one. */
  take(): boolean {
    this.#refill();
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }

  /** Milliseconds until the next token. */
  get wait(): number {
    this.#refill();
    return Math.max(0, Math.ceil(((1 - this.#tokens) * 1000) / this.#perSecond));
  }

  #refill(): void {
    const now = Date.now();
    this.#tokens = Math.min(this.#perSecond, this.#tokens + ((now - this.#at) * this.#perSecond) / 1000);
    this.#at = now;
  }
}
