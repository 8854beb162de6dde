#!/usr/bin/env node
// Builds the installable client package, `edge-relay` with its `edge-relay/client` entry, into
// dist/package/ (`--pack` also makes the tarball with `npm pack`):
//   client/index.mjs  ES module      client/index.cjs  CommonJS      types/  .d.ts declarations
//   client/edge-relay-client.global.js  a minified classic script that defines `EdgeRelay`
// each with a source map. The package is made here rather than packed from the repository's
// root: the root carries the Worker's dependencies and Node 22 for wrangler (docs/platform.md),
// none of which a client needs. The demo page's copy of the client is scripts/build-client.mjs.
import { execFileSync } from "node:child_process";
import { copyFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

const root = JSON.parse(readFileSync("package.json", "utf8"));
const pkg = "dist/package";
const out = `${pkg}/client`;
rmSync(pkg, { recursive: true, force: true });
const common = { entryPoints: ["client/index.ts"], bundle: true, target: "es2022", sourcemap: true, legalComments: "none", logLevel: "warning" };
const started = Date.now();
await Promise.all([
  build({ ...common, format: "esm", outfile: `${out}/index.mjs` }),
  build({ ...common, format: "cjs", outfile: `${out}/index.cjs` }),
  build({ ...common, format: "iife", globalName: "EdgeRelay", minify: true, outfile: `${out}/edge-relay-client.global.js` }),
]);
console.log(`client builds (esm, cjs, global) in ${Date.now() - started} ms`);

execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.client.json"], { stdio: "inherit" });
// The sources import without extensions (a bundler's habit); Node's own resolution of the
// declarations wants them, so add `.js` to every relative import in the emitted .d.ts files.
function addExtensions(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) addExtensions(path);
    else if (entry.name.endsWith(".d.ts")) {
      const text = readFileSync(path, "utf8").replace(/(from\s+["'])(\.{1,2}\/[^"']+?)(["'])/g, (all, open, spec, close) =>
        spec.endsWith(".js") ? all : `${open}${spec}.js${close}`,
      );
      writeFileSync(path, text);
    }
  }
}
addExtensions(`${out}/types`);
console.log(`client declarations in ${out}/types`);

const manifest = {
  name: root.name,
  version: root.version,
  description: "Client for edge-relay, a WebSocket relay on Cloudflare's edge: rooms, presence, resume and direct messages",
  license: root.license,
  type: "module",
  engines: { node: ">=20" },
  exports: {
    "./client": {
      types: "./client/types/client/index.d.ts",
      import: "./client/index.mjs",
      require: "./client/index.cjs",
    },
    "./client/global": "./client/edge-relay-client.global.js",
    "./package.json": "./package.json",
  },
  unpkg: "./client/edge-relay-client.global.js",
  sideEffects: false,
};
writeFileSync(`${pkg}/package.json`, `${JSON.stringify(manifest, null, 2)}\n`);
for (const file of ["LICENSE", "docs/client.md"]) {
  try {
    copyFileSync(file, `${pkg}/${file.split("/").pop()}`);
  } catch {
    // docs/client.md may not exist yet in an older checkout; the package works without it.
  }
}
console.log(`package in ${pkg}`);

if (process.argv.includes("--pack")) {
  const destination = process.argv[process.argv.indexOf("--pack") + 1] ?? "dist";
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const name = execFileSync(npm, ["pack", `./${pkg}`, "--pack-destination", destination, "--silent"], { encoding: "utf8" }).trim();
  console.log(`tarball ${destination}/${name.split("\n").pop()}`);
}
