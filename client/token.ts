// Tokens: the one given, or a function called for a fresh one. A JWT's `exp` is read (not
// verified: only the relay can) so a long-lived client can fetch a new token and reconnect before
// the relay closes it with 4001.
import type { TokenOption } from "./types";

/** Refresh this long before `exp`, or halfway through a shorter remaining life. */
const REFRESH_MARGIN_MS = 30_000;
/** Never refresh more often than this, whatever tokens the function hands out. */
const MIN_REFRESH_MS = 1_000;

/** The `exp` claim of a JWT, in milliseconds since the epoch; undefined when absent or unreadable. */
export function expiresAt(token: string | undefined): number | undefined {
  const payload = token?.split(".")[1];
  if (!payload) return undefined;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(payload.length / 4) * 4, "=");
    const { exp } = JSON.parse(atob(base64)) as { exp?: unknown };
    return typeof exp === "number" && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a JWT's `exp` has passed (the relay refuses it); false for a token without one. */
export function expired(token: string | undefined): boolean {
  const exp = expiresAt(token);
  return exp !== undefined && exp <= Date.now();
}

/** How long to wait before refreshing a token that expires at `exp` (ms since the epoch). */
export function refreshDelay(exp: number, now = Date.now()): number {
  const left = exp - now;
  return Math.max(MIN_REFRESH_MS, Math.max(left - REFRESH_MARGIN_MS, left / 2));
}

export class Tokens {
  readonly #option: TokenOption | undefined;
  /** The token of the current connection, and one fetched ahead for the next. */
  #current?: string;
  #next?: string;
  /** Counts the connections' asks: one answered after a later ask began is an attempt given up on. */
  #asked = 0;

  constructor(option: TokenOption | undefined) {
    this.#option = option;
    if (typeof option === "string") this.#current = option;
  }

  /** Whether fresh tokens can be had (a function was given). */
  get refreshable(): boolean {
    return typeof this.#option === "function";
  }

  /** The token for a new connection: one fetched ahead while it is valid, else a fresh one from the function. */
  async forConnection(): Promise<string | undefined> {
    if (typeof this.#option !== "function") return this.#option;
    const asked = ++this.#asked;
    const ahead = this.#next !== undefined && !expired(this.#next) ? this.#next : undefined;
    const token = ahead ?? (await this.#option());
    if (asked !== this.#asked) return token; // too late (connectTimeoutMs): the later ask's token stands
    this.#next = undefined;
    this.#current = token;
    return token;
  }

  /** A token for an HTTP request: the current one while it is valid, else a fresh one. */
  async forRequest(): Promise<string | undefined> {
    const exp = expiresAt(this.#current);
    if (typeof this.#option !== "function" || (this.#current !== undefined && (exp === undefined || exp > Date.now()))) {
      return this.#current;
    }
    return (this.#current = await this.#option());
  }

  /** When the current token should be replaced, in ms from now; undefined when it need not be. */
  get refreshIn(): number | undefined {
    const exp = expiresAt(this.#current);
    // Past `exp` the relay closes the socket (4001) and the next attempt asks for a token anyway.
    return this.refreshable && exp !== undefined && exp > Date.now() ? refreshDelay(exp) : undefined;
  }

  /** Fetches the next token ahead of time; answers whether it lives longer than the current one. */
  async fetchAhead(): Promise<boolean> {
    if (typeof this.#option !== "function") return false;
    const token = await this.#option();
    const [now, next] = [expiresAt(this.#current), expiresAt(token)];
    // A token that lasts no longer than ours would only reconnect for nothing.
    if (token === undefined || (next !== undefined && now !== undefined && next <= now)) return false;
    this.#next = token;
    return true;
  }
}

/** What a refresh needs from the client. */
export interface RefreshHooks {
  /** Whether the connection is up (a refresh that finishes offline leaves the token for the next attempt). */
  online(): boolean;
  /** Frames sent and not yet answered. */
  inFlight(): number;
  /** Reconnects at once (the next attempt takes the token fetched ahead). */
  restart(): void;
}

/** How long frames in flight may take to be answered before a refresh reconnects anyway. */
const DRAIN_MS = 5_000;

/** setTimeout's longest delay (about 24.8 days): runtimes run a longer one at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

// A token function is asked again before the token's `exp`; with a longer-lived token in hand,
// the client lets the frames in flight be answered (new ones wait), then reconnects with it and
// resumes, so the relay never closes it with 4001 and nothing sent is lost or sent twice.
export class TokenRefresh {
  readonly #tokens: Tokens;
  readonly #hooks: RefreshHooks;
  #timer?: ReturnType<typeof setTimeout>;
  #draining = false;
  /** Bumped by every cancel, so a refresh that outlived its connection does nothing. */
  #generation = 0;

  constructor(tokens: Tokens, hooks: RefreshHooks) {
    this.#tokens = tokens;
    this.#hooks = hooks;
  }

  /** A fresh token is in hand: new frames wait while the ones in flight are answered. */
  get draining(): boolean {
    return this.#draining;
  }

  /** A connection is up: plan the refresh of its token. */
  schedule(): void {
    this.cancel();
    const delay = this.#tokens.refreshIn;
    if (delay === undefined) return;
    // A token for longer than a timer can wait: look again then.
    this.#timer = delay > MAX_TIMER_MS ? setTimeout(() => this.schedule(), MAX_TIMER_MS) : setTimeout(() => void this.#refresh(), delay);
  }

  /** The connection is gone (its successor schedules again). */
  cancel(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#draining = false;
    this.#generation++;
  }

  /** A frame was answered: reconnect once nothing is in flight. */
  answered(): void {
    if (this.#draining && this.#hooks.inFlight() === 0) this.#hooks.restart();
  }

  async #refresh(): Promise<void> {
    const generation = this.#generation;
    const fresh = await this.#tokens.fetchAhead().catch(() => false);
    if (generation !== this.#generation || !this.#hooks.online()) return;
    if (!fresh) return this.schedule(); // try again later; past `exp` the 4001 path takes over
    this.#draining = true;
    this.#timer = setTimeout(() => this.#hooks.restart(), DRAIN_MS);
    this.answered();
  }
}
