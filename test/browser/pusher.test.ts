// pusher-js's browser build, in Chromium, on a page of another origin, connected to the relay
// as docs/pusher.md tells an app to configure it; the server SDK triggers from the test.
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { APP, PUSHER_RELAY, serverSdk, WAIT_MS } from "../e2e/pusher-support";
import { freshRoom, startRelay, type Relay } from "../e2e/relay";
import { launch } from "./chromium";
import { startSite, type Site } from "./site";

/** A page of its own origin with pusher-js's minified browser build. */
const startPage = () =>
  startSite("node_modules/pusher-js/dist/web/pusher.min.js", (script) => `<!doctype html><title>pusher-js</title><script src="${script}"></script>`);

/** What the page keeps: its socket id and the events it heard. */
interface PageState {
  socketId?: string;
  subscribed: boolean;
  heard: { event: string; data: unknown }[];
}

describe("pusher-js in a browser", () => {
  let relay: Relay;
  let browser: Browser;
  let site: Site;
  let page: Page;

  beforeAll(async () => {
    [relay, browser, site] = await Promise.all([startRelay(PUSHER_RELAY), launch(), startPage()]);
    page = await browser.newPage();
    await page.goto(site.url);
  });
  afterAll(async () => {
    await browser?.close();
    await relay?.close();
    site?.close();
  });

  const state = () => page.evaluate(() => (globalThis as unknown as { state: PageState }).state);

  it("connects over ws, subscribes, and hears an event the server SDK triggers", async () => {
    const channel = freshRoom("browser");
    // A string, so the test runner's bundler leaves the page's code alone; Pusher is the
    // global the script tag defined.
    await page.evaluate(`
      (() => {
        const state = { subscribed: false, heard: [] };
        globalThis.state = state;
        const pusher = new Pusher(${JSON.stringify(APP.key)}, {
          cluster: "relay",
          wsHost: ${JSON.stringify(relay.url.hostname)},
          wsPort: ${Number(relay.url.port)},
          forceTLS: false,
          enabledTransports: ["ws"],
        });
        globalThis.pusher = pusher;
        pusher.connection.bind("connected", () => { state.socketId = pusher.connection.socket_id; });
        const channel = pusher.subscribe(${JSON.stringify(channel)});
        channel.bind("pusher:subscription_succeeded", () => { state.subscribed = true; });
        channel.bind("order-shipped", (data) => state.heard.push({ event: "order-shipped", data }));
      })()
    `);
    await expect.poll(async () => (await state()).subscribed, { timeout: WAIT_MS }).toBe(true);
    expect((await state()).socketId).toMatch(/^\d+\.\d+$/);

    await serverSdk(relay).trigger(channel, "order-shipped", { order: 42 });
    await expect.poll(async () => (await state()).heard, { timeout: WAIT_MS }).toEqual([{ event: "order-shipped", data: { order: 42 } }]);
    await page.evaluate(() => (globalThis as unknown as { pusher: { disconnect(): void } }).pusher.disconnect());
  });
});
