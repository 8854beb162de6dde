// Webhooks: one object per channel that POSTs its webhooks to the app (docs/pusher.md
// "Webhooks"), as Pusher posts them (`{"time_ms","events"}`, signed in X-Pusher-Signature). The
// channel's Room hands each turn's events over in one call and is done with them, so a Room
// whose app endpoint refuses them still empties and resets on time (docs/design.md "Failures").
// Here they are stored before the call answers and go out in order, one request at a time, from
// the object's alarm; a request the app did not take is tried again, as Pusher does, for five
// minutes, the same request each time, then dropped and logged. Stored and driven by the alarm,
// they outlive a restart of the runtime and an eviction of the object.
import { DurableObject } from "cloudflare:workers";
import { configOf } from "../config";
import { log } from "../log";
import { pusherSignature } from "../protocol";

/** A request the app did not take is tried again until this long after its first try, */
const RETRY_FOR_MS = 5 * 60_000;
/** after waits that double from the first to the last, then stay there. */
const FIRST_WAIT_MS = 1_000;
const LONGEST_WAIT_MS = 64_000;

/** How long one try waits for the app's answer: an endpoint that hangs must not stop the rest. */
const ANSWER_WAIT_MS = 10_000;

/**
 * Characters of events waiting for the app (its endpoint down): past this the oldest are dropped,
 * those the Room keeps (occupancy and members: they change what the app knows) only when nothing
 * else is left. By size, not number: a client event carries up to MAX_MESSAGE_BYTES of data.
 */
const MAX_WAITING_CHARS = 4 * 1024 * 1024;

/** A request carries at most this many events and about this many characters. */
const MAX_BATCH = 100;
const MAX_BATCH_CHARS = 1024 * 1024;

/** Drops are logged at most this often. */
const DROP_LOG_EVERY_MS = 60_000;

/** Takes the first items out of `waiting`, in order: one at least, then up to `maxCount` within about `maxChars` (as `charsOf` counts them). */
export function takeBatch<T>(waiting: T[], charsOf: (item: T) => number, maxChars: number, maxCount = Number.POSITIVE_INFINITY): T[] {
  let count = 0;
  let chars = 0;
  while (count < waiting.length && count < maxCount && (count === 0 || chars + charsOf(waiting[count]!) <= maxChars)) chars += charsOf(waiting[count++]!);
  return waiting.splice(0, count);
}

/** An event handed over: its JSON text, and whether it is one the Room keeps until handed over (dropped last). */
export interface HandedOver {
  text: string;
  kept?: boolean;
}

/** A stored chunk of a handover: its events' JSON texts joined by commas, how many, and when it was handed over. */
type Chunk = {
  id: number;
  events: string;
  count: number;
  created: number;
};

/** The chunks of the next request: its events, their number, when the first was handed over, and its last row (deleted with those before it once done). */
interface Batch {
  events: string;
  count: number;
  created: number;
  last: number;
}

/** The request under way (up to row `last`): first tried at `since`, refused `tries` times so far. */
interface Request {
  since: number;
  tries: number;
  last: number;
}

