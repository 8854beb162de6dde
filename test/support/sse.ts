// Reads a text/event-stream body event by event, as an EventSource would, for tests in workerd
// and in Node alike.

export interface ServerEvent {
  event: string;
  id?: string;
  /** The data line parsed as JSON. */
  data: any;
}

export class EventReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #decoder = new TextDecoder();
  #buffer = "";
  /** Comment lines seen so far (keep-alives). */
  readonly comments: string[] = [];

  constructor(body: ReadableStream<Uint8Array>) {
    this.#reader = body.getReader();
  }

  /** The next event (comments are collected, not returned); rejects when the stream ends. */
  async next(timeoutMs = 10_000): Promise<ServerEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const end = this.#buffer.indexOf("\n\n");
      if (end !== -1) {
        const block = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        const event = this.#parse(block);
        if (event) return event;
        continue;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no event within ${timeoutMs} ms`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const chunk = await Promise.race([
        this.#reader.read(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no event within ${timeoutMs} ms`)), left);
        }),
      ]).finally(() => clearTimeout(timer));
      if (chunk.done) throw new Error("the event stream ended");
      this.#buffer += this.#decoder.decode(chunk.value, { stream: true });
    }
  }

  #parse(block: string): ServerEvent | undefined {
    const fields: Record<string, string> = {};
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) {
        this.comments.push(line.slice(1).trim());
        continue;
      }
      const colon = line.indexOf(":");
      const [name, value] = [line.slice(0, colon), line.slice(colon + 1).replace(/^ /, "")];
      // Data lines join with line feeds, as EventSource joins them.
      fields[name] = name === "data" && fields.data !== undefined ? `${fields.data}\n${value}` : value;
    }
    if (fields.data === undefined) return undefined;
    return { event: fields.event ?? "message", ...(fields.id !== undefined && { id: fields.id }), data: JSON.parse(fields.data) };
  }

  cancel(): Promise<void> {
    return this.#reader.cancel();
  }
}
