// `npm run bench -- pusher`: the Pusher protocol and the write batching (issues 11 and 12), each
// paired in the same run, on the same relay process, against the relay's own protocol:
//
//   1a  fan-out to 100 subscribers of one room: 100 Pusher sockets subscribed to the channel
//       against 100 room sockets, both fed by one room socket's publishes: peak deliveries/s of
//       open-loop steps, and p50/p99 publish-to-receive at 50 publishes/s;
//   1b  connect rate: N Pusher connect + subscribe (until subscription_succeeded) against N room
//       sockets opened until their welcome, a user each (as every Pusher socket is one);
//   2   server publishes (POST /rooms/:room/messages, API key) with 1, 10 and 100 requests in
//       flight to one room, 200s answered per second, against one room socket publishing
//       open-loop at doubling rates (RATE_LIMIT_PER_SECOND 100000); and server directs
//       (POST /users/:user/messages) to one recipient whose user socket is open.
//
// Directs from user sockets against the floor target are the matrix's workload (e):
// `npm run bench -- --only=ours,floor --workloads=e --relay-config=<worktree>/wrangler.toml`.
//
//   npm run bench -- pusher                   3 repetitions, HEAD pinned in a worktree
//   npm run bench -- pusher --quick           1 repetition, short steps
//   npm run bench -- pusher --reps=2 --ours-commit=<rev>
//   npm run bench -- pusher --user-hubs=1      Pusher sockets all in one hub (USER_HUBS)
//   npm run bench -- pusher --workloads=connect --reps=6   some of 1a (fanout), 1b (connect), 2 and 3 (posts)
import { randomUUID } from "node:crypto";
import { cpuMeter, round } from "./proc.mjs";
import {
  calmLoad,
  closeEverything,
  describeMachine,
  meterGroups,
  openAcross,
  progress,
  publisher,
  quiet,
  receivers,
  runBench,
  report,
  sleep,
  commandLine,
  measureOn,
} from "./harness.mjs";
import { PADDING, fanout, latency, steps } from "./room-workloads.mjs";
import { relayTarget } from "./targets.mjs";
import { baselineConfig } from "./baseline.mjs";

const { argv, option, quick: QUICK } = commandLine();

const CONFIG = {
  reps: Number(option("reps") ?? (QUICK ? 1 : 3)),
  workloads: option("workloads")?.split(",") ?? ["fanout", "connect", "posts"],
  sockets: 100,
  fanout: QUICK ? { startOffered: 20_000, maxSteps: 2, stepSeconds: 1.5 } : { startOffered: 20_000, maxSteps: 5, stepSeconds: 2.5 },
  latency: QUICK ? { receivers: 100, rate: 50, seconds: 2 } : { receivers: 100, rate: 50, seconds: 4 },
  connections: Number(option("connections") ?? (QUICK ? 100 : 300)),
  inflight: [1, 10, 100],
  postSeconds: QUICK ? 2 : 4,
  socketPublish: QUICK ? { startOffered: 1_000, maxSteps: 3, stepSeconds: 1.5 } : { startOffered: 1_000, maxSteps: 4, stepSeconds: 2.5 },
};

const PUSHER = { PUSHER_APP_ID: "1", PUSHER_APP_KEY: "benchkey", PUSHER_APP_SECRET: "benchsecret" };
const API_KEY = "bench-api-key";

