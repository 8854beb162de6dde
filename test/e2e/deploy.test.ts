// Deploying disconnects every socket (docs/platform.md). Here the runtime restarts 10 times on the
// same storage and port while client-library clients publish and send directs at about 20 a
// second: nothing acknowledged is lost, nothing arrives twice, and every reconnect resumes.
import { afterAll, describe, expect, it } from "vitest";
import { RelayClient, type DirectFrame, type MessageFrame, type WelcomeFrame } from "../../client";
import { freePort, freshRoom, startPersistentRelay, tempDir, type Relay } from "./relay";

const RESTARTS = 10;
/** Traffic between two restarts. */
const RUN_MS = 1_200;
const PUBLISH_EVERY_MS = 150; // three publishers: 20 messages a second
const DIRECT_EVERY_MS = 250;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Watched {
  client: RelayClient;
  name: string;
  room?: string;
  seqs: number[];
  welcomes: WelcomeFrame[];
  /** When each welcome after the first arrived, ms since the epoch. */
  welcomedAt: number[];
}

describe("restarts of the runtime while clients talk (a deploy, ten times)", () => {
  let relay: Relay | undefined;
  let storage: Awaited<ReturnType<typeof tempDir>> | undefined;
  const watched: Watched[] = [];

  afterAll(async () => {
    for (const { client } of watched) client.close();
    await relay?.close();
    await storage?.remove();
  });

  it("loses no acknowledged message or direct, delivers each once, and resumes every reconnect", async () => {
    storage = await tempDir();
    const port = await freePort();
    const options = { vars: { ALLOW_ANONYMOUS: "true" }, port };
    relay = await startPersistentRelay(storage.path, options);
    const url = relay.url;
    const [first, second] = [freshRoom("deploy-a"), freshRoom("deploy-b")];
    const reconnect = { minDelayMs: 50, maxDelayMs: 500 };

    const watch = (name: string, client: RelayClient, room?: string): Watched => {
      const entry: Watched = { client, name, room, seqs: [], welcomes: [], welcomedAt: [] };
      client.on("message", (message: MessageFrame) => entry.seqs.push(message.seq));
      client.on("welcome", (welcome: WelcomeFrame) => {
        entry.welcomes.push(welcome);
        entry.welcomedAt.push(Date.now());
      });
      watched.push(entry);
      return entry;
    };
    const alice = watch("alice", new RelayClient({ url, room: first, user: "alice", reconnect }), first);
    const bob = watch("bob", new RelayClient({ url, room: first, user: "bob", reconnect }), first);
    const carol = watch("carol", new RelayClient({ url, room: second, user: "carol", reconnect }), second);
    const dave = watch("dave", new RelayClient({ url, inbox: "dave", user: "dave", reconnect }));
    const directs = new Map<string, number>();
    dave.client.on("direct", (direct: DirectFrame) => directs.set(direct.id!, (directs.get(direct.id!) ?? 0) + 1));
    const acked = new Set<string>();
    alice.client.on("ack", (ack) => ack.id !== undefined && acked.add(ack.id));
    await expect.poll(() => watched.every((entry) => entry.welcomes.length === 1), { timeout: 30_000 }).toBe(true);

    let running = true;
    const traffic = (async () => {
      let n = 0;
      let nextDirect = 0;
      while (running) {
        for (const publisher of [alice, bob, carol]) publisher.client.publish({ from: publisher.name, n });
        if (Date.now() >= nextDirect) {
          alice.client.direct("dave", { n });
          nextDirect = Date.now() + DIRECT_EVERY_MS;
        }
        n++;
        await sleep(PUBLISH_EVERY_MS);
      }
    })();

    const resumeMs: number[] = [];
    for (let restart = 0; restart < RESTARTS; restart++) {
      await sleep(RUN_MS);
      const before = watched.map((entry) => entry.welcomes.length);
      await relay.close();
      relay = await startPersistentRelay(storage.path, options);
      const back = Date.now();
      // Every client is welcomed again by the new runtime.
      await expect
        .poll(() => watched.every((entry, i) => entry.welcomes.length > before[i]!), { timeout: 60_000, interval: 50 })
        .toBe(true);
      for (const [i, entry] of watched.entries()) resumeMs.push(entry.welcomedAt[before[i]!]! - back);
    }
    await sleep(RUN_MS);
    running = false;
    await traffic;
    // Let the last frames land: every publisher's own frames echoed, every direct acked.
    await sleep(1_500);

    console.log(
      `resume after the runtime was back, ms (${resumeMs.length} reconnects): ` +
        `min ${Math.min(...resumeMs)}, median ${resumeMs.sort((a, b) => a - b)[Math.floor(resumeMs.length / 2)]}, max ${Math.max(...resumeMs)}`,
    );

    for (const entry of watched) {
      // Every reconnect resumed: room sockets say recovered, a user socket simply reconnects.
      expect(entry.welcomes.length, entry.name).toBe(RESTARTS + 1);
      if (entry.room !== undefined) {
        expect(entry.welcomes.slice(1).map((welcome) => welcome.recovered), entry.name).toEqual(Array(RESTARTS).fill(true));
        // Gapless and without a duplicate: exactly 1..n.
        expect(entry.seqs, entry.name).toEqual(Array.from({ length: entry.seqs.length }, (_, i) => i + 1));
      }
    }
    // Both clients of the first room saw the same list.
    expect(bob.seqs).toEqual(alice.seqs.slice(0, bob.seqs.length));
    expect(alice.seqs.length).toBeGreaterThan(RESTARTS * 10);
    // Every acknowledged direct arrived, once its duplicates (resent with the same id) are folded.
    expect(acked.size).toBeGreaterThan(RESTARTS * 2);
    for (const id of acked) expect(directs.has(id), id).toBe(true);
  }, 300_000);
});
