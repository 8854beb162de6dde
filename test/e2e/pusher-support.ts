// Pusher's own libraries pointed at a relay: pusher-js (its Node build, which bundles
// faye-websocket), the `pusher` server SDK, and a raw socket that speaks the Pusher protocol for
// what pusher-js cannot send (`since` in pusher:subscribe). docs/pusher.md describes the setup.
import { createHash, createHmac } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import PusherServer from "pusher";
import Pusher, { type Channel, type ChannelAuthorizationHandler, type Options } from "pusher-js";
import type { TestClient } from "../support/client";
import type { Relay } from "./relay";

/** The one Pusher app every Pusher relay in the tests is configured with. */
export const APP = { id: "app-1", key: "key-1", secret: "secret-1" } as const;

/** startRelay options for a relay with the Pusher app (anonymous mode for the v1 room sockets). */
export const PUSHER_RELAY = {
  vars: { PUSHER_APP_ID: APP.id, PUSHER_APP_KEY: APP.key, ALLOW_ANONYMOUS: "true" },
  secrets: { PUSHER_APP_SECRET: APP.secret },
};

/** Generous waits: a busy two-core machine runs workerd, Chromium and the tests at once. */
export const WAIT_MS = 20_000;

/** The server SDK as an app's backend configures it for the relay: host, port, plain HTTP. */
export function serverSdk(relay: Relay, secret: string = APP.secret, encryptionMasterKeyBase64?: string): PusherServer {
  return new PusherServer({
    appId: APP.id,
    key: APP.key,
    secret,
    host: relay.url.hostname,
    port: relay.url.port,
    useTLS: false,
    ...(encryptionMasterKeyBase64 !== undefined && { encryptionMasterKeyBase64 }),
  });
}

/** pusher-js options that point it at the relay (ws only, no TLS); `cluster` is required but unused. */
export function clientOptions(relay: Relay): Options {
  return {
    cluster: "relay",
    wsHost: relay.url.hostname,
    wsPort: Number(relay.url.port),
    forceTLS: false,
    enabledTransports: ["ws"],
  };
}

/** A presence member as an app's auth endpoint describes it. */
export interface Member {
  user_id: string;
  user_info?: Record<string, unknown>;
}

/**
 * Signs channel subscriptions as an app's auth endpoint would: the server SDK's authorizeChannel,
 * with `member` as the channel_data of presence channels. A wrong `secret` makes bad signatures.
 */
export function signingHandler(sdk: PusherServer, member?: Member): ChannelAuthorizationHandler {
  return ({ socketId, channelName }, callback) => {
    try {
      const presence = channelName.startsWith("presence-");
      callback(null, sdk.authorizeChannel(socketId, channelName, presence ? member : undefined));
    } catch (error) {
      callback(error as Error, null);
    }
  };
}

/** Items in arrival order, read one at a time with a timeout. */
export class Queue<T> {
  readonly received: T[] = [];
  #read = 0;
  #waiters: (() => void)[] = [];

  push(item: T): void {
    this.received.push(item);
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** The next item not yet read. */
  async next(timeoutMs = WAIT_MS): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (this.#read >= this.received.length) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`nothing arrived within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.received[this.#read++]!;
  }
}

/** What a pusher-js listener is called with. */
export interface Heard {
  event: string;
  data: any;
  metadata: { user_id?: string };
}

export type SubscribeOutcome = { ok: true; data: any } | { ok: false; error: any };

/** A pusher-js client on the relay, with its connection errors and state changes recorded. */
export class PusherClient {
  readonly pusher: Pusher;
  readonly errors = new Queue<any>();
  readonly states = new Queue<string>();

  constructor(relay: Relay, options: { key?: string; authorize?: ChannelAuthorizationHandler; extra?: Partial<Options> } = {}) {
    this.pusher = new Pusher(options.key ?? APP.key, {
      ...clientOptions(relay),
      ...(options.authorize && { channelAuthorization: { customHandler: options.authorize } }),
      ...options.extra,
    } as Options);
    this.pusher.connection.bind("error", (error: unknown) => this.errors.push(error));
    this.pusher.connection.bind("state_change", ({ current }: { current: string }) => this.states.push(current));
  }

