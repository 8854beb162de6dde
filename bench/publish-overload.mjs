// Diagnostic for `npm run bench -- pusher` workload 2: one room socket publishing open-loop past
// what the room can store (8,000/s for 2.5 s by default; --rate=, --seconds=), then how the one
// receiving socket's count grows over the next 30 s, and the sockets' state (close codes).
// --before=1000,2000,4000 first publishes at those rates (--seconds each, 0.5 s apart), as the
// steps of workload 2 do.
//   node bench/publish-overload.mjs [--rate=8000] [--seconds=2.5] [--before=…] [--ours-commit=HEAD]
import { randomUUID } from "node:crypto";
import { closeEverything, commandLine, openAcross, progress, publisher, receivers, releaseClients, sleep, startTarget } from "./harness.mjs";
import { PADDING } from "./room-workloads.mjs";
import { relayTarget } from "./targets.mjs";
import { baselineConfig } from "./baseline.mjs";

const { option } = commandLine();
const rate = Number(option("rate") ?? 8000);
const seconds = Number(option("seconds") ?? 2.5);
const ours = baselineConfig(option("ours-commit") ?? "HEAD");
const target = relayTarget(`edge-relay ${ours.commit}`, { configPath: ours.configPath });
const server = await startTarget(target);
try {
  const room = `over-${randomUUID().slice(0, 8)}`;
  await openAcross([server.base + target.room(room, "bench")], true);
  await publisher.call("open", { urls: [server.base + target.room(room, "bench")], concurrency: 1, waitWelcome: true });
  await Promise.all([publisher, ...receivers].map((c) => c.call("track", { seq: true })));
  const sender = { socket: 0, prefix: '{"type":"publish","data":{"t":', suffix: `,"p":"${PADDING}"}}` };
  for (const before of (option("before") ?? "").split(",").filter(Boolean).map(Number)) {
    const s = await publisher.call("send", { senders: [sender], rate: before, durationMs: seconds * 1000 });
    await sleep(500);
    const r = (await Promise.all(receivers.map((c) => c.call("report")))).reduce((sum, x) => sum + x.received, 0);
    progress(`  before: ${s.sent} at ${before}/s; receiver has ${r} in all 0.5 s after`);
    await Promise.all([publisher, ...receivers].map((c) => c.call("track", { seq: true })));
  }
  const sent = await publisher.call("send", { senders: [sender], rate, durationMs: seconds * 1000 });
  progress(`${target.label}: sent ${sent.sent} publishes at ${rate}/s in ${((sent.endUs - sent.startUs) / 1e6).toFixed(2)} s`);
  for (let i = 0; i < 60; i++) {
    const r = (await Promise.all(receivers.map((c) => c.call("report")))).reduce((s, x) => s + x.received, 0);
    const p = await publisher.call("report");
    if (i % 2 === 0) progress(`  +${(i / 2).toFixed(0)} s: receiver has ${r}, publisher's own echoes ${p.received} (seq gaps ${p.seqGaps})`);
    if (r >= sent.sent) break;
    await sleep(500);
  }
  progress(`  sockets: publisher ${JSON.stringify(await publisher.call("census"))}, receivers ${JSON.stringify(await Promise.all(receivers.map((c) => c.call("census"))))}`);
  await closeEverything();
} finally {
  await server.stop();
  releaseClients();
}
