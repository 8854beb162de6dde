// Launches Chromium through playwright-core (no browser download: `npx playwright install` cannot
// reach its servers here). The browser, first match wins:
// 1. CHROMIUM_PATH, a Chromium or Chrome binary; set but missing fails loudly;
// 2. Debian's /usr/bin/chromium;
// 3. the Chromium shipped inside the @sparticuz/chromium dev dependency, so `npm ci && npm test`
//    needs no system package: a headless shell that links only libc, libgcc and libexpat, unpacked
//    once (about 2 s) next to the temporary files, under a name that carries the package version.
import { createReadStream, createWriteStream, existsSync } from "node:fs";
import { mkdir, readFile, rename, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { createBrotliDecompress } from "node:zlib";
import { inflate } from "@sparticuz/chromium";
import { chromium, type Browser, type Page } from "playwright-core";

export const DEBIAN_CHROMIUM = "/usr/bin/chromium";
export const SCREENSHOTS = "test-results/browser";

// Without the background-networking flags Chromium keeps dialling Google on a closed network.
// The same flags serve the bundled shell: @sparticuz/chromium's own `args` are made for Lambda,
// and two of them do not fit here: --single-process takes the whole browser down when a test closes
// one page, and --disable-web-security would hide the cross-origin checks the demo page is under.
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"];

export async function launch(): Promise<Browser> {
  const { executablePath, env } = await pickChromium();
  await mkdir(SCREENSHOTS, { recursive: true });
  return chromium.launch({ executablePath, args: ARGS, env });
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: `${SCREENSHOTS}/${name}.png`, fullPage: true });
}

type Pick = { executablePath: string; env?: Record<string, string> };

async function pickChromium(): Promise<Pick> {
  const fromEnv = process.env.CHROMIUM_PATH;
  if (fromEnv !== undefined) {
    if (!existsSync(fromEnv)) {
      throw new Error(`CHROMIUM_PATH is ${fromEnv}, which does not exist. Point it at a Chromium or Chrome binary, or unset it.`);
    }
    return { executablePath: fromEnv };
  }
  if (existsSync(DEBIAN_CHROMIUM)) return { executablePath: DEBIAN_CHROMIUM };
  return bundledChromium();
}

async function bundledChromium(): Promise<Pick> {
  const pkg = join(dirname(createRequire(import.meta.url).resolve("@sparticuz/chromium")), "..");
  const { version } = JSON.parse(await readFile(join(pkg, "package.json"), "utf8")) as { version: string };
  const dir = join(tmpdir(), `edge-relay-chromium-${version}`);
  const executablePath = join(dir, "chromium");
  if (!existsSync(executablePath)) {
    // Unpacked under a private name and renamed into place, so an interrupted run or a second test
    // process never finds a half-written binary.
    await mkdir(dir, { recursive: true });
    const partial = `${executablePath}.${process.pid}.partial`;
    try {
      await pipeline(
        createReadStream(join(pkg, "bin", "chromium.br")),
        createBrotliDecompress(),
        createWriteStream(partial, { mode: 0o755 }),
      );
      await rename(partial, executablePath);
    } finally {
      await rm(partial, { force: true });
    }
  }
  // A machine without fontconfig gets the package's Open Sans (its fonts.conf expects /tmp/fonts),
  // so text shows in screenshots.
  if (existsSync("/etc/fonts/fonts.conf")) return { executablePath };
  const fonts = await inflate(join(pkg, "bin", "fonts.tar.br"));
  return { executablePath, env: { ...stringEnv(), FONTCONFIG_PATH: fonts } };
}

function stringEnv(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter((entry): entry is [string, string] => entry[1] !== undefined));
}
