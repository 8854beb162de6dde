// The counter every message-holding object keeps: a `seq` that only grows, persisted, and the
// random `epoch` of the object's storage (a different epoch tells a client its history was lost).

export class Sequence {
  readonly epoch: string;
  #kv: SyncKvStorage;
  #seq: number;

  constructor(kv: SyncKvStorage) {
    this.#kv = kv;
    this.#seq = kv.get<number>("seq") ?? 0;
    let epoch = kv.get<string>("epoch");
    if (epoch === undefined) {
      epoch = crypto.randomUUID();
      kv.put("epoch", epoch);
    }
    this.epoch = epoch;
  }

  /** The highest seq handed out. */
  get current(): number {
    return this.#seq;
  }

  /** Hands out the next seq; call inside the transaction that stores what it numbers. */
  next(): number {
    this.#kv.put("seq", ++this.#seq);
    return this.#seq;
  }
}
