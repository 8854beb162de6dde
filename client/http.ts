// The two HTTP requests the client makes: why an upgrade was refused, and a room's history.
import type { MessageFrame, ResumePoint } from "../src/protocol/frames";
import { RelayError } from "./errors";
import type { Refusal } from "./types";

/** The relay's base URL with a trailing slash, so relative paths land under it. */
export function baseUrl(url: string | URL): URL {
  const parsed = new URL(url);
  if (!parsed.pathname.endsWith("/")) parsed.pathname += "/";
  return parsed;
}

/** The socket URL of a room (resuming after `since` in `epoch`) or of a user's own socket. */
export function socketUrl(base: URL, target: { room: string } & ResumePoint | { inbox: string }, token?: string, user?: string): URL {
  // Encoded, so an id that is not one (`x?y`, `x#y`, `%41`) reaches the relay as itself, and is refused 400.
  const url = new URL("room" in target ? `rooms/${encodeURIComponent(target.room)}/ws` : `users/${encodeURIComponent(target.inbox)}/ws`, base);
  url.protocol = url.protocol.replace(/^http/, "ws");
  if (token !== undefined) url.searchParams.set("token", token);
  if (user !== undefined) url.searchParams.set("user", user);
  if ("room" in target && target.since !== undefined) {
    url.searchParams.set("since", String(target.since));
    if (target.epoch !== undefined) url.searchParams.set("epoch", target.epoch);
  }
  return url;
}

/** The same URL over HTTP(S), for a plain request. */
function overHttp(url: URL): URL {
  const http = new URL(url);
  http.protocol = http.protocol.replace(/^ws/, "http");
  return http;
}

// A browser does not say why an upgrade failed. The relay answers a plain GET of the same URL
// with the status the upgrade got (426 when the upgrade itself would have been fine), so one
// request tells a refusal, which retrying cannot fix, from a failure it may outlast: the network,
// or a relay whose configuration is broken (500) until it is fixed.
const REFUSALS = [400, 401, 403, 404];
/** How long the client waits for that answer before retrying as after any failure. */
const WHY_FAILED_WAIT_MS = 10_000;

/** What the relay answered a failed upgrade; `final` for a refusal, which retrying cannot change. */
export interface Failure {
  refusal: Refusal;
  final: boolean;
}

export async function whyFailed(url: URL | undefined): Promise<Failure | undefined> {
  if (!url || typeof fetch !== "function") return undefined;
  try {
    // Bounded: a relay or proxy that never answers must not hold the next attempt (or Node) up.
    const res = await fetch(overHttp(url), { cache: "no-store", signal: AbortSignal.timeout(WHY_FAILED_WAIT_MS) });
    if (res.status < 400 || res.status === 426) return undefined;
    const body = (await res.json().catch(() => ({}))) as Partial<Refusal>;
    const refusal = { status: res.status, error: body.error ?? "refused", message: body.message ?? res.statusText };
    return { refusal, final: REFUSALS.includes(res.status) };
  } catch {
    return undefined; // unreachable, or a cross-origin relay without CORS: keep retrying
  }
}

/** `GET /rooms/:room/messages`: retained messages after `since`, oldest first. */
export async function fetchHistory(
  base: URL,
  room: string,
  query: { since?: number; limit?: number },
  token: string | undefined,
  signal?: AbortSignal,
): Promise<MessageFrame[]> {
  const url = overHttp(new URL(`rooms/${encodeURIComponent(room)}/messages`, base));
  if (query.since !== undefined) url.searchParams.set("since", String(query.since));
  if (query.limit !== undefined) url.searchParams.set("limit", String(query.limit));
  const res = await fetch(url, { headers: token === undefined ? {} : { Authorization: `Bearer ${token}` }, cache: "no-store", signal });
  const body = (await res.json().catch(() => ({}))) as { messages?: MessageFrame[]; error?: string; message?: string };
  if (!res.ok || !Array.isArray(body.messages)) {
    throw new RelayError(body.error ?? "http_error", body.message ?? `history answered ${res.status}`, res.status);
  }
  return body.messages;
}
