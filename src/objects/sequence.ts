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

  /** Hands out the next seq and stores it; call inside the transaction that stores what it numbers. */
  next(): number {
    this.#kv.put("seq", ++this.#seq);
    return this.#seq;
  }

  /**
   * Hands out the next seq without storing it yet: for a batch whose transaction calls `save()`
   * once. Until then the number lives only in memory, as does what it numbers.
   */
  reserve(): number {
    return ++this.#seq;
  }

  /** Takes back every seq reserved after `seq`, when what they numbered could not be stored. */
  rewind(seq: number): void {
    this.#seq = seq;
  }

  /** Stores the highest seq handed out. */
  save(): void {
    this.#kv.put("seq", this.#seq);
  }
}
