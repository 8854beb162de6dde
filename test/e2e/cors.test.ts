// Cross-origin browsers with ALLOWED_ORIGINS set: only the listed origin is echoed back.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshRoom, Relay, SERVER_AUTH, startRelay } from "./relay";

const ALLOWED = "https://app.example";
let relay: Relay;

beforeAll(async () => {
  relay = await startRelay({ vars: { ALLOW_ANONYMOUS: "true", ALLOWED_ORIGINS: `https://other.example, ${ALLOWED}` } });
});

afterAll(async () => {
  await relay?.close();
});

describe("CORS with ALLOWED_ORIGINS", () => {
  it("echoes a listed origin, and varies on Origin", async () => {
    const res = await relay.fetch(`/rooms/${freshRoom()}`, { headers: { Origin: ALLOWED, ...SERVER_AUTH } });
    expect(res.status).toBe(200);
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe(ALLOWED);
    expect(res.headers.get("Vary")).toContain("Origin");
  });

  it("gives an unlisted origin no Access-Control-Allow-Origin", async () => {
    const res = await relay.fetch(`/rooms/${freshRoom()}`, { headers: { Origin: "https://evil.example", ...SERVER_AUTH } });
    expect(res.headers.get("Access-Control-Allow-Origin")).toBeNull();
  });

  it("answers a listed origin's preflight", async () => {
    const res = await relay.fetch(`/rooms/${freshRoom()}/messages`, {
      method: "OPTIONS",
      headers: { Origin: ALLOWED, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "Authorization" },
    });
    expect(res.status).toBe(204);
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe(ALLOWED);
  });

  it("lets a listed page read why its socket would be refused", async () => {
    const res = await relay.fetch(`/rooms/a%20b/ws`, { headers: { Origin: ALLOWED } });
    expect(res.status).toBe(400);
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe(ALLOWED);
    expect(await res.json()).toMatchObject({ error: "bad_request" });
  });
});
