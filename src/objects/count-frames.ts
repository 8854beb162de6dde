// A room's count frames, sent above PRESENCE_LIST_LIMIT instead of join and leave frames: at most
// one a second, and only when the number of users changed (docs/protocol.md "Presence at scale").
import { presenceCountFrame } from "../protocol";
import type { FeedEntry } from "./feed";

/** Count frames go out at most this often. */
const COUNT_EVERY_MS = 1_000;

export class CountFrames {
  readonly #room: string;
  readonly #users: () => number;
  readonly #emit: (entry: FeedEntry) => void;
  #sentAt = 0;
  /** What the last count frame said; -1 makes the next one go out whatever it says. */
  #said = -1;
  #timer?: ReturnType<typeof setTimeout>;
  /** The latest newcomer and the count its welcome carried: a frame saying the same skips it. */
  #joiner?: { connection: string; users: number };

  constructor(room: string, users: () => number, emit: (entry: FeedEntry) => void) {
    this.#room = room;
    this.#users = users;
    this.#emit = emit;
  }

  /**
   * A join or leave frame is about to go out, the room having had `users` before it. A count
   * held back goes out first (even within the second of the last one), saying that number, so
   * clients count on from the right one; the next count frame goes out whatever it says.
   */
  beforeNamed(users: number): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#send(users);
    }
    this.#said = -1;
  }

  /** The number of users changed; `joiner` is the connection whose join changed it. */
  changed(joiner?: string): void {
    if (joiner !== undefined) this.#joiner = { connection: joiner, users: this.#users() };
    if (this.#timer !== undefined) return;
    const wait = this.#sentAt + COUNT_EVERY_MS - Date.now();
    if (wait <= 0) return this.#send();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#send();
    }, wait);
  }

  // Sent even at or below the limit: a leave from limit + 1 is announced by its count.
  #send(users = this.#users()): void {
    if (users === this.#said) return;
    this.#said = users;
    this.#sentAt = Date.now();
    const except = this.#joiner?.users === users ? this.#joiner.connection : undefined;
    this.#joiner = undefined;
    this.#emit({ frame: JSON.stringify(presenceCountFrame(this.#room, users)), ...(except !== undefined && { except }) });
  }
}
