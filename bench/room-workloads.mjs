// The room workloads shared by the full matrix (bench/run.mjs) and the scale-out comparisons:
// open-loop steps at doubling rates, fan-out throughput of one room, and publish-to-receive
// latency at a fixed rate. Each takes its sizes from the caller's config.
import { round, cpuMeter } from "./proc.mjs";
import {
  bottleneck,
  closeEverything,
  countAt,
  drain,
  latencySummary,
  meterGroups,
  progress,
  publisher,
  receivers,
  openAcross,
  sleep,
} from "./harness.mjs";

/** A step delivers "sustained" when at least this share of what was offered arrived. */
export const SUSTAINED = 0.97;
/** The first part of each step is left out of its rate (queues filling, JIT). */
export const WARM_US = 500_000;
export const PADDING = "x".repeat(64);

/** Opens `n` receivers and one publisher socket in `room`; answers the publisher's frame template. */
export async function openRoom(target, server, room, n) {
  // A target may receive on other sockets than it publishes on (Pusher subscribers: bench/pusher.mjs).
  const receiverUrl = target.receiverRoom ?? target.room;
  await openAcross(Array.from({ length: n }, () => server.base + receiverUrl(room, "bench")), target.receiverWelcome ?? target.welcome);
  await publisher.call("open", { urls: [server.base + target.room(room, "bench")], concurrency: 1, waitWelcome: target.welcome });
  return { socket: 0, prefix: '{"type":"publish","data":{"t":', suffix: `,"p":"${PADDING}"}}` };
}

/** (b) publish-to-receive latency at a fixed rate well below saturation. */
export async function latency(target, server, run, { receivers: n, rate, seconds }) {
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
export async function steps({ server, clients, startOffered, maxSteps, deliveriesPerSend, sendStep, label, track = {} }) {
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
export async function fanout(target, server, run, n, { startOffered, maxSteps, stepSeconds }) {
  const sender = await openRoom(target, server, `fan-${n}-${run}`, n);
  // Warm up, and let every warm-up delivery arrive before the first step counts.
  await Promise.all(receivers.map((c) => c.call("track")));
  const warm = await publisher.call("send", { senders: [sender], rate: 50, durationMs: 400 });
  await drain(receivers, warm.sent * n);
  const result = await steps({
    server,
    clients: receivers,
    startOffered,
    maxSteps,
    deliveriesPerSend: n,
    label: `(a) N=${n}`,
    sendStep: async (rate) => ({ ...(await publisher.call("send", { senders: [sender], rate, durationMs: stepSeconds * 1000 })), senders: 1 }),
  });
  await closeEverything();
  return { sockets: n, ...result };
}

/**
 * (e) Opens `users` user sockets spread over the receivers, each to send directs to one user in
 * the other process; answers `sendAll(perUserRate, durationMs)`, which sends from all of them.
 */
export async function openDirects(target, server, run, users) {
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
  return async (perUserRate, durationMs) => {
    const results = await Promise.all(receivers.map((client, c) => client.call("send", { senders: sendersOf(c), rate: perUserRate, durationMs })));
    return {
      sent: results.reduce((sum, r) => sum + r.sent, 0),
      senders: users,
      startUs: Math.min(...results.map((r) => r.startUs)),
      endUs: Math.max(...results.map((r) => r.endUs)),
      maxLagMs: Math.max(...results.map((r) => r.maxLagMs)),
    };
  };
}
