// Markdown tables from one run's results: every figure of a baseline also as a ratio to ours.
const ORDER = ["ours", "floor", "partyserver", "hub"];

const fmt = (value, digits = 0) =>
  value === undefined || value === null || Number.isNaN(value)
    ? "–"
    : Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** "value (ratio×)" for a baseline, "value" for ours. */
function cell(results, name, pick, digits = 0) {
  const value = safe(() => pick(results.targets[name]));
  if (value === undefined) return "–";
  if (name === "ours") return fmt(value, digits);
  const ours = safe(() => pick(results.targets.ours));
  const ratio = ours ? value / ours : undefined;
  return ratio === undefined || !Number.isFinite(ratio) ? fmt(value, digits) : `${fmt(value, digits)} (${fmt(ratio, 2)}×)`;
}

function safe(f) {
  try {
    const v = f();
    return typeof v === "number" && Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

function cpuCells(cpu, receivers) {
  const g = cpu.groups;
  const recv = receivers.map((name) => g[name]?.percentOfCore ?? 0);
  return [g.server.percentOfCore, g.host.percentOfCore, g.publisher.percentOfCore, recv.join(" + "), g.other.percentOfCore, cpu.machineBusyPercent];
}

export function render(results) {
  const names = ORDER.filter((name) => results.targets[name]);
  const labels = names.map((name) => results.targets[name].label);
  const m = results.machine;
  const lines = [];
  lines.push(
    `Run of ${m.date.slice(0, 16).replace("T", " ")} UTC on commit \`${m.commit}\`${m.relaySourceModified ? " (with uncommitted changes to the relay)" : ""}: ` +
      `${m.nproc} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}${m.quick ? ", **quick mode**" : ""}. ` +
      `Ratios are baseline ÷ edge-relay: above 1 means the baseline delivers more (throughput, connections) or takes longer (latency, memory).`,
  );
  lines.push("");
  lines.push(`| workload | ${labels.join(" | ")} |`);
  lines.push(`|---|${names.map(() => "--:").join("|")}|`);
  const row = (title, pick, digits = 0) => lines.push(`| ${title} | ${names.map((n) => cell(results, n, pick, digits)).join(" | ")} |`);
  for (const [i, size] of (results.config.fanoutSizes ?? []).entries()) {
    row(`(a) fan-out, ${fmt(size)} sockets: peak deliveries/s`, (t) => t.fanout[i].peak);
    const start = results.config.startOffered;
    lines.push(
      `| (a) fan-out, ${fmt(size)} sockets: highest offered rate sustained (deliveries/s; steps double from ${fmt(start)}) | ` +
        names.map((n) => {
          const v = safe(() => results.targets[n].fanout[i].maxSustainedOffered);
          return v === undefined ? "–" : v === 0 ? `< ${fmt(start)}` : fmt(v);
        }).join(" | ") + " |",
    );
  }
  const lat = results.config.latency;
  row(`(b) latency p50 ms (${lat.receivers} sockets, ${lat.rate} publishes/s)`, (t) => t.latency.p50, 2);
  row(`(b) latency p99 ms`, (t) => t.latency.p99, 2);
  row(`(b) latency max ms`, (t) => t.latency.max, 2);
  row(`(c) connections opened${" "}per second (${fmt(results.config.connections)} sockets, 2 client processes × 25 in flight)`, (t) => t.connections.perSecond);
  row(`(d) server RSS MiB per 1,000 sockets, 2 s after connecting`, (t) => t.idle.awakeMiBPer1000, 1);
  row(`(d) server RSS MiB per 1,000 sockets, after ${results.config.idleWaitSeconds} s idle (hibernated on workerd)`, (t) => t.idle.idleMiBPer1000, 1);
  const d = results.config.directs;
  row(`(e) directs: peak delivered/s (${d.users} users, each to one other; steps double from ${fmt(d.startOffered)}, at most ${d.maxSteps})`, (t) => t.directs.throughput.peak);
  row(`(e) directs: latency p50 ms at ${d.latencyRate}/s`, (t) => t.directs.latency.p50, 2);
  row(`(e) directs: latency p99 ms at ${d.latencyRate}/s`, (t) => t.directs.latency.p99, 2);

  for (const name of names) if (results.targets[name].error) lines.push("", `**${results.targets[name].label} failed:** \`${results.targets[name].error.split("\n")[0]}\``);

  lines.push("");
  lines.push("CPU split, percent of one core over each measured window (the machine has " + m.nproc + " cores, so " + 100 * m.nproc + "% is all of it). " +
    "server = the workerd runtime process (clients connect to it directly, not through wrangler's dev proxy) or the hub; host = the runner, which also hosts wrangler; " +
    "other = everything else on the machine (this machine is shared: other sessions' test runs show up here). The bottleneck column names the busiest process when it is at 85% of a core or more, else the machine when both cores are 90% busy.");
  lines.push("");
  lines.push("| target | workload | delivered/s | server CPU µs per delivery | server | host | publisher | receivers | other | machine % of all cores | bottleneck |");
  lines.push("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|");
  for (const name of names) {
    const t = results.targets[name];
    const recvNames = Object.keys(t.latency?.cpu?.groups ?? {}).filter((g) => g.startsWith("receivers-"));
    const add = (workload, rate, cpu, verdict, perSecond) => {
      if (!cpu) return;
      const perDelivery = perSecond ? fmt((cpu.groups.server.cpuSeconds * 1e6) / (perSecond * cpu.wallSeconds), 0) : "–";
      lines.push(`| ${t.label} | ${workload} | ${rate} | ${perDelivery} | ${cpuCells(cpu, recvNames).join(" | ")} | ${verdict} |`);
    };
    for (const f of t.fanout ?? []) {
      const p = f.peakStep;
      add(`(a) ${f.sockets} sockets, peak step`, fmt(p.deliveredPerSecond), p.cpu, p.bottleneck, p.deliveredPerSecond);
    }
    if (t.latency) add("(b) latency", fmt(t.latency.deliveriesPerSecond), t.latency.cpu, t.latency.bottleneck, t.latency.deliveriesPerSecond);
    if (t.connections) add("(c) connecting", `${fmt(t.connections.perSecond)} conn/s`, t.connections.cpu, t.connections.bottleneck);
    if (t.directs) {
      const p = t.directs.throughput.peakStep;
      add("(e) directs, peak step", fmt(p.deliveredPerSecond), p.cpu, p.bottleneck, p.deliveredPerSecond);
    }
  }
  return lines.join("\n");
}