  /** Resolves with the socket id once connected. */
  connected(timeoutMs = WAIT_MS): Promise<string> {
    const connection = this.pusher.connection;
    if (connection.state === "connected") return Promise.resolve(connection.socket_id);
    return withTimeout(
      new Promise<string>((resolve) => connection.bind("connected", () => resolve(connection.socket_id))),
      timeoutMs,
      "pusher-js did not connect",
    );
  }

  get socketId(): string {
    return this.pusher.connection.socket_id;
  }

  /**
   * Subscribes and answers how it went: the subscription_succeeded data (a Members object on
   * presence channels), or the error pusher-js surfaced, on the channel
   * (`pusher:subscription_error`) or on the connection (a `pusher:error` frame).
   */
  subscribeOutcome(name: string, timeoutMs = WAIT_MS): Promise<SubscribeOutcome> {
    const channel = this.pusher.channel(name) ?? this.pusher.subscribe(name);
    // A `listen` before may have subscribed, and pusher-js says it succeeded only once: several
    // subscription_succeeded frames in one read all fire before a second `subscribe` binds.
    if (channel.subscribed) return Promise.resolve({ ok: true, data: (channel as { members?: unknown }).members ?? {} });
    return withTimeout(
      new Promise<SubscribeOutcome>((resolve) => {
        channel.bind("pusher:subscription_succeeded", (data: unknown) => resolve({ ok: true, data }));
        channel.bind("pusher:subscription_error", (error: unknown) => resolve({ ok: false, error }));
        this.pusher.connection.bind("error", (error: any) => {
          if (error?.type === "PusherError") resolve({ ok: false, error });
        });
      }),
      timeoutMs,
      `no subscription_succeeded or error for ${name}`,
    );
  }

  /** Subscribes and waits for subscription_succeeded; any error fails the test. */
  async subscribe(name: string): Promise<Channel> {
    const outcome = await this.subscribeOutcome(name);
    if (!outcome.ok) throw new Error(`subscription to ${name} refused: ${JSON.stringify(outcome.error)}`);
    return this.pusher.channel(name);
  }

  /** Every event of `events` on channel `name`, in arrival order. */
  listen(name: string, ...events: string[]): Queue<Heard> {
    const queue = new Queue<Heard>();
    const channel = this.pusher.channel(name) ?? this.pusher.subscribe(name);
    for (const event of events) {
      channel.bind(event, (data: unknown, metadata: { user_id?: string } = {}) => queue.push({ event, data, metadata }));
    }
    return queue;
  }

