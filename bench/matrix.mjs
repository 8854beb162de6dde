// The full matrix of `npm run bench` (bench/run.mjs dispatches here when no other benchmark is
// named): every workload against our relay and the three baselines, on loopback, with the same
// client processes for all. Progress goes to stderr; raw results to bench/results/; the tables
// into BENCHMARKS.md between its bench:results markers. Options: see bench/run.mjs.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { randomUUID } from "node:crypto";
import { cpuMeter, round } from "./proc.mjs";
import { render } from "./report.mjs";
import { TARGETS } from "./targets.mjs";
import {
  bottleneck,
  closeEverything,
  describeMachine,
  drain,
  latencySummary,
  measureOn,
  meterGroups,
  openMetered,
  progress,
  quiet,
  receivers,
  releaseClients,
  serverRssMiB,
  sleep,
  warmUp,
} from "./harness.mjs";
import { fanout, latency, openDirects, steps } from "./room-workloads.mjs";

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

// A mistyped option would otherwise run the whole matrix (8-10 minutes) without a word.
const OPTIONS = ["--quick", "--no-write", "--persist=disk", "--via-proxy", "--only=", "--relay-config=", "--workloads="];
const unknown = [
  ...argv.filter((arg) => !OPTIONS.some((known) => (known.endsWith("=") ? arg.startsWith(known) : arg === known))),
  ...(ONLY ?? []).filter((name) => !TARGETS[name] || TARGETS[name].workloads).map((name) => `--only=${name}`),
  ...(WORKLOADS ?? []).filter((name) => !["a", "b", "c", "d", "e"].includes(name)).map((name) => `--workloads=${name}`),
];
if (unknown.length > 0) {
  process.stderr.write(
    `the full matrix does not take ${unknown.join(" ")}; it takes ${OPTIONS.join(" ")} (targets ours, floor, partyserver, hub; workloads a-e).\n` +
      `Benchmarks with options of their own: npm run bench -- cost|scale|fanout100|storm|pusher (see bench/run.mjs)\n`,
  );
  process.exit(2);
}

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
      connections: 2000, // about a second of opening: shorter windows were noisier than the differences measured
      idleWaitSeconds: 12,
      directs: { users: 20, latencyRate: 200, latencySeconds: 4, startOffered: 1000, maxSteps: 5 },
    };
// ---- workloads ----

/** (c) connection rate, then (d) memory of the same sockets once idle (hibernated on workerd). */
async function connectionsAndIdle(target, server, run) {
  const n = CONFIG.connections;
  const { seconds, cpu, rssBeforeMiB } = await openMetered(target, server, `conn-${run}`, n);
  const rate = n / seconds;
  progress(`  (c) ${n} sockets opened${target.welcome ? " and welcomed" : ""} in ${seconds.toFixed(2)} s: ${Math.round(rate)}/s`);
  await sleep(2000);
  const rssAwakeMiB = serverRssMiB(server);
  await sleep(CONFIG.idleWaitSeconds * 1000 - 2000);
  const rssIdleMiB = serverRssMiB(server);
  const per1000 = (mib) => round(((mib - rssBeforeMiB) / n) * 1000, 1);
  const memory = { rssBeforeMiB, awakeMiBPer1000: per1000(rssAwakeMiB), idleMiBPer1000: per1000(rssIdleMiB) };
  progress(`  (d) server RSS ${memory.rssBeforeMiB} MiB before; per 1,000 sockets: +${memory.awakeMiBPer1000} MiB after 2 s, +${memory.idleMiBPer1000} MiB after ${CONFIG.idleWaitSeconds} s idle`);
  await closeEverything();
  return { connections: { sockets: n, seconds: round(seconds, 3), perSecond: Math.round(rate), cpu, bottleneck: bottleneck(cpu) }, idle: memory };
}

/** (e) direct messages: users on their own inboxes, each sending to one in the other process. */
async function directs(target, server, run) {
  const { users, latencyRate, latencySeconds, startOffered, maxSteps } = CONFIG.directs;
  const sendAll = await openDirects(target, server, run, users);
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
  return {
    ...describeMachine(),
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
  // Targets made for one workload of another benchmark (`workloads`) are left out of the matrix.
  // --only also sets the order.
  const names = (ONLY ?? Object.keys(TARGETS)).filter((name) => TARGETS[name] && !TARGETS[name].workloads);
  // The first runtime of a run measured slower than later ones, so a throwaway one goes first.
  await measureOn(TARGETS.floor, (server) => warmUp(TARGETS.floor, server, `warm-${run}`), "warm-up (floor DO, not measured)");
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
        result.latency = await latency(target, server, run, CONFIG.latency);
      }
      if (wants("a")) {
        result.fanout = [];
        for (const n of CONFIG.fanoutSizes) {
          await quiet(server);
          result.fanout.push(await fanout(target, server, run, n, CONFIG));
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
  releaseClients();
}
