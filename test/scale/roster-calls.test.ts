// A hub's joins and counts to one room go in one ordered queue, many in one call while a call is
// out (holder.ts `#rosterCalls`, Room `changeRoster`; docs/design.md "Joining, counting and
// presence"). A join held at the Room makes the queue: the changes after it wait and go together.
import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { hubFor } from "../../src/objects/connect";
import { freshRoom, freshUser, holdJoins, info, openUser, subscribe } from "./connect";

/**
 * `count` fresh user ids whose sockets land on hub `users-<hub>` (it holds 3: SOCKETS_PER_OBJECT).
 * Each test takes a hub of its own, since the sockets of one before it may still be open.
 */
function usersOnHub(hub: number, count: number): string[] {
  const users: string[] = [];
  while (users.length < count) {
    const user = freshUser();
    if (hubFor(user, 4) === `users-${hub}`) users.push(user);
  }
  return users;
}

/** Records how many changes each call to `room`'s changeRoster carried, until `restore()`. */
async function recordCalls(room: string): Promise<{ sizes: number[]; restore: () => void }> {
  const sizes: number[] = [];
  const restore = await runInDurableObject(env.ROOMS.getByName(room), (instance) => {
    const roomClass = Object.getPrototypeOf(instance) as typeof instance;
    const changeRoster = roomClass.changeRoster;
    roomClass.changeRoster = function (this: typeof instance, holder, changes) {
      if (this.ctx.id.name === room) sizes.push(changes.length);
      return changeRoster.call(this, holder, changes);
    };
    return () => void (roomClass.changeRoster = changeRoster);
  });
  return { sizes, restore };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("a hub's joins and counts to one room", () => {
  it("go in one call while one is out, each answered with its own welcome state", async () => {
    const room = freshRoom();
    const [first, second, third] = usersOnHub(0, 3);
    const held = await holdJoins(room, (request, join) => (request.user === first ? (gate) => gate.then(() => join(request)) : undefined));
    const calls = await recordCalls(room);
    try {
      const sockets = await Promise.all([first, second, third].map((user) => openUser(user)));
      sockets[0]!.client.send({ type: "subscribe", room, id: "a" });
      await pause(100); // the first join is at the Room, held
      for (const [i, { client }] of sockets.entries()) if (i > 0) client.send({ type: "subscribe", room, id: `s${i}` });
      await pause(100); // the other two wait at the hub
      held.release();
      const answers = await Promise.all(sockets.map(({ client }) => client.nextOf("subscribed")));
      expect(answers.map(({ id, users }) => [id, users])).toEqual([
        ["a", 1],
        ["s1", 2],
        ["s2", 3],
      ]);
      expect(calls.sizes).toEqual([1, 2]);
      expect(await info(room)).toMatchObject({ connections: 3, users: 3 });
    } finally {
      held.restore();
      calls.restore();
    }
  });

  it("keep their order: a subscribe and its unsubscribe queued together count the socket out", async () => {
    const room = freshRoom();
    const [first, second] = usersOnHub(1, 2);
    const held = await holdJoins(room, (request, join) => (request.user === first ? (gate) => gate.then(() => join(request)) : undefined));
    try {
      const a = await openUser(first);
      const b = await openUser(second);
      a.client.send({ type: "subscribe", room, id: "a" });
      await pause(100);
      b.client.send({ type: "subscribe", room, id: "in" });
      b.client.send({ type: "unsubscribe", room, id: "out" });
      await pause(100);
      held.release();
      expect(await a.client.nextOf("subscribed")).toMatchObject({ id: "a" });
      expect(await b.client.nextOf("subscribed")).toMatchObject({ id: "in" });
      expect(await b.client.nextOf("unsubscribed")).toMatchObject({ id: "out" });
      await expect.poll(() => info(room)).toMatchObject({ connections: 1, users: 1, presence: [{ user: first, connections: 1 }] });
    } finally {
      held.restore();
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
      await pause(100);
      b!.client.send({ type: "subscribe", room, id: "b" });
      c!.client.send({ type: "subscribe", room, id: "c" });
      await pause(100);
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
});
