// A room's messages: numbered at once, stored in batches, retained for resume and history.
//
// Storage is most of what a publish costs (BENCHMARKS.md), and each event's writes commit on
// their own. So the log numbers a message when it arrives but stores it with everything else
// that arrives before a zero timer fires: one transaction and one commit per batch. In a quiet
// room a batch is one message; under load batches grow and throughput triples.
//
// The rule "stored before sent" holds by construction: nothing outside the log sees a pending
// message. `seq` is the last *stored* number (what welcomes, info and resume report), and the
// only way a message leaves is `onStored`, called after its batch's transaction. The platform's
// output gate then holds whatever `onStored` sends until the commit is durable (docs/platform.md).
import { historyPieces, messageText } from "../protocol";
import { Sequence } from "./sequence";

/** A stored message: its seq and the exact frame text clients receive. */
export type Stored = { seq: number; frame: string };

/** A message just stored, and the connection it must not be sent to live (a Pusher `socket_id`). */
export type Fresh = Stored & { except?: string };

/** The outcome of a resume request: whether nothing was missed, and the messages to replay. */
export interface Resume {
  recovered: boolean;
  messages: Stored[];
}

/** The most messages one batch holds, and the longest its first waits, before it is stored. */
const MAX_BATCH = 256;
const MAX_BATCH_AGE_MS = 20;

interface Pending extends Fresh {
  resolve: (seq: number) => void;
  reject: (error: unknown) => void;
}

export class MessageLog {
  readonly #storage: DurableObjectStorage;
  readonly #sequence: Sequence;
  readonly #room: string;
  /** Messages served for resume and history. Rows kept: at least 1, the newest, which holds the seq. */
  readonly #historyLimit: number;
  /** History bodies (streams) not yet read to their end. */
  #reading = 0;
  readonly #onStored: (batch: Fresh[]) => void;
  #pending: Pending[] = [];
  #scheduled = false;
  /** When the first message of the pending batch arrived. */
  #startedAt = 0;

  constructor(storage: DurableObjectStorage, room: string, historyLimit: number, onStored: (batch: Fresh[]) => void) {
    this.#storage = storage;
    this.#room = room;
    this.#historyLimit = historyLimit;
    this.#onStored = onStored;
    // Stored frames are the exact text sent to clients, so replay and history never re-encode.
    storage.sql.exec("CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, frame TEXT NOT NULL)");
    const { highest } = storage.sql.exec<{ highest: number | null }>("SELECT MAX(seq) AS highest FROM messages").one();
    this.#sequence = new Sequence(storage.kv, highest ?? 0);
  }

  /** The last stored seq. */
  get seq(): number {
    return this.#sequence.current - this.#pending.length;
  }

  get epoch(): string {
    return this.#sequence.epoch;
  }

  /** Whether every message numbered so far is stored. */
  get stored(): boolean {
    return this.#pending.length === 0;
  }

