// Outgoing frames: the bounded queue of frames not sent yet, and the frames sent but not yet
// confirmed, each with the promise its sender holds. A frame written to a socket that is already
// dying is lost without a trace, so a frame stays unconfirmed until the relay answers it (its own
// message echoed, an ack, or an error with its id) and is sent again after a reconnect if it never
// was. The price: a frame whose answer was lost in the drop may arrive twice (same id).
import type { AckFrame, MessageFrame } from "../src/protocol/frames";
import { RelayError } from "./errors";
import type { Pace } from "./pace";
import type { Sent } from "./types";

/** What confirms a frame: its own message echoed (room publishes), or an ack. */
export type Answer = MessageFrame | AckFrame;

export interface Settle {
  resolve(value: any): void;
  reject(error: RelayError): void;
}

export interface Outgoing {
  id: string;
  text: string;
  settle: Settle;
}

/** A promise of what `read` makes of the relay's answer to frame `id`, and the functions that settle it. */
export function pending<R>(id: string, read: (answer: Answer) => R): { sent: Sent<R>; settle: Settle } {
  let settle!: Settle;
  const promise = new Promise<R>((resolve, reject) => (settle = { resolve: (answer: Answer) => resolve(read(answer)), reject }));
  // A caller that never awaits must not get an unhandled rejection for a refused frame: the
  // `error` event tells it anyway. A caller that awaits still gets the rejection.
  promise.catch(() => {});
  return { sent: Object.assign(promise, { id }), settle };
}

export class Outbox {
  readonly #max: number;
  readonly #pace: Pace;
  /** Writes to the socket; false when it cannot take frames now (closed, or a resume replays). */
  readonly #write: (text: string) => boolean;
  readonly #onDropped: (text: string) => void;
  #queue: Outgoing[] = [];
  #unconfirmed = new Map<string, Outgoing>();
  #timer?: ReturnType<typeof setTimeout>;

  /** `max` frames are kept waiting (and as many unconfirmed); what waited goes out at `pace`. */
  constructor(max: number, pace: Pace, write: (text: string) => boolean, onDropped: (text: string) => void) {
    this.#max = max;
    this.#pace = pace;
    this.#write = write;
    this.#onDropped = onDropped;
  }

  /** Frames sent and not yet answered. */
  get unconfirmed(): number {
    return this.#unconfirmed.size;
  }

  /** Sends `frame` if nothing waits before it, the pace allows and the socket takes it now; else queues it. */
  push(frame: Outgoing): void {
    if (this.#queue.length === 0 && this.#pace.take() && this.#write(frame.text)) return this.#sent(frame);
    this.#queue.push(frame);
    while (this.#queue.length > this.#max) this.#drop(this.#queue[0]!, "waiting to be sent");
    this.#timer ??= setTimeout(() => this.#send(), this.#pace.wait);
  }

  /** After a welcome: sends what waited, paced, the last connection's unconfirmed frames first. */
  flush(): void {
    this.#queue = [...this.#unconfirmed.values(), ...this.#queue];
    this.#unconfirmed.clear();
    this.#send();
  }

  /** Goes on sending what waits (frames sent on this connection are not sent again). */
  resume(): void {
    this.#send();
  }

  /** Sends waiting frames while the pace allows, the rest later; stops when the socket cannot take them. */
  #send(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#queue.length > 0) {
      if (!this.#pace.take()) {
        this.#timer = setTimeout(() => this.#send(), this.#pace.wait);
        return;
      }
      if (!this.#write(this.#queue[0]!.text)) return; // the next flush goes on from here
      this.#sent(this.#queue.shift()!);
    }
  }

  #sent(frame: Outgoing): void {
    this.#unconfirmed.set(frame.id, frame);
    if (this.#unconfirmed.size > this.#max) this.#drop(this.#unconfirmed.values().next().value!, "awaiting an answer");
  }

  /** The relay answered frame `id`. */
  confirm(id: string | undefined, answer: Answer): void {
    this.#take(id)?.settle.resolve(answer);
  }

  /** The relay refused frame `id`: its promise rejects. */
  fail(id: string | undefined, error: RelayError): boolean {
    const frame = this.#take(id);
    frame?.settle.reject(error);
    return frame !== undefined;
  }

  /** The client stopped for good: nothing waiting will be sent. */
  failAll(error: RelayError): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    const waiting = [...this.#unconfirmed.values(), ...this.#queue];
    this.#unconfirmed.clear();
    this.#queue = [];
    for (const frame of waiting) frame.settle.reject(error);
  }

  #take(id: string | undefined): Outgoing | undefined {
    if (id === undefined) return undefined;
    const frame = this.#unconfirmed.get(id);
    if (frame) this.#unconfirmed.delete(id);
    return frame;
  }

  #drop(frame: Outgoing, where: string): void {
    if (this.#queue[0] === frame) this.#queue.shift();
    else this.#unconfirmed.delete(frame.id);
    frame.settle.reject(new RelayError("dropped", `more than ${this.#max} frames ${where}; this one was dropped`));
    this.#onDropped(frame.text);
  }
}
