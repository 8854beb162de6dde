import { exports } from "cloudflare:workers";
import { sign } from "hono/jwt";
import { describe, expect, it } from "vitest";
import { EventReader } from "../support/sse";
import { freshRoom, ORIGIN } from "../workers/connect";

describe("event streams and token expiry", () => {
  it("ends a stream when its token's exp passes, as sockets are closed 4001", async () => {
    // Two seconds ahead: the test's clock and the Worker's advance only with I/O, so they differ a little.
    const exp = Math.floor(Date.now() / 1000) + 2;
    const token = await sign({ sub: "reader", exp }, "liveness-secret", "HS256");
    const res = await exports.default.fetch(new Request(`${ORIGIN}/rooms/${freshRoom()}/events?token=${token}`));
    expect(res.status, await res.clone().text()).toBe(200);
    const stream = new EventReader(res.body!);
    expect(await stream.next()).toMatchObject({ event: "welcome" });
    await expect(stream.next(6_000)).rejects.toThrow("the event stream ended");
  });
});
