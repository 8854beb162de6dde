// `npm run bench -- paired`: connections per second and runtime CPU per connection, with every
// target running at once and measured in turns of a few hundred sockets, so that each of the
// relay's windows has a floor window beside it, a second or two apart (issue 12, item 3).
//
// Why: this machine changes speed for stretches of 20-60 s. In the cost benchmark, which starts
// one target at a time, a target whose window fell in a slow stretch used ~1.5x the CPU per
// connection it used in a fast one, the bare floor as much as the relay (a trial of 2026-12-02:
// the floor 655-725 and 1,100-1,130 us, the relay 755-845 and 1,085-1,215 us, at a steady 100%
// of a core throughout each window). A single repetition then says more about the machine than
// about the target; turns close together see the same machine.
//
//   connect  sockets of one user into one room: the floor, the relay, the floor + welcome
//   users    a user per socket (presence included): the floor, the relay, the floor + presence
//
// Each repetition warms every runtime (1,000 sockets opened and closed), starts each room with
// one socket, then opens TURNS x SOCKETS sockets per target into its room, a turn at a time, the
// targets' order rotating from turn to turn; each turn's runtime CPU is read from its own
// process. The result is the median over all turns of the relay's figure divided by the floor's
// (and the other target's) in the same turn.
//
//   npm run bench -- paired                      connect, 5 repetitions of 4 turns of 500
//   npm run bench -- paired --workload=users --reps=3
//   npm run bench -- paired --room-per-turn      each turn into a room of its own
//   npm run bench -- paired --relay-config=/tmp/wt/wrangler.toml   another build of the relay as well
import { cpuMeter, round } from "./proc.mjs";
import {
  calmLoad,
  closeEverything,
  commandLine,
  describeMachine,
  openAcross,
  progress,
  quiet,
  receivers,
  report,
  runBench,
  sleep,
  startTarget,
  warmUp,
} from "./harness.mjs";
import { relayTarget, TARGETS } from "./targets.mjs";

const { argv, option } = commandLine();
const CONFIG = {
  workload: option("workload") ?? "connect",
  reps: Number(option("reps") ?? 5),
  turns: Number(option("turns") ?? 4),
  sockets: Number(option("sockets") ?? 500),
  /** Each turn into a room of its own (still started by one socket first), not all into one. */
  roomPerTurn: argv.includes("--room-per-turn"),
};
const LEAST = { connect: "floorWelcome", users: "floorPresence" };
if (!LEAST[CONFIG.workload]) throw new Error(`--workload is connect or users, not ${CONFIG.workload}`);
const NAMES = ["floor", "ours", LEAST[CONFIG.workload]];
// Another build of the relay as a fourth target (e.g. a worktree of an older commit).
const OTHER = option("relay-config");
if (OTHER) {
  TARGETS.other = relayTarget(`edge-relay (${OTHER})`, { configPath: OTHER });
  NAMES.push("other");
}
const userOf = CONFIG.workload === "users" ? (i) => `u${i}` : () => "bench";

/** One turn: `count` sockets into `room`, the first as user number `first`; rate and CPU each. */
async function turn(target, server, room, first, count) {
  const urls = Array.from({ length: count }, (_, i) => server.base + target.room(room, userOf(first + i)));
  const meter = cpuMeter({ server: server.pids });
  const { seconds } = await openAcross(urls, target.welcome);
  const cpu = meter.stop().groups.server;
  return { perSecond: Math.round(count / seconds), us: round((cpu.cpuSeconds * 1e6) / count, 0) };
}

