import { describe, expect, it } from "vitest";
import { COUNT_EVERY_MS, OncePerSecond } from "../../src/objects/count-frames";
import { OversizeCounter, RateLimiter, withinReplayBudget } from "../../src/objects/limits";
import type { Session } from "../../src/objects/session";
import { Batches, Streams } from "../../src/objects/links";
import {
  closeReason,
  dataProblem,
  decodeClientFrame,
  FrameError,
  isOversized,
  isPusherSubscription,
  historyPieces,
  messageText,
  sseEvent,
  pusherEventText,
  MAX_DATA_DEPTH,
  NOT_FINITE,
  TOO_DEEP,
  toPusher,
  CloseCode,
  pusherCloseCode,
  sendableCloseCode,
  subscriptionSucceeded,
  utf8Length,
} from "../../src/protocol";

function refusal(text: string): { code: string; id?: string } {
  try {
    decodeClientFrame(text);
  } catch (error) {
    if (error instanceof FrameError) return { code: error.code, ...(error.id !== undefined && { id: error.id }) };
    throw error;
  }
  throw new Error(`decoded: ${text}`);
}

describe("decodeClientFrame", () => {
  it("decodes publish with any JSON data, including null and false", () => {
    expect(decodeClientFrame('{"type":"publish","data":null}')).toEqual({ type: "publish", data: null });
    expect(decodeClientFrame('{"type":"publish","data":false,"id":"a","room":"r1"}')).toEqual({
      type: "publish",
      data: false,
      id: "a",
      room: "r1",
    });
  });

  it("decodes direct and ack", () => {
    expect(decodeClientFrame('{"type":"direct","to":"bob","data":{"x":1}}')).toEqual({
      type: "direct",
      to: "bob",
      data: { x: 1 },
    });
    expect(decodeClientFrame('{"type":"ack","seq":0}')).toEqual({ type: "ack", seq: 0 });
  });

  it("reads a seq past 2^53 - 1 as 2^53 - 1, as a URL's since", () => {
    expect(decodeClientFrame('{"type":"ack","seq":1e20}')).toEqual({ type: "ack", seq: Number.MAX_SAFE_INTEGER });
    expect(decodeClientFrame('{"type":"subscribe","room":"r","since":9007199254740992}')).toMatchObject({ since: Number.MAX_SAFE_INTEGER });
  });

  it.each([
    ["", "bad_json"],
    ["null", "bad_frame"],
    ["123", "bad_frame"],
    ['{"type":7}', "bad_frame"],
    ['{"type":"direct","to":"no spaces","data":1}', "bad_frame"],
    ['{"type":"direct","data":1}', "bad_frame"],
    ['{"type":"ack","seq":-1}', "bad_frame"],
    ['{"type":"ack","seq":1.5}', "bad_frame"],
    ['{"type":"ack","seq":"3"}', "bad_frame"],
    ['{"type":"publish","data":1,"room":"../x"}', "bad_frame"],
    ['{"type":"publish","data":1,"id":""}', "bad_frame"],
  ])("refuses %j with %s", (text, code) => {
    expect(refusal(text).code).toBe(code);
  });

  it("takes data nested MAX_DATA_DEPTH levels, arrays and objects alike, and refuses one level more", () => {
    const objects = (levels: number) => '{"a":'.repeat(levels - 1) + "{}" + "}".repeat(levels - 1);
    const arrays = (levels: number) => "[".repeat(levels) + "]".repeat(levels);
    for (const nested of [objects, arrays]) {
      expect(decodeClientFrame(`{"type":"publish","data":${nested(MAX_DATA_DEPTH)}}`)).toMatchObject({ type: "publish" });
      expect(refusal(`{"type":"direct","to":"bob","data":${nested(MAX_DATA_DEPTH + 1)},"id":"d"}`)).toEqual({ code: "bad_frame", id: "d" });
    }
    expect(dataProblem([{ a: [1, "x", null] }], 3)).toBeUndefined();
    expect(dataProblem([{ a: [[]] }], 3)).toBe(TOO_DEEP);
  });

  it("refuses data with a number too large for a double, which would reach everyone as null", () => {
    expect(refusal('{"type":"publish","data":{"n":[1e400]},"id":"big"}')).toEqual({ code: "bad_frame", id: "big" });
    expect(refusal('{"type":"publish","data":-1e400}').code).toBe("bad_frame");
    expect(dataProblem({ n: 1e308, m: 2 ** 60 })).toBeUndefined(); // large, but a double carries them
    expect(dataProblem(JSON.parse("[1e400]"))).toBe(NOT_FINITE);
  });

  it("keeps the client id on refusals of a frame that has one", () => {
    expect(refusal('{"type":"direct","to":"a b","data":1,"id":"m7"}')).toEqual({ code: "bad_frame", id: "m7" });
  });
});

