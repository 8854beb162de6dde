// Liveness as every socket-holding object does it (SocketHost's sweep), run against Room and
// Inbox alike. The project runs with HEARTBEAT_INTERVAL_MS=200, HEARTBEAT_TIMEOUT_MS=800 and
// AUTH_SECRET=liveness-secret (vitest.config.ts), so real time can pass a timeout quickly.
import { runDurableObjectAlarm } from "cloudflare:test";
import { sign } from "hono/jwt";
import { expect, it } from "vitest";
import type { TestClient } from "../support/client";

export const TIMEOUT_MS = 800;
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Pings every 100 ms for `ms`, reading each pong. The object's own sweep alarm runs meanwhile,
 * so other frames may arrive between pongs: they are answered, in order.
 */
export async function keepAlive(client: TestClient, ms: number): Promise<unknown[]> {
  const others: unknown[] = [];
  const started = Date.now();
  while (Date.now() - started < ms) {
    client.send("ping");
    for (let frame = await client.next(); frame !== "pong"; frame = await client.next()) others.push(frame);
    await sleep(100);
  }
  return others;
}

/**
 * Runs the sweep alarm now. The object's own sweep may have closed the socket first, and an
 * object emptied by its own closes resets itself (docs/design.md "Failures"), which fails this
 * call: the socket's close is what the test reads.
 */
async function sweepNow(stub: DurableObjectStub): Promise<void> {
  await runDurableObjectAlarm(stub).catch((error: unknown) => {
    if (!String(error).includes("reset itself")) throw error;
  });
}

export interface LivenessKind {
  /** Opens a fresh socket of this kind, as `user` or with `token`, and reads past its welcome. */
  open(as: { user: string } | { token: string }): Promise<{ client: TestClient; stub: DurableObjectStub }>;
}

export function itClosesDeadSockets(kind: LivenessKind): void {
  it("closes a silent socket with 4000 when the sweep alarm runs after the timeout", async () => {
    const { client, stub } = await kind.open({ user: "silent" });
    await sleep(TIMEOUT_MS * 1.05 + 50); // the sweep allows a twentieth more (socket-host.ts)
    await sweepNow(stub);
    expect(await client.closed).toEqual({ code: 4000, reason: "heartbeat timeout" });
  });

  it("keeps a socket whose pings keep arriving past the timeout", async () => {
    const { client, stub } = await kind.open({ user: "pinger" });
    await keepAlive(client, TIMEOUT_MS + 200);
    await runDurableObjectAlarm(stub);
    client.send("ping");
    expect(await client.next()).toBe("pong");
  });

  it("does not close before the timeout", async () => {
    const { client, stub } = await kind.open({ user: "fresh" });
    await runDurableObjectAlarm(stub);
    client.send("ping");
    expect(await client.next()).toBe("pong");
  });

  it("stops re-arming the alarm once the last socket left", async () => {
    const { client, stub } = await kind.open({ user: "leaver" });
    await client.close();
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await runDurableObjectAlarm(stub)).toBe(false);
  });

  it("closes a socket with 4001 once its token's exp has passed", async () => {
    // Two seconds ahead: clocks in workerd advance only with I/O, so test and Worker differ a little.
    const exp = Math.floor(Date.now() / 1000) + 2;
    const token = await sign({ sub: "expiring", exp }, "liveness-secret", "HS256");
    const { client, stub } = await kind.open({ token });
    // Keep the heartbeat alive so only the expiry can close it; stop just before exp, since
    // the object's own sweep may close the socket any time after it.
    await keepAlive(client, exp * 1000 - 150 - Date.now());
    await sleep(250);
    await sweepNow(stub);
    expect(await client.closed).toEqual({ code: 4001, reason: "token expired" });
  });
}
