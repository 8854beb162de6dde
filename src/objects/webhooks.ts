// Webhooks: one object per channel that POSTs its webhooks to the app (docs/pusher.md
// "Webhooks"), as Pusher posts them (`{"time_ms","events"}`, signed in X-Pusher-Signature). The
// channel's Room hands each turn's events over in one call and is done with them, so a Room
// whose app endpoint refuses them still empties and resets on time (docs/design.md "Failures").
// Here they go out in order, one request at a time; a request the app did not take is tried six
// times (31 s of waits between), then dropped and logged. Held in memory: a restart of the
// runtime loses what was waiting.
import { DurableObject } from "cloudflare:workers";
import { configOf } from "../config";
import { log } from "../log";
import { pusherSignature } from "../protocol";

/** Waits before each new try of a webhook the app did not take (about 31 s in all). */
const RETRY_WAITS_MS = [1_000, 2_000, 4_000, 8_000, 16_000];

/** How long one try waits for the app's answer: an endpoint that hangs must not stop the rest. */
const ANSWER_WAIT_MS = 10_000;

/**
 * Characters of events waiting for the app (its endpoint down): past this the oldest are dropped.
 * By size, not number: a client event carries up to MAX_MESSAGE_BYTES of data.
 */
const MAX_WAITING_CHARS = 4 * 1024 * 1024;

/** A request carries at most this many events and about this many characters. */
const MAX_BATCH = 100;
const MAX_BATCH_CHARS = 1024 * 1024;

/** Drops are logged at most this often. */
const DROP_LOG_EVERY_MS = 60_000;

/** Takes the first events (JSON texts) out of `waiting`, in order: one at least, then up to `maxCount` within about `maxChars`. */
export function takeBatch(waiting: string[], maxChars: number, maxCount = Number.POSITIVE_INFINITY): string[] {
  let count = 0;
  let chars = 0;
  while (count < waiting.length && count < maxCount && (count === 0 || chars + waiting[count]!.length <= maxChars)) chars += waiting[count++]!.length;
  return waiting.splice(0, count);
}

export class Webhooks extends DurableObject<Env> {
  /** Each event waiting, as its JSON text (its length bounds the queue and batches). */
  #waiting: string[] = [];
  #waitingChars = 0;
  /** Whether the loop sending what waits runs. */
  #sending = false;
  #droppedSince = 0;
  #dropLoggedAt = 0;

  /** Takes a turn's events of `channel` (JSON texts, in order); answers at once, they go out in the background. */
  post(channel: string, events: string[]): void {
    for (const text of events) {
      this.#waiting.push(text);
      this.#waitingChars += text.length;
    }
    while (this.#waitingChars > MAX_WAITING_CHARS) this.#drop(channel, this.#waiting.shift()!.length);
    if (!this.#sending) {
      this.#sending = true;
      void this.#sendWaiting(channel);
    }
  }

  #drop(channel: string, size: number): void {
    this.#waitingChars -= size;
    this.#droppedSince++;
    if (Date.now() - this.#dropLoggedAt < DROP_LOG_EVERY_MS) return;
    log("warn", "dropped webhooks: too many wait for the app's endpoint", { room: channel, dropped: this.#droppedSince });
    this.#droppedSince = 0;
    this.#dropLoggedAt = Date.now();
  }

  async #sendWaiting(channel: string): Promise<void> {
    try {
      while (this.#waiting.length > 0) await this.#post(channel, this.#nextBatch());
    } catch (error) {
      log("error", "could not send webhooks", { room: channel, error });
    } finally {
      this.#sending = false; // in the turn that found nothing left: a later post starts a new loop
    }
  }

  /** The JSON texts of the next request's events. */
  #nextBatch(): string[] {
    const batch = takeBatch(this.#waiting, MAX_BATCH_CHARS, MAX_BATCH);
    for (const text of batch) this.#waitingChars -= text.length;
    return batch;
  }

  async #post(channel: string, events: string[]): Promise<void> {
    const app = configOf(this.env).pusher;
    if (app?.webhookUrl === undefined) return; // the app's settings changed since the Room posted
    const body = `{"time_ms":${Date.now()},"events":[${events.join(",")}]}`;
    const headers = { "Content-Type": "application/json", "X-Pusher-Key": app.key, "X-Pusher-Signature": await pusherSignature(app.secret, body) };
    for (let tries = 0; ; tries++) {
      let problem: unknown;
      try {
        const response = await fetch(app.webhookUrl, { method: "POST", headers, body, signal: AbortSignal.timeout(ANSWER_WAIT_MS) });
        await response.body?.cancel();
        if (response.ok) return;
        problem = `status ${response.status}`;
      } catch (error) {
        problem = error;
      }
      if (tries === RETRY_WAITS_MS.length) {
        log("error", "the app's webhook endpoint did not take these events; dropped", { room: channel, events: events.length, problem });
        return;
      }
      await scheduler.wait(RETRY_WAITS_MS[tries]!);
    }
  }
}
