// The demo page and the browser build of the client, served by the Worker itself before any
// other route runs: no auth, no variables needed. Not static assets: with an `[assets]` directory
// every request, WebSocket upgrades included, passes a router Worker first, and locally that hop
// cost each socket ~95 KiB and each connection ~40% more CPU (BENCHMARKS.md, "Cost per operation").
import type { Context } from "hono";
import { FILES } from "./generated/site";

/** The file at the request's path, 304 when the client holds this version; undefined for other paths. */
export function siteFile(c: Context): Response | undefined {
  const file = FILES[c.req.path === "/" ? "/index.html" : c.req.path];
  if (file === undefined) return undefined;
  // Revalidated every time: a deploy changes the files at once, and a 304 costs little.
  const headers = { "Content-Type": file.type, ETag: file.etag, "Cache-Control": "no-cache" };
  if (c.req.header("If-None-Match") === file.etag) return new Response(null, { status: 304, headers });
  return new Response(file.body, { headers });
}
