// `npm run bench -- scale`: what one published message costs the runtime as a room spreads over
// holders (docs/design.md). Our relay runs with SOCKETS_PER_OBJECT=100, so n sockets live on
// ceil(n / 100) objects (the Room and its shards); by default the same sizes are measured again
// with every socket in the Room itself (SOCKETS_PER_OBJECT=25000), in the same run. For each size
// a publisher sends at a fixed modest rate; the workerd runtime's CPU (user + sys from /proc) over
// the window, less what it uses idle with the same sockets open, is divided by the messages
// published and by the deliveries (n per message: every socket, the publisher's echo included).
//
//   npm run bench -- scale                     100, 1,000 and 5,000 sockets, sharded and one object
//   npm run bench -- scale --quick             smoke test: 20 and 250 sockets, short windows
//   npm run bench -- scale --sizes=100,2000    other sizes
//   npm run bench -- scale --variants=sharded  only the sharded relay
//   npm run bench -- scale --rate=2 --seconds=30   the defaults
//   … --ours-commit=HEAD                  measure a worktree of that commit, not the working tree
import { randomUUID } from "node:crypto";
import { cpuMeter, round } from "./proc.mjs";
import {
  allClients,
  calmLoad,
  closeEverything,
  describeMachine,
  latencySummary,
  meterGroups,
  openAcross,
  progress,
  publisher,
  quiet,
  receivers,
  runBench,
  report,
  serverRssMiB,
  sleep,
  commandLine,
  measureOn,
} from "./harness.mjs";
import { PADDING } from "./room-workloads.mjs";
import { relayTarget } from "./targets.mjs";
import { renderScale } from "./scale-report.mjs";
import { openFileLimit } from "./file-limit.mjs";
import { oursConfig } from "./baseline.mjs";

const { argv, option, quick: QUICK } = commandLine();
const API_KEY = "bench-api-key";

const CONFIG = {
  sizes: (option("sizes") ?? (QUICK ? "20,250" : "100,1000,5000")).split(",").map(Number),
  /** Publishes per second: modest, so 5,000 sockets (10,000 deliveries/s at 2/s) stay below saturation. */
  rate: Number(option("rate") ?? 2),
  seconds: Number(option("seconds") ?? (QUICK ? 4 : 30)),
  idleSeconds: QUICK ? 2 : 10,
  socketsPerObject: 100,
  /** Sockets being opened at once, per receiver process. */
  concurrency: 25,
};
const VARIANTS = {
  sharded: { label: `sharded (SOCKETS_PER_OBJECT=${CONFIG.socketsPerObject})`, vars: { SOCKETS_PER_OBJECT: String(CONFIG.socketsPerObject) } },
  one: { label: "one object (SOCKETS_PER_OBJECT=25000)", vars: { SOCKETS_PER_OBJECT: "25000" } },
};
const variants = (option("variants") ?? "sharded,one").split(",");

/** Counters of every client process (the publisher's echo counts as a delivery). */
async function reportAll(args = {}) {
  return Promise.all(allClients.map((c) => c.call("report", args)));
}
const sum = (reports, key) => reports.reduce((total, r) => total + r[key], 0);

/** Waits until every client holds `expected` deliveries, or nothing arrives for 2 s, or 30 s. */
async function settle(expected) {
  const start = performance.now();
  let last = -1;
  let lastChange = start;
  for (;;) {
    const received = sum(await reportAll(), "received");
    const now = performance.now();
    if (received >= expected) return { received, complete: true };
    if (received !== last) [last, lastChange] = [received, now];
    else if (now - lastChange > 2000 || now - start > 30_000) return { received, complete: false };
    await sleep(100);
  }
}

async function roomInfo(server, room) {
  const response = await fetch(`${server.base.replace("ws:", "http:")}/rooms/${room}`, { headers: { Authorization: `Bearer ${API_KEY}` } });
  return response.ok ? response.json() : { status: response.status, body: await response.text() };
}

