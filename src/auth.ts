// Who is asking, and may they: user tokens, anonymous mode, the server API key and origins.
// Every refusal is an HttpError; nothing here talks to an object.
import { decode, verify } from "hono/jwt";
import { originAllowed, type Config } from "./config";
import { HttpError } from "./http-error";
import { isPrivateRoom, roomAllowed, type Identity } from "./identity";
import { isValidName, NAME_RULE } from "./protocol";

/** The most entries a token's `rooms` claim may have. */
const MAX_ROOM_CLAIMS = 64;

/** What a connection is for: a room, or a user's own inbox. */
export interface Target {
  room?: string;
  user?: string;
}

/** A verified token's claims: `rooms` holds room ids or `prefix*` patterns. */
type Claims = Identity;

function bearer(request: Request): string | undefined {
  const header = request.headers.get("Authorization");
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return match?.[1];
}

/**
 * A user token from `?token=` (browsers cannot set headers) or `Authorization: Bearer`. An empty
 * `?token=` is no token, as an empty header is (a client may be handed an empty string).
 */
function presentedToken(request: Request, url: URL): string | undefined {
  return url.searchParams.get("token") || bearer(request);
}

async function verifyToken(token: string, config: Config): Promise<Claims> {
  if (config.authSecret === undefined) {
    throw new HttpError(401, "unauthorized", "a token was presented but this relay has no AUTH_SECRET to verify it");
  }
  let payload: Record<string, unknown>;
  try {
    // `exp` and `nbf` are honoured exactly; a future `iat` is not refused, since the issuer's
    // clock may run a little ahead of the edge's and `iat` grants nothing.
    payload = await verify(token, config.authSecret, { alg: "HS256", iat: false });
  } catch (error) {
    const expired = error instanceof Error && error.name === "JwtTokenExpired";
    if (!expired) throw new HttpError(401, "unauthorized", "token is not a valid HS256 JWT for this relay");
    // The library says expired of an `exp` that is no number at all (null, "9999999999", true).
    const exp: unknown = decode(token).payload.exp;
    throw new HttpError(401, "unauthorized", typeof exp === "number" ? "token expired" : 'token "exp" must be a number of seconds since 1970');
  }
  // The library skips an `exp` of 0 (falsy); it is as expired as any other past time.
  if (payload.exp === 0) throw new HttpError(401, "unauthorized", "token expired");
  if (!isValidName(payload.sub)) throw new HttpError(401, "unauthorized", `token "sub" must be a user id: ${NAME_RULE}`);
  const { rooms, exp } = payload;
  // Bounded because user sockets keep the claim in their attachment (16 KiB, docs/platform.md).
  if (
    rooms !== undefined &&
    !(Array.isArray(rooms) && rooms.length <= MAX_ROOM_CLAIMS && rooms.every((room) => typeof room === "string" && room.length <= 165))
  ) {
    throw new HttpError(401, "unauthorized", `token "rooms" must be a list of at most ${MAX_ROOM_CLAIMS} room ids or prefixes, each of at most 165 characters`);
  }
  return { user: payload.sub, ...(typeof exp === "number" && { exp }), ...(rooms !== undefined && { rooms }) };
}

function authorize(claims: Claims, target: Target): void {
  if (target.room !== undefined && !roomAllowed(claims.rooms, target.room)) {
    throw new HttpError(403, "forbidden", `token does not allow room ${target.room}`);
  }
  if (target.user !== undefined && claims.user !== target.user) {
    throw new HttpError(403, "forbidden", `token is for user ${claims.user}, not ${target.user}`);
  }
}

/** A `rooms` claim that allows every room, private and presence rooms included. */
const EVERY_ROOM = ["*", "private-*", "presence-*"];

