// CPU and memory of processes, read from /proc (Linux only): utime+stime of each process before
// and after a workload give its CPU seconds; VmRSS gives its resident memory.
import { readdirSync, readFileSync } from "node:fs";

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

function statFields(pid) {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name may hold spaces or parentheses: fields start after the last ')'.
  return text.slice(text.lastIndexOf(")") + 2).split(" ");
}

/** CPU seconds used so far by `pid` in user and in system (kernel) mode, or zeros if it is gone. */
export function cpuSplit(pid) {
  try {
    const fields = statFields(pid);
    // Fields 14 and 15 of /proc/<pid>/stat, counted from the state field (3) here.
    return { user: Number(fields[11]) / TICKS_PER_SECOND, sys: Number(fields[12]) / TICKS_PER_SECOND };
  } catch {
    return { user: 0, sys: 0 };
  }
}

/** CPU seconds used so far by `pid` (user + system), or 0 if it is gone. */
export function cpuSeconds(pid) {
  const { user, sys } = cpuSplit(pid);
  return user + sys;
}

/** Resident memory of `pid` in bytes, or 0 if it is gone. */
export function rssBytes(pid) {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Busy and total CPU seconds of the whole machine, from the first line of /proc/stat. */
export function machineSeconds() {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = fields[3] + fields[4];
  return { busy: (total - idle) / TICKS_PER_SECOND, total: total / TICKS_PER_SECOND };
}

/** Direct children of `pid` whose command name is `comm`. */
export function childrenNamed(pid, comm) {
  const found = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const text = readFileSync(`/proc/${entry}/stat`, "utf8");
      const name = text.slice(text.indexOf("(") + 1, text.lastIndexOf(")"));
      const ppid = Number(text.slice(text.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid && name === comm) found.push(Number(entry));
    } catch {
      // exited while listing
    }
  }
  return found;
}

/**
 * A CPU meter over labelled groups of pids: `start()` then `stop()` answers, per group, CPU
 * seconds (and how many of them were in the kernel) and percent of one core over the wall time,
 * plus what the rest of the machine used.
 */
export function cpuMeter(groups) {
  const take = () => ({
    at: performance.now(),
    machine: machineSeconds(),
    groups: Object.fromEntries(
      Object.entries(groups).map(([name, pids]) => [
        name,
        pids.map(cpuSplit).reduce((sum, { user, sys }) => ({ total: sum.total + user + sys, sys: sum.sys + sys }), { total: 0, sys: 0 }),
      ]),
    ),
  });
  const before = take();
  return {
    stop() {
      const after = take();
      const wall = (after.at - before.at) / 1000;
      const result = { wallSeconds: round(wall, 3), groups: {} };
      let ours = 0;
      for (const name of Object.keys(groups)) {
        const seconds = after.groups[name].total - before.groups[name].total;
        const sys = after.groups[name].sys - before.groups[name].sys;
        // "pid:N" entries break a group down; they are already counted in it.
        if (!name.startsWith("pid:")) ours += seconds;
        result.groups[name] = { cpuSeconds: round(seconds, 2), sysSeconds: round(sys, 2), percentOfCore: round((100 * seconds) / wall, 0) };
      }
      const busy = after.machine.busy - before.machine.busy;
      const other = Math.max(0, busy - ours);
      result.groups.other = { cpuSeconds: round(other, 2), percentOfCore: round((100 * other) / wall, 0) };
      // Percent of all cores (200 on a 2-core machine would be everything).
      const capacity = after.machine.total - before.machine.total;
      result.machineBusyPercent = capacity > 0 ? round((100 * busy) / capacity, 0) : 0;
      return result;
    },
  };
}

export function round(value, digits) {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** Percent of one core the rest of the machine used over `ms`, all of `pids` left out. */
export async function otherLoad(pids, ms = 1000) {
  const meter = cpuMeter({ ours: pids });
  await new Promise((resolve) => setTimeout(resolve, ms));
  return meter.stop().groups.other.percentOfCore;
}
