// `npm run bench -- storm`: a reconnect storm. 2,000 sockets of 2,000 distinct users open into
// one room at once (100 in flight), our relay at HEAD against commit f5caf82 (whose presence is
// quadratic: every join goes to everyone, every welcome lists everyone) in the same run. Measures
// the seconds until every socket had its welcome and the payload bytes the clients received,
// until the room goes quiet. Both run with the relay's default PRESENCE_LIST_LIMIT (100).
//
//   npm run bench -- storm                 2,000 sockets, 100 in flight
//   npm run bench -- storm --quick         smoke test: 200 sockets, 20 in flight
//   npm run bench -- storm --sockets=1000 --in-flight=50
//   … --ours-commit=HEAD                  measure a worktree of that commit, not the working tree
import { randomUUID } from "node:crypto";
import { cpuMeter, round } from "./proc.mjs";
import {
  calmLoad,
  closeEverything,
  describeMachine,
  meterGroups,
  progress,
  quiet,
  receivers,
  runBench,
  report,
  serverRssMiB,
  sleep,
  commandLine,
  measureOn,
} from "./harness.mjs";
import { relayTarget } from "./targets.mjs";
import { baselineConfig, oursConfig } from "./baseline.mjs";
import { renderStorm } from "./scale-report.mjs";

const { argv, option, quick: QUICK } = commandLine();

const CONFIG = {
  sockets: Number(option("sockets") ?? (QUICK ? 200 : 2000)),
  inFlight: Number(option("in-flight") ?? (QUICK ? 20 : 100)),
  /** A socket that has no welcome after this long counts as failed. */
  openTimeoutSeconds: 120,
  /** After the last welcome, how long presence traffic may go on before the run stops waiting. */
  settleSeconds: 180,
};

const totals = async () => {
  const reports = await Promise.all(receivers.map((c) => c.call("report")));
  return { bytes: reports.reduce((s, r) => s + r.bytes, 0), frames: reports.reduce((s, r) => s + r.frames, 0) };
};

async function storm(target, run) {
  const result = { label: target.label, load: await calmLoad() };
  const failed = await measureOn(target, async (server) => {
    await quiet(server);
    const room = `storm-${run}`;
    const urls = Array.from({ length: CONFIG.sockets }, (_, i) => server.base + target.room(room, `u${i}-${run}`));
    await Promise.all(receivers.map((c) => c.call("track")));
    const meter = cpuMeter(meterGroups(server));
    const share = Math.ceil(urls.length / receivers.length);
    const progressTimer = setInterval(async () => {
      const t = await totals().catch(() => undefined);
      if (t) progress(`  … ${(t.bytes / 1e6).toFixed(1)} MB, ${t.frames} frames received so far`);
    }, 5000);
    let opens;
    try {
      opens = await Promise.all(
        receivers.map((client, i) =>
          client.call("open", {
            urls: urls.slice(i * share, (i + 1) * share),
            concurrency: CONFIG.inFlight / receivers.length,
            waitWelcome: true,
            timeoutMs: CONFIG.openTimeoutSeconds * 1000,
          }),
        ),
      );
    } finally {
      clearInterval(progressTimer);
    }
    const welcomeSeconds = (Math.max(...opens.map((r) => r.endUs)) - Math.min(...opens.map((r) => r.startUs))) / 1e6;
    const atWelcome = await totals();
    result.welcomeSeconds = round(welcomeSeconds, 2);
    result.welcomed = opens.reduce((s, r) => s + r.opened, 0);
    result.failed = opens.reduce((s, r) => s + r.failed, 0);
    result.errors = opens.flatMap((r) => r.errors);
    result.bytesAtWelcome = atWelcome.bytes;
    progress(
      `  ${result.welcomed}/${CONFIG.sockets} welcomed in ${result.welcomeSeconds} s (${result.failed} failed${result.errors.length ? `: ${result.errors.join("; ")}` : ""}); ` +
        `${(atWelcome.bytes / 1e6).toFixed(2)} MB, ${atWelcome.frames} frames so far`,
    );
    // Presence traffic may go on after the last welcome: wait until nothing arrives for 2 s.
    const settleStart = performance.now();
    let last = atWelcome;
    let lastChange = settleStart;
    for (;;) {
      await sleep(250);
      const now = performance.now();
      const t = await totals();
      if (t.bytes !== last.bytes) [last, lastChange] = [t, now];
      else if (now - lastChange >= 2000) break;
      if (now - settleStart > CONFIG.settleSeconds * 1000) {
        result.settleTimedOut = true;
        break;
      }
    }
    const cpu = meter.stop();
    result.bytes = last.bytes;
    result.frames = last.frames;
    result.quietSeconds = round(welcomeSeconds + (lastChange - settleStart) / 1000, 1);
    result.cpu = cpu;
    result.rssMiB = serverRssMiB(server);
    const censuses = await Promise.all(receivers.map((c) => c.call("census")));
    result.socketsOpen = censuses.reduce((s, c) => s + c.open, 0);
    result.closeCodes = censuses.map((c) => c.closeCodes);
    const g = cpu.groups;
    progress(
      `  quiet after ${result.quietSeconds} s${result.settleTimedOut ? " (STOPPED WAITING)" : ""}: ${(result.bytes / 1e6).toFixed(2)} MB, ${result.frames} frames; ` +
        `${result.socketsOpen} sockets open; cpu s runtime ${g.server.cpuSeconds} receivers ${receivers.map((c) => g[c.name].cpuSeconds).join("+")}; RSS ${result.rssMiB} MiB`,
    );
    await closeEverything();
  });
  if (failed) result.error = failed;
  return result;
}

async function main() {
  const run = randomUUID().slice(0, 8);
  const machine = { ...describeMachine(), quick: QUICK };
  const baseline = baselineConfig();
  const ours = oursConfig(argv, machine);
  const targets = {
    ours: relayTarget(`edge-relay ${ours.commit}`, { configPath: ours.configPath }),
    base: relayTarget(`edge-relay ${baseline.commit}`, { configPath: baseline.configPath }),
  };
  progress(`storm ${run}: ${CONFIG.sockets} users, ${CONFIG.inFlight} in flight; ${targets.ours.label} against ${targets.base.label}`);
  const results = { benchmark: "storm", machine, config: CONFIG, baseline: baseline.commit, ours, targets: {} };
  for (const [name, target] of Object.entries(targets)) results.targets[name] = await storm(target, run);
  const markdown = renderStorm(results);
  report("storm", results, markdown);
}

await runBench(main);
