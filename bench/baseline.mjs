// A commit of the relay as a benchmark target: a git worktree of it in /tmp, sharing this
// checkout's node_modules when its package.json and package-lock.json are the same (else
// `npm ci` there). Answers the worktree's wrangler.toml for relayTarget(). Used for the baseline
// (f5caf82) and, with `--ours-commit=<rev>`, to pin "ours" to a commit while others keep editing
// the working tree.
import { execFileSync } from "node:child_process";
import { existsSync, symlinkSync } from "node:fs";
import { join, resolve } from "node:path";
import { progress } from "./harness.mjs";

/** The commit the scale-out issue compares against: the last single-object room. */
export const BASELINE_COMMIT = "f5caf82";

const git = (...args) => execFileSync("git", args, { encoding: "utf8" }).trim();

export function baselineConfig(rev = BASELINE_COMMIT) {
  const commit = git("rev-parse", "--short", rev);
  const dir = `/tmp/edge-relay-${commit}`;
  if (!existsSync(join(dir, "wrangler.toml"))) {
    progress(`worktree: git worktree add ${dir} ${commit}`);
    git("worktree", "add", "--detach", dir, commit);
  }
  const head = git("-C", dir, "rev-parse", "--short", "HEAD");
  if (head !== commit) {
    throw new Error(`${dir} is at ${head}, not ${commit}: remove it (git worktree remove ${dir}) and run again`);
  }
  if (!existsSync(join(dir, "node_modules"))) {
    let same = true;
    try {
      git("diff", "--quiet", commit, "HEAD", "--", "package.json", "package-lock.json");
    } catch {
      same = false;
    }
    if (same) {
      progress(`worktree: dependencies of ${commit} are those of HEAD; node_modules linked`);
      symlinkSync(resolve("node_modules"), join(dir, "node_modules"));
    } else {
      progress(`worktree: dependencies of ${commit} differ from HEAD; npm ci in ${dir}`);
      execFileSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: dir, stdio: "inherit" });
    }
  }
  return { commit: head, configPath: join(dir, "wrangler.toml") };
}

/**
 * "Ours": this working tree as it is (default), or with `--ours-commit=<rev>` a worktree of that
 * commit, so edits others make meanwhile do not change what is measured.
 */
export function oursConfig(argv, machine) {
  const rev = argv.find((arg) => arg.startsWith("--ours-commit="))?.slice("--ours-commit=".length);
  if (!rev) return { commit: machine.commit, configPath: "wrangler.toml", pinned: false, workingTreeModified: machine.relaySourceModified };
  return { ...baselineConfig(rev), pinned: true, workingTreeModified: false };
}
