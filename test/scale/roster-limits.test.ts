// The edges of a hub's roster queue (roster-calls.ts): answers too big for one call, and a Room
// on code from before `changeRoster` (objects take up a deploy's code one by one).
import { describe, expect, it } from "vitest";
import { freshRoom, holdFirstJoin, holdJoins, info, joiningAt, openUser, recordCalls, serverPublish, subscribe, usersOnHub, wrapChangeRoster } from "./connect";

describe("a hub's roster queue", () => {
  it("sends again the joins whose replays would make one answer too big, each answered with its whole replay", { timeout: 60_000 }, async () => {
    const room = freshRoom();
    // 100 messages of 65,000 characters: each resume from 0 replays 6.5 Mi, past a call's budget of 4 Mi.
    for (let n = 0; n < 100; n += 10) await Promise.all(Array.from({ length: 10 }, () => serverPublish(room, "x".repeat(65_000))));
    const [first, second, third] = usersOnHub(0, 3);
    const held = await holdFirstJoin(room, first!);
    const calls = await recordCalls(room);
    try {
      const resuming = [await openUser(second), await openUser(third)];
      for (const [i, { client }] of resuming.entries()) client.send({ type: "subscribe", room, since: 0, id: `r${i}` });
      await expect.poll(() => joiningAt(0, room)).toEqual({ [first!]: 1, [second!]: 1, [third!]: 1 });
      held.release();
      for (const [i, { client }] of resuming.entries()) {
        expect(await client.nextOf("subscribed")).toMatchObject({ id: `r${i}`, seq: 100, recovered: true });
        for (let seq = 1; seq <= 100; seq++) expect(await client.json()).toMatchObject({ type: "message", seq });
      }
      // Both went in one call; the Room took the first only, and the hub sent the second again.
      expect(calls.sizes).toEqual([2, 1]);
    } finally {
      held.restore();
      calls.restore();
    }
  });

  // workerd's words for a call of a method the callee lacks, and its test harness's (docs/platform.md).
  it.each([
    [1, 'The RPC receiver does not implement the method "changeRoster".'],
    [2, 'The RPC receiver does not implement "changeRoster".'],
  ])("sends a Room without changeRoster each join and count alone (%i)", async (hub, message) => {
    const room = freshRoom();
    const restore = await wrapChangeRoster(room, () => Promise.reject(new TypeError(message)));
    try {
      const [user] = usersOnHub(hub, 1);
      const { client } = await openUser(user);
      expect(await subscribe(client, room, { id: "s" })).toMatchObject({ id: "s", users: 1, presence: [{ user, connections: 1 }] });
      client.send({ type: "unsubscribe", room, id: "u" });
      expect(await client.nextOf("unsubscribed")).toMatchObject({ id: "u" });
      await expect.poll(() => info(room)).toMatchObject({ connections: 0, users: 0 });
    } finally {
      restore();
    }
  });

  it("counts a socket out again when its join was made at the Room but the call failed after it", async () => {
    const room = freshRoom();
    const [user] = usersOnHub(3, 1);
    const failing = await holdJoins(room, (request, join) =>
      request.user === user ? () => join(request).then(() => Promise.reject(new Error("a failure after the join counted"))) : undefined,
    );
    try {
      const { client } = await openUser(user);
      client.send({ type: "subscribe", room, id: "s" });
      expect(await client.json()).toMatchObject({ type: "error", code: "internal", id: "s" });
      await expect.poll(() => info(room)).toMatchObject({ connections: 0, users: 0 });
    } finally {
      failing.restore();
    }
  });
});
