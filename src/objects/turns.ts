// Work that must run one piece at a time per key, in the order it was asked for, while different
// keys run side by side. A Holder uses it for each socket's subscription to each room: a subscribe
// waits for its room's answer, and the frames that arrive meanwhile run (docs/design.md "Joining,
// counting and presence").

export class Turns {
  /** The last piece of work queued for each key, settled either way. */
  readonly #last = new Map<string, Promise<void>>();

  /** Runs `work` once everything queued before it under `key` has finished. */
  run<T>(key: string, work: () => T | Promise<T>): Promise<T> {
    const result = (this.#last.get(key) ?? Promise.resolve()).then(work);
    const done = result.then(
      () => undefined,
      () => undefined,
    );
    this.#last.set(key, done);
    void done.then(() => this.#last.get(key) === done && this.#last.delete(key));
    return result;
  }

  /**
   * Runs `work` once everything queued under `key` so far has finished (at once when nothing is),
   * without holding up what is queued after it.
   */
  after<T>(key: string, work: () => Promise<T>): Promise<T> {
    const last = this.#last.get(key);
    return last ? last.then(work) : work();
  }
}
