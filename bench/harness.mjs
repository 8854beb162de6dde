// What every benchmark entry point shares: the client processes (one publisher, two receivers,
// forked from bench/client.mjs and driven over IPC), progress output, and the helpers that open
// sockets across the receivers, wait for deliveries, summarise latencies and meter CPU.
import { execSync, fork } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { cpuMeter, otherLoad, round, rssBytes } from "./proc.mjs";

const started = performance.now();
export function progress(message) {
  process.stderr.write(`[bench ${((performance.now() - started) / 1000).toFixed(1).padStart(6)}s] ${message}\n`);
}
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const RECEIVER_PROCESSES = 2;

class Client {
  #next = 0;
  #pending = new Map();
  constructor(name) {
    this.name = name;
    this.process = fork(new URL("./client.mjs", import.meta.url).pathname, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.process.on("message", ({ id, result, error }) => {
      const pending = this.#pending.get(id);
      this.#pending.delete(id);
      if (error) pending?.reject(new Error(`${this.name}: ${error}`));
      else pending?.resolve(result);
    });
  }
  get pid() {
    return this.process.pid;
  }
  call(cmd, args = {}) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.process.send({ id, cmd, ...args });
    });
  }
}

export const publisher = new Client("publisher");
export const receivers = Array.from({ length: RECEIVER_PROCESSES }, (_, i) => new Client(`receivers-${i + 1}`));
export const allClients = [publisher, ...receivers];

/** Lets the client processes exit (they leave when their IPC channel closes). */
export function releaseClients() {
  for (const client of allClients) client.process.disconnect();
}

/** Splits `urls` into one contiguous share per receiver process and opens them all at once. */
export async function openAcross(urls, welcome, concurrency = 25) {
  const share = Math.ceil(urls.length / receivers.length);
  const results = await Promise.all(
    receivers.map((client, i) => client.call("open", { urls: urls.slice(i * share, (i + 1) * share), concurrency, waitWelcome: welcome })),
  );
  const failed = results.reduce((sum, r) => sum + r.failed, 0);
  if (failed > 0) throw new Error(`${failed} of ${urls.length} sockets failed to open: ${results.flatMap((r) => r.errors).join("; ")}`);
  const seconds = (Math.max(...results.map((r) => r.endUs)) - Math.min(...results.map((r) => r.startUs))) / 1e6;
  return { seconds };
}

/**
 * Opens and closes `sockets` sockets into `room`, so a connection workload measures a runtime
 * whose code is compiled and warm (as a server that has run for a while), not its first
 * connections (the floor opened its second 2,000 sockets of a run ~25% faster than its first),
 * and client processes that have done the same work before (in the matrix, where the relay is
 * measured first, it opened sockets at 0.65–0.84× the floor's rate with 300 sockets of warm-up,
 * 0.86–0.91× with 1,000, and 0.87–0.98× measured after the floor).
 */
export async function warmUp(target, server, room, sockets = 1000) {
  await openAcross(Array.from({ length: sockets }, (_, i) => server.base + target.room(room, `warm${i % 50}`)), target.welcome);
  await closeEverything();
}

/**
 * What the connection workloads share (cost.mjs, matrix (c)): a warm runtime, the room's object
 * started by one socket first so its start is not counted, then `sockets` sockets into `room`
 * (socket i as user `userOf(i)`) opened across the receivers with the CPU metered. Answers the
 * window's length, its CPU and the runtime's resident memory (MiB) just before it.
 */
export async function openMetered(target, server, room, sockets, userOf = () => "bench") {
  await warmUp(target, server, `${room}-warm`);
  await receivers[0].call("open", { urls: [server.base + target.room(room, userOf(-1))], concurrency: 1, waitWelcome: target.welcome });
  await sleep(1000);
  const rssBeforeMiB = serverRssMiB(server);
  const meter = cpuMeter(meterGroups(server));
  const { seconds } = await openAcross(Array.from({ length: sockets }, (_, i) => server.base + target.room(room, userOf(i))), target.welcome);
  return { seconds, cpu: meter.stop(), rssBeforeMiB };
}

