// Cross-origin browsers (docs/protocol.md "Cross-origin browsers"): with ALLOWED_ORIGINS empty,
// every HTTP route lets any page read its answers, refusals included.
import { describe, expect, it } from "vitest";
import { freshRoom, request } from "./connect";

const PAGE = { Origin: "https://app.example" };
const KEY = { Authorization: "Bearer test-api-key" };

describe("CORS with any origin allowed", () => {
  it("answers a preflight with the methods and the Authorization header allowed", async () => {
    const res = await request(`/rooms/${freshRoom()}/messages`, {
      method: "OPTIONS",
      headers: { ...PAGE, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type" },
    });
    expect(res.status).toBe(204);
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe("*");
    expect(res.headers.get("Access-Control-Allow-Methods")).toContain("POST");
    expect(res.headers.get("Access-Control-Allow-Headers")?.toLowerCase()).toContain("authorization");
    expect(res.headers.get("Access-Control-Allow-Credentials")).toBeNull();
  });

  it.each([
    ["room info", () => request(`/rooms/${freshRoom()}`, { headers: { ...PAGE, ...KEY } }), 200],
    ["history", () => request(`/rooms/${freshRoom()}/messages`, { headers: { ...PAGE, ...KEY } }), 200],
    ["presence", () => request(`/rooms/${freshRoom()}/presence`, { headers: { ...PAGE, ...KEY } }), 200],
    ["a refused socket route read with a plain GET", () => request(`/rooms/${freshRoom()}/ws?user=a`, { headers: PAGE }), 426],
    ["a bad room name", () => request(`/rooms/a%20b/ws`, { headers: PAGE }), 400],
    ["a missing API key", () => request(`/rooms/${freshRoom()}`, { headers: PAGE }), 401],
    ["an unknown path", () => request(`/nowhere`, { headers: PAGE }), 404],
  ])("lets a page read %s", async (_, send, status) => {
    const res = await send();
    expect(res.status).toBe(status);
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe("*");
    await res.body?.cancel();
  });

  it("lets a page read an event stream", async () => {
    const res = await request(`/rooms/${freshRoom()}/events?user=reader`, { headers: PAGE });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toContain("text/event-stream");
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe("*");
    await res.body?.cancel();
  });
});
