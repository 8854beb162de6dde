// What every route shares: a request's parts read the same way everywhere (names, counts, the
// upgrade header, origin and identity), each refusal an HttpError, and the one answer to errors.
import { checkOrigin, identify, type Target } from "./auth";
import { ConfigError, type Config } from "./config";
import { HttpError } from "./http-error";
import type { Identity } from "./identity";
import { log } from "./log";
import { isValidName, isValidRoom, NAME_RULE, ROOM_RULE } from "./protocol";

/** A room or user id from the path, or a 400 saying what an id may be. */
export function checkName(kind: "room" | "user", name: string | undefined = ""): string {
  if (kind === "room" ? !isValidRoom(name) : !isValidName(name)) throw badName(kind);
  return name;
}

/** The refusal of a bad room or user id. */
export function badName(kind: "room" | "user"): HttpError {
  return new HttpError(400, "bad_request", `${kind} id must be ${kind === "room" ? ROOM_RULE : NAME_RULE}`);
}

/** A non-negative integer query parameter; undefined when absent. */
export function countParam(url: URL, name: string): number | undefined {
  const value = url.searchParams.get(name);
  if (value === null) return undefined;
  if (!/^\d+$/.test(value)) throw new HttpError(400, "bad_request", `"${name}" must be a non-negative integer`);
  // Past 2^53 - 1 a number is past every seq and every limit: read as that.
  return Math.min(Number(value), Number.MAX_SAFE_INTEGER);
}

export function isUpgrade(request: Request): boolean {
  return request.headers.get("Upgrade")?.toLowerCase() === "websocket";
}

// Checked after the request is vetted, so a plain GET with the same URL answers what an upgrade
// would get (400, 401, 403) or 426 when all is well. Browsers hide why an upgrade failed; the
// client library asks this way to tell a refusal from a network failure.
export function requireUpgrade(request: Request): void {
  if (!isUpgrade(request)) {
    throw new HttpError(426, "upgrade_required", "this route takes a WebSocket upgrade (Upgrade: websocket)");
  }
}

/** Origin and identity of a WebSocket or event-stream client, checked the same way everywhere. */
export function vetClient(request: Request, url: URL, config: Config, target: Target): Promise<Identity> {
  checkOrigin(request, config);
  return identify(request, url, config, target);
}

/**
 * A request's body, at most `max` bytes (else 413), read to its end (a chunked body may carry no
 * length): its bytes, and its text, which must be UTF-8 (else 400) rather than be decoded with
 * replacement characters into something other than what the caller sent. `drain: false` stops
 * reading at the limit, for a caller whose credentials are only checked once the body is read.
 */
export async function readBody(request: Request, max: number, { drain = true } = {}): Promise<{ bytes: Uint8Array; text: string }> {
  const tooLarge = new HttpError(413, "too_large", `bodies are limited to ${max} bytes`);
  if (Number(request.headers.get("Content-Length") ?? 0) > max) throw tooLarge;
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (request.body) {
    const reader = request.body.getReader();
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      size += read.value.byteLength;
      // Past the limit nothing more is kept, but the rest is still read: many HTTP clients cannot
      // take an answer before they finished sending. Callers check credentials first.
      if (size <= max) chunks.push(read.value);
      else if (!drain) {
        await reader.cancel();
        break;
      }
    }
  }
  if (size > max) throw tooLarge;
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  try {
    return { bytes, text: new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes) };
  } catch {
    throw new HttpError(400, "bad_request", "body is not valid UTF-8");
  }
}

/** The answer to whatever a route threw: known refusals answer as themselves, the rest are logged once. */
export function answerError(error: unknown): Response {
  if (error instanceof HttpError) return error.toResponse();
  if (error instanceof ConfigError) return new HttpError(500, "bad_config", error.message).toResponse();
  log("error", "request failed", { error });
  return new HttpError(500, "internal", "the relay failed to handle this request").toResponse();
}
