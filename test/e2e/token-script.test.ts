// `npm run token` mints tokens the relay accepts, with the rooms they name and nothing more.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshRoom, startRelay, UpgradeRefused, type Relay } from "./relay";

const SECRET = "token-script-secret";
const run = promisify(execFile);

async function mint(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, ["scripts/token.mjs", ...args], {
    env: { ...process.env, AUTH_SECRET: SECRET },
  });
  return stdout.trim();
}

describe("npm run token", () => {
  let relay: Relay;
  beforeAll(async () => {
    relay = await startRelay({ vars: { ALLOW_ANONYMOUS: "false", AUTH_SECRET: SECRET } });
  });
  afterAll(() => relay?.close());

  it("prints a token that opens the rooms it names as its user", async () => {
    const room = freshRoom("team");
    const token = await mint("alice", "team-*");
    const client = await relay.connect(`/rooms/${room}/ws?token=${token}`);
    expect(await client.json()).toMatchObject({ type: "welcome", user: "alice", room });
  });

  it("prints a token that other rooms refuse with 403", async () => {
    const token = await mint("alice", "lobby");
    const refused = await relay.connect(`/rooms/${freshRoom("other")}/ws?token=${token}`).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(UpgradeRefused);
    expect((refused as UpgradeRefused).status).toBe(403);
  });

  it("names any room id, Pusher channel names included", async () => {
    const room = `${freshRoom("presence-team")}@acme;eu`;
    const token = await mint("alice", room);
    const client = await relay.connect(`/rooms/${encodeURIComponent(room)}/ws?token=${token}`);
    expect(await client.json()).toMatchObject({ type: "welcome", user: "alice", room });
  });

  it("exits 2 with usage for an invalid user id", async () => {
    const failure = await mint("not valid").catch((error: { code: number; stderr: string }) => error);
    expect(failure).toMatchObject({ code: 2, stderr: expect.stringContaining("usage: npm run token") });
  });
});
