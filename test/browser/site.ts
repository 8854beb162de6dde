// A page of another origin for browser tests: an HTML page and one script, on a port of its own
// (a different port is a different origin), so the relay is reached cross-origin as from a site.
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface Site {
  url: string;
  close(): void;
}

/** Serves `html` at every path but `/<name of script>`, which serves the file at `script`. */
export async function startSite(script: string, html: (scriptPath: string) => string): Promise<Site> {
  const body = await readFile(script);
  const path = `/${script.split("/").pop()}`;
  const server: Server = createServer((req, res) => {
    if (req.url === path) res.writeHead(200, { "Content-Type": "text/javascript" }).end(body);
    else res.writeHead(200, { "Content-Type": "text/html" }).end(html(path));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
}
