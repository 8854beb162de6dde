import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { connect, freshRoom, join } from "../workers/connect";

// This project runs with INBOX_TTL_SECONDS=1 (vitest.config.ts).
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("inbox expiry", () => {
  it("drops unacknowledged directs after INBOX_TTL_SECONDS and replays only fresh ones", async () => {
    const to = `ttl-${crypto.randomUUID().slice(0, 8)}`;
    const sender = await join(freshRoom(), "alice");
    sender.client.send({ type: "direct", to, data: "stale", id: "old" });
    expect(await sender.client.json()).toMatchObject({ type: "ack", id: "old", status: "queued", seq: 1 });
    await sender.client.close();
    await sleep(1_100);
    // A new socket: the old one would have timed out (HEARTBEAT_TIMEOUT_MS is 800 here).
    const later = await join(freshRoom(), "alice");
    later.client.send({ type: "direct", to, data: "fresh", id: "new" });
    expect(await later.client.json()).toMatchObject({ type: "ack", id: "new", status: "queued", seq: 2 });
    const recipient = await connect(`/users/${to}/ws?user=${to}`);
    expect(await recipient.json()).toMatchObject({ type: "welcome", seq: 2 });
    expect(await recipient.json()).toMatchObject({ type: "direct", seq: 2, data: "fresh" });
    expect(recipient.pending).toEqual([]);
  });

  it("deletes expired directs from storage by alarm, for a user who never connects", async () => {
    const to = `gone-${crypto.randomUUID().slice(0, 8)}`;
    const sender = await join(freshRoom(), "alice");
    for (const id of ["a", "b"]) {
      sender.client.send({ type: "direct", to, data: id, id });
      expect(await sender.client.json()).toMatchObject({ type: "ack", id, status: "queued" });
    }
    await sender.client.close();
    const inbox = env.INBOXES.getByName(to);
    const rows = () => runInDurableObject(inbox, (_, state) => state.storage.sql.exec("SELECT seq FROM directs").toArray().length);
    const alarm = () => runInDurableObject(inbox, (_, state) => state.storage.getAlarm());
    expect(await rows()).toBe(2);
    expect(await alarm()).not.toBeNull();
    await sleep(1_100);
    expect(await runDurableObjectAlarm(inbox)).toBe(true);
    expect(await rows()).toBe(0);
    expect(await alarm()).toBeNull(); // nothing left to expire: no alarm until the next direct
    // The seq goes on from where it was, though the rows that held it are gone.
    const later = await join(freshRoom(), "alice");
    later.client.send({ type: "direct", to, data: "c", id: "c" });
    expect(await later.client.json()).toMatchObject({ type: "ack", id: "c", status: "queued", seq: 3 });
  });

  it("moves its expiry alarm earlier for a direct that expires before it (INBOX_TTL_SECONDS lowered)", async () => {
    const to = `sooner-${crypto.randomUUID().slice(0, 8)}`;
    const inbox = env.INBOXES.getByName(to);
    const week = Date.now() + 7 * 86_400_000;
    await runInDurableObject(inbox, (_, state) => state.storage.setAlarm(week)); // set under a longer TTL
    const sender = await join(freshRoom(), "alice");
    sender.client.send({ type: "direct", to, data: "soon", id: "s" });
    expect(await sender.client.json()).toMatchObject({ type: "ack", id: "s", status: "queued" });
    await expect.poll(() => runInDurableObject(inbox, (_, state) => state.storage.getAlarm())).toBeLessThan(Date.now() + 2 * 60_000);
  });
});
