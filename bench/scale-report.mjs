// Markdown tables of the scale-out benchmarks (scale, fanout100, storm), every ratio taken
// between figures of the same run.
const fmt = (value, digits = 0) =>
  value === undefined || value === null || Number.isNaN(value)
    ? "–"
    : Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const ratio = (a, b) => {
  if (a === undefined || b === undefined || !b) return "–";
  const r = a / b;
  return `${r !== 0 && Math.abs(r) < 0.1 ? Number(r.toPrecision(2)) : fmt(r, 2)}×`;
};
const median = (values) => {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return undefined;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

function header(m, what, ours) {
  const commit = ours
    ? `ours = commit \`${ours.commit}\`${ours.pinned ? " (a worktree of it)" : ours.workingTreeModified ? " with uncommitted changes to the relay" : ""}`
    : `commit \`${m.commit}\`${m.relaySourceModified ? " (with uncommitted changes to the relay)" : ""}`;
  return (
    `${what}: run of ${m.date.slice(0, 16).replace("T", " ")} UTC, ${commit}: ${m.nproc} × ${m.cpuModel}, ${m.memoryGiB} GiB, ` +
    `Node ${m.node}${m.quick ? ", **quick mode**" : ""}.`
  );
}

const loadText = (load) => (load ? `${load.one} / ${load.five} / ${load.fifteen}${load.overLimit ? " (still above 1.5 after 10 min)" : ""}` : "–");
const clientPercent = (cpu) =>
  Object.entries(cpu.groups)
    .filter(([name]) => name === "publisher" || name.startsWith("receivers-"))
    .map(([, g]) => g.percentOfCore)
    .join(" + ");

export function renderScale(results) {
  const lines = [header(results.machine, "`npm run bench -- scale`", results.ours), ""];
  const c = results.config;
  lines.push(
    `${c.rate} publishes/s for ${c.seconds} s per size; one socket publishes, every socket (its echo included) receives, so a publish is n deliveries. ` +
      `Runtime CPU is user + sys of the workerd runtime process over the window (until the last delivery arrived), less its idle rate with the same sockets open (measured for ${c.idleSeconds} s just before). ` +
      `Kernel share = the part of the runtime's CPU spent in the kernel (sys), which on loopback includes TCP work for the receiving side. ` +
      `Clients = publisher + the two receiver processes, percent of one core.`,
    "",
  );
  lines.push(
    "| variant | sockets | objects | delivered / expected | seq gaps / repeats | runtime ms per publish | runtime µs per delivery | per delivery vs smallest size | runtime kernel share | p50 / p99 ms | runtime idle % | runtime % | clients % | runtime RSS MiB | connect s | load (1/5/15 min) |",
  );
  lines.push("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
  for (const variant of Object.values(results.variants)) {
    const base = variant.sizes[0];
    for (const s of variant.sizes) {
      lines.push(
        `| ${variant.label} | ${fmt(s.sockets)} | ${fmt(s.objects)} | ${fmt(s.received)} / ${fmt(s.expected)}${s.complete ? "" : " **incomplete**"} | ${s.seqGaps} / ${s.seqRepeats} | ` +
          `${fmt(s.msPerPublish, 2)} | ${fmt(s.usPerDelivery, 1)} | ${ratio(s.usPerDelivery, base.usPerDelivery)} | ` +
          `${s.serverSysSeconds === undefined ? "–" : `${fmt((100 * s.serverSysSeconds) / s.serverCpuSeconds)}%`} | ${fmt(s.p50, 1)} / ${fmt(s.p99, 1)} | ` +
          `${fmt(s.idleServerPercentOfCore, 1)} | ${s.cpu.groups.server.percentOfCore} | ${clientPercent(s.cpu)} | ${fmt(s.rssMiB)} | ${fmt(s.connectSeconds, 1)} | ${loadText(variant.load)} |`,
      );
    }
    if (variant.error) lines.push(`| ${variant.label} | **failed:** \`${variant.error.split("\n")[0]}\` |`);
  }
  const { sharded, one } = results.variants;
  if (sharded && one) {
    lines.push("", "| sockets | sharded ÷ one object, runtime µs per delivery | sharded ÷ one object, p99 |", "|--:|--:|--:|");
    for (const s of sharded.sizes) {
      const o = one.sizes.find((x) => x.sockets === s.sockets);
      if (o) lines.push(`| ${fmt(s.sockets)} | ${ratio(s.usPerDelivery, o.usPerDelivery)} | ${ratio(s.p99, o.p99)} |`);
    }
  }
  return lines.join("\n");
}

export function renderFanout(results) {
  const lines = [header(results.machine, "`npm run bench -- fanout100`", results.ours), ""];
  const c = results.config;
  lines.push(
    `Both are this repository's relay: ours (default SOCKETS_PER_OBJECT, so all 100 sockets sit in the Room) and the single-object room of \`${results.baseline}\`, ` +
      `started one after the other in each repetition (the order alternates). Fan-out: open-loop steps from ${fmt(c.fanout.startOffered)} deliveries/s, doubling, ${c.fanout.stepSeconds} s each, at most ${c.fanout.maxSteps}; ` +
      `peak = the highest delivery rate over a step. Latency: ${c.latency.receivers} sockets, ${c.latency.rate} publishes/s (${fmt(c.latency.receivers * c.latency.rate)} deliveries/s) for ${c.latency.seconds} s. ` +
      `Ratios are ours ÷ ${results.baseline}. "other" is the CPU other work on this shared machine used during the peak steps / the latency windows (most of the two targets, % of one core); ` +
      `a ratio whose windows had more than 50% is marked † and left out of its median.`,
    "",
  );
  lines.push(
    "| rep | order | ours peak deliveries/s | base peak | peak ratio | ours highest sustained / base | ours p50 / p99 ms | base p50 / p99 ms | p50 ratio | p99 ratio | other % (peak / latency) | load (1 min) |",
  );
  lines.push("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
  const peaks = [];
  const p50s = [];
  const p99s = [];
  for (const [i, rep] of results.reps.entries()) {
    const o = rep.ours;
    const b = rep.base;
    const pr = o?.fanout?.peak / b?.fanout?.peak;
    const r50 = o?.latency?.p50 / b?.latency?.p50;
    const r99 = o?.latency?.p99 / b?.latency?.p99;
    if (!rep.throughputDisturbed) peaks.push(pr);
    if (!rep.latencyDisturbed) {
      p50s.push(r50);
      p99s.push(r99);
    }
    const mark = (disturbed) => (disturbed ? " †" : "");
    const other = rep.other
      ? `${Math.max(rep.other.ours.peak, rep.other.base.peak)} / ${Math.max(rep.other.ours.latency, rep.other.base.latency)}`
      : "–";
    lines.push(
      `| ${i + 1} | ${rep.order.join(" → ")} | ${fmt(o?.fanout?.peak)} | ${fmt(b?.fanout?.peak)} | ${fmt(pr, 2)}×${mark(rep.throughputDisturbed)} | ` +
        `${fmt(o?.fanout?.maxSustainedOffered)} / ${fmt(b?.fanout?.maxSustainedOffered)} | ` +
        `${fmt(o?.latency?.p50, 2)} / ${fmt(o?.latency?.p99, 2)} | ${fmt(b?.latency?.p50, 2)} / ${fmt(b?.latency?.p99, 2)} | ` +
        `${fmt(r50, 2)}×${mark(rep.latencyDisturbed)} | ${fmt(r99, 2)}×${mark(rep.latencyDisturbed)} | ${other} | ${rep.load?.one ?? "–"} |`,
    );
    for (const [who, r] of [["ours", o], ["base", b]]) if (r?.error) lines.push(`| ${i + 1} | ${who} **failed:** \`${r.error.split("\n")[0]}\` |`);
  }
  const mp = median(peaks);
  const m99 = median(p99s);
  lines.push(
    `| median | | | | **${fmt(mp, 2)}×** (of ${peaks.length}) | | | | ${fmt(median(p50s), 2)}× | **${fmt(m99, 2)}×** (of ${p99s.length}) | | |`,
    "",
    `Issue 9 asks for at least 0.9× throughput (median here: ${fmt(mp, 2)}×, ${mp >= 0.9 ? "met" : "**not met**"}) and p99 at most 1.2× (median: ${fmt(m99, 2)}×, ${m99 <= 1.2 ? "met" : "**not met**"}).`,
  );
  return lines.join("\n");
}

export function renderStorm(results) {
  const lines = [header(results.machine, "`npm run bench -- storm`", results.ours), ""];
  const c = results.config;
  lines.push(
    `${fmt(c.sockets)} sockets of ${fmt(c.sockets)} distinct users open into one room at once, ${c.inFlight} in flight (${c.inFlight / 2} per receiver process); ` +
      `default PRESENCE_LIST_LIMIT (100). Bytes are WebSocket payload bytes received by all clients, until the room went quiet (nothing for 2 s, at most ${c.settleSeconds} s after the last welcome). Ratios are ours ÷ ${results.baseline}.`,
    "",
  );
  const names = Object.keys(results.targets);
  lines.push(`| | ${names.map((n) => results.targets[n].label).join(" | ")} | ratio |`);
  lines.push(`|---|${names.map(() => "--:").join("|")}|--:|`);
  const row = (title, pick, digits = 0) => {
    const values = names.map((n) => {
      try {
        return pick(results.targets[n]);
      } catch {
        return undefined;
      }
    });
    lines.push(`| ${title} | ${values.map((v) => fmt(v, digits)).join(" | ")} | ${values.length === 2 ? ratio(values[0], values[1]) : "–"} |`);
  };
  row("seconds until every socket had its welcome", (t) => t.welcomeSeconds, 2);
  row("sockets welcomed", (t) => t.welcomed);
  row("sockets that failed to open", (t) => t.failed);
  row("MB received by clients by the last welcome", (t) => t.bytesAtWelcome / 1e6, 2);
  row("MB received by clients in all", (t) => t.bytes / 1e6, 2);
  row("frames received in all", (t) => t.frames);
  row("seconds until the room went quiet", (t) => t.quietSeconds, 1);
  row("runtime CPU seconds (storm and settle)", (t) => t.cpu.groups.server.cpuSeconds, 2);
  row("of which in the kernel (sys)", (t) => t.cpu.groups.server.sysSeconds, 2);
  row("client CPU seconds (both receiver processes)", (t) => t.cpu.groups["receivers-1"].cpuSeconds + t.cpu.groups["receivers-2"].cpuSeconds, 2);
  row("runtime RSS MiB after", (t) => t.rssMiB, 0);
  row("other work on the machine meanwhile, % of one core", (t) => t.cpu.groups.other.percentOfCore);
  row("sockets still open after settling", (t) => t.socketsOpen);
  for (const n of names) {
    const t = results.targets[n];
    if (t.errors?.length) lines.push("", `${t.label} open errors (first few): ${t.errors.map((e) => `\`${e}\``).join(", ")}`);
    if (t.error) lines.push("", `**${t.label} failed:** \`${t.error.split("\n")[0]}\``);
  }
  lines.push("", `Load (1-minute) before each: ${names.map((n) => `${results.targets[n].label} ${results.targets[n].load?.one ?? "–"}`).join(", ")}.`);
  return lines.join("\n");
}
