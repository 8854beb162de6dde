// The demo page and the client library in real Chromium, against the whole relay over TCP.
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshRoom, SERVER_AUTH, startRelay, type Relay } from "../e2e/relay";
import { launch, screenshot } from "./chromium";

/** Small, so a room past what its relay keeps takes a few publishes. */
const HISTORY_LIMIT = 5;

describe("demo page in Chromium", () => {
  let relay: Relay;
  let browser: Browser;

  beforeAll(async () => {
    [relay, browser] = await Promise.all([startRelay({ vars: { ALLOW_ANONYMOUS: "true", HISTORY_LIMIT: String(HISTORY_LIMIT) } }), launch()]);
  });
  afterAll(async () => {
    await browser?.close();
    await relay?.close();
  });

  async function open(user: string, room: string): Promise<Page> {
    const page = await browser.newPage();
    page.on("pageerror", (error) => console.error(`[${user}] page error:`, error));
    await page.goto(new URL(`/?user=${user}&room=${room}&autojoin`, relay.url).toString());
    await expectState(page, "open");
    return page;
  }

  const log = (page: Page) => page.locator("#log");
  const expectState = (page: Page, state: string) =>
    expect.poll(() => page.locator("#state").getAttribute("data-state"), { timeout: 15_000 }).toBe(state);

  /** Publishes each text into `room` through the server API, in order. */
  async function serverSays(room: string, ...texts: string[]): Promise<void> {
    for (const text of texts) {
      const res = await relay.fetch(`/rooms/${room}/messages`, {
        method: "POST",
        headers: { ...SERVER_AUTH, "Content-Type": "application/json" },
        body: JSON.stringify({ data: { text } }),
      });
      expect(res.status).toBe(200);
    }
  }

  async function say(page: Page, text: string): Promise<void> {
    await page.fill("#text", text);
    await page.click("#send");
  }

  it("lets two pages chat and see each other's presence", async () => {
    const room = freshRoom();
    const alice = await open("alice", room);
    const bob = await open("bob", room);
    await expect.poll(() => alice.locator("#people").textContent()).toContain("bob");
    await expect.poll(() => bob.locator("#people").textContent()).toContain("alice");
    await say(alice, "hello bob");
    await expect.poll(() => log(bob).textContent()).toContain("alice: hello bob");
    await say(bob, "hi alice");
    await expect.poll(() => log(alice).textContent()).toContain("bob: hi alice");
    await screenshot(alice, "chat-alice");
    await screenshot(bob, "chat-bob");
    await bob.close();
    await expect.poll(() => log(alice).textContent()).toContain("bob left.");
    await alice.close();
  });

  it("sends direct messages between pages", async () => {
    const room = freshRoom();
    const alice = await open("alice-d", room);
    const bob = await open("bob-d", room);
    await expect.poll(() => alice.locator("#to option").allTextContents()).toContain("only bob-d");
    await alice.selectOption("#to", "bob-d");
    await say(alice, "just for you");
    await expect.poll(() => log(bob).textContent()).toContain("alice-d → you: just for you");
    // The sender's line appears once the relay took it; one the relay refuses says so instead.
    await expect.poll(() => log(alice).textContent()).toContain("you → bob-d: just for you");
    await say(alice, "x".repeat(70_000));
    await expect.poll(() => log(alice).textContent()).toContain("Not sent to bob-d");
    await screenshot(bob, "direct-bob");
    await Promise.all([alice.close(), bob.close()]);
  });

  it("resumes a page whose connection dropped without missing a message", async () => {
    const room = freshRoom();
    const page = await open("carol", room);
    await say(page, "before the drop");
    await expect.poll(() => log(page).textContent()).toContain("carol: before the drop");

    await relay.dropRoom(room);
    // Published while the page is away (the server API does not depend on the page).
    await serverSays(room, "missed one", "missed two");
    await expect.poll(() => page.locator("#reconnects").textContent(), { timeout: 15_000 }).not.toBe("0");
    await expectState(page, "open");
    await expect.poll(() => log(page).textContent()).toContain("server: missed two");
    const lines = await log(page).locator("p:not(.meta)").allTextContents();
    expect(lines).toEqual(["carol: before the drop", "server: missed one", "server: missed two"]);
    await screenshot(page, "resumed");
    await page.close();
  });

  it("shows a newcomer the room's recent messages, and again after a reload", async () => {
    const room = freshRoom();
    await serverSays(room, "earlier one", "earlier two");
    const page = await open("dave", room);
    await say(page, "now");
    const chat = () => log(page).locator("p:not(.meta)").allTextContents();
    await expect.poll(chat).toEqual(["server: earlier one", "server: earlier two", "dave: now"]);
    await page.reload();
    await expectState(page, "open");
    await expect.poll(chat).toEqual(["server: earlier one", "server: earlier two", "dave: now"]);
    await page.close();
  });

  it("says when a room's earlier messages are no longer kept", async () => {
    const room = freshRoom();
    await serverSays(room, ...Array.from({ length: HISTORY_LIMIT + 1 }, (_, n) => `old ${n}`));
    const page = await open("erin", room);
    await expect.poll(() => log(page).textContent()).toContain("earlier messages are no longer kept");
    await serverSays(room, "fresh");
    await expect.poll(() => log(page).locator("p:not(.meta)").allTextContents()).toEqual(["server: fresh"]);
    await page.close();
  });

  it("marks the name the relay gave, and empties the list on leaving without an error", async () => {
    const room = freshRoom();
    // Not a user id, so the relay names this page anon-… (docs/protocol.md, anonymous mode).
    const page = await open("frank%20smith", room);
    const friend = await open("gina", room);
    await expect.poll(() => page.locator("#people").textContent()).toContain("gina");
    const people = await page.locator("#people li").allTextContents();
    expect(people.find((line) => line.endsWith("(you)"))).toMatch(/^anon-/);
    expect(await page.locator("#to option").allTextContents()).toEqual(["everyone in the room", "only gina"]);
    await page.click("#leave");
    await expect.poll(() => page.locator("#people li").count()).toBe(0);
    await expect.poll(() => log(friend).textContent()).toContain("left.");
    expect(await log(page).locator("p.error").count()).toBe(0);
    await Promise.all([page.close(), friend.close()]);
  });

  it("receives a room's messages through EventSource", async () => {
    const room = freshRoom();
    const page = await browser.newPage();
    await page.goto(new URL("/", relay.url).toString());
    await page.evaluate((path) => {
      const w = globalThis as unknown as { received: unknown[]; welcome?: unknown };
      w.received = [];
      const source = new EventSource(path);
      source.addEventListener("welcome", (event) => (w.welcome = JSON.parse((event as MessageEvent).data)));
      source.addEventListener("message", (event) => w.received.push(JSON.parse((event as MessageEvent).data)));
    }, `/rooms/${room}/events`);
    await expect.poll(() => page.evaluate(() => (globalThis as unknown as { welcome?: unknown }).welcome)).toMatchObject({ seq: 0 });
    for (const n of [1, 2]) {
      await relay.fetch(`/rooms/${room}/messages`, {
        method: "POST",
        headers: { ...SERVER_AUTH, "Content-Type": "application/json" },
        body: JSON.stringify({ data: { n } }),
      });
    }
    await expect
      .poll(() => page.evaluate(() => (globalThis as unknown as { received: { seq: number; data: unknown }[] }).received))
      .toMatchObject([
        { type: "message", seq: 1, data: { n: 1 } },
        { type: "message", seq: 2, data: { n: 2 } },
      ]);
    await page.close();
  });
});