export async function closeEverything() {
  await Promise.all(allClients.map((client) => client.call("closeAll")));
  await sleep(500);
}

/** Received count on `timeline` at time `us`, interpolated between its 100 ms samples. */
export function countAt(timeline, us) {
  if (us <= timeline[0][0]) return timeline[0][1];
  for (let i = 1; i < timeline.length; i++) {
    const [t1, c1] = timeline[i];
    if (t1 >= us) {
      const [t0, c0] = timeline[i - 1];
      return c0 + ((c1 - c0) * (us - t0)) / (t1 - t0 || 1);
    }
  }
  return timeline.at(-1)[1];
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export function latencySummary(lists) {
  const all = Float64Array.from(lists.flat()).sort();
  return {
    samples: all.length,
    p50: round(percentile(all, 50), 2),
    p99: round(percentile(all, 99), 2),
    max: round(all.at(-1) ?? NaN, 2),
  };
}

export function meterGroups(server) {
  return {
    server: server.pids,
    ...(server.pids.length > 1 && Object.fromEntries(server.pids.map((pid) => [`pid:${pid}`, [pid]]))),
    host: [process.pid],
    publisher: [publisher.pid],
    ...Object.fromEntries(receivers.map((client) => [client.name, [client.pid]])),
  };
}

/** Where the time went: the busiest single process decides, or the whole machine when full. */
export function bottleneck(cpu) {
  const g = cpu.groups;
  const clientMax = Math.max(...receivers.map((c) => g[c.name].percentOfCore), g.publisher.percentOfCore);
  if (g.server.percentOfCore >= 85 && g.server.percentOfCore >= clientMax) return "server";
  if (clientMax >= 85) return "client";
  if (cpu.machineBusyPercent >= 90) return "machine (both cores busy)";
  return "none (below saturation)";
}

/** Waits until the receivers hold `expected` deliveries, or nothing arrives for 1 s, or 15 s. */
export async function drain(clients, expected) {
  const start = performance.now();
  let last = -1;
  let lastChange = start;
  for (;;) {
    const reports = await Promise.all(clients.map((c) => c.call("report")));
    const total = reports.reduce((sum, r) => sum + r.received, 0);
    const now = performance.now();
    if (total >= expected) return { received: total, seconds: round((now - start) / 1000, 2), complete: true };
    if (total !== last) {
      last = total;
      lastChange = now;
    } else if (now - lastChange > 1000 || now - start > 15_000) {
      return { received: total, seconds: round((now - start) / 1000, 2), complete: false };
    }
    await sleep(200);
  }
}

/**
 * This machine may be shared: before each workload, wait (at most 20 s) until everything that
 * is not ours uses under a third of a core, and say so when it did not.
 */
export async function quiet(server) {
  const ours = [process.pid, server.pids, allClients.map((c) => c.pid)].flat();
  const start = performance.now();
  let other = await otherLoad(ours);
  while (other > 33 && performance.now() - start < 20_000) other = await otherLoad(ours);
  const waited = (performance.now() - start) / 1000;
  if (other > 33) progress(`  machine still busy with other work (${other}% of a core); measuring anyway`);
  else if (waited > 1.5) progress(`  waited ${waited.toFixed(0)} s for other work on the machine to finish`);
  return other;
}

/** The 1-, 5- and 15-minute load averages from /proc/loadavg. */
export function loadAverage() {
  const [one, five, fifteen] = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).map(Number);
  return { one, five, fifteen };
}

/**
 * Before a long measurement: while the 1-minute load is above `limit`, wait, polling every 30 s,
 * at most 10 minutes. Answers the load it started under (and how long it waited).
 */