  /**
   * Numbers a message, its data given as JSON text; resolves with its seq once its batch is
   * stored, rejects if storing failed.
   */
  append(from: string, dataText: string, id?: string, except?: string): Promise<number> {
    const seq = this.#sequence.reserve();
    const frame = messageText(this.#room, seq, from, dataText, id, Date.now());
    const { promise, resolve, reject } = Promise.withResolvers<number>();
    this.#pending.push({ seq, frame, resolve, reject, ...(except !== undefined && { except }) });
    // Its caller handles a rejection; this keeps the runtime from also reporting it as unhandled.
    promise.catch(() => {});
    if (this.#pending.length === 1) this.#startedAt = Date.now();
    // A flood of incoming frames can keep the zero timer waiting (BENCHMARKS.md, "write
    // batching"): a batch that is big or old enough is stored now, so delivery never stalls.
    if (this.#pending.length >= MAX_BATCH || Date.now() - this.#startedAt >= MAX_BATCH_AGE_MS) {
      this.flush();
    } else if (!this.#scheduled) {
      this.#scheduled = true;
      setTimeout(() => this.flush(), 0);
    }
    return promise;
  }

  /** Stores the pending batch in one transaction, then hands it to `onStored`. Never throws. */
  flush(): void {
    this.#scheduled = false;
    const batch = this.#pending;
    if (batch.length === 0) return;
    this.#pending = [];
    const sql = this.#storage.sql;
    const last = batch[batch.length - 1]!.seq;
    try {
      this.#storage.transactionSync(() => {
        for (const { seq, frame } of batch) sql.exec("INSERT INTO messages (seq, frame) VALUES (?, ?)", seq, frame);
        // The history keeps at least one row, the newest, which holds the seq (sequence.ts).
        sql.exec("DELETE FROM messages WHERE seq <= ?", last - Math.max(1, this.#historyLimit));
      });
    } catch (error) {
      // Nothing of the batch was stored or sent: take its numbers back and fail each publish.
      this.#sequence.rewind(batch[0]!.seq - 1);
      for (const pending of batch) pending.reject(error);
      return;
    }
    this.#onStored(batch.map(({ seq, frame, except }) => ({ seq, frame, ...(except !== undefined && { except }) })));
    for (const { seq, resolve } of batch) resolve(seq);
  }

  /** The first `limit` retained messages after `since`. */
  after(since: number, limit: number): Stored[] {
    const seq = this.seq;
    const from = Math.max(since, seq - this.#historyLimit); // the row a limit of 0 keeps is not served
    return this.#storage.sql.exec<Stored>("SELECT seq, frame FROM messages WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?", from, seq, limit).toArray();
  }

  /**
   * The history route's body for the first `limit` messages after `since`, as a stream of its
   * UTF-8 text: a call's answer may be at most 32 MiB, which a full history of large messages
   * can pass (docs/platform.md "Calls between objects"), and a stream's bytes do not count.
   */
  history(since: number, limit: number): ReadableStream<Uint8Array> {
    const pieces = historyPieces(this.after(since, limit).map((message) => message.frame));
    const encoder = new TextEncoder();
    let next = 0;
    this.#reading++;
    let finished = false;
    const finish = () => {
      if (!finished) this.#reading--;
      finished = true;
    };
    return new ReadableStream<Uint8Array>({
      pull: (controller) => {
        if (next < pieces.length) return controller.enqueue(encoder.encode(pieces[next++]));
        controller.close();
        finish();
      },
      cancel: finish,
    });
  }

  /** Whether a history body is still being read: the Room must not reset under it. */
  get reading(): boolean {
    return this.#reading > 0;
  }

  /** The newest message served, if it is at most `maxAgeMs` old: a Pusher cache channel's event. */
  newest(maxAgeMs: number): Stored | undefined {
    const [newest] = this.after(this.seq - 1, 1);
    const ts = newest && (JSON.parse(newest.frame) as { ts?: number }).ts;
    return ts !== undefined && Date.now() - ts <= maxAgeMs ? newest : undefined;
  }

  /** What a client that saw `since` (in `epoch`, when given) gets: a gapless replay, or `recovered: false`. */
  resume(since: number, epoch: string | undefined): Resume {
    const lost: Resume = { recovered: false, messages: [] };
    const seq = this.seq;
    if (epoch !== undefined && epoch !== this.epoch) return lost;
    if (since > seq) return lost;
    if (since === seq) return { recovered: true, messages: [] };
    const oldest = this.#storage.sql.exec<{ oldest: number | null }>("SELECT MIN(seq) AS oldest FROM messages").one().oldest;
    // Replaying from a later point would skip messages: only a gapless replay counts.
    if (oldest === null || Math.max(oldest, seq - this.#historyLimit + 1) > since + 1) return lost;
    return { recovered: true, messages: this.after(since, seq - since) };
  }
}
