// The whole relay (Worker, objects, demo site) started from ./wrangler.toml by wrangler's own APIs,
// reached over real loopback TCP: `fetch` for HTTP, the `ws` package for WebSockets.
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTestHarness, unstable_startWorker } from "wrangler";
import WebSocket from "ws";
import { TestClient } from "../support/client";

// Without this, starting the runtime tries to download the Request.cf object (docs/platform.md).
process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";
// wrangler's local observability streams a trace of every invocation, each socket frame included,
// to its own process, and prints an error line for each one cut short as sockets close
// (docs/platform.md): nothing these tests read.
process.env.X_LOCAL_OBSERVABILITY = "false";

/** The server API key every e2e relay is given. */
export const API_KEY = "e2e-api-key";

/** Headers that admit a caller to the server routes. */
export const SERVER_AUTH = { Authorization: `Bearer ${API_KEY}` } as const;

export interface RelayOptions {
  /** Overrides of wrangler.toml `[vars]`. */
  vars?: Record<string, string>;
  /** A fixed port (persistent relays only), so clients reconnect to the same URL after a restart. */
  port?: number;
  /** Secrets besides API_KEY (PUSHER_APP_SECRET, say). */
  secrets?: Record<string, string>;
}

/** Evicts an object by class and name, its sockets closed or kept (hibernated). */
type Evict = (className: string, name: string, webSockets: "close" | "hibernate") => Promise<void>;

/** A running relay and every socket opened to it, so one `close()` ends them all. */
export class Relay {
  readonly url: URL;
  readonly #stop: () => Promise<void>;
  readonly #evict?: Evict;
  readonly #sockets = new Set<WebSocket>();

  constructor(url: URL, stop: () => Promise<void>, evict?: Evict) {
    this.url = url;
    this.#stop = stop;
    this.#evict = evict;
  }

