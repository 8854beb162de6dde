// One Server-Sent Events stream from a room to a receive-only client. Unlike a hibernatable
// socket, an open stream is an in-flight response: it keeps its object in memory while it lasts.
import { SSE_KEEP_ALIVE, sseEvent } from "../protocol";
import type { FeedEntry } from "./feed";

const encoder = new TextEncoder();

/** A comment line every this often keeps proxies from closing an idle stream. */
const KEEP_ALIVE_MS = 15_000;

/** What a reader may fall behind by before its stream is ended (a bounded queue, not a leak). */
const MAX_QUEUED_BYTES = 1 << 20;

export class EventStream {
  readonly response: Response;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #timer: ReturnType<typeof setInterval>;
  #expiry?: ReturnType<typeof setTimeout>;
  #onEnd: (stream: EventStream) => void;
  #ended = false;

  /**
   * `onEnd` runs once, when the reader goes away or the stream is ended. `endAt` (ms since the
   * epoch) ends the stream then: a token's expiry ends its stream as it closes its sockets.
   */
  constructor(onEnd: (stream: EventStream) => void, endAt?: number) {
    this.#onEnd = onEnd;
    const body = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.#controller = controller;
        },
        cancel: () => this.#end(),
      },
      new ByteLengthQueuingStrategy({ highWaterMark: MAX_QUEUED_BYTES }),
    );
    this.#timer = setInterval(() => this.ping(), KEEP_ALIVE_MS);
    if (endAt !== undefined) this.#expiry = setTimeout(() => this.end(), Math.max(0, endAt - Date.now()));
    this.response = new Response(body, {
      headers: { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store" },
    });
  }

  /** A keep-alive now: writing is how a reader that went away is noticed (the stream then ends). */
  ping(): void {
    this.#write(SSE_KEEP_ALIVE);
  }

  /** Sends one event; `data` is one line of JSON. */
  send(event: string, data: string, id?: number): void {
    this.#write(sseEvent(event, data, id));
  }

  #write(text: string): void {
    if (this.#ended) return;
    // desiredSize goes negative as the reader falls behind; past the bound the stream ends, and
    // the reader reconnects with Last-Event-ID to resume from history.
    if ((this.#controller.desiredSize ?? 0) < 0) return this.end();
    this.#controller.enqueue(encoder.encode(text));
  }

  /** Ends the stream from our side; the reader sees it close. */
  end(): void {
    if (this.#ended) return;
    this.#controller.close();
    this.#end();
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    clearInterval(this.#timer);
    if (this.#expiry !== undefined) clearTimeout(this.#expiry);
    this.#onEnd(this);
  }
}

/**
 * A full room pings its streams this many times, this far apart, before refusing one more: a
 * second, since a proxy in front of the runtime delays the news of a closed reader (docs/protocol.md).
 */
const PROBES = 5;
const PROBE_WAIT_MS = 200;

/**
 * A room's event streams. They do not count toward its connections (docs/protocol.md), but
 * unbounded they would hold the Room's memory open to anyone: at most `limit` at once.
 */
export class EventStreams {
  readonly #streams = new Set<EventStream>();
  readonly #limit: number;
  /** The ping of every stream a full room makes before refusing one more, while it runs. */
  #probe?: Promise<void>;

  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Streams open or being opened. */
  get busy(): boolean {
    return this.#streams.size > 0 || this.#probe !== undefined;
  }

  /**
   * A new stream's response, ending at `endAt` (ms), once `start` has written its first events;
   * undefined when the room serves `limit` streams already.
   */
  async open(endAt: number | undefined, start: (stream: EventStream) => void): Promise<Response | undefined> {
    if (this.#streams.size >= this.#limit) await this.#dropGoneReaders();
    if (this.#streams.size >= this.#limit) return undefined;
    const stream = new EventStream((ended) => this.#streams.delete(ended), endAt);
    start(stream); // in the same turn as the add: nothing live can come before it
    this.#streams.add(stream);
    return stream.response;
  }

  /**
   * Stored messages and presence to every stream (not binary frames, nor Pusher's client events,
   * nor a count frame meant only for newcomers: a stream heard the count before it).
   */
  send(entries: FeedEntry[]): void {
    for (const stream of this.#streams) {
      for (const { frame, seq, pusherOnly, only } of entries) {
        if (typeof frame === "string" && !pusherOnly && only === undefined) stream.send(seq === undefined ? "presence" : "message", frame, seq);
      }
    }
  }

  /**
   * A reader that went away holds its stream until a write fails, up to a keep-alive interval in
   * a quiet room; refused meanwhile, a reconnecting EventSource would give up for good. So a full
   * room pings its streams and waits a moment for the gone ones to end (docs/protocol.md "Server-Sent Events").
   */
  #dropGoneReaders(): Promise<void> {
    // One probe at a time: the requests that reach a full room meanwhile share it, so a flood of
    // them costs at most PROBES writes per stream every PROBES * PROBE_WAIT_MS.
    this.#probe ??= (async () => {
      for (let round = 0; round < PROBES && this.#streams.size >= this.#limit; round++) {
        for (const stream of this.#streams) stream.ping();
        await scheduler.wait(PROBE_WAIT_MS);
      }
    })().finally(() => (this.#probe = undefined));
    return this.#probe;
  }
}
