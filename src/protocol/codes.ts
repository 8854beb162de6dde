// Every code the relay puts on the wire, in one place.

/** Codes carried by `{"type":"error"}` frames. */
export type ErrorCode =
  | "bad_json"
  | "bad_frame"
  | "too_large"
  | "rate_limited"
  | "forbidden"
  | "not_found"
  | "inbox_full"
  | "room_full"
  /** Pusher sockets only (as a subscription_error): a presence channel at PRESENCE_LIST_LIMIT members. */
  | "presence_full"
  | "too_many_subscriptions"
  | "internal";

/** WebSocket close codes the relay sends. */
export const CloseCode = {
  normal: 1000,
  policy: 1008,
  tooLarge: 1009,
  internal: 1011,
  /** RFC 6455's "try again later": the client fell too far behind what it is sent (backlog.ts). */
  tooSlow: 1013,
  heartbeatTimeout: 4000,
  tokenExpired: 4001,
} as const;

/** Close codes that may never be sent in a close frame (RFC 6455 section 7.4.1). */
const RESERVED_CLOSE_CODES = new Set([1004, 1005, 1006, 1015]);

/** The code to echo back when a peer closes with `code`: reserved or out-of-range ones become 1000. */
export function sendableCloseCode(code: number): number {
  const valid = (code >= 1000 && code <= 1014) || (code >= 3000 && code <= 4999);
  return valid && !RESERVED_CLOSE_CODES.has(code) ? code : CloseCode.normal;
}

/** Close reasons are limited to 123 UTF-8 bytes; the platform throws on longer ones. */
export function closeReason(reason: string): string {
  const bytes = new TextEncoder().encode(reason);
  if (bytes.length <= 123) return reason;
  return new TextDecoder().decode(bytes.slice(0, 123)).replace(/\uFFFD$/, "");
}