async function repetition(servers, rep) {
  const rooms = {};
  for (const name of NAMES) {
    const target = TARGETS[name];
    await warmUp(target, servers[name], `paired-${rep}-${name}-warm`);
    rooms[name] = Array.from({ length: CONFIG.turns }, (_, t) => `paired-${rep}-${name}${CONFIG.roomPerTurn ? `-${t}` : ""}`);
    const starters = [...new Set(rooms[name])].map((room) => servers[name].base + target.room(room, userOf(-1)));
    await receivers[0].call("open", { urls: starters, concurrency: 1, waitWelcome: target.welcome });
  }
  await sleep(1000);
  await quiet(servers.ours);
  const turns = [];
  for (let t = 0; t < CONFIG.turns; t++) {
    const order = NAMES.map((_, i) => NAMES[(i + t + rep) % NAMES.length]);
    const results = {};
    for (const name of order) results[name] = await turn(TARGETS[name], servers[name], rooms[name][t], t * CONFIG.sockets, CONFIG.sockets);
    progress(`  turn ${t + 1}: ${order.map((name) => `${TARGETS[name].label} ${results[name].us} µs (${results[name].perSecond}/s)`).join(", ")}`);
    turns.push(results);
  }
  await closeEverything();
  return turns;
}

const median = (values) => {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : NaN;
};
const quartiles = (values) => {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  return [sorted[Math.floor((sorted.length - 1) / 4)], sorted[Math.ceil(((sorted.length - 1) * 3) / 4)]];
};

function render(results) {
  const turns = results.reps.flat();
  const other = LEAST[CONFIG.workload];
  const ratio = (a, b, key) => turns.map((t) => t[a][key] / t[b][key]);
  const cell = (values) => {
    const [low, high] = quartiles(values);
    return `${round(median(values), 2)}× (${round(low, 2)}–${round(high, 2)})`;
  };
  const label = (name) => TARGETS[name].label;
  return [
    `${CONFIG.workload === "users" ? "A user per socket" : "One user"}: ${results.reps.length} repetitions of ${CONFIG.turns} turns of ${CONFIG.sockets} sockets per target, on ${results.machine.nproc}× ${results.machine.cpuModel}, commit ${results.machine.commit}${results.machine.relaySourceModified ? " (modified)" : ""}. Median over the ${turns.length} turns of the ratio within a turn (interquartile range in brackets).`,
    "",
    `| | ${label("ours")} ÷ ${label("floor")} | ${label(other)} ÷ ${label("floor")} | ${label("ours")} ÷ ${label(other)} |`,
    "|---|---:|---:|---:|",
    `| connections per second | ${cell(ratio("ours", "floor", "perSecond"))} | ${cell(ratio(other, "floor", "perSecond"))} | ${cell(ratio("ours", other, "perSecond"))} |`,
    `| CPU per connection | ${cell(ratio("ours", "floor", "us"))} | ${cell(ratio(other, "floor", "us"))} | ${cell(ratio("ours", other, "us"))} |`,
    "",
    ...(OTHER
      ? [
          `| | ${label("other")} ÷ ${label("ours")} |`,
          "|---|---:|",
          `| connections per second | ${cell(ratio("other", "ours", "perSecond"))} |`,
          `| CPU per connection | ${cell(ratio("other", "ours", "us"))} |`,
          "",
        ]
      : []),
    "",
    `CPU per connection, medians over the turns: ${NAMES.map((name) => `${label(name)} ${median(turns.map((t) => t[name].us))} µs`).join(", ")}.`,
  ].join("\n");
}

async function main() {
  const machine = describeMachine();
  progress(`paired ${CONFIG.workload} on ${machine.nproc}x ${machine.cpuModel}, commit ${machine.commit}: ${NAMES.map((n) => TARGETS[n].label).join(", ")}, ${CONFIG.reps} repetitions`);
  const results = { benchmark: `paired-${CONFIG.workload}`, machine, config: CONFIG, load: await calmLoad(), reps: [] };
  for (let rep = 0; rep < CONFIG.reps; rep++) {
    const servers = {};
    try {
      for (const name of NAMES) servers[name] = await startTarget(TARGETS[name]);
      progress(`repetition ${rep + 1} of ${CONFIG.reps}`);
      results.reps.push(await repetition(servers, rep));
    } finally {
      for (const server of Object.values(servers)) await server.stop();
    }
  }
  report(`paired-${CONFIG.workload}`, results, render(results));
}

await runBench(main);
