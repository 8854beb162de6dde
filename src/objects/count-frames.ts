// A room's count frames, sent above PRESENCE_LIST_LIMIT instead of join and leave frames: at most
// one a second, and only when the number of users changed (docs/protocol.md "Presence at scale").
// Pusher's subscription counting tells its count the same way (pusher-hooks.ts).
import { presenceCountFrame } from "../protocol";
import type { FeedEntry } from "./feed";

/**
 * Counts go out at most this often: a second, and a little more, so that two counts delayed
 * differently on their way (an audit saw 970 ms between two at a client under load) still
 * arrive a second apart.
 */
const COUNT_EVERY_MS = 1_050;

/** Tells a number that changes, at most once a second and only when it differs from the last told. */
export class OncePerSecond {
  readonly #value: () => number;
  readonly #tell: (value: number) => void;
  #toldAt = 0;
  /** What was told last; -1 makes the next one go out whatever it says. */
  #said = -1;
  #timer?: ReturnType<typeof setTimeout>;

  constructor(value: () => number, tell: (value: number) => void) {
    this.#value = value;
    this.#tell = tell;
  }

  /** The number changed: told now, or at the end of the second since the last one. */
  changed(): void {
    if (this.#timer !== undefined) return;
    const wait = this.#toldAt + COUNT_EVERY_MS - Date.now();
    if (wait <= 0) return this.#send(this.#value());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#send(this.#value());
    }, wait);
  }

  /** Join or leave frames moved the number clients hold by `delta`: the next count is weighed against that. */
  shift(delta: number): void {
    if (this.#said >= 0) this.#said += delta;
  }

  /** The next count goes out even if it says what the last one said (someone new has not heard it). */
  forget(): void {
    this.#said = -1;
  }

  #send(value: number): void {
    if (value === this.#said) return;
    this.#said = value;
    this.#toldAt = Date.now();
    this.#tell(value);
  }
}

export class CountFrames {
  readonly #counts: OncePerSecond;
  /** The latest newcomer and the count its welcome carried: a frame saying the same skips it. */
  #joiner?: { connection: string; users: number };
  readonly #users: () => number;

  // Sent even at or below the limit: a leave from limit + 1 is announced by its count.
  constructor(room: string, users: () => number, emit: (entry: FeedEntry) => void) {
    this.#users = users;
    this.#counts = new OncePerSecond(users, (count) => {
      const except = this.#joiner?.users === count ? this.#joiner.connection : undefined;
      this.#joiner = undefined;
      emit({ frame: JSON.stringify(presenceCountFrame(room, count)), ...(except !== undefined && { except }) });
    });
  }

  /**
   * A join or leave frame goes out. Clients count on from the number they hold; if a count is
   * held back for the rest of its second, it follows when the second is over, and corrects them
   * if that number was behind (the room fell to the limit meanwhile).
   */
  named(event: "join" | "leave"): void {
    const delta = event === "join" ? 1 : -1;
    this.#counts.shift(delta);
    if (this.#joiner) this.#joiner.users += delta;
  }

  /** The number of users changed; `joiner` is the connection whose join changed it. */
  changed(joiner?: string): void {
    if (joiner !== undefined) {
      this.#joiner = { connection: joiner, users: this.#users() };
      // The next count goes out even if it says what the last one did: a leave within the second
      // may bring the number back to it, which the newcomer, welcomed with one more, never heard.
      this.#counts.forget();
    }
    this.#counts.changed();
  }
}
