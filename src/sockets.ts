// The WebSocket routes: `/rooms/:room/ws` and `/users/:user/ws` of the relay's own protocol (here)
// and Pusher's `/app/:key` (pusher-routes.ts). An upgrade reaches them straight from the Worker's
// entry, past the Hono app, whose routing and middleware chain cost ~80 µs of runtime CPU a
// connection, a fifth of the whole (BENCHMARKS.md "Cost per operation"). A plain GET to the same
// paths goes through the app to the same functions, which answer it 426 once vetted.
import { configOf } from "./config";
import { HttpError } from "./http-error";
import { connectRequest, hubFor, openOnHubs, placedAt, roomFullMessage, type ConnectInfo } from "./objects/connect";
import { pusherSocket } from "./pusher-routes";
import { againIfReset } from "./objects/reset";
import { answerError, checkName, countParam, isUpgrade, requireUpgrade, vetClient } from "./request";

/** The kind of socket route, and its (still encoded) name or key. */
const SOCKET_PATH = /^\/(?:(rooms|users)\/([^/]+)\/ws|app\/([^/]+))$/;

/** Opens a socket for an upgrade to a socket route; undefined for anything else (the app's). */
export function openSocket(request: Request, env: Env): Promise<Response> | undefined {
  if (request.method !== "GET" || !isUpgrade(request)) return undefined;
  const url = new URL(request.url);
  const match = SOCKET_PATH.exec(url.pathname);
  if (!match) return undefined;
  const [, kind, name, key] = match;
  const opened =
    key !== undefined
      ? pusherSocket(request, env, pathPart(key))
      : kind === "rooms"
        ? roomSocket(request, env, url, pathPart(name!))
        : userSocket(request, env, url, pathPart(name!));
  return opened.catch(answerError);
}

/** A path segment decoded as Hono decodes its params: only with a `%`, left as is if malformed. */
function pathPart(segment: string): string {
  if (!segment.includes("%")) return segment;
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

export async function roomSocket(request: Request, env: Env, url: URL, name: string | undefined): Promise<Response> {
  const config = configOf(env);
  const room = checkName("room", name);
  const { user, exp } = await vetClient(request, url, config, { room });
  const since = countParam(url, "since");
  if (!isUpgrade(request)) {
    // The client library's question after a failed upgrade (requireUpgrade): a full room says so.
    const { connections } = await againIfReset(() => env.ROOMS.getByName(room).info());
    const limit = config.maxConnectionsPerRoom;
    if (connections >= limit) throw new HttpError(503, "room_full", roomFullMessage(room, limit));
  }
  requireUpgrade(request);
  const epoch = url.searchParams.get("epoch") ?? undefined;
  const connect: ConnectInfo = { user, exp, since, epoch, room };
  // A full Room names the shard to open the socket on instead (docs/design.md "Placement").
  const answer = await againIfReset(() => env.ROOMS.getByName(room).fetch(connectRequest(connect)));
  const shard = placedAt(answer);
  return shard === undefined ? answer : againIfReset(() => env.HOLDERS.getByName(shard).fetch(connectRequest(connect)));
}

export async function userSocket(request: Request, env: Env, url: URL, name: string | undefined): Promise<Response> {
  const config = configOf(env);
  const user = checkName("user", name);
  const identity = await vetClient(request, url, config, { user });
  if (identity.user !== user) throw new HttpError(403, "forbidden", `${identity.user} may not open the inbox of ${user}`);
  requireUpgrade(request);
  // A user's sockets go to their hub, or to the overflow hub a full one names; the Inbox forwards
  // the user's directs to every hub that holds one (docs/design.md "Placement").
  const opened = await openOnHubs(env.HOLDERS, hubFor(user, config.userHubs), identity);
  if (opened) return opened;
  throw new HttpError(503, "room_full", "every hub this user's sockets may use is full; try again later");
}
