#!/usr/bin/env node
// Bundles the client library for browsers into public/edge-relay-client.js, served by the Worker
// beside the demo page. wrangler runs this before `dev`, `deploy` and the test harnesses
// ([build] in wrangler.toml), so the served file always matches client/.
import { renameSync, writeFileSync } from "node:fs";
import { build } from "esbuild";

const { outputFiles } = await build({
  entryPoints: ["client/index.ts"],
  outfile: "public/edge-relay-client.js",
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: "linked",
  legalComments: "none",
  logLevel: "warning",
  write: false,
});
// Several test harnesses may build at once while a browser loads the file: write each output
// beside its target and rename it into place, so a reader never sees half a file.
for (const file of outputFiles) {
  const temporary = `${file.path}.${process.pid}.tmp`;
  writeFileSync(temporary, file.contents);
  renameSync(temporary, file.path);
}