describe("sizes", () => {
  it("counts UTF-8 bytes, including surrogate pairs and lone surrogates", () => {
    expect(utf8Length("abc")).toBe(3);
    expect(utf8Length("é")).toBe(2);
    expect(utf8Length("€")).toBe(3);
    expect(utf8Length("😀")).toBe(4);
    expect(utf8Length("\ud800")).toBe(3);
    expect(utf8Length("a😀é")).toBe(new TextEncoder().encode("a😀é").length);
  });

  it("judges oversize by bytes for text and binary", () => {
    expect(isOversized("x".repeat(10), 10)).toBe(false);
    expect(isOversized("x".repeat(11), 10)).toBe(true);
    expect(isOversized("é".repeat(6), 10)).toBe(true);
    expect(isOversized(new ArrayBuffer(11), 10)).toBe(true);
  });
});

describe("limits", () => {
  it("lets resumes replay 16 Mi characters per socket in 10 s, and a cache channel's one event past that", () => {
    const session = {} as Session;
    const big = "x".repeat(9 * 1024 * 1024);
    const resume = { replay: [big], recovered: true };
    expect(withinReplayBudget(session, resume)).toBe(resume);
    expect(withinReplayBudget(session, resume)).toEqual({ replay: [], recovered: false }); // 18 Mi: spent
    const cached = { replay: [big] }; // no `recovered`: not a resume
    expect(withinReplayBudget(session, cached)).toBe(cached);
  });

  it("accepts a burst of twice the rate, then drops, telling at most once a second", () => {
    const limiter = new RateLimiter(5, 0);
    for (let i = 0; i < 10; i++) expect(limiter.take(0)).toBe("accept");
    expect(limiter.take(0)).toBe("drop-and-tell");
    expect(limiter.take(1)).toBe("drop");
    expect(limiter.take(1001)).toBe("accept"); // refilled 5 tokens
  });

  it("takes a burst of its own size when given one (Pusher subscribes), refilling at the rate", () => {
    const limiter = new RateLimiter(5, 0, 200);
    for (let i = 0; i < 200; i++) expect(limiter.take(0)).toBe("accept");
    expect(limiter.take(0)).toBe("drop-and-tell");
    expect(limiter.take(1000)).toBe("accept");
    expect(isPusherSubscription('{"event":"pusher:subscribe","data":{"channel":"c"}}')).toBe(true);
    expect(isPusherSubscription('{"data":{"channel":"c"},"event":"pusher:unsubscribe"}')).toBe(true);
    expect(isPusherSubscription('{"event":"client-x","channel":"private-c","data":{"event":"pusher:subscribe"}}')).toBe(false);
  });

  it("tells of drops at least 1.05 s apart, so no two errors reach a client within a second", () => {
    const limiter = new RateLimiter(10, 0);
    for (let i = 0; i < 20; i++) limiter.take(0);
    expect(limiter.take(0)).toBe("drop-and-tell");
    // A second later the bucket holds 10 again: spent, the next frame is dropped untold.
    for (let i = 0; i < 10; i++) expect(limiter.take(1000)).toBe("accept");
    expect(limiter.take(1000)).toBe("drop");
    expect(limiter.take(1049)).toBe("drop");
    expect(limiter.take(1050)).toBe("drop-and-tell");
  });

  it("closes once more than twice the rate was dropped within 10 s", () => {
    const limiter = new RateLimiter(2, 0);
    for (let i = 0; i < 4; i++) limiter.take(0);
    const verdicts = Array.from({ length: 5 }, () => limiter.take(0));
    expect(verdicts).toEqual(["drop-and-tell", "drop", "drop", "drop", "close"]);
  });

  it("forgets drops older than 10 s", () => {
    const limiter = new RateLimiter(1, 0);
    limiter.take(0);
    limiter.take(0);
    expect(limiter.take(0)).toBe("drop-and-tell");
    expect(limiter.take(0)).toBe("drop");
    expect(limiter.take(10_000.5)).toBe("accept");
  });

  it("closes on the third oversized frame within 10 s, not on three spread wider", () => {
    const counter = new OversizeCounter();
    expect([counter.add(0), counter.add(5_000), counter.add(11_000)]).toEqual([false, false, false]);
    expect(counter.add(12_000)).toBe(true);
  });
});