  close(): void {
    this.pusher.disconnect();
  }
}

export function withTimeout<T>(promise: Promise<T>, timeoutMs: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---- the Pusher protocol spoken by hand ----

/** The path pusher-js 8.6 opens (its query included). */
export function pusherSocketPath(key: string = APP.key): string {
  return `/app/${key}?protocol=7&client=js&version=8.6.0&flash=false`;
}

/** A Pusher frame as received, with `data` parsed when it is JSON text (as pusher-js does). */
export interface PusherFrame {
  event: string;
  channel?: string;
  data: any;
  user_id?: string;
  seq?: number;
  epoch?: string;
  [field: string]: unknown;
}

/** The next Pusher frame on a raw socket. */
export async function nextPusherFrame(client: TestClient, timeoutMs = WAIT_MS): Promise<PusherFrame> {
  const frame = (await client.json(timeoutMs)) as PusherFrame;
  if (typeof frame.data === "string") {
    try {
      frame.data = JSON.parse(frame.data);
    } catch {
      // plain text data stays as it is
    }
  }
  return frame;
}

/** The next frame named `event`, skipping others (member_added, pusher:ping...). */
export async function nextPusherEvent(client: TestClient, event: string, timeoutMs = WAIT_MS): Promise<PusherFrame> {
  for (;;) {
    const frame = await nextPusherFrame(client, timeoutMs);
    if (frame.event === event) return frame;
  }
}

/** Opens a raw Pusher socket and reads its connection_established; answers the socket and its data. */
export async function rawPusher(relay: Relay): Promise<{ client: TestClient; socketId: string; activityTimeout: number }> {
  const client = await relay.connect(pusherSocketPath());
  const established = await nextPusherFrame(client);
  if (established.event !== "pusher:connection_established") {
    throw new Error(`expected pusher:connection_established, got ${JSON.stringify(established)}`);
  }
  return { client, socketId: established.data.socket_id, activityTimeout: established.data.activity_timeout };
}

// ---- the REST API's request signature, by hand ----

export interface SignOptions {
  method: "GET" | "POST";
  /** The path after /apps/:app_id, e.g. "/events". */
  path: string;
  params?: Record<string, string>;
  body?: string;
  secret?: string;
  key?: string;
  appId?: string;
  timestamp?: number;
  /** Replaces the body_md5 the signature covers. */
  bodyMd5?: string;
}

/**
 * The URL path and query of a signed REST request, built as the `pusher` SDK builds it: the
 * parameters (auth_* and body_md5 included) sorted by key, joined as key=value with `&`, values
 * unencoded; signed over "METHOD\npath\nquery" with HMAC-SHA256(secret), hex.
 */
export function signedPath(options: SignOptions): string {
  const path = `/apps/${options.appId ?? APP.id}${options.path}`;
  const params: Record<string, string> = {
    auth_key: options.key ?? APP.key,
    auth_timestamp: String(options.timestamp ?? Math.floor(Date.now() / 1000)),
    auth_version: "1.0",
    ...options.params,
  };
  if (options.body !== undefined) params.body_md5 = options.bodyMd5 ?? createHash("md5").update(options.body, "utf8").digest("hex");
  const query = Object.keys(params)
    .sort()
    .map((key) => `${key}=${params[key]}`)
    .join("&");
  const signature = createHmac("sha256", options.secret ?? APP.secret)
    .update([options.method, path, query].join("\n"))
    .digest("hex");
  return `${path}?${query}&auth_signature=${signature}`;
}

/** Sends a signed REST request to the relay (a JSON body when given). */
export function restRequest(relay: Relay, options: SignOptions): Promise<Response> {
  return relay.fetch(signedPath(options), {
    method: options.method,
    ...(options.body !== undefined && { body: options.body, headers: { "Content-Type": "application/json" } }),
  });
}

/** One webhook event, as the server SDK's `webhook().getEvents()` gives it. */
export interface Hook {
  name: string;
  channel: string;
  [field: string]: unknown;
}

/**
 * An app's webhook endpoint (docs/pusher.md "Webhooks"): it checks each request with the server
 * SDK's `webhook()` as an app would, and keeps the events in arrival order. It can refuse the next
 * requests with 503, to see the relay try again.
 */
export class WebhookEndpoint {
  readonly hooks = new Queue<Hook>();
  /** Requests still to leave unanswered (as an endpoint that hangs), to refuse, those refused, and those whose signature did not check out. */
  hangNext = 0;
  refuseNext = 0;
  refused = 0;
  invalid = 0;
  /** The events of every request refused, in order; how many each request taken carried; every body, as it came. */
  readonly refusedHooks = new Queue<Hook[]>();
  readonly takenSizes: number[] = [];
  readonly bodies: string[] = [];
  readonly #server: Server;

  private constructor(sdk: () => PusherServer) {
    this.#server = createServer((request, response) => {
      let rawBody = "";
      request.on("data", (chunk) => (rawBody += chunk));
      request.on("end", () => {
        this.bodies.push(rawBody);
        if (this.hangNext > 0) {
          this.hangNext--;
          return; // ended by close()
        }
        if (this.refuseNext > 0) {
          this.refuseNext--;
          this.refused++;
          this.refusedHooks.push((JSON.parse(rawBody) as { events: Hook[] }).events);
          return response.writeHead(503).end();
        }
        const webhook = sdk().webhook({ headers: request.headers as Record<string, string>, rawBody });
        if (!webhook.isValid()) this.invalid++;
        else {
          const events = webhook.getEvents() as unknown as Hook[];
          this.takenSizes.push(events.length);
          for (const event of events) this.hooks.push(event);
        }
        response.writeHead(200).end();
      });
    });
  }

  /** Listens on a free loopback port; `sdk` is the relay's server SDK (the relay starts after). */
  static async start(sdk: () => PusherServer): Promise<WebhookEndpoint> {
    const endpoint = new WebhookEndpoint(sdk);
    await new Promise<void>((resolve) => endpoint.#server.listen(0, "127.0.0.1", resolve));
    return endpoint;
  }

  /** What PUSHER_WEBHOOK_URL is set to. */
  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/pusher/webhooks`;
  }

  /** The next event on `channel`, skipping other channels' (tests share the endpoint). */
  async next(channel: string): Promise<Hook> {
    for (;;) {
      const hook = await this.hooks.next();
      if (hook.channel === channel) return hook;
    }
  }

  close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    return closed;
  }
}
