// Seats a Room promises its shards (docs/design.md "Placement"). A socket the Room sends to a
// shard counts against the room's limit from the moment it is placed until its join reaches the
// Room, or for SEAT_HOLD_MS if it never comes (the client went away on the way).
import { shardName } from "./connect";

/** How long a seat the Room promised a shard stays counted if no join arrives for it. */
const SEAT_HOLD_MS = 10_000;

export class Seats {
  readonly #room: string;
  readonly #perObject: number;
  /** Seats promised to each shard, as the times they were promised. */
  readonly #promised = new Map<string, number[]>();

  constructor(room: string, socketsPerObject: number) {
    this.#room = room;
    this.#perObject = socketsPerObject;
  }

  /**
   * Promises a seat on the lowest shard with one free (`countAt`: the sockets a shard holds), so
   * new sockets fill the Room first and a shrinking room drains its shards.
   */
  place(countAt: (shard: string) => number): string {
    for (let n = 1; ; n++) {
      const shard = shardName(this.#room, n);
      const seats = this.#held(shard);
      if (countAt(shard) + seats.length < this.#perObject) {
        seats.push(Date.now());
        this.#promised.set(shard, seats);
        return shard;
      }
    }
  }

  /** A join from `holder` arrived: a seat promised to it is taken (or freed, if the join is refused). */
  take(holder: string): void {
    if (this.#promised.has(holder)) this.#promised.set(holder, this.#held(holder).slice(1));
  }

  /** Seats promised and neither taken nor expired. */
  get count(): number {
    let n = 0;
    for (const shard of this.#promised.keys()) n += this.#held(shard).length;
    return n;
  }

  #held(shard: string): number[] {
    const since = Date.now() - SEAT_HOLD_MS;
    return (this.#promised.get(shard) ?? []).filter((at) => at > since);
  }
}