describe("counts told at most once a second", () => {
  /** A teller that tells what its hearers do not hold, as the Pusher subscription count does. */
  const news = (told: number[]) => (n: number, heard: number) => n !== heard && told.push(n) > 0;

  it("tells a change at once, holds the next back to the second's end, skips a repeat unless told to forget", async () => {
    let value = 1;
    const told: number[] = [];
    const counts = new OncePerSecond(() => value, news(told));
    counts.changed();
    expect(told).toEqual([1]);
    value = 2;
    counts.changed();
    value = 3; // changes while held back: the count at the second's end goes out
    counts.changed();
    expect(told).toEqual([1]);
    await expect.poll(() => told, { timeout: 10_000 }).toEqual([1, 3]);
    await new Promise((resolve) => setTimeout(resolve, COUNT_EVERY_MS + 100));
    counts.changed(); // still 3: nothing to say
    expect(told).toEqual([1, 3]);
    counts.forget();
    counts.changed(); // the same number, said again for someone who has not heard it
    expect(told).toEqual([1, 3, 3]);
  });

  it("weighs a held-back count against what join and leave frames told since, and never tells it early", async () => {
    let value = 4;
    const told: number[] = [];
    const counts = new OncePerSecond(() => value, news(told));
    counts.changed();
    value = 3;
    counts.changed(); // held back to the second's end
    value = 2;
    counts.shift(-1); // a leave frame went out: clients that heard 4 now hold 3
    expect(told).toEqual([4]);
    await expect.poll(() => told, { timeout: 10_000 }).toEqual([4, 2]);
    await new Promise((resolve) => setTimeout(resolve, COUNT_EVERY_MS + 100));
    value = 3;
    counts.shift(1); // a join frame: clients hold 3, as the room has
    counts.changed();
    expect(told).toEqual([4, 2]);
  });
});

describe("close frames", () => {
  it("never echoes a reserved close code", () => {
    expect(sendableCloseCode(1006)).toBe(1000);
    expect(sendableCloseCode(1005)).toBe(1000);
    expect(sendableCloseCode(4000)).toBe(4000);
    expect(sendableCloseCode(2000)).toBe(1000);
  });

  it("gives Pusher clients Pusher's codes, each with the reconnect pusher-js should make", () => {
    const pusher = Object.fromEntries(Object.entries(CloseCode).map(([name, code]) => [name, pusherCloseCode(code)]));
    // 4100-4199: back off, then reconnect; 4200-4299: reconnect now; 4300-4399: give up.
    expect(pusher).toEqual({ normal: 1000, policy: 4301, tooLarge: 4301, internal: 4200, tooSlow: 4100, heartbeatTimeout: 4201, tokenExpired: 4001 });
  });

  it("cuts close reasons to 123 bytes without splitting a character", () => {
    const reason = closeReason("é".repeat(100));
    expect(new TextEncoder().encode(reason).length).toBeLessThanOrEqual(123);
    expect(reason).toBe("é".repeat(61));
  });
});