async function rep(target, i) {
  const run = randomUUID().slice(0, 8);
  const own = target;
  // Receivers are Pusher sockets subscribed to the channel named like the room; the publisher stays a room socket.
  const pusher = {
    ...target,
    label: "pusher",
    receiverRoom: (room) => `/app/${PUSHER.PUSHER_APP_KEY}?protocol=7&client=bench&version=1&bench_channel=${room}`,
    receiverWelcome: "pusher",
  };
  const order = i % 2 === 0 ? [["pusher", pusher], ["own", own]] : [["own", own], ["pusher", pusher]];
  const result = { order: order.map(([name]) => name), fanout: {}, latency: {}, connect: {}, posts: {}, directPosts: {} };
  const failed = await measureOn(target, async (server) => {
    // 1a
    for (const [name, t] of CONFIG.workloads.includes("fanout") ? order : []) {
      result[`otherBeforeLatency_${name}`] = await quiet(server);
      progress(`  1a latency, ${name} receivers`);
      result.latency[name] = await latency(t, server, `${name}-${run}`, CONFIG.latency);
      await quiet(server);
      progress(`  1a fan-out, ${name} receivers`);
      result.fanout[name] = await fanout(t, server, `${name}-${run}`, CONFIG.sockets, CONFIG.fanout);
    }
    // 1b
    for (const [name] of CONFIG.workloads.includes("connect") ? order : []) {
      await quiet(server);
      const n = CONFIG.connections;
      const room = `conn-${name}-${run}`;
      // Every Pusher socket is a user of its own (pusher-<socket_id>), so each room socket is too.
      const urls = Array.from({ length: n }, (_, i) =>
        server.base + (name === "pusher" ? pusher.receiverRoom(room) : own.room(room, `u${i}`)),
      );
      const meter = cpuMeter(meterGroups(server));
      const { seconds } = await openAcross(urls, name === "pusher" ? "pusher" : true);
      const cpu = meter.stop();
      result.connect[name] = { sockets: n, seconds: round(seconds, 3), perSecond: Math.round(n / seconds), cpu };
      progress(`  1b ${name}: ${n} sockets in ${seconds.toFixed(2)} s: ${Math.round(n / seconds)}/s; server cpu ${cpu.groups.server.percentOfCore}% (sys ${cpu.groups.server.sysSeconds} s)`);
      await closeEverything();
    }
    if (!CONFIG.workloads.includes("posts")) return;
    // 2: server publishes, 1 / 10 / 100 in flight; one room socket receives them.
    const http = server.base.replace("ws://", "http://");
    for (const inflight of CONFIG.inflight) {
      const room = `post-${inflight}-${run}`;
      result.posts[inflight] = await posting(server, {
        receiver: server.base + own.room(room, "bench"),
        url: `${http}/rooms/${room}/messages`,
        inflight,
        label: "2 POST room",
      });
    }
    // 2: one room socket publishing open-loop, one receiving socket.
    await quiet(server);
    {
      const room = `sockpub-${run}`;
      await openAcross([server.base + own.room(room, "bench")], true);
      await publisher.call("open", { urls: [server.base + own.room(room, "bench")], concurrency: 1, waitWelcome: true });
      const sender = { socket: 0, prefix: '{"type":"publish","data":{"t":', suffix: `,"p":"${PADDING}"}}` };
      result.socketPublish = await steps({
        server,
        clients: receivers,
        ...CONFIG.socketPublish,
        deliveriesPerSend: 1,
        label: "2 socket publishes",
        sendStep: async (rate) => ({ ...(await publisher.call("send", { senders: [sender], rate, durationMs: CONFIG.socketPublish.stepSeconds * 1000 })), senders: 1 }),
      });
      // Sockets the relay closed during the steps, by close code.
      result.socketPublish.census = { publisher: await publisher.call("census"), receivers: await Promise.all(receivers.map((c) => c.call("census"))) };
      progress(`  2 socket publishes: sockets afterwards ${JSON.stringify(result.socketPublish.census)}`);
      await closeEverything();
    }
    // 3 (server side): server directs to one recipient with its user socket open.
    for (const inflight of CONFIG.inflight) {
      const user = `rcpt-${inflight}-${run}`;
      result.directPosts[inflight] = await posting(server, {
        receiver: server.base + own.user(user),
        url: `${http}/users/${user}/messages`,
        track: { ack: 50 },
        inflight,
        label: "3 POST direct",
      });
    }
  });
  if (failed) result.error = failed;
  return result;
}

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};
const f = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "–");

