// What every socket-holding object does the same way, run against Room and Inbox alike: the
// behaviour lives once in SocketHost, so it is specified once here.
import { expect, it } from "vitest";
import type { TestClient } from "../support/client";

export interface SocketKind {
  /** Opens a fresh socket of this kind and reads past its welcome. */
  open(): Promise<TestClient>;
  /** A valid frame, and a test that tells its answer. */
  probe: object;
  answered(frame: Record<string, any>): boolean;
}

async function expectAnswered(kind: SocketKind, client: TestClient): Promise<void> {
  client.send(kind.probe);
  for (;;) {
    const frame = await client.json();
    if (kind.answered(frame)) return;
    expect(frame.type).not.toBe("error");
  }
}

/** Bad input and abuse limits; needs MAX_MESSAGE_BYTES=1024 and RATE_LIMIT_PER_SECOND=5. */
export function itHandlesBadInputAndLimits(kind: SocketKind): void {
  it.each([
    ["malformed JSON", "{nope", "bad_json"],
    ["a JSON array", "[1,2]", "bad_frame"],
    ["a JSON string", '"hello"', "bad_frame"],
    ["a frame without type", '{"data":1}', "bad_frame"],
    ["an unknown type", '{"type":"shout","data":1}', "bad_frame"],
    ["publish without data", '{"type":"publish"}', "bad_frame"],
    ["a numeric id", '{"type":"publish","data":1,"id":5}', "bad_frame"],
    ["a direct to an invalid user id", '{"type":"direct","to":"a/b","data":1}', "bad_frame"],
    ["an ack with a negative seq", '{"type":"ack","seq":-1}', "bad_frame"],
  ])("answers %s with error %s and keeps the socket open", async (_, text, code) => {
    const client = await kind.open();
    client.send(text);
    expect(await client.json()).toMatchObject({ type: "error", code, message: expect.any(String) });
    await expectAnswered(kind, client);
  });

  it("echoes the frame's id on errors", async () => {
    const client = await kind.open();
    client.send({ type: "publish", id: "abc" });
    expect(await client.json()).toMatchObject({ type: "error", code: "bad_frame", id: "abc" });
  });

  it("refuses oversized frames, and closes 1009 on the third within 10 s", async () => {
    const client = await kind.open();
    const big = JSON.stringify({ type: "publish", data: "x".repeat(1100) });
    client.send(big);
    expect(await client.json()).toMatchObject({ type: "error", code: "too_large" });
    client.send(big);
    expect(await client.json()).toMatchObject({ type: "error", code: "too_large" });
    client.send(big);
    expect((await client.closed).code).toBe(1009);
  });

  it("counts multi-byte characters in bytes, not characters", async () => {
    const client = await kind.open();
    client.send(JSON.stringify({ type: "publish", data: "é".repeat(500) })); // ~1030 bytes
    expect(await client.json()).toMatchObject({ type: "error", code: "too_large" });
  });

  it("drops frames over the rate with one error a second, then closes 1008", async () => {
    const client = await kind.open();
    // Bucket of 10 (2 x 5/s): 10 pass, then drops; more than 10 drops within 10 s closes.
    for (let i = 0; i < 25; i++) client.send(kind.probe);
    const closed = await client.closed;
    expect(closed.code).toBe(1008);
    const frames = client.pending as Record<string, any>[];
    const errors = frames.filter((frame) => frame.type === "error");
    expect(errors).toEqual([expect.objectContaining({ code: "rate_limited" })]);
  });

  it("exempts ping from the rate limit", async () => {
    const client = await kind.open();
    for (let i = 0; i < 30; i++) client.send("ping");
    for (let i = 0; i < 30; i++) expect(await client.next()).toBe("pong");
    await expectAnswered(kind, client);
  });

  it("answers the client's close with the same code", async () => {
    const client = await kind.open();
    expect(await client.close(4321, "done")).toMatchObject({ code: 4321 });
  });
}
