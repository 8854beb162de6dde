// Three kinds of tests, each a vitest project:
// - workers:  object and Worker logic inside workerd (@cloudflare/vitest-plugin), default timings;
// - liveness: the same runtime with short heartbeat timings, for timeout and sweep tests;
// - scale:    the same runtime with tiny SOCKETS_PER_OBJECT, PRESENCE_LIST_LIMIT and MAX_SUBSCRIPTIONS,
//             so rooms spread over several objects and presence switches to counts with a few sockets;
// - e2e:      the whole relay started by wrangler's test harness, real `ws` clients over TCP;
// - browser:  the demo page and client library in Chromium (see test/browser/chromium.ts), driven by playwright-core.
import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

const wrangler = { configPath: "./wrangler.toml" };

/**
 * A project of tests inside workerd, with these variables over wrangler.toml's. Their clients are
 * sockets in the same runtime, and once an object has read such a socket's `bufferedAmount` the
 * pool's `evictDurableObject(..., { webSockets: "hibernate" })` never returns (docs/platform.md):
 * so no bound on what waits for a client here (MAX_BACKLOG_BYTES 0). The bound, and hibernation
 * with it, are tested end to end with real TCP clients (test/e2e).
 */
function workerd(name: string, bindings: Record<string, string>, timeoutMs?: number) {
  return {
    plugins: [cloudflareTest({ wrangler, miniflare: { bindings: { MAX_BACKLOG_BYTES: "0", ...bindings } } })],
    test: { name, include: [`test/${name}/**/*.test.ts`], ...(timeoutMs !== undefined && { testTimeout: timeoutMs }) },
  };
}

/** A project of tests in Node that start the whole relay (and a browser) themselves. */
function node(name: string) {
  return { test: { name, include: [`test/${name}/**/*.test.ts`], environment: "node", testTimeout: 60_000, hookTimeout: 120_000 } };
}

export default defineConfig({
  test: {
    reporters: ["default", "./test/support/summary-reporter.ts"],
    globalSetup: ["./test/support/build-client.ts"],
    projects: [
      workerd("workers", {
        ALLOW_ANONYMOUS: "true",
        API_KEY: "test-api-key",
        RATE_LIMIT_PER_SECOND: "5",
        MAX_MESSAGE_BYTES: "1024",
        HISTORY_LIMIT: "5",
        MAX_CONNECTIONS_PER_ROOM: "3",
        MAX_STREAMS_PER_ROOM: "4",
        INBOX_MAX_MESSAGES: "6",
      }),
      workerd("liveness", {
        ALLOW_ANONYMOUS: "true",
        AUTH_SECRET: "liveness-secret",
        HEARTBEAT_INTERVAL_MS: "200",
        HEARTBEAT_TIMEOUT_MS: "800",
        INBOX_TTL_SECONDS: "1",
      }),
      workerd(
        "scale",
        {
          ALLOW_ANONYMOUS: "true",
          AUTH_SECRET: "scale-secret",
          API_KEY: "test-api-key",
          SOCKETS_PER_OBJECT: "3",
          PRESENCE_LIST_LIMIT: "3",
          MAX_SUBSCRIPTIONS: "3",
          MAX_CONNECTIONS_PER_ROOM: "12",
          USER_HUBS: "4",
        },
        30_000,
      ),
      node("browser"),
      node("e2e"),
    ],
  },
});
