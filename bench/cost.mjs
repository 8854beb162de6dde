// `npm run bench -- cost`: what one operation costs the server, as runtime CPU time, against the
// floor (bench/floor/: hibernatable sockets and nothing else) measured in the same run. The
// matrix finds peaks by doubling steps, which is coarse (a target just under a step's rate reads
// as half of it); here each workload offers more than any target keeps up with, so what arrives
// is each one's peak, and CPU per delivery at that peak. Each repetition starts every target
// afresh, in an order that alternates; the tables give the medians (issue 12).
//
//   direct     20 user sockets, each sending directs to one in the other client process
//   connect    sockets of one user opened into one room and welcomed; then memory per 1,000 once idle
//   users      the same with a user per socket: presence (roster rows, join frames, counts) included
//   fanout10   a 10-socket room, one publisher; CPU per delivery
//
// Connections are also measured against "floor + welcome" (bench/floor/ with WELCOME=true): the
// floor sending each socket one welcome-sized frame, the least the protocol asks of a connection;
// and the users workload against "floor + presence" (PRESENCE=true): the welcome with the room's
// list, join frames and once-a-second counts, the least the protocol asks of a user's connection.
// Both keep the state a socket needs to outlive hibernation (KEEP_STATE=true: an attachment, and
// pings answered by the runtime), as the relay's sockets do.
//
//   npm run bench -- cost                       3 repetitions, floor against the working tree
//   npm run bench -- cost --quick               1 repetition, shorter windows
//   npm run bench -- cost --reps=5 --workloads=direct,fanout10
//   npm run bench -- cost --relay-config=/tmp/wt/wrangler.toml   another build of the relay as well
//   npm run bench -- cost --no-partyserver      floor and relay only
import { randomUUID } from "node:crypto";
import { round } from "./proc.mjs";
import {
  calmLoad,
  closeEverything,
  commandLine,
  describeMachine,
  drain,
  measureOn,
  openMetered,
  progress,
  publisher,
  quiet,
  receivers,
  report,
  runBench,
  serverRssMiB,
  sleep,
} from "./harness.mjs";
import { openDirects, openRoom, steps } from "./room-workloads.mjs";
import { relayTarget, TARGETS } from "./targets.mjs";

const { argv, option, quick: QUICK } = commandLine();
const CONFIG = {
  reps: Number(option("reps") ?? (QUICK ? 1 : 3)),
  // Connections first: memory is measured on a runtime that has done nothing but the warm-up.
  workloads: option("workloads")?.split(",") ?? ["connect", "users", "direct", "fanout10"],
  seconds: QUICK ? 2 : 4,
  direct: { users: 20, offered: 16_000 },
  // Enough sockets for about a second of opening: the runtime's CPU is read in 10 ms ticks.
  connect: { sockets: QUICK ? 300 : 2000, idleSeconds: QUICK ? 6 : 12 },
  fanout10: { sockets: 10, offered: 80_000 },
};

/**
 * One step of `offered` operations a second, more than any target keeps up with: what arrives is
 * what a saturated server delivers. Answers deliveries a second over the step (its first half
 * second left out), and server CPU microseconds per delivery.
 */
async function saturated(server, { offered, deliveriesPerSend, sendStep, track }) {
  const { peakStep } = await steps({ server, clients: receivers, startOffered: offered, maxSteps: 1, deliveriesPerSend, sendStep, track, label: "" });
  const cpu = peakStep.cpu.groups;
  return {
    perSecond: peakStep.deliveredPerSecond,
    us: round((cpu.server.cpuSeconds * 1e6) / peakStep.receivedWithin500ms, 1),
    otherPercent: cpu.other.percentOfCore,
  };
}

/**
 * Opens CONFIG.connect.sockets sockets into `room`, the i-th as user `userOf(i)`: connections a
 * second and CPU each; with `idleSeconds`, memory per 1,000 once they have been idle that long.
 */
async function connecting(target, server, room, userOf, idleSeconds) {
  const { sockets } = CONFIG.connect;
  const { seconds, cpu, rssBeforeMiB } = await openMetered(target, server, room, sockets, userOf);
  const { server: runtime, other } = cpu.groups;
  const result = { perSecond: Math.round(sockets / seconds), us: round((runtime.cpuSeconds * 1e6) / sockets, 1), otherPercent: other.percentOfCore };
  if (idleSeconds !== undefined) {
    await sleep(idleSeconds * 1000);
    result.idleMiBPer1000 = round(((serverRssMiB(server) - rssBeforeMiB) / sockets) * 1000, 1);
  }
  await closeEverything();
  return result;
}

const WORKLOADS = {
  async direct(target, server, run) {
    const { users, offered } = CONFIG.direct;
    const sendAll = await openDirects(target, server, run, users);
    await Promise.all(receivers.map((c) => c.call("track", { ack: target.ackEvery })));
    const warm = await sendAll(5, 500);
    await drain(receivers, warm.sent);
    const result = await saturated(server, {
      offered,
      deliveriesPerSend: users,
      track: { ack: target.ackEvery },
      sendStep: (rate) => sendAll(rate, CONFIG.seconds * 1000),
    });
    await closeEverything();
    return result;
  },

  connect: (target, server, run) => connecting(target, server, `conn-${run}`, () => "bench", CONFIG.connect.idleSeconds),

  users: (target, server, run) => connecting(target, server, `users-${run}`, (i) => `u${i}`),

  async fanout10(target, server, run) {
    const { sockets, offered } = CONFIG.fanout10;
    const sender = await openRoom(target, server, `cost-${run}`, sockets);
    await Promise.all(receivers.map((c) => c.call("track")));
    const warm = await publisher.call("send", { senders: [sender], rate: 50, durationMs: 400 });
    await drain(receivers, warm.sent * sockets);
    const result = await saturated(server, {
      offered,
      deliveriesPerSend: sockets,
      sendStep: async (rate) => ({ ...(await publisher.call("send", { senders: [sender], rate, durationMs: CONFIG.seconds * 1000 })), senders: 1 }),
    });
    await closeEverything();
    return result;
  },
};

