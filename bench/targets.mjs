// The four servers under test, each started the same way every run: our relay, the floor and the
// partyserver room on local workerd through wrangler's unstable_startWorker (storage in a temp
// dir), and the Node `ws` hub as a child process. Each answers the URLs its clients use and the
// pids whose CPU and memory count as "the server".
import { execFileSync, execSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { unstable_startWorker } from "wrangler";
import { childrenNamed } from "./proc.mjs";
import { startProfile } from "./profiler.mjs";

process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";
// wrangler's local observability (on by default) streams a trace of every invocation, each
// WebSocket message included, to a collector in the host process: 30-47% of a core in the host
// and ~10,000 error lines a workload as sockets close. Production traces elsewhere, and it would
// cost every target alike, so benchmarks run without it.
process.env.X_LOCAL_OBSERVABILITY = "false";

/** Variables that make our relay benchmarkable: anonymous clients, limits out of the way. */
export const RELAY_VARS = {
  ALLOW_ANONYMOUS: "true",
  RATE_LIMIT_PER_SECOND: "100000",
  MAX_CONNECTIONS_PER_ROOM: "32768",
  INBOX_MAX_MESSAGES: "100000",
};

/** The TCP ports `pid` listens on, from `ss` (iproute2). */
function listeningPorts(pid) {
  return execSync("ss -ltnpH", { encoding: "utf8" })
    .split("\n")
    .filter((l) => l.includes(`pid=${pid},`))
    .map((l) => Number(/127\.0\.0\.1:(\d+)/.exec(l)?.[1]))
    .filter((port) => port > 0);
}

/** Whether `port` is a V8 inspector (with BENCH_PROFILE the runtime listens on one too). */
async function isInspector(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/json/version`);
    return "Protocol-Version" in (await res.json());
  } catch {
    return false;
  }
}

/** The port a runtime serves requests on: its one listening port that is no inspector. */
async function servingPort(pid) {
  for (const port of listeningPorts(pid)) if (!(await isInspector(port))) return port;
  return undefined;
}

/**
 * wrangler runs two workerd processes: its dev proxy (a Worker that forwards every request, and
 * then every WebSocket frame, to the runtime) on the public URL, and the runtime that hosts the
 * Worker and its objects on a port of its own. By default clients connect to the runtime
 * directly, so the dev proxy's hop (which production does not have) is not measured;
 * `viaProxy` sends them through it.
 */
export async function startWorkerd(configPath, vars, { storageDir, viaProxy }) {
  // wrangler's programmatic start does not run `[build]`: build the relay's generated files
  // (scripts/build-client.mjs, src/generated/) in the config's own checkout first.
  const root = dirname(resolve(configPath));
  if (existsSync(join(root, "scripts/build-client.mjs"))) execFileSync(process.execPath, ["scripts/build-client.mjs"], { cwd: root, stdio: "inherit" });
  const before = new Set(childrenNamed(process.pid, "workerd"));
  const persist = await mkdtemp(join(storageDir, "edge-relay-bench-"));
  const bindings = Object.fromEntries(Object.entries(vars).map(([k, value]) => [k, { type: "plain_text", value }]));
  const worker = await unstable_startWorker({
    config: configPath,
    bindings,
    dev: {
      server: { hostname: "127.0.0.1", port: 0 },
      persist,
      inspector: process.env.BENCH_PROFILE ? { port: 9300 + (process.pid % 600) } : false,
      watch: false,
      logLevel: "warn",
    },
  });
  await worker.ready;
  const url = await worker.url;
  // Only processes that listen (wrangler may have replaced a runtime it started first); the
  // runtime's socket can appear a moment after `ready`, so look for up to 5 s.
  let pids = [];
  let proxy;
  let runtime;
  for (let tries = 0; tries < 50 && (proxy === undefined || runtime === undefined); tries++) {
    if (tries > 0) await new Promise((resolve) => setTimeout(resolve, 100));
    pids = childrenNamed(process.pid, "workerd").filter((pid) => !before.has(pid) && listeningPorts(pid).length > 0);
    proxy = pids.find((pid) => listeningPorts(pid).includes(Number(url.port)));
    runtime = pids.find((pid) => pid !== proxy);
  }
  if (proxy === undefined || runtime === undefined) throw new Error(`cannot tell wrangler's proxy from the runtime among ${pids}`);
  const port = viaProxy ? url.port : await servingPort(runtime);
  const profile = process.env.BENCH_PROFILE ? await startProfile(9300 + (process.pid % 600)) : undefined;
  return {
    base: `ws://127.0.0.1:${port}`,
    pids: viaProxy ? [runtime, proxy] : [runtime],
    runtimePid: runtime,
    proxyPid: proxy,
    async stop() {
      await profile?.stop(`${process.env.BENCH_PROFILE}-${configPath.replace(/\W+/g, "_")}`);
      await worker.dispose();
      await rm(persist, { recursive: true, force: true });
    },
  };
}

async function startHub() {
  const child = spawn(process.execPath, [new URL("./ws-hub.mjs", import.meta.url).pathname], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once("line", resolve);
    child.once("exit", (code) => reject(new Error(`ws hub exited ${code}`)));
  });
  const { port } = JSON.parse(line);
  return {
    base: `ws://127.0.0.1:${port}`,
    pids: [child.pid],
    async stop() {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

export const TARGETS = {
  ours: {
    label: "edge-relay",
    runtime: "workerd",
    start: (options) => startWorkerd(options.configPath ?? "wrangler.toml", RELAY_VARS, options),
    room: (room, user) => `/rooms/${room}/ws?user=${user}`,
    user: (user) => `/users/${user}/ws?user=${user}`,
    welcome: true,
    ackEvery: 50,
  },
  floor: {
    label: "floor DO",
    runtime: "workerd",
    start: (options) => startWorkerd("bench/floor/wrangler.toml", {}, options),
    room: (room) => `/rooms/${room}/ws`,
    user: (user) => `/users/${user}/ws`,
    welcome: false,
    ackEvery: 0,
  },
  // The floor that also sends each new socket one welcome-sized frame, as the relay must, and keeps
  // the state a socket needs to outlive hibernation (an attachment, pings answered by the
  // runtime): what a connection costs with the protocol's least (bench/cost.mjs).
  floorWelcome: {
    label: "floor + welcome",
    runtime: "workerd",
    start: (options) => startWorkerd("bench/floor/wrangler.toml", { WELCOME: "true", KEEP_STATE: "true" }, options),
    room: (room) => `/rooms/${room}/ws`,
    user: (user) => `/users/${user}/ws`,
    welcome: true,
    ackEvery: 0,
    workloads: ["connect", "users"],
  },
  // The floor that also tells presence as the protocol asks at the least (join frames and welcome
  // lists while a room has at most 100 users, a count frame a second above), with the same socket
  // state: what a connection of a user each costs with presence (bench/cost.mjs, users only).
  floorPresence: {
    label: "floor + presence",
    runtime: "workerd",
    start: (options) => startWorkerd("bench/floor/wrangler.toml", { PRESENCE: "true", KEEP_STATE: "true" }, options),
    room: (room, user) => `/rooms/${room}/ws?user=${user}`,
    user: (user) => `/users/${user}/ws`,
    welcome: true,
    ackEvery: 0,
    workloads: ["users"],
  },
  partyserver: {
    label: "partyserver",
    runtime: "workerd",
    start: (options) => startWorkerd("bench/partyserver/wrangler.toml", {}, options),
    room: (room) => `/parties/chat/${room}`,
    user: (user) => `/parties/inbox/${user}`,
    welcome: false,
    ackEvery: 0,
  },
  hub: {
    label: "Node ws hub",
    runtime: "node",
    start: startHub,
    room: (room) => `/rooms/${room}/ws`,
    user: (user) => `/users/${user}/ws`,
    welcome: false,
    ackEvery: 0,
  },
};

/**
 * Our relay under another label: another build (`configPath`, e.g. a worktree of an older commit)
 * and/or extra variables on top of RELAY_VARS (e.g. SOCKETS_PER_OBJECT).
 */
export function relayTarget(label, { configPath = "wrangler.toml", vars = {} } = {}) {
  return { ...TARGETS.ours, label, start: (options) => startWorkerd(configPath, { ...RELAY_VARS, ...vars }, options) };
}