async function measure(target, server, run, n) {
  const room = `scale-${n}-${run}`;
  const url = (user) => server.base + target.room(room, user);
  await quiet(server);
  // The publisher first, so it sits in the Room itself; then n - 1 receivers, distinct users.
  const connectStart = performance.now();
  await publisher.call("open", { urls: [url(`pub-${run}`)], concurrency: 1, waitWelcome: true });
  await openAcross(Array.from({ length: n - 1 }, (_, i) => url(`s${i}-${run}`)), true, CONFIG.concurrency);
  const connectSeconds = round((performance.now() - connectStart) / 1000, 2);
  await sleep(2000); // joins, presence counts and census settle
  const info = await roomInfo(server, room);
  const rssMiB = serverRssMiB(server);
  progress(`  ${n} sockets open in ${connectSeconds} s; room reports ${info.connections} connections on ${info.objects} objects; runtime RSS ${rssMiB} MiB`);

  // Idle cost with the same sockets open: subtracted from the measured window.
  const idleMeter = cpuMeter(meterGroups(server));
  await sleep(CONFIG.idleSeconds * 1000);
  const idle = idleMeter.stop();
  const idleCoresOfServer = idle.groups.server.cpuSeconds / idle.wallSeconds;

  const sender = { socket: 0, prefix: '{"type":"publish","data":{"t":', suffix: `,"p":"${PADDING}"}}` };
  await Promise.all(allClients.map((c) => c.call("track")));
  const warm = await publisher.call("send", { senders: [sender], rate: CONFIG.rate, durationMs: 1000 });
  await settle(warm.sent * n);

  await Promise.all(allClients.map((c) => c.call("track", { latency: true, seq: true })));
  const meter = cpuMeter(meterGroups(server));
  const sent = await publisher.call("send", { senders: [sender], rate: CONFIG.rate, durationMs: CONFIG.seconds * 1000 });
  const expected = sent.sent * n;
  const tail = await settle(expected);
  const cpu = meter.stop();
  const reports = await reportAll({ stop: true });
  const censuses = await Promise.all(allClients.map((c) => c.call("census")));
  const notOpen = censuses.reduce((total, c) => total + c.notOpen, 0);
  const closeCodes = censuses.reduce((codes, c) => {
    for (const [code, count] of Object.entries(c.closeCodes)) codes[code] = (codes[code] ?? 0) + count;
    return codes;
  }, {});
  const received = sum(reports, "received");
  const serverSeconds = cpu.groups.server.cpuSeconds;
  const netSeconds = Math.max(0, serverSeconds - idleCoresOfServer * cpu.wallSeconds);
  const result = {
    sockets: n,
    objects: info.objects,
    roomConnections: info.connections,
    roomUsers: info.users,
    connectSeconds,
    rssMiB,
    published: sent.sent,
    expected,
    received,
    complete: tail.complete,
    seqGaps: sum(reports, "seqGaps"),
    seqRepeats: sum(reports, "seqRepeats"),
    socketsNotOpen: notOpen,
    closeCodes,
    ...latencySummary(reports.map((r) => r.latencies)),
    idleServerPercentOfCore: round(idleCoresOfServer * 100, 1),
    serverCpuSeconds: serverSeconds,
    serverSysSeconds: cpu.groups.server.sysSeconds,
    serverNetCpuSeconds: round(netSeconds, 3),
    msPerPublish: round((netSeconds * 1e3) / sent.sent, 3),
    usPerDelivery: round((netSeconds * 1e6) / expected, 2),
    rawUsPerDelivery: round((serverSeconds * 1e6) / expected, 2),
    publisherMaxLagMs: round(sent.maxLagMs, 1),
    cpu,
    idleCpu: idle,
  };
  const g = cpu.groups;
  progress(
    `  ${n} sockets: ${sent.sent} publishes, ${received}/${expected} delivered${tail.complete ? "" : " (INCOMPLETE)"}, ` +
      `seq gaps ${result.seqGaps} repeats ${result.seqRepeats}, sockets not open ${notOpen}; ` +
      `runtime ${result.msPerPublish} ms/publish, ${result.usPerDelivery} µs/delivery (idle ${result.idleServerPercentOfCore}% of a core subtracted); ` +
      `p50 ${result.p50} ms p99 ${result.p99} ms; cpu% server ${g.server.percentOfCore} pub ${g.publisher.percentOfCore} recv ${receivers.map((c) => g[c.name].percentOfCore).join("+")} other ${g.other.percentOfCore}`,
  );
  await closeEverything();
  await sleep(2000); // leaves reach the Room before the next size connects
  return result;
}

async function main() {
  const run = randomUUID().slice(0, 8);
  const machine = { ...describeMachine(), quick: QUICK, openFiles: openFileLimit() };
  progress(`scale run ${run} on ${machine.nproc}x ${machine.cpuModel}, commit ${machine.commit}${QUICK ? " (quick)" : ""}; open-file limit ${machine.openFiles.soft}`);
  const largest = Math.max(...CONFIG.sizes);
  if (machine.openFiles.soft < largest + 1000) {
    progress(`  open-file limit ${machine.openFiles.soft} is too low for ${largest} sockets (the runtime holds all of them); sizes above ${machine.openFiles.soft - 1000} left out`);
    CONFIG.sizes = CONFIG.sizes.filter((n) => n + 1000 <= machine.openFiles.soft);
  }
  const ours = oursConfig(argv, machine);
  const results = { benchmark: "scale", machine, ours, config: CONFIG, variants: {} };
  for (const name of variants) {
    const variant = VARIANTS[name];
    const target = relayTarget(variant.label, { configPath: ours.configPath, vars: { ...variant.vars, API_KEY } });
    const entry = { label: variant.label, load: await calmLoad(), sizes: [] };
    const failed = await measureOn(target, async (server) => {
      for (const n of CONFIG.sizes) {
        progress(`${variant.label}: ${n} sockets, ${CONFIG.rate} publishes/s for ${CONFIG.seconds} s`);
        entry.sizes.push(await measure(target, server, run, n));
      }
    });
    if (failed) entry.error = failed;
    results.variants[name] = entry;
  }
  const markdown = renderScale(results);
  report("scale", results, markdown);
}

await runBench(main);