async function measure(target) {
  const result = { label: target.label };
  const failed = await measureOn(target, async (server) => {
    for (const name of CONFIG.workloads.filter((w) => !target.workloads || target.workloads.includes(w))) {
      await quiet(server);
      result[name] = await WORKLOADS[name](target, server, randomUUID().slice(0, 8));
      const r = result[name];
      progress(`  ${target.label} ${name}: ${r.perSecond}/s, ${r.us} µs CPU each${r.idleMiBPer1000 ? `, +${r.idleMiBPer1000} MiB per 1,000 idle` : ""}`);
    }
  });
  if (failed) result.error = failed;
  return result;
}

const median = (values) => {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : NaN;
};

function render(results) {
  const names = Object.keys(results.targets);
  const value = (name, workload, key) => median(results.reps.map((rep) => rep[name]?.[workload]?.[key]));
  const rows = [];
  const line = (what, workload, key, digits = 1) => {
    const floor = value("floor", workload, key);
    const cells = names.map((name) => {
      const v = value(name, workload, key);
      if (!Number.isFinite(v)) return "–";
      return name === "floor" ? `${round(v, digits)}` : `${round(v, digits)} (${round(v / floor, 2)}×)`;
    });
    if (names.includes("partyserver")) cells.push(`${round(value("ours", workload, key) / value("partyserver", workload, key), 2)}×`);
    rows.push(`| ${what} | ${cells.join(" | ")} |`);
  };
  if (CONFIG.workloads.includes("direct")) {
    line(`directs per second (${CONFIG.direct.offered}/s offered)`, "direct", "perSecond", 0);
    line("CPU per direct, µs", "direct", "us");
  }
  if (CONFIG.workloads.includes("connect")) {
    line(`connections per second (${CONFIG.connect.sockets} sockets)`, "connect", "perSecond", 0);
    line("CPU per connection, µs", "connect", "us");
    line(`MiB per 1,000 idle sockets (after ${CONFIG.connect.idleSeconds} s)`, "connect", "idleMiBPer1000");
  }
  if (CONFIG.workloads.includes("users")) {
    line(`connections per second, a user each (${CONFIG.connect.sockets} sockets)`, "users", "perSecond", 0);
    line("CPU per connection, µs", "users", "us");
  }
  if (CONFIG.workloads.includes("fanout10")) {
    line(`deliveries per second, 10 sockets (${CONFIG.fanout10.offered}/s offered)`, "fanout10", "perSecond", 0);
    line("CPU per delivery, µs", "fanout10", "us");
  }
  const paired = (workload, base = "floor") =>
    results.reps.map((rep) => round(rep.ours?.[workload]?.perSecond / rep[base]?.[workload]?.perSecond, 2)).filter(Number.isFinite);
  const pairs = CONFIG.workloads.map((w) => `${w} ${paired(w).join(", ")}`);
  const against = (base, workload) =>
    names.includes(base) && CONFIG.workloads.includes(workload) ? [`edge-relay ÷ ${results.targets[base]} per second, ${workload}, each repetition: ${paired(workload, base).join(", ")}.`] : [];
  return [
    `Medians of ${results.reps.length} repetitions on ${results.machine.nproc}× ${results.machine.cpuModel}, commit ${results.machine.commit}${results.machine.relaySourceModified ? " (modified)" : ""}; ratio to the floor in brackets.`,
    "",
    `| | ${names.map((name) => results.targets[name]).join(" | ")} |${names.includes("partyserver") ? " edge-relay ÷ partyserver |" : ""}`,
    `|---|${names.map(() => "---:").join("|")}|${names.includes("partyserver") ? "---:|" : ""}`,
    ...rows,
    "",
    `edge-relay ÷ floor per second, each repetition: ${pairs.join("; ")}.`,
    ...against("floorWelcome", "connect"),
    ...against("floorPresence", "users"),
  ].join("\n");
}

async function main() {
  const machine = { ...describeMachine(), quick: QUICK };
  const targets = {
    floor: TARGETS.floor,
    ours: TARGETS.ours,
    ...(!argv.includes("--no-partyserver") && { partyserver: TARGETS.partyserver }),
    ...(CONFIG.workloads.some((w) => TARGETS.floorWelcome.workloads.includes(w)) && { floorWelcome: TARGETS.floorWelcome }),
    ...(CONFIG.workloads.includes("users") && { floorPresence: TARGETS.floorPresence }),
  };
  const other = option("relay-config");
  if (other) targets.other = relayTarget(`edge-relay (${other})`, { configPath: other });
  progress(`cost on ${machine.nproc}x ${machine.cpuModel}, commit ${machine.commit}: ${Object.keys(targets).join(", ")}, ${CONFIG.reps} repetitions`);
  const results = { benchmark: "cost", machine, config: CONFIG, load: await calmLoad(), targets: {}, reps: [] };
  for (const [name, target] of Object.entries(targets)) results.targets[name] = target.label;
  for (let i = 0; i < CONFIG.reps; i++) {
    const order = Object.keys(targets);
    if (i % 2 === 1) order.reverse();
    progress(`repetition ${i + 1} of ${CONFIG.reps}: ${order.join(", ")}`);
    const rep = {};
    for (const name of order) rep[name] = await measure(targets[name]);
    results.reps.push(rep);
  }
  report("cost", results, render(results));
}

await runBench(main);