function render(results) {
  const reps = results.reps.filter((r) => !r.error || Object.keys(r.fanout).length || Object.keys(r.connect).length);
  const lines = [];
  const m = results.machine;
  lines.push(`Run of ${m.date} on commit \`${results.ours.commit}\` (worktree), ${m.nproc} × ${m.cpuModel}, Node ${m.node}; USER_HUBS ${results.config.userHubs}; load at start ${results.load.one} / ${results.load.five} / ${results.load.fifteen}; ${reps.length} repetitions, medians (each repetition's values in brackets).`);
  lines.push("");
  lines.push("| measure | Pusher sockets | room sockets | Pusher ÷ room |");
  lines.push("|---|---|---|---|");
  const row = (label, get, d = 0) => {
    const p = reps.map((r) => get(r, "pusher"));
    const o = reps.map((r) => get(r, "own"));
    const ratios = reps.map((r) => get(r, "pusher") / get(r, "own"));
    lines.push(`| ${label} | ${f(median(p), d)} [${p.map((x) => f(x, d)).join(", ")}] | ${f(median(o), d)} [${o.map((x) => f(x, d)).join(", ")}] | ${f(median(ratios), 2)} [${ratios.map((x) => f(x, 2)).join(", ")}] |`);
  };
  row("1a peak deliveries/s, 100 receivers", (r, n) => r.fanout[n]?.peak);
  row("1a p50 ms at 50 publishes/s (5,000 deliveries/s)", (r, n) => r.latency[n]?.p50, 2);
  row("1a p99 ms at 50 publishes/s", (r, n) => r.latency[n]?.p99, 2);
  row("1a runtime CPU % of a core at 5,000 deliveries/s", (r, n) => r.latency[n]?.cpu.groups.server.percentOfCore);
  row(`1b connections/s (${results.config.connections}, 50 in flight)`, (r, n) => r.connect[n]?.perSecond);
  row("1b runtime CPU % of a core while connecting", (r, n) => r.connect[n]?.cpu.groups.server.percentOfCore);
  row("1b runtime CPU µs per connection", (r, n) => (r.connect[n] ? (r.connect[n].cpu.groups.server.cpuSeconds * 1e6) / r.connect[n].sockets : NaN));
  lines.push("");
  lines.push("| writes to one room / one inbox | answered/s | p50 ms | p99 ms | runtime CPU % (sys s) |");
  lines.push("|---|---|---|---|---|");
  const cell = (xs, d = 0) => `${f(median(xs), d)} [${xs.map((x) => f(x, d)).join(", ")}]`;
  for (const k of results.config.inflight) {
    const ps = reps.map((r) => r.posts[k]).filter(Boolean);
    lines.push(`| POST /rooms/:room/messages, ${k} in flight | ${cell(ps.map((p) => p.okPerSecond))} | ${cell(ps.map((p) => p.p50), 1)} | ${cell(ps.map((p) => p.p99), 1)} | ${cell(ps.map((p) => p.cpu.groups.server.percentOfCore))} (${ps.map((p) => p.cpu.groups.server.sysSeconds).join(", ")}) |`);
  }
  const sp = reps.map((r) => r.socketPublish).filter(Boolean);
  lines.push(`| one room socket publishing open-loop: peak delivered/s (highest sustained offer) | ${cell(sp.map((s) => s.peak))} (${sp.map((s) => s.maxSustainedOffered).join(", ")}) | | | ${cell(sp.map((s) => s.peakStep.cpu.groups.server.percentOfCore))} |`);
  for (const k of results.config.inflight) {
    const ps = reps.map((r) => r.directPosts[k]).filter(Boolean);
    lines.push(`| POST /users/:user/messages, ${k} in flight | ${cell(ps.map((p) => p.okPerSecond))} | ${cell(ps.map((p) => p.p50), 1)} | ${cell(ps.map((p) => p.p99), 1)} | ${cell(ps.map((p) => p.cpu.groups.server.percentOfCore))} (${ps.map((p) => p.cpu.groups.server.sysSeconds).join(", ")}) |`);
  }
  return lines.join("\n");
}

async function main() {
  const machine = { ...describeMachine(), quick: QUICK };
  const ours = baselineConfig(option("ours-commit") ?? "HEAD");
  // --user-hubs=N: the hubs Pusher sockets are spread over (USER_HUBS, 32 in wrangler.toml).
  const hubs = option("user-hubs");
  const target = relayTarget(`edge-relay ${ours.commit}`, { configPath: ours.configPath, vars: { ...PUSHER, API_KEY, ...(hubs && { USER_HUBS: hubs }) } });
  const load = await calmLoad();
  progress(`pusher on ${machine.nproc}x ${machine.cpuModel}: ${target.label}, ${CONFIG.reps} repetitions`);
  const results = { benchmark: "pusher", machine, config: { ...CONFIG, userHubs: hubs ?? "32 (wrangler.toml)" }, ours, load, reps: [] };
  for (let i = 0; i < CONFIG.reps; i++) {
    if (i > 0) results.reps.at(-1).loadAfter = await calmLoad();
    results.reps.push(await rep(target, i));
  }
  const markdown = render(results);
  report("pusher", results, markdown);
}

await runBench(main);

/**
 * POSTs `{"data":…}` to `url` with `inflight` requests in flight for CONFIG.postSeconds, while the
 * socket at `receiver` counts what arrives: answered/s, latency, deliveries and the CPU split.
 */
async function posting(server, { receiver, url, track, inflight, label }) {
  await quiet(server);
  await openAcross([receiver], true);
  await Promise.all(receivers.map((c) => c.call("track", track)));
  const meter = cpuMeter(meterGroups(server));
  const r = await publisher.call("post", {
    url,
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    prefix: '{"data":{"t":',
    suffix: `,"p":"${PADDING}"}}`,
    inflight,
    durationMs: CONFIG.postSeconds * 1000,
  });
  const cpu = meter.stop();
  await sleep(500);
  const delivered = (await Promise.all(receivers.map((c) => c.call("report", { stop: true })))).reduce((s, x) => s + x.received, 0);
  progress(`  ${label}, ${inflight} in flight: ${Math.round(r.okPerSecond)}/s answered (${JSON.stringify(r.statuses)}), p50 ${r.p50?.toFixed(1)} ms p99 ${r.p99?.toFixed(1)} ms, delivered ${delivered}; server cpu ${cpu.groups.server.percentOfCore}% pub ${cpu.groups.publisher.percentOfCore}%`);
  await closeEverything();
  return { ...r, delivered, cpu, okPerSecond: Math.round(r.okPerSecond) };
}
