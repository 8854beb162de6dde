// Every HTTP refusal is an HttpError: status, stable code and a human message, answered as
// `{"error": code, "message": message}` by `answerError` (src/request.ts), the one error handler
// of every route.
import { errorBody } from "./protocol";

export type HttpErrorCode =
  | "bad_request"
  | "bad_config"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "too_large"
  | "upgrade_required"
  | "room_full"
  | "inbox_full"
  | "internal";

export class HttpError extends Error {
  readonly status: number;
  readonly code: HttpErrorCode;
  /** Headers the answer carries besides the JSON body's. */
  readonly headers?: Record<string, string>;
  constructor(status: number, code: HttpErrorCode, message: string, headers?: Record<string, string>) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.code = code;
    if (headers) this.headers = headers;
  }

  toResponse(): Response {
    return Response.json(errorBody(this.code, this.message), { status: this.status, ...(this.headers && { headers: this.headers }) });
  }
}
