// `npm run bench`: every workload against our relay and the three baselines, on loopback, with
// the same client processes for all. Progress goes to stderr; raw results to bench/results/;
// the tables into BENCHMARKS.md between its bench:results markers.
//
//   npm run bench                      the full matrix (about 8 minutes on 2 cores)
//   npm run bench -- --quick           shorter steps and fewer sizes, to check the harness
//   npm run bench -- --only=ours,hub   some targets (ours, floor, partyserver, hub)
//   npm run bench -- --no-write        leave BENCHMARKS.md alone
//   npm run bench -- --persist=disk    Durable Object storage on disk instead of tmpfs
//   npm run bench -- --via-proxy       clients through wrangler's dev proxy, not to the runtime
//   npm run bench -- --workloads=a,b   some workloads (a, b, c which includes d, e)
//   npm run bench -- --relay-config=path/wrangler.toml   measure another build of the relay as ours
import { execSync, fork } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { cpuMeter, otherLoad, round, rssBytes } from "./proc.mjs";
import { render } from "./report.mjs";
import { TARGETS } from "./targets.mjs";

const argv = process.argv.slice(2);
const option = (name) => argv.find((arg) => arg.startsWith(`--${name}`));
const QUICK = option("quick") !== undefined;
const ONLY = option("only=")?.slice("--only=".length).split(",");
const WRITE = option("no-write") === undefined;
/** Durable Object storage on tmpfs (default, like production it never waits on a local disk) or on disk. */
const PERSIST_ON_DISK = option("persist=disk") !== undefined;
/** Clients through wrangler's dev proxy (an extra workerd hop per frame) instead of to the runtime. */
const VIA_PROXY = option("via-proxy") !== undefined;
/** Another wrangler config to measure as "ours" (an experimental build of the relay). */
const RELAY_CONFIG = option("relay-config=")?.slice("--relay-config=".length);
/** Some workloads only: c (with d), b, a, e. */
const WORKLOADS = option("workloads=")?.slice("--workloads=".length).split(",");
const wants = (w) => !WORKLOADS || WORKLOADS.includes(w);

const CONFIG = QUICK
  ? {
      fanoutSizes: [10, 100],
      stepSeconds: 1.5,
      maxSteps: 3,
      startOffered: 20_000,
      latency: { receivers: 100, rate: 50, seconds: 2 },
      connections: 200,
      idleWaitSeconds: 11,
      directs: { users: 10, latencyRate: 100, latencySeconds: 2, startOffered: 1000, maxSteps: 2 },
    }
  : {
      fanoutSizes: [10, 100, 1000],
      stepSeconds: 2.5,
      maxSteps: 6,
      startOffered: 20_000,
      latency: { receivers: 100, rate: 50, seconds: 5 },
      connections: 1000,
      idleWaitSeconds: 12,
      directs: { users: 20, latencyRate: 200, latencySeconds: 4, startOffered: 1000, maxSteps: 5 },
    };
/** A step delivers "sustained" when at least this share of what was offered arrived. */
const SUSTAINED = 0.97;
/** The first part of each step is left out of its rate (queues filling, JIT). */
const WARM_US = 500_000;
const RECEIVER_PROCESSES = 2;
const PADDING = "x".repeat(64);

