// The one error the client rejects its promises with: a stable `code` to branch on, the relay's
// own code where it answered (an `error` frame, an HTTP error body), the client's otherwise.
import type { ErrorCode } from "../src/protocol/codes";

/**
 * Codes the client itself gives: `closed` (the client stopped for good), `refused` (the relay
 * refused the connection), `dropped` (the outgoing queue overflowed), `unsubscribed` (the room was
 * left before its subscription was answered). HTTP refusals carry the relay's body code
 * (`unauthorized`, `forbidden`, `bad_request`, ...).
 */
export type RelayErrorCode = ErrorCode | "closed" | "refused" | "dropped" | "unsubscribed" | (string & {});

export class RelayError extends Error {
  readonly code: RelayErrorCode;
  /** The HTTP status, when an HTTP route answered. */
  readonly status?: number;

  constructor(code: RelayErrorCode, message: string, status?: number) {
    super(message);
    this.name = "RelayError";
    this.code = code;
    if (status !== undefined) this.status = status;
  }
}
