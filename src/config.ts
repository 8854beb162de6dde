// Every variable the relay reads, parsed in one place with its default.
// A value that does not parse is a ConfigError naming the variable (every bad one at once): the
// Worker answers 500 with that message instead of silently running on a default the operator
// did not choose.

/** The platform's cap on sockets per Durable Object (docs/platform.md). */
export const PLATFORM_MAX_SOCKETS = 32_768;

export interface Config {
  /** HS256 secret for user tokens; undefined when unset or empty. */
  authSecret?: string;
  /** Bearer key for server routes; undefined when unset or empty. */
  apiKey?: string;
  allowAnonymous: boolean;
  /** Allowed `Origin` values; empty means any origin. */
  allowedOrigins: string[];
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  historyLimit: number;
  inboxTtlSeconds: number;
  /** Unacknowledged directs an inbox holds; a direct to a full inbox is refused. */
  inboxMaxMessages: number;
  maxMessageBytes: number;
  rateLimitPerSecond: number;
  /** How far behind what it is sent a socket's client may fall before it is watched; 0: no bound (objects/backlog.ts). */
  maxBacklogBytes: number;
  /** A room's sockets and subscriptions, on every object that holds them. */
  maxConnectionsPerRoom: number;
  /** Event streams one room serves at once; apart from its connections (docs/protocol.md). */
  maxStreamsPerRoom: number;
  /** Sockets one object holds before a room spreads to more objects (docs/design.md). */
  socketsPerObject: number;
  /** Rooms one user socket may subscribe to. */
  maxSubscriptions: number;
  /** Above this many users a room sends counts, not names (docs/protocol.md "Presence at scale"). */
  presenceListLimit: number;
  /** How many hub objects user sockets are spread over (docs/design.md "Placement"). */
  userHubs: number;
  /** The one Pusher app the relay answers as (docs/pusher.md); undefined turns the Pusher routes off. */
  pusher?: { appId: string; key: string; secret: string; webhookUrl?: string; subscriptionCount: boolean };
}

export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, problem: string, message = `Configuration variable ${variable} ${problem}`) {
    super(message);
    this.name = "ConfigError";
    this.variable = variable;
  }

  /** One error naming every bad variable, so an operator mends them all in one go. */
  static all(problems: ConfigError[]): ConfigError {
    if (problems.length === 1) return problems[0]!;
    return new ConfigError(problems.map((p) => p.variable).join(", "), "", problems.map((p) => p.message).join("; "));
  }
}

type Vars = Record<string, unknown>;

/**
 * A variable's text. `[vars]` may hold `HISTORY_LIMIT = 50` or `ALLOW_ANONYMOUS = true` unquoted,
 * and test harnesses take JSON values: a number or a flag is read as it is written.
 */
function text(vars: Vars, name: string): string | undefined {
  const value = vars[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value === "boolean" || (typeof value === "number" && Number.isFinite(value))) return String(value);
  if (typeof value !== "string") throw new ConfigError(name, `must be a string, number or true/false, got ${JSON.stringify(value)}`);
  const trimmed = value.trim();
  return trimmed === "" ? undefined : trimmed;
}

function flag(vars: Vars, name: string, fallback: boolean): boolean {
  const value = text(vars, name);
  if (value === undefined) return fallback;
  if (value === "true") return true;
  if (value === "false") return false;
  throw new ConfigError(name, `must be "true" or "false", got ${JSON.stringify(value)}`);
}

function integer(vars: Vars, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const value = text(vars, name);
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new ConfigError(name, `must be a whole number, got ${JSON.stringify(value)}`);
  const n = Number(value);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return n;
}