export async function calmLoad(limit = 1.5, { pollMs = 30_000, maxMs = 600_000 } = {}) {
  const start = performance.now();
  let load = loadAverage();
  while (load.one > limit && performance.now() - start < maxMs) {
    progress(`  1-minute load ${load.one} > ${limit}: waiting (${Math.round((performance.now() - start) / 1000)} s so far, at most ${maxMs / 1000} s)`);
    await sleep(pollMs);
    load = loadAverage();
  }
  const waitedSeconds = Math.round((performance.now() - start) / 1000);
  progress(`  load average ${load.one} / ${load.five} / ${load.fifteen}${waitedSeconds > 0 ? ` (after waiting ${waitedSeconds} s)` : ""}`);
  return { ...load, waitedSeconds, overLimit: load.one > limit };
}

/** The machine, the Node running the clients and the commit measured. */
export function describeMachine() {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1]?.trim() ?? "unknown";
  let commit = "unknown";
  let dirty = false;
  try {
    commit = execSync("git rev-parse --short HEAD", { encoding: "utf8" }).trim();
    dirty = execSync("git status --porcelain -- src wrangler.toml", { encoding: "utf8" }).trim() !== "";
  } catch {
    // not a git checkout
  }
  return {
    nproc: cpus().length,
    cpuModel: model,
    memoryGiB: round(totalmem() / 2 ** 30, 1),
    node: process.version,
    commit,
    relaySourceModified: dirty,
    date: new Date().toISOString(),
  };
}

/** Raw results to bench/results/<name>-<time>.json and <name>-latest.json, the tables to <name>-latest.md. */
export function saveResults(name, results, markdown) {
  const dir = new URL("./results/", import.meta.url);
  mkdirSync(dir, { recursive: true });
  const stamp = results.machine.date.replace(/[:.]/g, "-");
  const json = JSON.stringify(results, null, 2);
  writeFileSync(new URL(`${name}-${stamp}.json`, dir), json);
  writeFileSync(new URL(`${name}-latest.json`, dir), json);
  writeFileSync(new URL(`${name}-latest.md`, dir), markdown + "\n");
  progress(`raw results in bench/results/${name}-${stamp}.json, tables in bench/results/${name}-latest.md`);
}

/** Resident memory of the server's processes, MiB. */
export function serverRssMiB(server) {
  return round(server.pids.reduce((sum, pid) => sum + rssBytes(pid), 0) / 2 ** 20, 1);
}

/** The command line of a bench script: `option("name")` reads `--name=value`, `quick` is `--quick`. */
export function commandLine(argv = process.argv.slice(2)) {
  return { argv, option: (name) => argv.find((arg) => arg.startsWith(`--${name}=`))?.split("=")[1], quick: argv.includes("--quick") };
}

/** Starts a target for one measurement, its storage in memory where the machine has /dev/shm. */
export function startTarget(target) {
  return target.start({ storageDir: existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), viaProxy: false });
}

/**
 * Starts `target`, runs one measurement against it (`body(server)`), then stops it. A failure is
 * reported and answered as text (for the results' `error`), so one target's failure does not end
 * the run.
 */
export async function measureOn(target, body, label = target.label) {
  progress(`${label}: starting`);
  const server = await startTarget(target);
  progress(`${label}: up at ${server.base}, runtime pid ${server.pids.join(",")}`);
  try {
    await body(server);
    return undefined;
  } catch (error) {
    progress(`${label}: FAILED ${error?.message ?? error}`);
    await closeEverything().catch(() => {});
    return String(error?.stack ?? error);
  } finally {
    await server.stop();
  }
}

/** Prints a benchmark's tables and keeps them, with the raw results, in bench/results/. */
export function report(name, results, markdown) {
  process.stdout.write(`\n${markdown}\n`);
  saveResults(name, results, markdown);
}

/** Runs a benchmark's `main`, and lets the client processes go however it ends. */
export async function runBench(main) {
  try {
    await main();
  } finally {
    releaseClients();
  }
}
