// Opening sockets to the Worker from inside workerd.
import { exports } from "cloudflare:workers";
import { TestClient } from "../support/client";

export const ORIGIN = "http://relay.test";

/** Counter for fresh room names: storage is shared within a file, so each test takes its own. */
let rooms = 0;
export function freshRoom(prefix = "room"): string {
  return `${prefix}-${++rooms}-${crypto.randomUUID().slice(0, 6)}`;
}

export function request(path: string, init?: RequestInit): Promise<Response> {
  return exports.default.fetch(new Request(ORIGIN + path, init));
}

/** Upgrades `path` and answers the client; throws with the status and body when refused. */
export async function connect(path: string, headers: Record<string, string> = {}): Promise<TestClient> {
  const res = await request(path, { headers: { Upgrade: "websocket", ...headers } });
  const ws = res.webSocket;
  if (res.status !== 101 || !ws) throw new Error(`upgrade refused: ${res.status} ${await res.text()}`);
  ws.binaryType = "arraybuffer";
  ws.accept();
  return new TestClient(ws);
}

/** Connects `user` to `room` and reads its welcome. */
export async function join(room: string, user: string, query = ""): Promise<{ client: TestClient; welcome: Record<string, any> }> {
  const client = await connect(`/rooms/${room}/ws?user=${user}${query}`);
  const welcome = await client.json();
  if (welcome.type !== "welcome") throw new Error(`expected welcome, got ${JSON.stringify(welcome)}`);
  return { client, welcome };
}
