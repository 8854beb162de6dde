// Property: the frame decoder is total. Every input either decodes to a well-formed frame or is
// refused with one documented code; nothing else is ever thrown.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeClientFrame, FrameError, isValidName, isValidRoom, MAX_CLIENT_ID_LENGTH, type ClientFrame } from "../../src/protocol";

function outcome(text: string): ClientFrame | FrameError {
  try {
    return decodeClientFrame(text);
  } catch (error) {
    if (error instanceof FrameError) return error;
    throw new Error(`decoder threw ${String(error)} for ${JSON.stringify(text).slice(0, 200)}`);
  }
}

function expectWellFormed(result: ClientFrame | FrameError): void {
  if (result instanceof FrameError) {
    expect(["bad_json", "bad_frame"]).toContain(result.code);
    expect(result.message.length).toBeGreaterThan(0);
    return;
  }
  if (result.type !== "ack" && result.id !== undefined) {
    expect(result.id.length).toBeGreaterThan(0);
    expect(result.id.length).toBeLessThanOrEqual(MAX_CLIENT_ID_LENGTH);
  }
  switch (result.type) {
    case "publish":
      expect(result.data).not.toBeUndefined();
      if ("room" in result && result.room !== undefined) expect(isValidRoom(result.room)).toBe(true);
      return;
    case "direct":
      expect(result.data).not.toBeUndefined();
      expect(isValidName(result.to)).toBe(true);
      return;
    case "ack":
      expect(Number.isSafeInteger(result.seq) && result.seq >= 0).toBe(true);
      return;
    case "subscribe":
    case "unsubscribe":
      expect(isValidRoom(result.room)).toBe(true);
      return;
    default:
      throw new Error(`unexpected frame ${JSON.stringify(result)}`);
  }
}

// Frames shaped like real ones, with every field drawn from anything JSON can hold.
const anyJson = fc.jsonValue({ maxDepth: 4 });
const field = fc.oneof(anyJson, fc.string(), fc.integer(), fc.constant(undefined));
const frameLike = fc.record(
  {
    type: fc.oneof(fc.constantFrom("publish", "direct", "ack", "PUBLISH", ""), anyJson),
    data: field,
    id: field,
    room: field,
    to: field,
    seq: fc.oneof(fc.integer(), fc.double(), fc.string(), fc.constant(-1)),
  },
  { requiredKeys: [] },
);

describe("decodeClientFrame", () => {
  it("decodes or refuses with a documented code any string", () => {
    fc.assert(fc.property(fc.string({ unit: "binary", maxLength: 300 }), (text) => expectWellFormed(outcome(text))), {
      numRuns: 2_000,
    });
  });

  it("decodes or refuses with a documented code any JSON value", () => {
    fc.assert(fc.property(anyJson, (value) => expectWellFormed(outcome(JSON.stringify(value)))), { numRuns: 2_000 });
  });

  it("decodes or refuses with a documented code frames with fields of any type", () => {
    fc.assert(fc.property(frameLike, (frame) => expectWellFormed(outcome(JSON.stringify(frame)))), { numRuns: 3_000 });
  });

  it("decodes or refuses deeply nested data without throwing", () => {
    const depth = 5_000;
    const nested = "[".repeat(depth) + "]".repeat(depth);
    expectWellFormed(outcome(`{"type":"publish","data":${nested}}`));
    expectWellFormed(outcome("[".repeat(depth)));
  });
});
