// A call that reaches an object as it resets itself is made once more (src/objects/reset.ts);
// the reset itself is seen from outside in test/e2e/heartbeat.test.ts.
import { describe, expect, it } from "vitest";
import { againIfReset, RESET_REASON, wasReset } from "../../src/objects/reset";

/** A call that fails with `errors` in turn, then answers "done"; and how often it was made. */
function failing(...errors: Error[]): { call: () => Promise<string>; calls: () => number } {
  let calls = 0;
  return {
    call: async () => {
      const error = errors[calls++];
      if (error) throw error;
      return "done";
    },
    calls: () => calls,
  };
}

describe("againIfReset", () => {
  it("makes a call once more when its object was resetting, as the caller sees that error", async () => {
    // Across objects the error arrives as a new Error carrying the reason as its message.
    const reset = failing(new Error(`Error: ${RESET_REASON}`));
    expect(await againIfReset(reset.call)).toBe("done");
    expect(reset.calls()).toBe(2);
  });

  it("does not repeat other failures, nor a second reset", async () => {
    const other = failing(new Error("no such room"));
    await expect(againIfReset(other.call)).rejects.toThrow("no such room");
    expect(other.calls()).toBe(1);
    const twice = failing(new Error(RESET_REASON), new Error(RESET_REASON));
    await expect(againIfReset(twice.call)).rejects.toSatisfy(wasReset);
    expect(twice.calls()).toBe(2);
  });
});
