// A typed event emitter: `on` answers a function that removes the listener, `once` fires at most
// once, `off` removes a listener given to either. A listener that throws does not stop the others
// nor the connection; its error is rethrown on its own, where the host reports uncaught errors.

export type Listener<V> = (value: V) => void;

interface Entry {
  listener: Listener<any>;
  once: boolean;
}

export class Emitter<Events> {
  readonly #entries = new Map<keyof Events, Entry[]>();

  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    return this.#add(type, { listener, once: false });
  }

  once<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    return this.#add(type, { listener, once: true });
  }

  off<K extends keyof Events>(type: K, listener: Listener<Events[K]>): void {
    const entries = this.#entries.get(type);
    if (entries) this.#entries.set(type, entries.filter((entry) => entry.listener !== listener));
  }

  emit<K extends keyof Events>(type: K, value: Events[K]): void {
    const entries = this.#entries.get(type);
    if (!entries?.length) return;
    // Adding and removing replace the array, so listeners changed while this runs count from the next event.
    for (const entry of entries) {
      if (entry.once) this.#remove(type, entry);
      try {
        entry.listener(value);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  #add(type: keyof Events, entry: Entry): () => void {
    this.#entries.set(type, [...(this.#entries.get(type) ?? []), entry]);
    return () => this.#remove(type, entry);
  }

  #remove(type: keyof Events, entry: Entry): void {
    const entries = this.#entries.get(type);
    if (entries) this.#entries.set(type, entries.filter((other) => other !== entry));
  }
}