export class Webhooks extends DurableObject<Env> {
  readonly #sql: SqlStorage;
  /** Characters of the events waiting; counted from storage when first needed after a start. */
  #waitingChars?: number;
  /** An alarm is set or running: a post need not set one. False after a start until the first post looks. */
  #armed = false;
  /** The last row of the request under way: the oldest events dropped for room are after it. */
  #sendingUpTo = 0;
  #droppedSince = 0;
  #dropLoggedAt = 0;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#sql = ctx.storage.sql;
    // A row per chunk of a handover, not per event: one write for a busy turn's events.
    // A chunk holds kept events only, or none: the drop can pick the others first.
    this.#sql.exec(
      "CREATE TABLE IF NOT EXISTS waiting (id INTEGER PRIMARY KEY AUTOINCREMENT, events TEXT NOT NULL, count INTEGER NOT NULL, kept INTEGER NOT NULL, created INTEGER NOT NULL)",
    );
  }

  /** Stores a turn's events of `channel` (in order); they go out from the alarm. */
  async post(channel: string, events: HandedOver[]): Promise<void> {
    if (this.ctx.storage.kv.get("channel") !== channel) this.ctx.storage.kv.put("channel", channel);
    let chars = this.#waitingChars ?? this.#sql.exec<{ chars: number }>("SELECT COALESCE(SUM(length(events)), 0) AS chars FROM waiting").one().chars;
    const now = Date.now();
    for (let start = 0; start < events.length; ) {
      const kept = events[start]!.kept === true;
      let end = start + 1;
      while (end < events.length && (events[end]!.kept === true) === kept) end++;
      const run = events.slice(start, end).map((event) => event.text);
      start = end;
      while (run.length > 0) {
        const chunk = takeBatch(run, (text) => text.length, MAX_BATCH_CHARS, MAX_BATCH);
        const joined = chunk.join(",");
        this.#sql.exec("INSERT INTO waiting (events, count, kept, created) VALUES (?, ?, ?, ?)", joined, chunk.length, kept ? 1 : 0, now);
        chars += joined.length;
      }
    }
    this.#waitingChars = chars;
    while (this.#waitingChars > MAX_WAITING_CHARS && this.#dropOldest(channel));
    if (this.#armed) return;
    this.#armed = true;
    // Awaited, so the Room's call answers once the alarm is stored too (after a start, one may wait already).
    if ((await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(Date.now());
  }

  /** Drops the oldest chunk not in the request under way, one the Room does not keep if there is one; false if there is none. */
  #dropOldest(channel: string): boolean {
    const oldest = this.#sql
      .exec<{ id: number; size: number; count: number }>("SELECT id, length(events) AS size, count FROM waiting WHERE id > ? ORDER BY kept, id LIMIT 1", this.#sendingUpTo)
      .toArray()[0];
    if (oldest === undefined) return false;
    this.#sql.exec("DELETE FROM waiting WHERE id = ?", oldest.id);
    this.#waitingChars! -= oldest.size;
    this.#droppedSince += oldest.count;
    if (Date.now() - this.#dropLoggedAt >= DROP_LOG_EVERY_MS) {
      log("warn", "dropped webhooks: too many wait for the app's endpoint", { room: channel, dropped: this.#droppedSince });
      this.#droppedSince = 0;
      this.#dropLoggedAt = Date.now();
    }
    return true;
  }

  /** Sends what waits, a request at a time, until nothing does or the app refuses one (then comes back later). */
  override async alarm(): Promise<void> {
    this.#armed = true;
    const kv = this.ctx.storage.kv;
    const channel = kv.get<string>("channel") ?? "";
    for (let batch = this.#firstBatch(); batch !== undefined; batch = this.#nextBatch()) {
      // Stored before the first try goes out (the output gate holds the fetch until it is): a
      // try a restart cut short is made again with the same bounds, so the same body.
      let request = kv.get<Request>("request");
      if (request === undefined) kv.put("request", (request = { since: Date.now(), tries: 0, last: batch.last }));
      this.#sendingUpTo = batch.last;
      const problem = await this.#try(batch);
      this.#sendingUpTo = 0;
      const left = request.since + RETRY_FOR_MS - Date.now();
      if (problem !== undefined && left > 0) {
        kv.put("request", { ...request, tries: request.tries + 1 });
        // The last wait is cut so that the last try comes at the end of RETRY_FOR_MS.
        await this.ctx.storage.setAlarm(Date.now() + Math.min(FIRST_WAIT_MS * 2 ** request.tries, LONGEST_WAIT_MS, left));
        return;
      }
      if (problem !== undefined) log("error", "the app's webhook endpoint did not take these events; dropped", { room: channel, events: batch.count, tries: request.tries + 1, problem });
      kv.delete("request");
      this.#forget(batch);
    }
    this.#armed = false; // in the turn that found nothing left: a later post sets the alarm again
  }

  /**
   * The request to try now: one tried before (refused, or cut short by a restart) is the same
   * request (what came meanwhile waits), so an app can tell a repeat; unless its events were all
   * dropped meanwhile (the limit above).
   */
  #firstBatch(): Batch | undefined {
    const request = this.ctx.storage.kv.get<Request>("request");
    if (request === undefined) return this.#nextBatch();
    const again = this.#nextBatch(request.last);
    if (again === undefined) this.ctx.storage.kv.delete("request");
    return again ?? this.#nextBatch();
  }

  /** The oldest chunks waiting (up to row `upTo`), as one request takes them (at most MAX_BATCH events: chunks hold at least one each). */
  #nextBatch(upTo = Number.MAX_SAFE_INTEGER): Batch | undefined {
    const chunks: Chunk[] = [];
    let count = 0;
    let chars = 0;
    for (const chunk of this.#sql.exec<Chunk>("SELECT id, events, count, created FROM waiting WHERE id <= ? ORDER BY id LIMIT ?", upTo, MAX_BATCH)) {
      if (chunks.length > 0 && (count + chunk.count > MAX_BATCH || chars + chunk.events.length > MAX_BATCH_CHARS)) break;
      chunks.push(chunk);
      count += chunk.count;
      chars += chunk.events.length;
    }
    if (chunks.length === 0) return undefined;
    return { events: chunks.map((chunk) => chunk.events).join(","), count, created: chunks[0]!.created, last: chunks.at(-1)!.id };
  }

  /** Deletes a request's events: sent, or given up on. */
  #forget({ events, last }: Batch): void {
    this.#sql.exec("DELETE FROM waiting WHERE id <= ?", last);
    if (this.#waitingChars !== undefined) this.#waitingChars -= events.length;
  }

  /** One try of a request: undefined once the app took it, else what went wrong. */
  async #try({ events, created }: Batch): Promise<unknown> {
    const app = configOf(this.env).pusher;
    if (app?.webhookUrl === undefined) return undefined; // the app's settings changed since: nowhere to send
    // As Pusher: when the webhook was made (its oldest event's handover), not when this try went out.
    const body = `{"time_ms":${created},"events":[${events}]}`;
    const headers = { "Content-Type": "application/json", "X-Pusher-Key": app.key, "X-Pusher-Signature": await pusherSignature(app.secret, body) };
    try {
      const response = await fetch(app.webhookUrl, { method: "POST", headers, body, signal: AbortSignal.timeout(ANSWER_WAIT_MS) });
      await response.body?.cancel();
      return response.ok ? undefined : `status ${response.status}`;
    } catch (error) {
      return error ?? "failed";
    }
  }
}
