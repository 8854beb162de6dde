// A CPU profile of the Worker and its objects while a benchmark runs: with BENCH_PROFILE set,
// startWorkerd (bench/targets.mjs) opens workerd's inspector, this records V8's sampling profile
// over the DevTools protocol, and on stop writes it to bench/results/<label>.cpuprofile (open it
// in Chrome DevTools) and prints the functions with the most self time. The profiler costs CPU
// itself: read the shares, not the rates, of a profiled run.
import { mkdirSync, writeFileSync } from "node:fs";
import { WebSocket } from "ws";

/** Connects to the inspector at `port` and starts sampling; `stop(label)` writes and summarises. */
export async function startProfile(port) {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
  const socket = new WebSocket(targets[0].webSocketDebuggerUrl);
  await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
  let next = 1;
  const waiting = new Map();
  const scripts = new Map();
  socket.on("message", (data) => {
    const message = JSON.parse(String(data));
    if (message.method === "Debugger.scriptParsed") scripts.set(message.params.url, message.params.scriptId);
    waiting.get(message.id)?.(message);
    waiting.delete(message.id);
  });
  const call = (method, params = {}) =>
    new Promise((resolve, reject) => {
      const id = next++;
      waiting.set(id, (message) => (message.error ? reject(new Error(`${method}: ${message.error.message}`)) : resolve(message.result)));
      socket.send(JSON.stringify({ id, method, params }));
    });
  // The bundle is gone once wrangler stops: its source is read from the runtime, to show lines.
  await call("Debugger.enable");
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 200 });
  await call("Profiler.start");
  return {
    async stop(label) {
      const { profile } = await call("Profiler.stop");
      const sources = new Map();
      for (const [url, scriptId] of scripts) {
        if (!url.endsWith(".js")) continue;
        // The profile names a script by its file name only.
        sources.set(url.split("/").pop(), (await call("Debugger.getScriptSource", { scriptId })).scriptSource.split("\n"));
      }
      socket.close();
      const dir = new URL("./results/", import.meta.url);
      mkdirSync(dir, { recursive: true });
      const file = new URL(`${label}.cpuprofile`, dir);
      writeFileSync(file, JSON.stringify(profile));
      process.stderr.write(`profile written to ${file.pathname}\n${summarise(profile, sources)}\n`);
    },
  };
}

/**
 * The top functions by self time, then by total time (their callees included, each sample counted
 * once per function however deep it recurses), with their share of all samples (idle included).
 */
export function summarise(profile, sources = new Map(), top = 25) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const name = (id) => {
    const { functionName, url, lineNumber } = byId.get(id).callFrame;
    const line = sources.get(url.split("/").pop())?.[lineNumber]?.trim().slice(0, 90);
    return `${functionName || "(anonymous)"} ${url.split("/").pop()}:${lineNumber + 1}${line ? `  ${line}` : ""}`;
  };
  const samples = new Map();
  for (const id of profile.samples) samples.set(id, (samples.get(id) ?? 0) + 1);
  const self = new Map();
  const total = new Map();
  for (const [id, count] of samples) {
    self.set(name(id), (self.get(name(id)) ?? 0) + count);
    const seen = new Set();
    for (let at = id; at !== undefined; at = parent.get(at)) seen.add(name(at));
    for (const key of seen) total.set(key, (total.get(key) ?? 0) + count);
  }
  const all = profile.samples.length;
  const idle = [...self].filter(([key]) => key.startsWith("(idle)")).reduce((sum, [, n]) => sum + n, 0);
  const pct = (n) => `${((100 * n) / all).toFixed(1).padStart(5)}%`;
  const busiest = (counts) =>
    [...counts]
      .filter(([key]) => !key.startsWith("(root)"))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([key, n]) => `${pct(n)}  ${key}`);
  return [
    `${all} samples, ${pct(idle).trim()} idle; self time of the busiest functions:`,
    ...busiest(self),
    "total time (callees included):",
    ...busiest(total),
  ].join("\n");
}
