// The client package as a user installs it: `npm pack`, installed into an empty directory, then
// used from Node (ES module and CommonJS, each Node on this machine), a bundler, TypeScript and a
// classic <script> tag in Chromium, against the whole relay.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshRoom, startRelay, type Relay } from "../e2e/relay";
import { launch } from "./chromium";
import { startSite, type Site } from "./site";

const run = promisify(execFile);
const REPO = resolve(".");

/** Every Node on this machine: the one running the tests (22 through npm) and the system's (20 here). */
async function nodes(): Promise<{ path: string; version: string }[]> {
  const found = new Map<string, string>();
  for (const path of [process.execPath, "/usr/bin/node", "/usr/local/bin/node"]) {
    if (!existsSync(path)) continue;
    const version = (await run(path, ["--version"])).stdout.trim();
    if (!found.has(version)) found.set(version, path);
  }
  return [...found].map(([version, path]) => ({ path, version }));
}

/** A Node script that connects, publishes one message, prints what came back and exits. */
function script(kind: "esm" | "cjs", url: string, room: string): string {
  // Node 20 has no global WebSocket: the script brings the `ws` package, as a Node 20 user would.
  const ws = join(REPO, "node_modules/ws/index.js");
  const load =
    kind === "esm"
      ? `import { RelayClient } from "edge-relay/client";\nimport { createRequire } from "node:module";\nconst require = createRequire(import.meta.url);`
      : `const { RelayClient } = require("edge-relay/client");`;
  return `${load}
const WebSocket = globalThis.WebSocket ?? require(${JSON.stringify(ws)});
const client = new RelayClient({ url: ${JSON.stringify(url)}, room: ${JSON.stringify(room)}, user: "${kind}", WebSocket });
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 20000);
client.on("welcome", () => client.publish({ from: "${kind}", node: process.version }));
client.on("message", (message) => {
  console.log(JSON.stringify(message.data));
  clearTimeout(timer);
  client.close();
});
`;
}

describe("the installed client package", () => {
  let relay: Relay;
  let browser: Browser;
  let app: string;
  let site: Site | undefined;

  beforeAll(async () => {
    app = await mkdtemp(join(tmpdir(), "edge-relay-app-"));
    const tarballs = join(app, "tarballs");
    await mkdir(tarballs);
    await run(process.execPath, ["scripts/build-package.mjs", "--pack", tarballs]);
    const [tarball] = await readdir(tarballs);
    await writeFile(join(app, "package.json"), JSON.stringify({ name: "an-app", private: true }));
    // The package has no dependencies, so this reaches no registry.
    await run("npm", ["install", "--no-audit", "--no-fund", "--offline", join(tarballs, tarball!)], { cwd: app });
    [relay, browser] = await Promise.all([startRelay({ vars: { ALLOW_ANONYMOUS: "true" } }), launch()]);
  });

  afterAll(async () => {
    site?.close();
    await browser?.close();
    await relay?.close();
    if (app) await rm(app, { recursive: true, force: true });
  });

  it.each(["esm", "cjs"] as const)("works from Node as %s, on every Node here", async (kind) => {
    const file = join(app, kind === "esm" ? "try.mjs" : "try.cjs");
    for (const node of await nodes()) {
      const room = freshRoom();
      await writeFile(file, script(kind, relay.url.toString(), room));
      const { stdout } = await run(node.path, [file], { cwd: app, timeout: 30_000 });
      expect(JSON.parse(stdout.trim()), `node ${node.version}`).toEqual({ from: kind, node: node.version });
    }
  });

  it("bundles with esbuild for the browser", async () => {
    await writeFile(join(app, "entry.js"), `import { RelayClient } from "edge-relay/client";\nexport const make = (url) => new RelayClient({ url, room: "r" });\n`);
    const { build } = await import("esbuild");
    const result = await build({ entryPoints: [join(app, "entry.js")], bundle: true, platform: "browser", format: "esm", write: false, absWorkingDir: app });
    expect(result.errors).toEqual([]);
    expect(result.outputFiles[0]!.text).toContain("heartbeat");
  });

  it("type-checks a TypeScript user of the package under Node's own module resolution", async () => {
    await writeFile(
      join(app, "check.mts"),
      `import { RelayClient, type MessageFrame } from "edge-relay/client";
const client = new RelayClient({ url: "https://relay.example", room: "lobby" });
client.on("message", (message: MessageFrame) => message.seq.toFixed());
// @ts-expect-error: "rooom" is not an option
new RelayClient({ url: "x", rooom: "typo" });
`,
    );
    const tsc = join(REPO, "node_modules/typescript/bin/tsc");
    const args = ["--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext", "--lib", "es2022,dom", "--types", "", "check.mts"];
    const result = await run(process.execPath, [tsc, ...args], { cwd: app }).catch((error: { stdout: string }) => error);
    expect("stdout" in result ? result.stdout : "").toBe("");
  });

  it("runs from a classic <script> tag in Chromium, as the global EdgeRelay", async () => {
    site = await startSite(join(app, "node_modules/edge-relay/client/edge-relay-client.global.js"), (script) => `<!doctype html><script src="${script}"></script>`);
    const page = await browser.newPage();
    await page.goto(site.url);
    const room = freshRoom();
    const welcome = await page.evaluate(
      ({ url, room }) =>
        new Promise<unknown>((done) => {
          const { RelayClient } = (globalThis as unknown as { EdgeRelay: typeof import("../../client/index") }).EdgeRelay;
          const client = new RelayClient({ url, room, user: "scripted" });
          client.on("welcome", (frame) => {
            client.close();
            done(frame);
          });
        }),
      { url: relay.url.toString(), room },
    );
    expect(welcome).toMatchObject({ type: "welcome", room, user: "scripted" });
    await page.close();
  });
});