/** What a browser sends as `Origin`: scheme://host[:port], nothing after it; `null` from sandboxed pages. */
const ORIGIN = /^(?:null|[a-z][a-z0-9+.-]*:\/\/[^/?#\s]+)$/;

/**
 * The listed origins as browsers write them: lowercase, and for http(s) without a default port
 * and with an international host in punycode (`https://bücher.example:443` is sent as
 * `https://xn--bcher-kva.example`). Empty for any origin, which `*` also asks for (no browser
 * sends `*`). An entry no browser could send (no scheme, a path, a trailing slash) would lock
 * every browser out without a word, so it is a configuration error.
 */
function origins(list: string): string[] {
  const listed = list
    .split(",")
    .map((origin) => origin.trim())
    .filter((origin) => origin !== "")
    .map((origin) => {
      if (origin === "*") return origin;
      const spelled = asBrowsersWrite(origin);
      if (spelled === undefined) {
        throw new ConfigError("ALLOWED_ORIGINS", `lists ${JSON.stringify(origin.toLowerCase())}, which is no browser's Origin: write scheme://host[:port], with no path or trailing slash`);
      }
      return spelled;
    });
  return listed.includes("*") ? [] : listed;
}

/** An origin as browsers write it (see `origins`), or undefined for anything that is no origin. */
function asBrowsersWrite(origin: string): string | undefined {
  const lower = origin.toLowerCase();
  if (!ORIGIN.test(lower)) return undefined;
  return /^https?:/.test(lower) ? URL.parse(lower)?.origin : lower;
}

/**
 * Whether ALLOWED_ORIGINS lets `origin` (an `Origin` header) in: any when it is empty. The header
 * is read as the list is, so a client that spells out a default port or writes the host in
 * capitals is not refused for it.
 */
export function originAllowed(config: Config, origin: string): boolean {
  if (config.allowedOrigins.length === 0 || config.allowedOrigins.includes(origin.toLowerCase())) return true;
  const spelled = asBrowsersWrite(origin);
  return spelled !== undefined && config.allowedOrigins.includes(spelled);
}

export function parseConfig(vars: Vars): Config {
  const problems: ConfigError[] = [];
  /** A variable's parsed value; a bad one is noted (and the error thrown below names them all). */
  const read = <T>(parse: () => T): T => {
    try {
      return parse();
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(error);
      return undefined as T;
    }
  };
  const config: Config = {
    authSecret: read(() => text(vars, "AUTH_SECRET")),
    apiKey: read(() => text(vars, "API_KEY")),
    allowAnonymous: read(() => flag(vars, "ALLOW_ANONYMOUS", false)),
    allowedOrigins: read(() => origins(text(vars, "ALLOWED_ORIGINS") ?? "")),
    heartbeatIntervalMs: read(() => integer(vars, "HEARTBEAT_INTERVAL_MS", 30_000, 1)),
    heartbeatTimeoutMs: read(() => integer(vars, "HEARTBEAT_TIMEOUT_MS", 90_000, 1)),
    historyLimit: read(() => integer(vars, "HISTORY_LIMIT", 100, 0, 100_000)),
    inboxTtlSeconds: read(() => integer(vars, "INBOX_TTL_SECONDS", 604_800, 1)),
    inboxMaxMessages: read(() => integer(vars, "INBOX_MAX_MESSAGES", 1_000, 1, 100_000)),
    // A stored message must fit one storage row (docs/platform.md).
    maxMessageBytes: read(() => integer(vars, "MAX_MESSAGE_BYTES", 65_536, 1, 1024 * 1024)),
    rateLimitPerSecond: read(() => integer(vars, "RATE_LIMIT_PER_SECOND", 20, 1)),
    maxBacklogBytes: read(() => integer(vars, "MAX_BACKLOG_BYTES", 1024 * 1024, 0, 1024 * 1024 * 1024)),
    maxConnectionsPerRoom: read(() => integer(vars, "MAX_CONNECTIONS_PER_ROOM", 1_000_000, 1, 1_000_000_000)),
    maxStreamsPerRoom: read(() => integer(vars, "MAX_STREAMS_PER_ROOM", 1_000, 1, 100_000)),
    socketsPerObject: read(() => integer(vars, "SOCKETS_PER_OBJECT", 25_000, 1, PLATFORM_MAX_SOCKETS)),
    maxSubscriptions: read(() => integer(vars, "MAX_SUBSCRIPTIONS", 100, 1, 10_000)),
    presenceListLimit: read(() => integer(vars, "PRESENCE_LIST_LIMIT", 100, 0, 100_000)),
    userHubs: read(() => integer(vars, "USER_HUBS", 32, 1, 10_000)),
  };
  // The app's own settings parse whether or not the app is on: a bad value is never ignored.
  const subscriptionCount = read(() => flag(vars, "PUSHER_SUBSCRIPTION_COUNT", false));
  const webhookUrl = read(() => text(vars, "PUSHER_WEBHOOK_URL"));
  if (webhookUrl !== undefined && (!URL.canParse(webhookUrl) || !/^https?:$/.test(new URL(webhookUrl).protocol))) {
    problems.push(new ConfigError("PUSHER_WEBHOOK_URL", `must be an http or https URL, got ${JSON.stringify(webhookUrl)}`));
  }
  const pusher = { appId: read(() => text(vars, "PUSHER_APP_ID")), key: read(() => text(vars, "PUSHER_APP_KEY")), secret: read(() => text(vars, "PUSHER_APP_SECRET")) };
  if (problems.length > 0) throw ConfigError.all(problems);
  if (pusher.appId !== undefined && pusher.key !== undefined && pusher.secret !== undefined) {
    config.pusher = { appId: pusher.appId, key: pusher.key, secret: pusher.secret, subscriptionCount, ...(webhookUrl !== undefined && { webhookUrl }) };
  }
  return config;
}

// The env object is the same for every request of an isolate, so parse it once.
const parsed = new WeakMap<object, Config>();

/** The parsed config for this env; throws ConfigError when a variable does not parse. */
export function configOf(env: object): Config {
  let config = parsed.get(env);
  if (!config) {
    config = parseConfig(env as Vars);
    parsed.set(env, config);
  }
  return config;
}
