// Direct messages on a user socket, with auto-ack (the default): acked for the app once its
// listeners ran, and a replay of one already delivered dropped (but acked again: its ack may be
// what a drop lost). Acks are cumulative, so one ack covers every direct that arrived within
// ACK_EVERY_MS: one a direct would spend the relay's rate limit, which closes a socket (1008)
// that keeps past it, on a backlog replayed at connect or a busy inbox; and each takes a token of
// the client's pace, as the relay counts it. Without auto-ack the app acks, and sees every replay.
import type { Pace } from "./pace";

/** Acks go out at most this often. */
const ACK_EVERY_MS = 250;

export class Directs {
  readonly #autoAck: boolean;
  readonly #ack: (seq: number) => void;
  /** The client's pace: an ack counts in the relay's rate limit like any frame but a ping. */
  readonly #pace?: Pace;
  /** Directs up to this seq were delivered (their ack sent or waiting), in the inbox of `#epoch`. */
  #upTo?: number;
  #epoch?: string;
  #pendingAck?: number;
  #timer?: ReturnType<typeof setTimeout>;

  constructor(autoAck: boolean, ack: (seq: number) => void, pace?: Pace) {
    this.#autoAck = autoAck;
    this.#ack = ack;
    this.#pace = pace;
  }

  /** A welcome of the user socket: a new inbox epoch numbers its directs afresh. */
  welcome(epoch: string): void {
    if (epoch !== this.#epoch) this.#upTo = undefined;
    this.#epoch = epoch;
  }

  /** Whether direct `seq` is new: one at or below the last acked is a replay whose ack crossed a reconnect. */
  isNew(seq: number): boolean {
    return !this.#autoAck || this.#upTo === undefined || seq > this.#upTo;
  }

  /** Direct `seq` arrived (its listeners ran, or it was a replay): acks it with what else arrives soon. */
  delivered(seq: number): void {
    if (!this.#autoAck) return;
    this.#upTo = Math.max(seq, this.#upTo ?? 0);
    this.#pendingAck = Math.max(this.#upTo, this.#pendingAck ?? 0);
    this.#timer ??= setTimeout(() => this.#paced(), ACK_EVERY_MS);
  }

  /** Sends the waiting ack when the pace allows, else once it does (what arrives meanwhile joins it). */
  #paced(): void {
    this.#timer = undefined;
    if (this.#pace && !this.#pace.take()) {
      this.#timer = setTimeout(() => this.#paced(), this.#pace.wait);
      return;
    }
    this.flush();
  }

  /** Sends the waiting ack now (also before the client closes). */
  flush(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const upTo = this.#pendingAck;
    this.#pendingAck = undefined;
    if (upTo !== undefined) this.#ack(upTo);
  }
}
