// A page on another origin uses the relay's HTTP routes (docs/protocol.md "Cross-origin
// browsers"): history, room info, an event stream, and the reason a connection was refused.
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_KEY, freshRoom, SERVER_AUTH, startRelay, type Relay } from "../e2e/relay";
import { launch } from "./chromium";
import { startSite, type Site } from "./site";

/** An empty page of its own origin, with the client bundle beside it. */
const startOtherOrigin = () => startSite("public/edge-relay-client.js", () => "<!doctype html><title>another origin</title>");

describe("a page on another origin", () => {
  let relay: Relay;
  let browser: Browser;
  let other: Site;
  let page: Page;

  beforeAll(async () => {
    [relay, browser, other] = await Promise.all([startRelay({ vars: { ALLOW_ANONYMOUS: "true" } }), launch(), startOtherOrigin()]);
    page = await browser.newPage();
    await page.goto(other.url);
  });
  afterAll(async () => {
    await browser?.close();
    await relay?.close();
    other?.close();
  });

  const relayUrl = () => relay.url.toString().replace(/\/$/, "");

  it("reads a room's history and info with the API key (a preflighted request)", async () => {
    const room = freshRoom();
    await relay.fetch(`/rooms/${room}/messages`, { method: "POST", headers: SERVER_AUTH, body: JSON.stringify({ data: "hi" }) });
    const answers = await page.evaluate(
      async ({ base, room, key }) => {
        const headers = { Authorization: `Bearer ${key}` };
        const history = (await (await fetch(`${base}/rooms/${room}/messages`, { headers })).json()) as { messages: unknown[] };
        const info = (await (await fetch(`${base}/rooms/${room}`, { headers })).json()) as Record<string, unknown>;
        return { history, info, origin: (globalThis as unknown as { location: URL }).location.origin };
      },
      { base: relayUrl(), room, key: API_KEY },
    );
    expect(answers.origin).not.toBe(new URL(relayUrl()).origin);
    expect(answers.history.messages).toEqual([expect.objectContaining({ seq: 1, data: "hi" })]);
    expect(answers.info).toMatchObject({ room, seq: 1 });
  });

  it("follows a room through an EventSource", async () => {
    const room = freshRoom();
    // Opens the stream and waits for its welcome, keeping what arrives after it on the page.
    await page.evaluate(
      ({ base, room }) =>
        new Promise<void>((resolve, reject) => {
          const source = new EventSource(`${base}/rooms/${room}/events?user=reader`);
          const messages: unknown[] = [];
          Object.assign(globalThis, { stream: { source, messages } });
          source.addEventListener("welcome", () => resolve());
          source.addEventListener("message", (event) => messages.push(JSON.parse((event as MessageEvent).data)));
          source.onerror = () => reject(new Error("event stream failed"));
        }),
      { base: relayUrl(), room },
    );
    await relay.fetch(`/rooms/${room}/messages`, { method: "POST", headers: SERVER_AUTH, body: JSON.stringify({ data: "live" }) });
    const messages = () => page.evaluate(() => (globalThis as unknown as { stream: { messages: unknown[] } }).stream.messages);
    await expect.poll(messages, { timeout: 15_000 }).toEqual([expect.objectContaining({ type: "message", room, data: "live" })]);
    await page.evaluate(() => (globalThis as unknown as { stream: { source: EventSource } }).stream.source.close());
  });

  it("tells the client library why its connection was refused", async () => {
    // A string, so the test runner's bundler leaves the page's own import alone.
    const refusal = await page.evaluate(`
      import("/edge-relay-client.js").then(({ RelayClient }) => new Promise((resolve) => {
        const client = new RelayClient({ url: ${JSON.stringify(relayUrl())}, room: "no spaces allowed", user: "alice", reconnect: false });
        client.on("refused", (why) => { client.close(); resolve(why); });
      }))
    `);
    expect(refusal).toMatchObject({ status: 400, error: "bad_request", message: expect.stringContaining("room id") });
  });
});
