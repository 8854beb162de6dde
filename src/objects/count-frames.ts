// A room's count frames, sent above PRESENCE_LIST_LIMIT instead of join and leave frames: at most
// one a second, and only to the sockets it tells something new (docs/protocol.md "Presence at
// scale"). Pusher's subscription counting tells its count once a second too (pusher-hooks.ts).
import { presenceCountFrame } from "../protocol";
import type { FeedEntry } from "./feed";

/**
 * Counts go out at most this often: a second, and a fifth more, so that two counts delayed
 * differently on their way still arrive a second apart. Audits saw 970 ms between two at a
 * client under load when this was 1.05 s, and 987 ms in a room spread over several objects,
 * where a count to another object's sockets travels one call further.
 */
export const COUNT_EVERY_MS = 1_200;

/**
 * Tells a number that changes, at most once a second. `tell` gets the number and the one its
 * hearers held until then (-1: unknown), and says whether it told anything: a number that is no
 * news to anyone is not told, and does not start a new second.
 */
export class OncePerSecond {
  readonly #value: () => number;
  readonly #tell: (value: number, heard: number) => boolean;
  #toldAt = 0;
  /** What was told last (moved by `shift`); -1 makes the next one news whatever it says. */
  #said = -1;
  #timer?: ReturnType<typeof setTimeout>;

  constructor(value: () => number, tell: (value: number, heard: number) => boolean) {
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

  /** Whether a count is held back for the rest of its second. */
  get holding(): boolean {
    return this.#timer !== undefined;
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
    if (!this.#tell(value, this.#said)) return;
    this.#said = value;
    this.#toldAt = Date.now();
  }
}

/**
 * A room's count frames. Each socket gets one only when it says something new to that socket:
 * the sockets that heard the last count hold that number (moved by the join and leave frames
 * since), and each newcomer since holds the number its welcome or `subscribed` said (moved the
 * same way), which may differ, so a count goes to some of them only (docs/protocol.md
 * "Presence at scale").
 */
export class CountFrames {
  readonly #counts: OncePerSecond;
  /** Newcomers counted by number since the last count frame, and the number each holds. */
  readonly #joiners = new Map<string, number>();
  readonly #users: () => number;

  // Sent even at or below the limit: a leave from limit + 1 is announced by its count.
  constructor(room: string, users: () => number, emit: (entry: FeedEntry) => void) {
    this.#users = users;
    this.#counts = new OncePerSecond(users, (count, heard) => {
      const knowing: string[] = [];
      const differing: string[] = [];
      for (const [connection, held] of this.#joiners) (held === count ? knowing : differing).push(connection);
      this.#joiners.clear(); // told or not, every socket holds `count` from here on
      const frame = JSON.stringify(presenceCountFrame(room, count));
      if (count !== heard) emit({ frame, ...(knowing.length > 0 && { except: knowing }) });
      else if (differing.length > 0) emit({ frame, only: differing });
      else return false;
      return true;
    });
  }

  /**
   * A join or leave frame goes out (a join's to every socket but its newcomer). Clients count on
   * from the number they hold; if a count is held back for the rest of its second, it follows
   * when the second is over, and corrects them if that number was behind (the room fell to the
   * limit meanwhile).
   */
  named(event: "join" | "leave"): void {
    const delta = event === "join" ? 1 : -1;
    this.#counts.shift(delta);
    for (const [connection, held] of this.#joiners) this.#joiners.set(connection, held + delta);
  }

  /**
   * `connection` was just told the room's number (its welcome or `subscribed`): a new user's
   * socket, a user's second one, a repeated subscribe. While a count is held back the others may
   * hold another number, so that count weighs this socket on its own.
   */
  welcomed(connection: string): void {
    if (this.#counts.holding) this.#joiners.set(connection, this.#users());
  }

  /** The number of users changed; `joiner` is the connection whose join changed it. */
  changed(joiner?: string): void {
    if (joiner !== undefined) this.#joiners.set(joiner, this.#users());
    this.#counts.changed();
  }
}
