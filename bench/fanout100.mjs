// `npm run bench -- fanout100`: a 100-socket room, our relay at HEAD against the single-object
// room of commit f5caf82 (bench/baseline.mjs), in the same run: peak deliveries/s of open-loop
// fan-out steps, and p50/p99 publish-to-receive latency at a fixed rate. Repeated (paired: each
// repetition starts both, the order alternating) because single runs are noisy. This machine is
// shared: a peak step (or latency window) during which other work used more than half a core is
// marked disturbed and left out of the throughput (or latency) median, and repetitions go on
// until each median has its count of undisturbed ones (at most 3 extra repetitions).
//
//   npm run bench -- fanout100             3 repetitions
//   npm run bench -- fanout100 --quick     smoke test: 1 repetition, short steps
//   npm run bench -- fanout100 --reps=5
//   … --ours-commit=HEAD                  measure a worktree of that commit, not the working tree
import { randomUUID } from "node:crypto";
import { calmLoad, closeEverything, commandLine, describeMachine, measureOn, progress, quiet, runBench, report } from "./harness.mjs";
import { fanout, latency } from "./room-workloads.mjs";
import { relayTarget } from "./targets.mjs";
import { baselineConfig, oursConfig } from "./baseline.mjs";
import { renderFanout } from "./scale-report.mjs";

const { argv, option, quick: QUICK } = commandLine();

const CONFIG = {
  sockets: 100,
  reps: Number(option("reps") ?? (QUICK ? 1 : 3)),
  fanout: QUICK ? { startOffered: 20_000, maxSteps: 2, stepSeconds: 1.5 } : { startOffered: 20_000, maxSteps: 6, stepSeconds: 2.5 },
  latency: QUICK ? { receivers: 100, rate: 50, seconds: 2 } : { receivers: 100, rate: 50, seconds: 5 },
};

/** Other work on the machine above this (percent of one core) in a measured window disturbs it. */
const DISTURBED = 50;
const EXTRA_REPS = 3;

/** CPU other work used during the peak fan-out step and during the latency window, percent of one core. */
function others(result) {
  return { peak: result.fanout?.peakStep?.cpu?.groups?.other?.percentOfCore ?? 0, latency: result.latency?.cpu?.groups?.other?.percentOfCore ?? 0 };
}

async function measure(target, run) {
  const result = { label: target.label, load: await calmLoad() };
  const failed = await measureOn(target, async (server) => {
    result.otherBeforeLatency = await quiet(server);
    result.latency = await latency(target, server, run, CONFIG.latency);
    result.otherBeforeFanout = await quiet(server);
    result.fanout = await fanout(target, server, run, CONFIG.sockets, CONFIG.fanout);
  });
  if (failed) result.error = failed;
  return result;
}

async function main() {
  const machine = { ...describeMachine(), quick: QUICK };
  const baseline = baselineConfig();
  const ours = oursConfig(argv, machine);
  const targets = {
    ours: relayTarget(`edge-relay ${ours.commit}`, { configPath: ours.configPath }),
    base: relayTarget(`edge-relay ${baseline.commit}`, { configPath: baseline.configPath }),
  };
  progress(`fanout100 on ${machine.nproc}x ${machine.cpuModel}: ${targets.ours.label} against ${targets.base.label}, ${CONFIG.reps} repetitions`);
  const results = { benchmark: "fanout100", machine, config: CONFIG, baseline: baseline.commit, ours, reps: [] };
  const clean = { throughput: 0, latency: 0 };
  const enough = () => clean.throughput >= CONFIG.reps && clean.latency >= CONFIG.reps;
  for (let i = 0; !enough() && i < CONFIG.reps + EXTRA_REPS; i++) {
    const order = i % 2 === 0 ? ["ours", "base"] : ["base", "ours"];
    progress(`repetition ${i + 1} (undisturbed so far: ${clean.throughput} for throughput, ${clean.latency} for latency; ${CONFIG.reps} wanted): ${order.join(" then ")}`);
    const rep = { order };
    for (const name of order) rep[name] = await measure(targets[name], randomUUID().slice(0, 8));
    rep.load = rep[order[0]].load;
    rep.other = { ours: others(rep.ours), base: others(rep.base) };
    rep.throughputDisturbed = Math.max(rep.other.ours.peak, rep.other.base.peak) > DISTURBED;
    rep.latencyDisturbed = Math.max(rep.other.ours.latency, rep.other.base.latency) > DISTURBED;
    if (!rep.throughputDisturbed) clean.throughput++;
    if (!rep.latencyDisturbed) clean.latency++;
    const peak = rep.ours.fanout?.peak / rep.base.fanout?.peak;
    const p99 = rep.ours.latency?.p99 / rep.base.latency?.p99;
    progress(
      `repetition ${i + 1}: ours ÷ base peak ${peak.toFixed(2)}×${rep.throughputDisturbed ? " (disturbed)" : ""}, ` +
        `p99 ${p99.toFixed(2)}×${rep.latencyDisturbed ? " (disturbed)" : ""}; other work (ours/base) at peak ${rep.other.ours.peak}/${rep.other.base.peak}%, ` +
        `in latency window ${rep.other.ours.latency}/${rep.other.base.latency}% of a core`,
    );
    results.reps.push(rep);
  }
  const markdown = renderFanout(results);
  report("fanout100", results, markdown);
}

await runBench(main);