describe("message frames and Pusher events", () => {
  it("writes a message frame's text as JSON.stringify writes the frame, whatever its strings", () => {
    for (const [room, from, id] of [["r", "server", undefined], ["presence-a;b=c@d,e.f", 'a "quoted"\\ user é', "id-\u2028"]] as const) {
      const data = { text: "hé\n", n: [1, 2.5, null] };
      const frame = { type: "message", room, seq: 42, from, data, ts: 1_700_000_000_123, ...(id !== undefined && { id }) };
      expect(messageText(room, 42, from, JSON.stringify(data), id, 1_700_000_000_123)).toBe(JSON.stringify(frame));
    }
  });

  it("cuts history's body into pieces of about the size asked, never inside a frame", () => {
    const frames = ["a".repeat(5), "b".repeat(5), "c".repeat(20), "d"];
    const pieces = historyPieces(frames, 16);
    expect(pieces.join("")).toBe(`{"messages":[${frames.join(",")}]}`);
    expect(pieces).toEqual([`{"messages":[`, "aaaaa,bbbbb", `,${"c".repeat(20)}`, ",d]}"]);
    expect(historyPieces([])).toEqual([`{"messages":[]}`]);
  });

  it("writes an event stream's data one line to a data: field, whatever the line breaks", () => {
    expect(sseEvent("message", '{"a":\n1,\r\n"b":\r2}', 7)).toBe('id: 7\nevent: message\ndata: {"a":\ndata: 1,\ndata: "b":\ndata: 2}\n\n');
    expect(sseEvent("welcome", "{}")).toBe("event: welcome\ndata: {}\n\n");
  });

  it("hands Pusher clients a REST event's payload as it was sent, and re-encodes only what was not stored so", () => {
    const sent = '{"a": 1,  "big": 12345678901234567890, "n": 1.50, "2": "x", "s": "\\u00e9"}';
    const frame = messageText("ch", 3, "server", pusherEventText("ev", sent), undefined, 1);
    expect(JSON.parse(frame).data.data).toEqual(JSON.parse(sent)); // the same value for a room socket
    expect(JSON.parse(toPusher(frame)!)).toEqual({ event: "ev", channel: "ch", data: sent, seq: 3 });
    // The same data from a room socket, and frames of any other layout, are written from their values.
    const published = messageText("ch", 4, "u", JSON.stringify({ event: "ev", data: { b: [1, 2] }, extra: true }), "m1", 2);
    expect(JSON.parse(toPusher(published)!).data).toBe('{"b":[1,2]}');
    const reordered = JSON.stringify({ seq: 5, type: "message", room: "ch", from: "u", data: { event: "ev", data: { c: 1 } }, ts: 3 });
    expect(JSON.parse(toPusher(reordered)!).data).toBe('{"c":1}');
  });
});

