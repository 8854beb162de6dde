// The Room's half of a holder's roster queue (roster-calls.ts `applyRosterChanges`): each change
// answered on its own and in order, and no answer too big to cross to another object.
import { describe, expect, it } from "vitest";
import type { Admission, JoinRequest, RosterChange } from "../../src/objects/feed";
import { infoText } from "../../src/objects/pusher-sockets";
import { applyRosterChanges } from "../../src/objects/roster-calls";

const MI = 1024 * 1024;

function joinOf(user: string, since?: number): RosterChange {
  return { join: { holder: "users-0", user, connection: `c-${user}`, connections: 1, ...(since !== undefined && { since }) } };
}

/** A Room whose join answers `replayOf(request)` as the replay, and which records what it did. */
function fakeRoom(replayOf: (request: JoinRequest) => string[] = () => []) {
  const done: string[] = [];
  return {
    done,
    join: async (request: JoinRequest): Promise<Admission> => {
      if (request.user === "broken") throw new Error("storage failed");
      done.push(`join ${request.user}`);
      return { seq: 7, epoch: "e", mark: 1, users: 1, replay: replayOf(request), ...(request.since !== undefined && { recovered: true }) };
    },
    count: async (user: string, connections: number) => void done.push(`count ${user} ${connections}`),
    failed: () => {},
  };
}

describe("applyRosterChanges", () => {
  it("applies changes in order and answers each: a join its admission, a count null, one that throws failed", async () => {
    const room = fakeRoom();
    const answers = await applyRosterChanges([joinOf("a"), { count: { user: "a", connections: 0 } }, joinOf("broken"), joinOf("b")], room);
    expect(room.done).toEqual(["join a", "count a 0", "join b"]);
    expect(answers.map((answer) => (answer === null ? null : "failed" in answer ? "failed" : "seq" in answer ? "admitted" : "refused"))).toEqual([
      "admitted",
      null,
      "failed",
      "admitted",
    ]);
  });

  it("takes no more changes once its answers pass 4 Mi characters: the holder sends the rest again", async () => {
    const room = fakeRoom(() => ["x".repeat(3 * MI)]);
    const answers = await applyRosterChanges([joinOf("a", 0), joinOf("b", 0), joinOf("c", 0), { count: { user: "a", connections: 0 } }], room);
    expect(answers).toHaveLength(2);
    expect(room.done).toEqual(["join a", "join b"]);
  });

  it("answers a resume whose replay passes 8 Mi characters recovered false, with no replay; the join stands", async () => {
    const room = fakeRoom(() => Array.from({ length: 9 }, () => "x".repeat(MI)));
    const [resume] = await applyRosterChanges([joinOf("a", 0)], room);
    expect(resume).toMatchObject({ seq: 7, recovered: false, replay: [] });
    const [cached] = await applyRosterChanges([joinOf("b")], room);
    expect(cached).toMatchObject({ seq: 7, replay: [] });
    expect(cached).not.toHaveProperty("recovered");
    expect(room.done).toEqual(["join a", "join b"]);
  });

  it("counts a presence channel's user_infos in those 8 Mi: a resume with both past it goes without its replay", async () => {
    const infos = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`u${i}`, JSON.stringify("y".repeat(64 * 1024))]));
    const room = fakeRoom(() => Array.from({ length: 6 }, () => "x".repeat(MI)));
    const join = room.join;
    room.join = async (request) => ({ ...(await join(request)), presence: [{ user: "a", connections: 1 }], infoTexts: infos });
    const [resume] = await applyRosterChanges([joinOf("a", 0)], room);
    expect(resume).toMatchObject({ recovered: false, replay: [], infoTexts: infos });
    const [small] = await applyRosterChanges([joinOf("b", 0)], { ...room, join });
    expect(small).toMatchObject({ recovered: true });
    expect((small as Admission).replay).toHaveLength(6);
  });
});

describe("a presence member's user_info in a join's answer", () => {
  const base = { seq: 1, epoch: "e", mark: 1, users: 2, replay: [] };

  it("is taken as the JSON text a Room sends, or written from the values a Room on older code sends", () => {
    const current: Admission = { ...base, infoTexts: { alice: '{"name": "Alice"}' } };
    expect([infoText(current, "alice"), infoText(current, "bob")]).toEqual(['{"name": "Alice"}', undefined]);
    const older: Admission = { ...base, infos: { alice: { name: "Alice" }, quiet: null } };
    expect([infoText(older, "alice"), infoText(older, "quiet"), infoText(older, "bob")]).toEqual(['{"name":"Alice"}', "null", undefined]);
    expect(infoText({ ...base, infoTexts: {} }, "__proto__")).toBeUndefined();
  });
});
