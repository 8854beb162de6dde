// The demo page and the browser client are served by the Worker itself (src/site.ts), before any
// other route: no auth, revalidated by ETag, with CORS headers like every route.
import { describe, expect, it } from "vitest";
import { request } from "./connect";

describe("the demo site", () => {
  it("serves the demo page at / and /index.html, without auth", async () => {
    for (const path of ["/", "/index.html"]) {
      const res = await request(path);
      expect(res.status).toBe(200);
      expect(res.headers.get("Content-Type")).toBe("text/html; charset=utf-8");
      expect(await res.text()).toContain('import { RelayClient } from "/edge-relay-client.js"');
    }
  });

  it("serves the browser client and its source map", async () => {
    const script = await request("/edge-relay-client.js");
    expect(script.headers.get("Content-Type")).toBe("text/javascript; charset=utf-8");
    expect(await script.text()).toContain("sourceMappingURL=edge-relay-client.js.map");
    const map = await request("/edge-relay-client.js.map");
    expect(map.headers.get("Content-Type")).toBe("application/json");
    expect(JSON.parse(await map.text())).toHaveProperty("mappings");
  });

  it("answers 304 to a client holding the current version, and 200 to one holding another", async () => {
    const first = await request("/edge-relay-client.js");
    const etag = first.headers.get("ETag")!;
    expect(etag).toMatch(/^"[\w-]+"$/);
    expect(first.headers.get("Cache-Control")).toBe("no-cache");
    const again = await request("/edge-relay-client.js", { headers: { "If-None-Match": etag } });
    expect(again.status).toBe(304);
    expect(await again.text()).toBe("");
    const stale = await request("/edge-relay-client.js", { headers: { "If-None-Match": '"old"' } });
    expect(stale.status).toBe(200);
  });

  it("carries CORS headers like every other route, and answers a preflight", async () => {
    for (const path of ["/", "/edge-relay-client.js"]) {
      const res = await request(path, { headers: { Origin: "https://elsewhere.example" } });
      expect(res.status).toBe(200);
      expect(res.headers.get("Access-Control-Allow-Origin")).toBe("*");
      await res.body?.cancel();
    }
    const preflight = await request("/", { method: "OPTIONS", headers: { Origin: "https://elsewhere.example", "Access-Control-Request-Method": "GET" } });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("Access-Control-Allow-Origin")).toBe("*");
  });

  it("leaves every other path to the relay's routes", async () => {
    const res = await request("/nothing-here.html");
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: "not_found" });
  });
});
