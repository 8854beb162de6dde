// Inbox: one Durable Object per user. Stores each direct message durably until the user acks it,
// forwards it to the hubs holding the user's sockets, and replays the rest whenever a socket
// attaches. It holds no socket itself: user sockets live in hubs (docs/design.md).
import { DurableObject } from "cloudflare:workers";
import { configOf, type Config } from "../config";
import { log } from "../log";
import { directFrame, type Delivery, type Json, type Refusal } from "../protocol";
import { entrySize, type Attachment, type FeedEntry } from "./feed";
import { tooBigToStore } from "./limits";
import { Links, Streams, within } from "./links";
import { Sequence } from "./sequence";

/** How long an inbox waits for a hub's recount after it starts. */
const RECOUNT_WAIT_MS = 2_000;

/**
 * The characters of unacknowledged directs an inbox holds, whatever INBOX_MAX_MESSAGES says: a
 * socket's attach gets all of them in one answer, and a call between objects carries at most
 * 32 MiB (docs/platform.md). With one batch still to store on top, an answer stays well under.
 */
const INBOX_MAX_CHARS = 4 * 1024 * 1024;

/**
 * The part of an inbox (of INBOX_MAX_MESSAGES and of INBOX_MAX_CHARS) that one user's socket
 * directs may hold, so that no one sender can lock everyone else out of another user's inbox
 * (docs/protocol.md decision 56). Server POSTs count against the whole only.
 */
const SENDER_SHARE = 0.5;

/** A direct's frame beyond its data, `from` and `id` (type, seq, ts and the punctuation), in characters, rounded up. */
const FRAME_OVERHEAD = 80;

/** Directs counted, in all and for each sender of socket directs: how many, and their characters. */
class Tallies {
  readonly all = { count: 0, chars: 0 };
  readonly #bySender = new Map<string, { count: number; chars: number }>();

  add(sender: string | null | undefined, count: number, chars: number): void {
    this.all.count += count;
    this.all.chars += chars;
    if (sender === null || sender === undefined) return;
    const tally = this.#bySender.get(sender);
    if (tally === undefined) this.#bySender.set(sender, { count, chars });
    else {
      tally.count += count;
      tally.chars += chars;
    }
  }

  of(sender: string): { count: number; chars: number } {
    return this.#bySender.get(sender) ?? { count: 0, chars: 0 };
  }
}

/**
 * Expired directs are deleted by an alarm this long after the oldest one expires, so that an
 * inbox whose user never connects again does not keep them in storage for ever; one alarm then
 * clears everything that expired meanwhile.
 */
const PURGE_AFTER_MS = 60_000;