describe("Pusher presence frames", () => {
  const join = (user: string) => JSON.stringify({ type: "presence", room: "presence-team", event: "join", user });
  const data = (text: string | undefined) => JSON.parse(JSON.parse(text!).data);

  it("announces a member with its user_info, and one that has none without the field", () => {
    expect(data(toPusher(join("alice"), { name: "Alice" }))).toEqual({ user_id: "alice", user_info: { name: "Alice" } });
    expect(data(toPusher(join("relay-user")))).toEqual({ user_id: "relay-user" });
    expect(data(toPusher(join("bare"), null))).toEqual({ user_id: "bare" });
  });

  it("lists members with their user_info as stored, odd ids and quotes included, and null for those without", () => {
    const info = JSON.stringify({ name: 'Bob "the" builder', tags: ["a", "é"] });
    const members = [{ user: "bob", info }, { user: "__proto__", info: "42" }, { user: 'say "hi"' }, { user: "7" }];
    const frame = JSON.parse(subscriptionSucceeded("presence-team", 3, "e", members, 9));
    expect(frame).toMatchObject({ event: "pusher_internal:subscription_succeeded", channel: "presence-team", seq: 3, epoch: "e" });
    const { presence } = JSON.parse(frame.data);
    expect(presence.ids).toEqual(["bob", "__proto__", 'say "hi"', "7"]);
    expect(presence.count).toBe(9);
    expect(Object.entries(presence.hash)).toEqual(
      expect.arrayContaining([["bob", JSON.parse(info)], ["__proto__", 42], ['say "hi"', null], ["7", null]]),
    );
    expect(Object.keys(presence.hash)).toHaveLength(4);
    expect(JSON.parse(JSON.parse(subscriptionSucceeded("public", 0, "e")).data)).toEqual({});
  });
});

describe("streams between objects", () => {
  it("splits what waits for one target into calls of at most 8 Mi characters, one entry at least", async () => {
    const calls: number[][] = [];
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const streams = new Streams<string>(
      async (_target, entries) => {
        calls.push(entries.map((entry) => entry.length));
        await gate;
      },
      { sizeOf: (entry) => entry.length },
    );
    const mi = 1024 * 1024;
    streams.push("hub", ["first"]); // goes out at once; the rest wait for its answer
    streams.push("hub", ["a".repeat(3 * mi), "b".repeat(3 * mi), "c".repeat(3 * mi), "d".repeat(9 * mi), "e"]);
    release();
    await expect.poll(() => calls.length).toBe(5);
    // 9 Mi alone is over the budget, but a call carries one entry at least.
    expect(calls).toEqual([[5], [3 * mi, 3 * mi], [3 * mi], [9 * mi], [1]]);
  });

  it("drops the oldest entries queued for a stalled target past 32 Mi characters, never the newest", async () => {
    const { promise: gate, resolve: release } = Promise.withResolvers<void>();
    const calls: number[][] = [];
    const dropped: string[] = [];
    const streams = new Streams<string>(
      async (_target, entries) => {
        calls.push(entries.map((entry) => entry.length));
        await gate;
      },
      { sizeOf: (entry) => entry.length, dropped: (entries) => dropped.push(...entries.map((entry) => entry.slice(-2))) },
    );
    const mi = 1024 * 1024;
    streams.push("hub", ["first"]); // out at once; the target does not answer
    for (let i = 10; i < 50; i++) streams.push("hub", [String(i).padStart(mi, "x")]); // 1 Mi each
    expect(dropped).toEqual(["10", "11", "12", "13", "14", "15", "16", "17"]);
    streams.push("hub", ["y".repeat(40 * mi)]); // over the bound alone: everything before it goes
    expect(dropped).toHaveLength(40);
    release();
    await expect.poll(() => calls.length).toBe(2);
    expect(calls).toEqual([[5], [40 * mi]]);
  });

  it("sizes batched calls by what each push names, and answers each item of every call", async () => {
    const { promise: gate, resolve: release } = Promise.withResolvers<void>();
    const calls: string[][] = [];
    const batches = new Batches<string, string>(async (_target, items) => {
      calls.push(items);
      await gate;
      return items.map((item) => `got ${item}`);
    });
    const mi = 1024 * 1024;
    const answers = [batches.push("inbox", "first", 5)]; // goes out at once; the rest wait for its answer
    for (const item of ["a", "b", "c", "d"]) answers.push(batches.push("inbox", item, 3 * mi));
    release();
    expect(await Promise.all(answers)).toEqual(["got first", "got a", "got b", "got c", "got d"]);
    // Small items, but pushed as 3 Mi each (a direct's frame length): two a call at 8 Mi.
    expect(calls).toEqual([["first"], ["a", "b"], ["c", "d"]]);
  });
});
