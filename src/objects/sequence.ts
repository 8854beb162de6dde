// The counter every message-holding object keeps: a `seq` that only grows, and the random
// `epoch` of the object's storage (a different epoch tells a client its history was lost).
//
// The highest seq handed out is the highest seq in the object's own rows, so a batch stores its
// rows and nothing else (one write fewer a commit; BENCHMARKS.md, "Cost per operation"). The
// counter goes to storage only when the rows that hold it are about to go (an inbox whose every
// direct is acknowledged, or expired rows purged), through `save()`.

export class Sequence {
  readonly epoch: string;
  #kv: SyncKvStorage;
  #seq: number;

  /** `highestStored`: the highest seq among the rows the object keeps (0 with none). */
  constructor(kv: SyncKvStorage, highestStored: number) {
    this.#kv = kv;
    this.#seq = Math.max(kv.get<number>("seq") ?? 0, highestStored);
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

  /** Hands out the next seq; it lasts once a row holding it is stored. */
  reserve(): number {
    return ++this.#seq;
  }

  /** Takes back every seq reserved after `seq`, when what they numbered could not be stored. */
  rewind(seq: number): void {
    this.#seq = seq;
  }

  /** Stores the highest seq handed out: call before deleting the rows that hold it. */
  save(): void {
    this.#kv.put("seq", this.#seq);
  }
}