const started = performance.now();
function progress(message) {
  process.stderr.write(`[bench ${((performance.now() - started) / 1000).toFixed(1).padStart(6)}s] ${message}\n`);
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- client processes ----

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

const publisher = new Client("publisher");
const receivers = Array.from({ length: RECEIVER_PROCESSES }, (_, i) => new Client(`receivers-${i + 1}`));
const allClients = [publisher, ...receivers];

/** Splits `urls` into one contiguous share per receiver process and opens them all at once. */
async function openAcross(urls, welcome, concurrency = 25) {
  const share = Math.ceil(urls.length / receivers.length);
  const results = await Promise.all(
    receivers.map((client, i) => client.call("open", { urls: urls.slice(i * share, (i + 1) * share), concurrency, waitWelcome: welcome })),
  );
  const failed = results.reduce((sum, r) => sum + r.failed, 0);
  if (failed > 0) throw new Error(`${failed} of ${urls.length} sockets failed to open: ${results.flatMap((r) => r.errors).join("; ")}`);
  const seconds = (Math.max(...results.map((r) => r.endUs)) - Math.min(...results.map((r) => r.startUs))) / 1e6;
  return { seconds };
}

async function closeEverything() {
  await Promise.all(allClients.map((client) => client.call("closeAll")));
  await sleep(500);
}

/** Received count on `timeline` at time `us`, interpolated between its 100 ms samples. */
function countAt(timeline, us) {
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

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function latencySummary(lists) {
  const all = Float64Array.from(lists.flat()).sort();
  return {
    samples: all.length,
    p50: round(percentile(all, 50), 2),
    p99: round(percentile(all, 99), 2),
    max: round(all.at(-1) ?? NaN, 2),
  };
}

function meterGroups(server) {
  return {
    server: server.pids,
    ...(server.pids.length > 1 && Object.fromEntries(server.pids.map((pid) => [`pid:${pid}`, [pid]]))),
    host: [process.pid],
    publisher: [publisher.pid],
    ...Object.fromEntries(receivers.map((client) => [client.name, [client.pid]])),
  };
}

/** Where the time went: the busiest single process decides, or the whole machine when full. */
function bottleneck(cpu) {
  const g = cpu.groups;
  const clientMax = Math.max(...receivers.map((c) => g[c.name].percentOfCore), g.publisher.percentOfCore);
  if (g.server.percentOfCore >= 85 && g.server.percentOfCore >= clientMax) return "server";
  if (clientMax >= 85) return "client";
  if (cpu.machineBusyPercent >= 90) return "machine (both cores busy)";
  return "none (below saturation)";
}

/** Waits until the receivers hold `expected` deliveries, or nothing arrives for 1 s, or 15 s. */
async function drain(clients, expected) {
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
async function quiet(server) {
  const ours = [process.pid, server.pids, allClients.map((c) => c.pid)].flat();
  const start = performance.now();
  let other = await otherLoad(ours);
  while (other > 33 && performance.now() - start < 20_000) other = await otherLoad(ours);
  const waited = (performance.now() - start) / 1000;
  if (other > 33) progress(`  machine still busy with other work (${other}% of a core); measuring anyway`);
  else if (waited > 1.5) progress(`  waited ${waited.toFixed(0)} s for other work on the machine to finish`);
  return other;
}

// ---- workloads ----

/** (c) connection rate, then (d) memory of the same sockets once idle (hibernated on workerd). */
async function connectionsAndIdle(target, server, run) {
  const warm = `warm-${run}`;
  await receivers[0].call("open", { urls: [server.base + target.room(warm, "bench")], concurrency: 1, waitWelcome: target.welcome });
  await sleep(1000);
  const rssBefore = server.pids.reduce((sum, pid) => sum + rssBytes(pid), 0);
  const n = CONFIG.connections;
  const room = `conn-${run}`;
  const urls = Array.from({ length: n }, () => server.base + target.room(room, "bench"));
  const meter = cpuMeter(meterGroups(server));
  const { seconds } = await openAcross(urls, target.welcome);
  const cpu = meter.stop();
  const rate = n / seconds;
  progress(`  (c) ${n} sockets opened${target.welcome ? " and welcomed" : ""} in ${seconds.toFixed(2)} s: ${Math.round(rate)}/s`);
  await sleep(2000);
  const rssAwake = server.pids.reduce((sum, pid) => sum + rssBytes(pid), 0);
  await sleep(CONFIG.idleWaitSeconds * 1000 - 2000);
  const rssIdle = server.pids.reduce((sum, pid) => sum + rssBytes(pid), 0);
  const per1000 = (bytes) => round(((bytes - rssBefore) / n) * 1000 / 2 ** 20, 1);
  const memory = { rssBeforeMiB: round(rssBefore / 2 ** 20, 1), awakeMiBPer1000: per1000(rssAwake), idleMiBPer1000: per1000(rssIdle) };
  progress(`  (d) server RSS ${memory.rssBeforeMiB} MiB before; per 1,000 sockets: +${memory.awakeMiBPer1000} MiB after 2 s, +${memory.idleMiBPer1000} MiB after ${CONFIG.idleWaitSeconds} s idle`);
  await closeEverything();
  return { connections: { sockets: n, seconds: round(seconds, 3), perSecond: Math.round(rate), cpu, bottleneck: bottleneck(cpu) }, idle: memory };
}

/** Opens `n` receivers and one publisher socket in `room`; answers the publisher's frame template. */
async function openRoom(target, server, room, n) {
  await openAcross(Array.from({ length: n }, () => server.base + target.room(room, "bench")), target.welcome);
  await publisher.call("open", { urls: [server.base + target.room(room, "bench")], concurrency: 1, waitWelcome: target.welcome });
  return { socket: 0, prefix: '{"type":"publish","data":{"t":', suffix: `,"p":"${PADDING}"}}` };
}

/** (b) publish-to-receive latency at a fixed rate well below saturation. */
async function latency(target, server, run) {
  const { receivers: n, rate, seconds } = CONFIG.latency;
  const sender = await openRoom(target, server, `lat-${run}`, n);
  await Promise.all(receivers.map((c) => c.call("track")));
  const warm = await publisher.call("send", { senders: [sender], rate: 50, durationMs: 400 });
  await drain(receivers, warm.sent * n);
  await Promise.all(receivers.map((c) => c.call("track", { latency: true })));
  const meter = cpuMeter(meterGroups(server));
  const sent = await publisher.call("send", { senders: [sender], rate, durationMs: seconds * 1000 });
  const cpu = meter.stop();
  await sleep(1000);
  const reports = await Promise.all(receivers.map((c) => c.call("report", { stop: true })));
  const received = reports.reduce((sum, r) => sum + r.received, 0);
  const summary = latencySummary(reports.map((r) => r.latencies));
  progress(`  (b) ${n} sockets, ${rate} publishes/s: p50 ${summary.p50} ms, p99 ${summary.p99} ms, max ${summary.max} ms (${received}/${sent.sent * n} delivered)`);
  await closeEverything();
  return { receivers: n, rate, deliveriesPerSecond: rate * n, expected: sent.sent * n, received, ...summary, publisherMaxLagMs: round(sent.maxLagMs, 1), cpu, bottleneck: bottleneck(cpu) };
}

/**
 * Open-loop steps at doubling offered rates. `sendStep(rate)` sends for one step and answers the
 * sender's result; `clients` count the deliveries; `perOffered` converts an offered delivery rate
 * into a send rate. Stops at the first step that is not sustained, after draining it.
 */
async function steps({ server, clients, startOffered, maxSteps, deliveriesPerSend, sendStep, label, track = {} }) {
  const results = [];
  for (let k = 0; k < maxSteps; k++) {
    const offered = startOffered * 2 ** k;
    const rate = Math.max(1, offered / deliveriesPerSend);
    await Promise.all(clients.map((c) => c.call("track", track)));
    const meter = cpuMeter(meterGroups(server));
    const sent = await sendStep(rate);
    const cpu = meter.stop();
    await sleep(500);
    const reports = await Promise.all(clients.map((c) => c.call("report", { stop: true })));
    const expected = sent.sent * (deliveriesPerSend / sent.senders);
    const received = reports.reduce((sum, r) => sum + r.received, 0);
    const from = sent.startUs + WARM_US;
    const windowed =
      reports.reduce((sum, r) => sum + countAt(r.timeline, sent.endUs) - countAt(r.timeline, from), 0) / ((sent.endUs - from) / 1e6);
    const step = {
      offered,
      sendRate: round(rate, 1),
      sent: sent.sent,
      expected,
      receivedWithin500ms: received,
      deliveredPerSecond: Math.round(windowed),
      // Kept up: nearly everything arrived within 500 ms of the last send, and the rate over the
      // step was within 10% of what was offered.
      sustained: received >= SUSTAINED * expected && windowed >= 0.9 * offered,
      senderMaxLagMs: round(sent.maxLagMs, 1),
      cpu,
      bottleneck: bottleneck(cpu),
    };
    results.push(step);
    const g = cpu.groups;
    progress(
      `  ${label} offered ${offered}/s: ${step.deliveredPerSecond}/s delivered${step.sustained ? "" : " (NOT sustained)"}; ` +
        `cpu% server ${g.server.percentOfCore} host ${g.host.percentOfCore} pub ${g.publisher.percentOfCore} ` +
        `recv ${receivers.map((c) => g[c.name].percentOfCore).join("+")} other ${g.other.percentOfCore}; bottleneck: ${step.bottleneck}`,
    );
    if (!step.sustained) {
      step.drain = await drain(clients, expected);
      progress(`    drained ${step.drain.received}/${expected} in ${step.drain.seconds} s${step.drain.complete ? "" : " (incomplete)"}`);
      break;
    }
    if (sent.maxLagMs > 200) {
      step.note = "sender fell behind its schedule";
      break;
    }
  }
  const best = results.reduce((a, b) => (b.deliveredPerSecond > a.deliveredPerSecond ? b : a));
  const sustained = results.filter((s) => s.sustained).map((s) => s.offered);
  return { steps: results, peak: best.deliveredPerSecond, peakStep: best, maxSustainedOffered: sustained.length ? Math.max(...sustained) : 0 };
}

/** (a) fan-out throughput: one room, `n` receiving sockets, an open-loop publisher. */
async function fanout(target, server, run, n) {
  const sender = await openRoom(target, server, `fan-${n}-${run}`, n);
  // Warm up, and let every warm-up delivery arrive before the first step counts.
  await Promise.all(receivers.map((c) => c.call("track")));
  const warm = await publisher.call("send", { senders: [sender], rate: 50, durationMs: 400 });
  await drain(receivers, warm.sent * n);
  const result = await steps({
    server,
    clients: receivers,
    startOffered: CONFIG.startOffered,
    maxSteps: CONFIG.maxSteps,
    deliveriesPerSend: n,
    label: `(a) N=${n}`,
    sendStep: async (rate) => ({ ...(await publisher.call("send", { senders: [sender], rate, durationMs: CONFIG.stepSeconds * 1000 })), senders: 1 }),
  });
  await closeEverything();
  return { sockets: n, ...result };
}

/** (e) direct messages: users on their own inboxes, each sending to one in the other process. */
async function directs(target, server, run) {
  const { users, latencyRate, latencySeconds, startOffered, maxSteps } = CONFIG.directs;
  const names = Array.from({ length: users }, (_, i) => `u-${run}-${i}`);
  const share = users / receivers.length;
  await Promise.all(
    receivers.map((client, c) =>
      client.call("open", { urls: names.slice(c * share, (c + 1) * share).map((u) => server.base + target.user(u)), concurrency: 10, waitWelcome: target.welcome }),
    ),
  );
  const sendersOf = (c) =>
    Array.from({ length: share }, (_, i) => {
      const to = names[(c * share + i + users / 2) % users];
      return { socket: i, prefix: `{"type":"direct","to":"${to}","data":{"t":`, suffix: `,"p":"${PADDING}"}}` };
    });
  const sendAll = async (perUserRate, durationMs) => {
    const results = await Promise.all(receivers.map((client, c) => client.call("send", { senders: sendersOf(c), rate: perUserRate, durationMs })));
    return {
      sent: results.reduce((sum, r) => sum + r.sent, 0),
      senders: users,
      startUs: Math.min(...results.map((r) => r.startUs)),
      endUs: Math.max(...results.map((r) => r.endUs)),
      maxLagMs: Math.max(...results.map((r) => r.maxLagMs)),
    };
  };
  await Promise.all(receivers.map((c) => c.call("track", { ack: target.ackEvery })));
  const warm = await sendAll(5, 400);
  await drain(receivers, warm.sent);
  await Promise.all(receivers.map((c) => c.call("track", { latency: true, ack: target.ackEvery })));
  const meter = cpuMeter(meterGroups(server));
  const sent = await sendAll(latencyRate / users, latencySeconds * 1000);
  const cpu = meter.stop();
  await sleep(1000);
  const reports = await Promise.all(receivers.map((c) => c.call("report", { stop: true })));
  const received = reports.reduce((sum, r) => sum + r.received, 0);
  const summary = latencySummary(reports.map((r) => r.latencies));
  progress(`  (e) ${users} users, ${latencyRate} directs/s: p50 ${summary.p50} ms, p99 ${summary.p99} ms, max ${summary.max} ms (${received}/${sent.sent})`);
  const throughput = await steps({
    server,
    clients: receivers,
    startOffered,
    maxSteps,
    deliveriesPerSend: users,
    label: "(e) directs",
    track: { ack: target.ackEvery },
    sendStep: (rate) => sendAll(rate, CONFIG.stepSeconds * 1000),
  });
  await closeEverything();
  return { users, latency: { rate: latencyRate, expected: sent.sent, received, ...summary, cpu, bottleneck: bottleneck(cpu) }, throughput };
}

// ---- the run ----

function machine() {
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
    quick: QUICK,
    storage: PERSIST_ON_DISK ? "disk (os.tmpdir())" : "tmpfs (/dev/shm)",
    path: VIA_PROXY ? "through wrangler's dev proxy" : "straight to the workerd runtime",
    relayConfig: RELAY_CONFIG ?? "wrangler.toml",
  };
}

async function main() {
  const run = randomUUID().slice(0, 8);
  const info = machine();
  progress(`run ${run} on ${info.nproc}x ${info.cpuModel}, commit ${info.commit}${QUICK ? " (quick)" : ""}`);
  const results = { machine: info, config: CONFIG, targets: {} };
  const names = Object.keys(TARGETS).filter((name) => !ONLY || ONLY.includes(name));
  for (const name of names) {
    const target = TARGETS[name];
    progress(`${target.label}: starting`);
    const server = await target.start({
      ...(name === "ours" && RELAY_CONFIG && { configPath: RELAY_CONFIG }),
      storageDir: PERSIST_ON_DISK ? tmpdir() : existsSync("/dev/shm") ? "/dev/shm" : tmpdir(),
      viaProxy: VIA_PROXY,
    });
    progress(`${target.label}: up at ${server.base}, server pids ${server.pids.join(",")}`);
    const result = { label: target.label };
    try {
      if (wants("c")) {
        await quiet(server);
        Object.assign(result, await connectionsAndIdle(target, server, run));
      }
      if (wants("b")) {
        await quiet(server);
        result.latency = await latency(target, server, run);
      }
      if (wants("a")) {
        result.fanout = [];
        for (const n of CONFIG.fanoutSizes) {
          await quiet(server);
          result.fanout.push(await fanout(target, server, run, n));
        }
      }
      if (wants("e")) {
        await quiet(server);
        result.directs = await directs(target, server, run);
      }
    } catch (error) {
      result.error = String(error?.stack ?? error);
      progress(`${target.label}: FAILED ${error?.message ?? error}`);
      await closeEverything().catch(() => {});
    } finally {
      await server.stop();
    }
    results.targets[name] = result;
  }
  mkdirSync(new URL("./results/", import.meta.url), { recursive: true });
  const stamp = info.date.replace(/[:.]/g, "-");
  const json = JSON.stringify(results, null, 2);
  writeFileSync(new URL(`./results/${stamp}.json`, import.meta.url), json);
  writeFileSync(new URL("./results/latest.json", import.meta.url), json);
  const markdown = render(results);
  writeFileSync(new URL("./results/latest.md", import.meta.url), markdown);
  if (WRITE && !QUICK && !ONLY && !PERSIST_ON_DISK && !VIA_PROXY && !WORKLOADS && !RELAY_CONFIG) {
    const path = new URL("../BENCHMARKS.md", import.meta.url);
    const start = "<!-- bench:results:start -->";
    const end = "<!-- bench:results:end -->";
    let doc;
    try {
      doc = readFileSync(path, "utf8");
    } catch {
      doc = `# Benchmarks\n\n${start}\n${end}\n`;
    }
    const i = doc.indexOf(start);
    const j = doc.indexOf(end);
    doc = i >= 0 && j > i ? doc.slice(0, i + start.length) + "\n" + markdown + "\n" + doc.slice(j) : `${doc}\n${start}\n${markdown}\n${end}\n`;
    writeFileSync(path, doc);
    progress("tables written into BENCHMARKS.md");
  } else {
    progress("BENCHMARKS.md left as it was (quick, --only or --no-write); tables in bench/results/latest.md");
  }
  progress(`raw results in bench/results/${stamp}.json`);
}

try {
  await main();
} finally {
  for (const client of allClients) client.process.disconnect();
}