/** The identity of a WebSocket or SSE client, or an HttpError (400, 401, 403). */
export async function identify(request: Request, url: URL, config: Config, target: Target): Promise<Identity> {
  const token = presentedToken(request, url);
  if (token !== undefined) {
    const claims = await verifyToken(token, config).catch(async (error: unknown) => {
      // The API key in a token's place opens every room, as on the server routes (docs/protocol.md
      // "Authentication"); checked only once the token failed, so user tokens pay nothing for it.
      if (config.apiKey === undefined || !(await sameSecret(token, config.apiKey))) throw error;
      return { user: askedUser(url, target) ?? "server", rooms: EVERY_ROOM };
    });
    authorize(claims, target);
    return claims;
  }
  if (config.allowAnonymous) {
    if (target.room !== undefined && isPrivateRoom(target.room)) {
      // No credential was presented: 401, as for any missing token (403 is for a token's claim).
      throw new HttpError(401, "unauthorized", `room ${target.room} is private: it takes a token whose "rooms" claim names it, or the API key`);
    }
    return { user: askedUser(url, target) ?? `anon-${crypto.randomUUID().slice(0, 8)}` };
  }
  if (config.authSecret === undefined) {
    throw new HttpError(
      401,
      "unauthorized",
      "this relay has no AUTH_SECRET: set one with `wrangler secret put AUTH_SECRET`, " +
        'or set ALLOW_ANONYMOUS="true" for local development',
    );
  }
  throw new HttpError(401, "unauthorized", "missing token: pass ?token=<JWT> or Authorization: Bearer <JWT>");
}

/** Who a client without a user token is: `?user=` if given and valid, else the user route's user. */
function askedUser(url: URL, target: Target): string | undefined {
  const asked = url.searchParams.get("user");
  return isValidName(asked) ? asked : target.user;
}

async function sameSecret(given: string, expected: string): Promise<boolean> {
  // Hashing first makes both sides one length, so the comparison leaks neither length nor prefix.
  const encoder = new TextEncoder();
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", encoder.encode(given)),
    crypto.subtle.digest("SHA-256", encoder.encode(expected)),
  ]);
  return crypto.subtle.timingSafeEqual(a, b);
}

/**
 * Admits a server route caller: `Authorization: Bearer <API_KEY>`, or, where `readers` names a
 * room, a user token that allows that room.
 */
export async function authorizeServer(request: Request, url: URL, config: Config, readers?: Target): Promise<void> {
  const key = bearer(request);
  if (key !== undefined && config.apiKey !== undefined && (await sameSecret(key, config.apiKey))) return;
  const token = presentedToken(request, url);
  /** Why a user token (shaped like a JWT, so not a mistyped key) was refused: "token expired", say. */
  let refused: string | undefined;
  if (readers !== undefined && token !== undefined && config.authSecret !== undefined) {
    const claims = await verifyToken(token, config).catch((error: unknown) => {
      if (error instanceof HttpError && token.split(".").length === 3) refused = error.message;
    });
    if (claims) return authorize(claims, readers);
  }
  if (refused !== undefined) throw new HttpError(401, "unauthorized", config.apiKey === undefined ? refused : `${refused}, and it is not the API key either`);
  const readerToo = readers !== undefined && config.authSecret !== undefined ? ", or a user token that allows this room" : "";
  if (config.apiKey === undefined) {
    const setKey = "`wrangler secret put API_KEY`; locally API_KEY in .dev.vars or `--var API_KEY:<key>`";
    throw new HttpError(401, "unauthorized", `server routes are closed: this relay has no API_KEY (${setKey})${readerToo}`);
  }
  throw new HttpError(401, "unauthorized", `missing or wrong API key: pass Authorization: Bearer <API_KEY>${readerToo}`);
}

/**
 * Refuses a browser request from an origin not in ALLOWED_ORIGINS (cross-site WebSocket
 * hijacking); the relay's own origin, whose pages it served itself, is always allowed. The
 * refused page may read the refusal (it learns only that it is refused), so it can tell a
 * misconfigured list from a network failure (docs/protocol.md "Origins").
 */
export function checkOrigin(request: Request, config: Config): void {
  const origin = request.headers.get("Origin");
  if (origin === null || originAllowed(config, origin) || origin === new URL(request.url).origin) return;
  throw new HttpError(403, "forbidden", `origin ${origin} is not allowed`, { "Access-Control-Allow-Origin": origin });
}
