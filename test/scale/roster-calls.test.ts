// A hub's joins and counts to one room go in one ordered queue, many in one call while a call is
// out (holder.ts `#rosterCalls`, Room `changeRoster`; docs/design.md "Joining, counting and
// presence"). A join held at the Room makes the queue: the changes after it wait and go together.
import { describe, expect, it } from "vitest";
import { freshRoom, holdFirstJoin, holdJoins, info, joiningAt, openUser, recordCalls, subscribe, usersOnHub } from "./connect";

describe("a hub's joins and counts to one room", () => {
  it("go in one call while one is out, each answered with its own welcome state", async () => {
    const room = freshRoom();
    const [first, second, third] = usersOnHub(0, 3);
    const held = await holdFirstJoin(room, first!);
    const calls = await recordCalls(room);
    try {
      const others = [await openUser(second), await openUser(third)];
      others[0]!.client.send({ type: "subscribe", room, id: "second" });
      await expect.poll(() => joiningAt(0, room)).toEqual({ [first!]: 1, [second!]: 1 });
      others[1]!.client.send({ type: "subscribe", room, id: "third" });
      await expect.poll(() => joiningAt(0, room)).toEqual({ [first!]: 1, [second!]: 1, [third!]: 1 });
      held.release();
      const answers = await Promise.all([held.socket, ...others].map(({ client }) => client.nextOf("subscribed")));
      expect(answers.map(({ id, users }) => [id, users])).toEqual([
        ["first", 1],
        ["second", 2],
        ["third", 3],
      ]);
      expect(calls.sizes).toEqual([2]); // the held join's call was out before recording began
      expect(await info(room)).toMatchObject({ connections: 3, users: 3 });
    } finally {
      held.restore();
      calls.restore();
    }
  });

  it("keep their order: a join and a count of one user queued together leave the count the holder has", async () => {
    const room = freshRoom();
    const [first, user] = usersOnHub(1, 2);
    const x = await openUser(user);
    await subscribe(x.client, room);
    const held = await holdFirstJoin(room, first!);
    const calls = await recordCalls(room);
    try {
      // The user's second socket joins (2 of the user's sockets here), then the first leaves (1).
      const y = await openUser(user);
      y.client.send({ type: "subscribe", room, id: "y" });
      await expect.poll(() => joiningAt(1, room)).toEqual({ [first!]: 1, [user!]: 1 });
      x.client.send({ type: "unsubscribe", room, id: "x" });
      expect(await x.client.nextOf("unsubscribed")).toMatchObject({ id: "x" });
      held.release();
      expect(await y.client.nextOf("subscribed")).toMatchObject({ id: "y" });
      expect(calls.sizes).toEqual([2]);
      expect(await info(room)).toMatchObject({ connections: 2, users: 2 });
      expect((await info(room)).presence).toContainEqual({ user, connections: 1 });
    } finally {
      held.restore();
      calls.restore();
    }
  });

  it("fail one at a time: a join that throws at the Room refuses only its own subscribe", async () => {
    const room = freshRoom();
    const [first, second, third] = usersOnHub(2, 3);
    const held = await holdJoins(room, (request, join) => {
      if (request.user === first) return (gate) => gate.then(() => join(request));
      if (request.user === second) return () => Promise.reject(new Error("a storage failure, as a test makes one"));
      return undefined;
    });
    try {
      const [a, b, c] = await Promise.all([first, second, third].map((user) => openUser(user)));
      a!.client.send({ type: "subscribe", room, id: "a" });
      await expect.poll(() => joiningAt(2, room)).toEqual({ [first!]: 1 });
      b!.client.send({ type: "subscribe", room, id: "b" });
      c!.client.send({ type: "subscribe", room, id: "c" });
      await expect.poll(() => joiningAt(2, room)).toEqual({ [first!]: 1, [second!]: 1, [third!]: 1 });
      held.release();
      expect(await b!.client.json()).toMatchObject({ type: "error", code: "internal", id: "b" });
      expect(await a!.client.nextOf("subscribed")).toMatchObject({ id: "a" });
      expect(await c!.client.nextOf("subscribed")).toMatchObject({ id: "c", users: 2 });
      expect(await info(room)).toMatchObject({ connections: 2, users: 2 });
      // The refused socket stays open and can subscribe once the Room takes its join again.
      held.restore();
      expect(await subscribe(b!.client, room, { id: "again" })).toMatchObject({ id: "again", users: 3 });
    } finally {
      held.restore();
    }
  });

  it("let a publish sent right after its socket's subscribe wait for it: the socket hears its echo", async () => {
    const room = freshRoom();
    const [first, second] = usersOnHub(3, 2);
    const held = await holdFirstJoin(room, first!);
    try {
      const b = await openUser(second);
      b.client.send({ type: "subscribe", room, id: "s" });
      b.client.send({ type: "publish", room, data: "mine", id: "p" });
      await expect.poll(() => joiningAt(3, room)).toEqual({ [first!]: 1, [second!]: 1 });
      // Time for the publish to reach the Room, were it not waiting (only then can this fail).
      await new Promise((resolve) => setTimeout(resolve, 300));
      held.release();
      expect(await b.client.json()).toMatchObject({ type: "subscribed", id: "s", seq: 0 });
      const next = [await b.client.json(), await b.client.json()];
      expect(next).toContainEqual(expect.objectContaining({ type: "message", room, seq: 1, data: "mine", id: "p" }));
      expect(next).toContainEqual({ type: "ack", id: "p", status: "delivered", seq: 1 });
    } finally {
      held.restore();
    }
  });
});
