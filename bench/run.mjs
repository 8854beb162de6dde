// `npm run bench [-- <benchmark>] [-- options]`: with no benchmark named, the full matrix
// (bench/matrix.mjs): every workload against our relay and the three baselines, on loopback, with
// the same client processes for all. Progress goes to stderr; raw results to bench/results/;
// the tables into BENCHMARKS.md between its bench:results markers.
//
//   npm run bench                      the full matrix (about 8-10 minutes on 2 cores)
//   npm run bench -- --quick           shorter steps and fewer sizes, to check the harness
//   npm run bench -- --only=ours,hub   some targets, in that order (ours, floor, partyserver, hub)
//   npm run bench -- --no-write        leave BENCHMARKS.md alone
//   npm run bench -- --persist=disk    Durable Object storage on disk instead of tmpfs
//   npm run bench -- --via-proxy       clients through wrangler's dev proxy, not to the runtime
//   npm run bench -- --workloads=a,b   some workloads (a, b, c which includes d, e)
//   npm run bench -- --relay-config=path/wrangler.toml   measure another build of the relay as ours
//
// The scale-out measurements (docs/design.md; BENCHMARKS.md "Scale-out (issue 9)") are commands
// of their own, each with a `--quick` smoke size:
//
//   npm run bench -- scale       room CPU per message, 100 / 1,000 / 5,000 sockets over holders
//   npm run bench -- fanout100   100-socket fan-out and latency, HEAD against commit f5caf82, paired
//   npm run bench -- storm       2,000 distinct users connecting at once, HEAD against f5caf82
//   npm run bench -- pusher      Pusher fan-out/connects against room sockets, server publishes and directs (issues 11, 12)
//   npm run bench -- cost        CPU per direct, connection and delivery and idle memory, against the floor (issue 12)
//   npm run bench -- paired      connections against the floor, every target up at once, measured in alternating turns
//   … --ours-commit=HEAD         any of the first three on a worktree of that commit (others' edits left out)
const COMMANDS = { scale: "./scale.mjs", fanout100: "./fanout100.mjs", storm: "./storm.mjs", pusher: "./pusher.mjs", cost: "./cost.mjs", paired: "./paired.mjs" };
const command = process.argv.slice(2).find((arg) => !arg.startsWith("--"));
if (command !== undefined) {
  if (!COMMANDS[command]) {
    process.stderr.write(`unknown benchmark ${JSON.stringify(command)}: ${Object.keys(COMMANDS).join(", ")}, or none for the full matrix\n`);
    process.exit(2);
  }
  // Thousands of sockets: raise the open-file limit first (clients and workerd inherit it).
  const { rerunWithRaisedLimit } = await import("./file-limit.mjs");
  const code = await rerunWithRaisedLimit();
  if (code !== undefined) process.exit(code);
  await import(COMMANDS[command]);
} else {
  await import("./matrix.mjs");
}