  /** Evicts a room's object and drops its sockets, as a deploy or a crash would. */
  async dropRoom(room: string): Promise<void> {
    if (!this.#evict) throw new Error("this relay cannot evict objects");
    await this.#evict("Room", room, "close");
  }

  /** Evicts any object by class ("Room", "Holder", "Inbox") and name, closing its sockets. */
  async evict(className: string, name: string): Promise<void> {
    if (!this.#evict) throw new Error("this relay cannot evict objects");
    await this.#evict(className, name, "close");
  }

  /** Evicts an object whose sockets stay open, as hibernation does: the next event wakes a new instance. */
  async hibernate(className: string, name: string): Promise<void> {
    if (!this.#evict) throw new Error("this relay cannot evict objects");
    await this.#evict(className, name, "hibernate");
  }

  /** An HTTP request to `path` over TCP. */
  fetch(path: string, init?: RequestInit): Promise<Response> {
    return fetch(new URL(path, this.url), init);
  }

  /** A WebSocket client on `path`, closed with the relay if the test left it open. */
  async connect(path: string): Promise<TestClient> {
    const client = await connect(this.url, path);
    const ws = client.ws as WebSocket;
    this.#sockets.add(ws);
    void client.closed.then(() => this.#sockets.delete(ws));
    return client;
  }

  /** Connects `user` to `room` (anonymous mode) and reads its welcome. */
  async join(room: string, user: string, query = ""): Promise<{ client: TestClient; welcome: Record<string, any> }> {
    const client = await this.connect(`/rooms/${room}/ws?user=${user}${query}`);
    const welcome = await client.json();
    if (welcome.type !== "welcome") throw new Error(`expected welcome, got ${JSON.stringify(welcome)}`);
    return { client, welcome };
  }

  /** Drops every socket still open, then stops the runtime. */
  async close(): Promise<void> {
    for (const ws of this.#sockets) ws.terminate();
    this.#sockets.clear();
    await this.#stop();
  }
}

/** A relay with in-memory storage, for one test file: start it in beforeAll, close it in afterAll. */
export async function startRelay(options: RelayOptions = {}): Promise<Relay> {
  const server = createTestHarness({
    workers: [{ configPath: "./wrangler.toml", vars: options.vars ?? {}, secrets: { ...options.secrets, API_KEY } }],
  });
  try {
    const { url } = await server.listen();
    const evict: Evict = (className, name, webSockets) => server.getWorker().evictDurableObject(className, { name, webSockets });
    return new Relay(url, () => server.close(), evict);
  } catch (error) {
    await server.close();
    throw error;
  }
}

/**
 * A relay whose Durable Object storage lives in `persistDir`: start one, close it (the runtime
 * stops entirely), start another on the same directory, and it finds the same rooms. The test
 * harness keeps storage in memory only, hence `unstable_startWorker` here.
 */
export async function startPersistentRelay(persistDir: string, options: RelayOptions = {}): Promise<Relay> {
  const vars = Object.fromEntries(
    Object.entries(options.vars ?? {}).map(([name, value]) => [name, { type: "plain_text", value }]),
  );
  const secrets = Object.fromEntries(
    Object.entries({ ...options.secrets, API_KEY }).map(([name, value]) => [name, { type: "secret_text", value }]),
  );
  const worker = await unstable_startWorker({
    config: "wrangler.toml",
    bindings: { ...vars, ...secrets },
    dev: {
      // Port 0: any free port, so parallel test files never collide.
      server: { hostname: "127.0.0.1", port: options.port ?? 0 },
      persist: persistDir,
      inspector: false,
      watch: false,
      // Hides the bindings table printed on every start; warnings and errors still show.
      logLevel: "warn",
    },
  });
  try {
    await worker.ready;
    return new Relay(await worker.url, () => worker.dispose());
  } catch (error) {
    await worker.dispose();
    throw error;
  }
}

/** A port that was free a moment ago, for a relay that must come back on the same URL. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A fresh temporary directory and its removal. */
export async function tempDir(): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), "edge-relay-e2e-"));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** A room id no other test uses. */
export function freshRoom(prefix = "room"): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** An upgrade the relay answered with something other than 101. */
export class UpgradeRefused extends Error {
  readonly status: number;
  readonly body: string;
  constructor(status: number, body: string) {
    super(`upgrade refused: ${status} ${body}`);
    this.name = "UpgradeRefused";
    this.status = status;
    this.body = body;
  }
}

/** How often a socket is checked for a finished closing handshake (see `connect`). */
const CLOSE_POLL_MS = 25;

/**
 * Opens a `ws` WebSocket on `path` of the relay at `base` (with extra request `headers`, if
 * any) and answers a TestClient once it is open. An upgrade the relay refuses rejects with an UpgradeRefused carrying its status and body.
 */
export function connect(base: URL, path: string, headers?: Record<string, string>): Promise<TestClient> {
  const url = new URL(path, base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url, headers && { headers });
  ws.binaryType = "arraybuffer";
  // Created at once so no frame or close can arrive before the client listens.
  const client = new TestClient(ws);
  finishClosingHandshakes(ws);
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve(client));
    // An 'error' without a listener would crash the process; before 'open' it is the answer,
    // after it the close event (1006) tells the test.
    ws.on("error", reject);
    ws.once("unexpected-response", (_request, response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (body += chunk));
      response.on("end", () => {
        reject(new UpgradeRefused(response.statusCode ?? 0, body));
        ws.terminate();
      });
    });
  });
}

/**
 * Makes a client's 'close' event fire as soon as both close frames have crossed.
 *
 * When the relay closes a socket from `alarm()` (heartbeat timeout, token expiry), its close
 * frame reaches `ws` at once and `ws` answers it (readyState CLOSING, code known), but the local
 * runtime keeps the TCP connection up for ~10 s more, and `ws` emits 'close' only when TCP ends
 * (docs/platform.md). Once both close frames are exchanged the closing handshake is complete (RFC 6455
 * section 7.1.1): nothing more can arrive, and a client may drop the TCP connection itself. So
 * this polls for that state and terminates the socket; 'close' then reports the code and reason
 * of the relay's close frame, which `ws` kept. The two flags are `ws` internals (8.x); should
 * they vanish, nothing is terminated and 'close' merely arrives late.
 */
function finishClosingHandshakes(ws: WebSocket): void {
  const internals = ws as unknown as { _closeFrameReceived?: boolean; _closeFrameSent?: boolean };
  const timer = setInterval(() => {
    if (ws.readyState === WebSocket.CLOSING && internals._closeFrameReceived && internals._closeFrameSent) {
      ws.terminate();
    }
  }, CLOSE_POLL_MS);
  timer.unref();
  ws.once("close", () => clearInterval(timer));
}
