// What a socket is still owed, so that a socket closed for flooding (1008, 1009) closes only once
// every frame it got in has its answer (docs/protocol.md "Delivery guarantees"). A publish or a
// direct from a shard or a hub waits for other objects, and a room socket's echo comes back in a
// later delivery: a close sent first would leave the client unable to tell what was taken.
import type { Session } from "./session";

/** How long a socket to be closed waits at most for what it is owed. */
const CLOSE_WAIT_MS = 5_000;

export interface OwedHost {
  /** Whether `session` is still open and ours to close. */
  isOpen(session: Session): boolean;
  close(session: Session, code: number, reason: string): void;
  /** Whether the echoes of the room publishes `session` got answered have reached it. */
  echoed(session: Session): boolean;
}

export class Owed {
  readonly #host: OwedHost;
  /** Sockets to be closed, waiting for what they are owed. */
  readonly #closing = new Map<Session, { code: number; reason: string; timer: ReturnType<typeof setTimeout> }>();

  constructor(host: OwedHost) {
    this.#host = host;
  }

  /** Whether `session` is to be closed: it takes no more frames. */
  closing(session: Session): boolean {
    return this.#closing.has(session);
  }

  /** A frame's handler started: its answer is owed until `settle`. */
  owe(session: Session): void {
    session.owed = (session.owed ?? 0) + 1;
  }

  /** An answer went out (or failed to); a socket to be closed closes once nothing is owed. */
  settle(session: Session): void {
    session.owed!--;
    this.#closeIfDone(session);
  }

  /** `answer` settles once the answer it sends is out (a publish's ack, once stored). */
  oweUntil(session: Session, answer: Promise<unknown>): void {
    this.owe(session);
    const settle = () => this.settle(session);
    answer.then(settle, settle);
  }

  /** Closes `session` once it is owed nothing, or after CLOSE_WAIT_MS whatever it is owed. */
  close(session: Session, code: number, reason: string): void {
    if (this.#closing.has(session)) return;
    const timer = setTimeout(() => this.#closeNow(session), CLOSE_WAIT_MS);
    this.#closing.set(session, { code, reason, timer });
  }

  /** After a delivery: sockets waiting only for their echoes may close now. */
  delivered(): void {
    for (const session of this.#closing.keys()) this.#closeIfDone(session);
  }

  #closeIfDone(session: Session): void {
    if (this.#closing.has(session) && !session.owed && this.#host.echoed(session)) this.#closeNow(session);
  }

  #closeNow(session: Session): void {
    const closing = this.#closing.get(session);
    if (!closing) return;
    this.#closing.delete(session);
    clearTimeout(closing.timer);
    if (this.#host.isOpen(session)) this.#host.close(session, closing.code, closing.reason);
  }
}
