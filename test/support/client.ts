// A test client over any WebSocket with the standard event API: workerd's own, or `ws` in Node.
// It queues every frame so a test reads them in order, as a client would.

export interface SocketLike {
  readonly readyState: number;
  send(data: string | ArrayBuffer | Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { code: number; reason: string }) => void): void;
}

/** A received frame: parsed JSON for JSON text, the text itself otherwise, bytes for binary. */
export type Received = Record<string, any> | string | Uint8Array;

export interface Closed {
  code: number;
  reason: string;
}

export class TestClient {
  readonly ws: SocketLike;
  readonly closed: Promise<Closed>;
  #frames: Received[] = [];
  #waiters: ((frame: Received) => void)[] = [];

  constructor(ws: SocketLike) {
    this.ws = ws;
    ws.addEventListener("message", (event) => this.#push(decode(event.data)));
    this.closed = new Promise((resolve) => {
      ws.addEventListener("close", (event) => resolve({ code: event.code, reason: event.reason }));
    });
  }

  #push(frame: Received): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(frame);
    else this.#frames.push(frame);
  }

  /** The next frame, in arrival order. */
  next(timeoutMs = 10_000): Promise<Received> {
    const queued = this.#frames.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(new Error(`no frame within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (frame: Received) => {
        clearTimeout(timer);
        resolve(frame);
      };
      this.#waiters.push(waiter);
    });
  }

  /** The next frame, which must be a JSON object. */
  async json(timeoutMs?: number): Promise<Record<string, any>> {
    const frame = await this.next(timeoutMs);
    if (typeof frame !== "object" || frame instanceof Uint8Array) {
      throw new Error(`expected a JSON frame, got ${String(frame)}`);
    }
    return frame;
  }

  /** Frames of the given type, skipping any others (presence, say) that arrive in between. */
  async nextOf(type: string, timeoutMs?: number): Promise<Record<string, any>> {
    for (;;) {
      const frame = await this.json(timeoutMs);
      if (frame.type === type) return frame;
    }
  }

  /** Frames already received and not yet read. */
  get pending(): readonly Received[] {
    return this.#frames;
  }

  send(frame: object | string | Uint8Array): void {
    this.ws.send(typeof frame === "object" && !(frame instanceof Uint8Array) ? JSON.stringify(frame) : frame);
  }

  close(code = 1000, reason = ""): Promise<Closed> {
    this.ws.close(code, reason);
    return this.closed;
  }
}

function decode(data: unknown): Received {
  if (typeof data === "string") {
    try {
      const parsed = JSON.parse(data);
      return typeof parsed === "object" && parsed !== null ? parsed : data;
    } catch {
      return data;
    }
  }
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new Error(`unexpected frame data ${String(data)}`);
}
