// Thousands of sockets need as many file descriptors in the runtime and the client processes,
// which inherit the runner's limit. Node cannot raise its own limit, so the runner re-runs itself
// under `ulimit -n` when the soft limit is below what the hard limit allows.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";

const WANTED = 65_536;
const MARK = "EDGE_RELAY_BENCH_FILE_LIMIT";

/** Soft and hard limits on open files of this process (Infinity when unlimited). */
export function openFileLimit() {
  const line = readFileSync("/proc/self/limits", "utf8").split("\n").find((l) => l.startsWith("Max open files"));
  const [soft, hard] = line.slice("Max open files".length).trim().split(/\s+/).map((v) => (v === "unlimited" ? Infinity : Number(v)));
  return { soft, hard };
}

/**
 * When the soft limit can go higher, runs this same command again under the raised limit and
 * answers its exit code; answers undefined when this process should go on itself.
 */
export async function rerunWithRaisedLimit() {
  const { soft, hard } = openFileLimit();
  const target = Math.min(hard, WANTED);
  if (soft >= target || process.env[MARK]) return undefined;
  process.stderr.write(`[bench] open-file limit ${soft}: running again under ulimit -n ${target}\n`);
  const child = spawn("sh", ["-c", `ulimit -n ${target} && exec "$0" "$@"`, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: "inherit",
    env: { ...process.env, [MARK]: String(target) },
  });
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0))));
}
