// A peer baseline: the classic Node chat hub. One process, one `ws` server, a Set of sockets per
// room, every message broadcast to each of them (sender included, as the relay does). User
// sockets get the directs addressed to them: the frame's "to" looked up in a Map.
// Prints {"port": n} on stdout once listening on 127.0.0.1.
import { WebSocketServer } from "ws";

const rooms = new Map();
const users = new Map();

function setOf(map, key) {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  return set;
}

const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });

wss.on("connection", (ws, request) => {
  const match = /^\/(rooms|users)\/([A-Za-z0-9_.:-]{1,128})\/ws/.exec(request.url ?? "");
  if (!match) return ws.close(1008, "bad path");
  const [, kind, name] = match;
  const members = setOf(kind === "rooms" ? rooms : users, name);
  members.add(ws);
  ws.on("close", () => members.delete(ws));
  ws.on("error", () => {});
  if (kind === "rooms") {
    ws.on("message", (data, isBinary) => {
      for (const peer of members) if (peer.readyState === 1) peer.send(data, { binary: isBinary });
    });
  } else {
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      let to;
      try {
        to = JSON.parse(data.toString()).to;
      } catch {
        return;
      }
      for (const peer of users.get(to) ?? []) if (peer.readyState === 1) peer.send(data, { binary: false });
    });
  }
});

wss.on("listening", () => process.stdout.write(JSON.stringify({ port: wss.address().port }) + "\n"));
process.on("SIGTERM", () => process.exit(0));