export class Inbox extends DurableObject<Env> {
  readonly #config: Config;
  readonly #name: string;
  readonly #sequence: Sequence;
  readonly #hubs: Streams<FeedEntry>;
  /** Hubs holding this user's sockets, and how many each; kept in storage across hibernation. */
  readonly #sockets = new Map<string, number>();
  /** How many reports each hub made: a `direct` answer of 0 that raced a report is ignored. */
  readonly #changes = new Map<string, number>();
  /** Rows held, expired or not; counted after a wake-up, an ack or a purge, then kept in step. */
  #held?: Tallies;
  /** Directs in `#pending`, their characters estimated (their frames are made when stored). */
  #waiting = new Tallies();
  /** When the oldest row held expires (null: none held); read after a wake-up, an ack or a purge. */
  #oldest?: number | null;
  /** The expiry alarm is set (or being set); false after a wake-up until a batch is stored. */
  #purgeArmed = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#config = configOf(env);
    if (ctx.id.name === undefined) throw new Error("Inbox must be addressed by name");
    this.#name = ctx.id.name;
    const sql = ctx.storage.sql;
    // sender: who sent a socket direct (NULL for a server POST); added to older inboxes' tables.
    sql.exec("CREATE TABLE IF NOT EXISTS directs (seq INTEGER PRIMARY KEY, frame TEXT NOT NULL, expires INTEGER NOT NULL, sender TEXT)");
    if (!sql.exec("SELECT * FROM directs LIMIT 0").columnNames.includes("sender")) sql.exec("ALTER TABLE directs ADD COLUMN sender TEXT");
    const { highest } = sql.exec<{ highest: number | null }>("SELECT MAX(seq) AS highest FROM directs").one();
    this.#sequence = new Sequence(ctx.storage.kv, highest ?? 0);
    sql.exec("CREATE TABLE IF NOT EXISTS hubs (name TEXT PRIMARY KEY, sockets INTEGER NOT NULL)");
    for (const { name, sockets } of sql.exec<{ name: string; sockets: number }>("SELECT name, sockets FROM hubs")) {
      this.#sockets.set(name, sockets);
    }
    const links = new Links(env);
    this.#hubs = new Streams(async (hub, entries) => {
      const changes = this.#changes.get(hub);
      const delivered = await links.call("holder", hub, (stub) => stub.direct(this.#name, entries));
      // A hub that holds none of the user's sockets (it lost them and could not say so) is
      // dropped, unless it reported since: a device may have been joining as it answered 0.
      if (delivered === 0 && this.#changes.get(hub) === changes) this.detach(hub, 0);
    }, { sizeOf: entrySize });
    // A restart of the runtime takes the hubs' sockets without a word to the inbox, which would
    // then answer "delivered" for a user with no socket: after every start, each hub it knows
    // says how many of the user's sockets it still holds (docs/design.md "Failures").
    if (this.#sockets.size > 0) void ctx.blockConcurrencyWhile(() => this.#recount(links));
  }

  async #recount(links: Links): Promise<void> {
    const hubs = [...this.#sockets.keys()];
    // Bounded: every event waits for this, so a hub that hangs must not hold the inbox.
    const ask = (hub: string) => within(links.call("holder", hub, (stub) => stub.userSockets(this.#name)), RECOUNT_WAIT_MS);
    const counts = await Promise.allSettled(hubs.map(ask));
    counts.forEach((count, i) => {
      // A hub that cannot be asked keeps its count: it may still hold sockets.
      if (count.status === "fulfilled") this.detach(hubs[i]!, count.value);
      else log("warn", "could not recount a hub's sockets", { user: this.#name, hub: hubs[i], error: count.reason });
    });
  }

  // ---- sockets, as their hubs report them ----

  /** A hub now holds `sockets` of this user's sockets, one of them new: answers its welcome and replay. */
  attach(hub: string, sockets: number): Attachment {
    // Store what is pending first: the replay and the welcome's seq then cover it.
    this.#flush();
    this.detach(hub, sockets);
    const pending = this.ctx.storage.sql
      .exec<{ frame: string }>("SELECT frame FROM directs WHERE expires > ? ORDER BY seq", Date.now())
      .toArray()
      .map((row) => row.frame);
    return { seq: this.#sequence.current, epoch: this.#sequence.epoch, pending };
  }

  /** A hub now holds `sockets` of this user's sockets (0: none). */
  detach(hub: string, sockets: number): void {
    this.#changes.set(hub, (this.#changes.get(hub) ?? 0) + 1); // every report, even of the same count
    if ((this.#sockets.get(hub) ?? 0) === sockets) return;
    if (sockets > 0) {
      this.#sockets.set(hub, sockets);
      this.ctx.storage.sql.exec("INSERT OR REPLACE INTO hubs (name, sockets) VALUES (?, ?)", hub, sockets);
    } else {
      this.#sockets.delete(hub);
      this.ctx.storage.sql.exec("DELETE FROM hubs WHERE name = ?", hub);
    }
  }

  // ---- directs ----

  #heldTallies(): Tallies {
    if (this.#held === undefined) {
      this.#held = new Tallies();
      const rows = this.ctx.storage.sql.exec<{ sender: string | null; count: number; chars: number }>(
        "SELECT sender, COUNT(*) AS count, SUM(length(frame)) AS chars FROM directs GROUP BY sender",
      );
      for (const { sender, count, chars } of rows) this.#held.add(sender, count, chars);
    }
    return this.#held;
  }

  /** Whether a row held has expired: only then can a purge make room. */
  #expiredHeld(): boolean {
    this.#oldest ??= this.ctx.storage.sql.exec<{ oldest: number | null }>("SELECT MIN(expires) AS oldest FROM directs").one().oldest;
    return this.#oldest !== null && this.#oldest <= Date.now();
  }

  /** Why a direct from `sender` (undefined: the server) cannot be held now, if it cannot. */
  #refusal(sender?: string): Refusal | undefined {
    const held = this.#heldTallies();
    const waiting = this.#waiting;
    const { inboxMaxMessages } = this.#config;
    if (held.all.count + waiting.all.count >= inboxMaxMessages || held.all.chars + waiting.all.chars >= INBOX_MAX_CHARS) {
      // How much the recipient has not read is theirs to know, not the sender's.
      return { refused: "inbox_full", message: `the inbox of ${this.#name} is full of unacknowledged messages; not sent` };
    }
    if (sender === undefined) return undefined;
    const [mine, queued] = [held.of(sender), waiting.of(sender)];
    const count = mine.count + queued.count;
    const chars = mine.chars + queued.chars;
    if (count >= Math.max(1, Math.floor(inboxMaxMessages * SENDER_SHARE)) || chars >= INBOX_MAX_CHARS * SENDER_SHARE) {
      return { refused: "inbox_full", message: `the inbox of ${this.#name} holds as many of your unacknowledged messages as one sender may leave there; not sent` };
    }
    return undefined;
  }

  /**
   * Stores one direct durably, then forwards it to every hub of this user; answers once it is
   * stored. A full inbox refuses it (answered, not thrown: a refusal is an outcome, not a failure
   * of the call). Directs that arrive together are stored in one transaction, as a room stores
   * its messages (docs/design.md): one commit for many deliveries, each answered after it.
   */
  deliver(from: string, data: Json, id?: string): Promise<Delivery> | Refusal {
    return this.#take(from, data, id);
  }

  /** `deliver`, and for a user socket's direct (`sender`, its user) also its sender's share. */
  #take(from: string, data: Json, id?: string, sender?: string): Promise<Delivery> | Refusal {
    // Expired rows are never replayed; they are deleted by the expiry alarm, or here when they
    // would count against a limit, so a delivery usually costs one INSERT and nothing else.
    let refusal = this.#refusal(sender);
    if (refusal !== undefined && this.#expiredHeld()) {
      this.#purge();
      refusal = this.#refusal(sender);
    }
    if (refusal !== undefined) return refusal;
    const text = JSON.stringify(data);
    const tooBig = tooBigToStore(text, () => JSON.stringify(directFrame(Number.MAX_SAFE_INTEGER, from, null, id, Date.now())));
    if (tooBig !== undefined) return tooBig;
    const { promise, resolve, reject } = Promise.withResolvers<Delivery>();
    this.#pending.push({ from, data, id, sender, at: Date.now(), resolve, reject });
    this.#waiting.add(sender, 1, text.length + from.length + (id?.length ?? 0) + FRAME_OVERHEAD);
    // As a room's log does: a batch grown big or old under a flood is stored now, not later.
    const first = this.#pending[0]!;
    if (this.#pending.length >= 256 || Date.now() - first.at >= 20) this.#flush();
    else if (this.#pending.length === 1) setTimeout(() => this.#flush(), 0);
    promise.catch(() => {}); // its caller handles a rejection; the runtime need not report it too
    return promise;
  }

  /**
   * Several user sockets' directs from one holder in one call (links.ts `Batches`), each answered
   * on its own, in order: a refusal, a failure to store, or its seq once stored. A socket's
   * direct is `from` its sender, and counts against that sender's share.
   */
  async deliverAll(directs: { from: string; data: Json; id?: string }[]): Promise<(Delivery | Refusal)[]> {
    // async: a direct that throws fails alone, not the call.
    const outcomes = await Promise.allSettled(directs.map(async ({ from, data, id }) => this.#take(from, data, id, from)));
    return outcomes.map((outcome) =>
      outcome.status === "fulfilled" ? outcome.value : { refused: "internal", message: `the inbox of ${this.#name} could not store this message; not sent` },
    );
  }

  /** Directs numbered and answered only once stored: the batch the next flush writes. */
  #pending: { from: string; data: Json; id?: string; sender?: string; at: number; resolve: (delivery: Delivery) => void; reject: (error: unknown) => void }[] = [];

  /** Stores the pending directs in one transaction, forwards them to the hubs, answers each. */
  #flush(): void {
    const batch = this.#pending;
    if (batch.length === 0) return;
    this.#pending = [];
    this.#waiting = new Tallies();
    const sql = this.ctx.storage.sql;
    const first = this.#sequence.current + 1;
    let stored: { seq: number; text: string }[];
    try {
      stored = this.ctx.storage.transactionSync(() => {
        const rows = batch.map(({ from, data, id, sender, at }) => {
          const seq = this.#sequence.reserve();
          const text = JSON.stringify(directFrame(seq, from, data, id, at));
          sql.exec("INSERT INTO directs (seq, frame, expires, sender) VALUES (?, ?, ?, ?)", seq, text, at + this.#config.inboxTtlSeconds * 1000, sender ?? null);
          return { seq, text };
        });
        return rows;
      });
    } catch (error) {
      this.#sequence.rewind(first - 1);
      for (const { reject } of batch) reject(error);
      return;
    }
    // The batch's first direct expires first (the INSERTs above gave each the same lifetime).
    const firstExpiry = batch[0]!.at + this.#config.inboxTtlSeconds * 1000;
    this.#armPurge(firstExpiry);
    // Counts not loaded (an ack came meanwhile) are read from storage when next needed, these
    // rows included; loaded ones take them in now.
    stored.forEach(({ text }, i) => this.#held?.add(batch[i]!.sender, 1, text.length));
    if (this.#oldest !== undefined) this.#oldest = Math.min(this.#oldest ?? Infinity, firstExpiry);
    // The output gate holds these calls, and the callers' answers, until the write is durable.
    const entries = stored.map(({ seq, text }) => ({ frame: text, seq }));
    for (const hub of this.#sockets.keys()) this.#hubs.push(hub, entries);
    const status = this.#sockets.size > 0 ? "delivered" : "queued";
    stored.forEach(({ seq }, i) => batch[i]!.resolve({ status, seq }));
  }

  /** Deletes the expired directs. */
  #purge(): void {
    this.#held = this.#oldest = undefined; // read again when next needed
    this.#sequence.save(); // the newest row, which holds the seq, may be among them
    this.ctx.storage.sql.exec("DELETE FROM directs WHERE expires <= ?", Date.now());
  }

  /** Makes sure an alarm will delete the directs that expire at `expires` (or earlier ones). */
  #armPurge(expires: number): void {
    if (this.#purgeArmed) return;
    this.#purgeArmed = true;
    const storage = this.ctx.storage;
    void storage
      .getAlarm()
      // Earlier too: after INBOX_TTL_SECONDS was lowered, a new direct may expire first.
      .then((at) => (at === null || at > expires + PURGE_AFTER_MS ? storage.setAlarm(expires + PURGE_AFTER_MS) : undefined))
      .catch((error: unknown) => {
        this.#purgeArmed = false;
        log("error", "could not arm the inbox's expiry alarm", { user: this.#name, error });
      });
  }

  /** The expiry alarm: deletes what expired, and comes back for the next oldest direct. */
  override async alarm(): Promise<void> {
    this.#purge();
    const { oldest } = this.ctx.storage.sql.exec<{ oldest: number | null }>("SELECT MIN(expires) AS oldest FROM directs").one();
    this.#oldest = oldest;
    this.#purgeArmed = oldest !== null;
    if (oldest !== null) await this.ctx.storage.setAlarm(oldest + PURGE_AFTER_MS);
  }

  /** Drops every direct up to `seq`: the user has them. */
  ack(seq: number): void {
    // The newest row holds the seq (sequence.ts): kept in storage before it goes.
    if (seq >= this.#sequence.current) this.#sequence.save();
    this.ctx.storage.sql.exec("DELETE FROM directs WHERE seq <= ?", seq);
    this.#held = this.#oldest = undefined; // read again at the next delivery
  }
}
