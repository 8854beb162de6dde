// Stubs to other objects, kept for reuse. Calls made on one stub reach their object in the
// order they were made (E-order); calls on different stubs may not. So each target keeps one
// stub here while it is in use, which lets a socket's frames to one target go out without
// waiting for each answer and still arrive in order. A stub whose call failed may be broken
// for good, so it is dropped and the next call makes a fresh one.
import type { Inbox } from "./inbox";
import type { Room } from "./room";

/** Past this many targets the cache starts over (targets come and go). */
const MAX_CACHED_STUBS = 1_000;

export class Stubs {
  readonly #env: Env;
  readonly #cache = new Map<string, DurableObjectStub<Room> | DurableObjectStub<Inbox>>();

  constructor(env: Env) {
    this.#env = env;
  }

  inbox(user: string): DurableObjectStub<Inbox> {
    return this.#get(`user:${user}`, () => this.#env.INBOXES.getByName(user)) as DurableObjectStub<Inbox>;
  }

  room(name: string): DurableObjectStub<Room> {
    return this.#get(`room:${name}`, () => this.#env.ROOMS.getByName(name)) as DurableObjectStub<Room>;
  }

  /** Forgets the stub of a call that failed. */
  drop(kind: "room" | "user", name: string): void {
    this.#cache.delete(`${kind}:${name}`);
  }

  #get<T extends DurableObjectStub<Room> | DurableObjectStub<Inbox>>(key: string, make: () => T): T {
    let stub = this.#cache.get(key) as T | undefined;
    if (!stub) {
      if (this.#cache.size >= MAX_CACHED_STUBS) this.#cache.clear();
      stub = make();
      this.#cache.set(key, stub);
    }
    return stub;
  }
}
