// Direct messages on a user socket, with auto-ack (the default): acked for the app once its
// listeners ran (one ack for a burst, since acks are cumulative), and a replay of one already
// delivered dropped. Without auto-ack the app acks, and sees every replay.

export class Directs {
  readonly #autoAck: boolean;
  readonly #ack: (seq: number) => void;
  /** Directs up to this seq were delivered and acked, in the inbox of `#epoch`. */
  #upTo?: number;
  #epoch?: string;
  #pendingAck?: number;

  constructor(autoAck: boolean, ack: (seq: number) => void) {
    this.#autoAck = autoAck;
    this.#ack = ack;
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

  /** The listeners ran: acks `seq` once the current task is done (so a replayed burst costs one ack). */
  delivered(seq: number): void {
    if (!this.#autoAck) return;
    this.#upTo = Math.max(seq, this.#upTo ?? 0);
    const first = this.#pendingAck === undefined;
    this.#pendingAck = Math.max(seq, this.#pendingAck ?? 0);
    if (!first) return;
    queueMicrotask(() => {
      const upTo = this.#pendingAck!;
      this.#pendingAck = undefined;
      this.#ack(upTo);
    });
  }
}
