// What every socket-holding object shares: accepting hibernatable sockets, per-socket state that
// survives hibernation, liveness and token-expiry sweeps, abuse limits, the close handshake and
// a broadcast that one bad socket cannot abort. Room and Inbox override the hooks.
import { DurableObject } from "cloudflare:workers";
import { configOf, type Config } from "../config";
import {
  ackFrame,
  CloseCode,
  closeReason,
  decodeClientFrame,
  errorFrame,
  FrameError,
  isOversized,
  PING,
  PONG,
  sendableCloseCode,
  type ClientFrame,
  type DirectRequestFrame,
  type ServerFrame,
} from "../protocol";
import { log } from "../log";
import { OversizeCounter, RateLimiter } from "./limits";
import { liveAttachment, type Attachment, type Identity, type Session } from "./session";
import { Sequence } from "./sequence";
import { Stubs } from "./stubs";

export abstract class SocketHost extends DurableObject<Env> {
  protected readonly config: Config;
  /** The room id or user id this object was addressed by. */
  protected readonly name: string;
  /** The object's message counter and storage epoch. */
  protected readonly sequence: Sequence;
  /** Stubs to rooms and inboxes, one per target so calls to each keep their order. */
  protected readonly stubs: Stubs;
  // Built lazily from the platform's socket list, so it is right after every wake-up.
  #sessions?: Map<WebSocket, Session>;
  #users = new Map<string, number>();
  /** Sockets already reported gone, so a close and an error for one socket count once. */
  #departed = new WeakSet<WebSocket>();
  #alarmArmed = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.config = configOf(env);
    if (ctx.id.name === undefined) throw new Error(`${new.target.name} must be addressed by name`);
    this.name = ctx.id.name;
    this.sequence = new Sequence(ctx.storage.kv);
    this.stubs = new Stubs(env);
    // Answered by the runtime itself, even while the object hibernates (PLATFORM.md).
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING, PONG));
  }

  /** The heartbeat settings every welcome frame carries. */
  protected get heartbeat(): { interval: number; timeout: number } {
    return { interval: this.config.heartbeatIntervalMs, timeout: this.config.heartbeatTimeoutMs };
  }

  // ---- hooks ----

  /** A decoded text frame from `session`. Throw FrameError to refuse it. */
  protected abstract onFrame(session: Session, frame: ClientFrame): void | Promise<void>;

  /** A binary frame from `session`. Default: refused. */
  protected onBinary(session: Session, _data: ArrayBuffer): void {
    this.send(session.ws, errorFrame("bad_frame", "binary frames are not accepted here"));
  }

  /** `session` is gone (closed, errored or timed out); called exactly once per socket. */
  protected onLeave(_session: Session, _lastOfUser: boolean): void {}

  /**
   * Sends whatever the object holds back for a batch (Room's pending publishes). Runs before
   * any single frame or close goes out, so a socket still gets everything it was owed, in order,
   * before an error or a close that came later.
   */
  protected flushPending(): void {}

  // ---- sessions ----

  /** Every open socket's session. */
  protected get sessions(): ReadonlyMap<WebSocket, Session> {
    return this.#live();
  }

  /** Open sockets per user. */
  protected get users(): ReadonlyMap<string, number> {
    this.#live();
    return this.#users;
  }

  #live(): Map<WebSocket, Session> {
    if (this.#sessions) return this.#sessions;
    const sessions = new Map<WebSocket, Session>();
    for (const ws of this.ctx.getWebSockets()) {
      // The list can still hold closing sockets (PLATFORM.md); their close events follow.
      if (ws.readyState !== WebSocket.OPEN) continue;
      const attachment = liveAttachment(ws);
      if (attachment) this.#add(sessions, ws, attachment, this.#restore(attachment));
    }
    this.#sessions = sessions;
    return sessions;
  }

  // The attachment's `seen` may lag real activity by up to one save interval; assume the latest
  // it could be, so a restored socket is never timed out early.
  #restore(attachment: Attachment): number {
    return attachment.seen + this.#saveEveryMs;
  }

  #add(sessions: Map<WebSocket, Session>, ws: WebSocket, attachment: Attachment, seen: number): Session {
    const session = this.#session(ws, attachment, seen);
    sessions.set(ws, session);
    this.#users.set(session.identity.user, (this.#users.get(session.identity.user) ?? 0) + 1);
    return session;
  }

  #session(ws: WebSocket, attachment: Attachment, seen: number): Session {
    const now = Date.now();
    return {
      ws,
      identity: attachment.identity,
      connection: attachment.connection,
      seen,
      savedSeen: attachment.seen,
      rate: new RateLimiter(this.config.rateLimitPerSecond, now),
      oversize: new OversizeCounter(),
    };
  }

  /** Accepts `ws` as hibernatable; answers its session and whether it is the user's first socket. */
  protected accept(ws: WebSocket, identity: Identity): { session: Session; firstOfUser: boolean } {
    const sessions = this.#live();
    this.ctx.acceptWebSocket(ws);
    const now = Date.now();
    const attachment: Attachment = { identity, connection: crypto.randomUUID(), seen: now };
    ws.serializeAttachment(attachment);
    const session = this.#add(sessions, ws, attachment, now);
    this.#armAlarm();
    return { session, firstOfUser: this.#users.get(session.identity.user) === 1 };
  }

  /** Forgets `ws`; calls onLeave once however many close paths report it. */
  #depart(ws: WebSocket): void {
    if (this.#departed.has(ws)) return;
    const sessions = this.#live();
    let session = sessions.get(ws);
    if (session) {
      sessions.delete(ws);
      const left = this.#users.get(session.identity.user)! - 1;
      if (left === 0) this.#users.delete(session.identity.user);
      else this.#users.set(session.identity.user, left);
    } else {
      // A close that wakes a hibernated object arrives for a socket the platform no longer
      // lists, so the rebuild above never counted it: it still has to leave.
      const attachment = liveAttachment(ws);
      if (!attachment) return;
      session = this.#session(ws, attachment, attachment.seen);
    }
    this.#departed.add(ws);
    this.onLeave(session, !this.#users.has(session.identity.user));
  }

  // ---- sending ----

  /** Sends one frame; a socket that cannot take it is left to the close path. */
  protected send(ws: WebSocket, frame: ServerFrame | string): void {
    this.flushPending();
    try {
      ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    } catch {
      // Closing or gone: webSocketClose/webSocketError will report it.
    }
  }

  /** Sends already-encoded `payload` to every open socket but `except`. */
  protected broadcast(payload: string | ArrayBuffer, except?: WebSocket): void {
    for (const ws of this.#live().keys()) {
      if (ws === except) continue;
      try {
        ws.send(payload);
      } catch {
        // One bad socket must not abort the loop; its close event cleans it up.
      }
    }
  }

  /** Closes `session` from our side and counts it as left at once. */
  protected close(session: Session, code: number, reason: string): void {
    this.flushPending();
    try {
      this.#save(session, true);
      session.ws.close(code, closeReason(reason));
    } catch {
      // Already closing.
    }
    this.#depart(session.ws);
  }

  // ---- messaging between objects ----

  /** Forwards a `direct` frame to the recipient's inbox through its stub, and acks it. */
  protected async relayDirect(session: Session, frame: DirectRequestFrame): Promise<void> {
    try {
      const result = await this.stubs.inbox(frame.to).deliver(session.identity.user, frame.data, frame.id);
      this.send(
        session.ws,
        "refused" in result ? errorFrame(result.refused, result.message, frame.id) : ackFrame(frame.id, result.status, result.seq),
      );
    } catch (error) {
      this.stubs.drop("user", frame.to);
      log("error", "direct delivery failed", { object: this.constructor.name, to: frame.to, error });
      this.send(session.ws, errorFrame("internal", `could not deliver to ${frame.to}; not sent`, frame.id));
    }
  }

  // ---- platform events ----

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    const session = this.#live().get(ws);
    if (!session) return; // closed by us a moment ago
    const now = Date.now();
    this.#touch(session, now);
    try {
      if (isOversized(message, this.config.maxMessageBytes)) {
        if (session.oversize.add(now)) return this.close(session, CloseCode.tooLarge, "message too large");
        return this.send(ws, errorFrame("too_large", `frames are limited to ${this.config.maxMessageBytes} bytes`));
      }
      if (message === PING) return; // the auto-response normally takes these; exempt from limits
      switch (session.rate.take(now)) {
        case "accept":
          break;
        case "drop":
          return;
        case "drop-and-tell":
          return this.send(
            ws,
            errorFrame("rate_limited", `more than ${this.config.rateLimitPerSecond} frames a second; frame dropped`),
          );
        case "close":
          return this.close(session, CloseCode.policy, "rate limit exceeded");
      }
      if (typeof message !== "string") return this.onBinary(session, message);
      const frame = decodeClientFrame(message);
      try {
        await this.onFrame(session, frame);
      } catch (error) {
        // A handler's refusal keeps the frame's id so the client can match it.
        if (error instanceof FrameError && error.id === undefined && "id" in frame && frame.id !== undefined) {
          throw new FrameError(error.code, error.message, frame.id);
        }
        throw error;
      }
    } catch (error) {
      if (error instanceof FrameError) return this.send(ws, errorFrame(error.code, error.message, error.id));
      log("error", "frame handler failed", { object: this.constructor.name, error });
      this.send(ws, errorFrame("internal", "the relay failed to handle this frame"));
      this.close(session, CloseCode.internal, "internal error");
    }
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    // Hibernatable sockets do not answer the peer's close by themselves (PLATFORM.md).
    try {
      ws.close(sendableCloseCode(code), closeReason(reason));
    } catch {
      // Already closed.
    }
    this.#depart(ws);
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    log("warn", "socket error", { object: this.constructor.name, error });
    this.#depart(ws);
  }

  // ---- liveness ----

  /** How often the sweep runs: a quarter of the timeout, so a close lands within 1.5x of it. */
  get #sweepEveryMs(): number {
    return Math.max(100, Math.floor(this.config.heartbeatTimeoutMs / 4));
  }

  /** How stale the stored `seen` may get before it is rewritten. */
  get #saveEveryMs(): number {
    return Math.floor(this.config.heartbeatTimeoutMs / 10);
  }

  #touch(session: Session, now: number): void {
    session.seen = now;
    if (now - session.savedSeen >= this.#saveEveryMs) this.#save(session);
  }

  #save(session: Session, closed?: true): void {
    const attachment: Attachment = {
      identity: session.identity,
      connection: session.connection,
      seen: session.seen,
      ...(closed && { closed }),
    };
    session.ws.serializeAttachment(attachment);
    session.savedSeen = session.seen;
  }

  // One coarse alarm while sockets exist: an alarm every second would keep the object from ever
  // hibernating (PLATFORM.md).
  #armAlarm(): void {
    if (this.#alarmArmed) return;
    this.#alarmArmed = true;
    void this.ctx.storage
      .getAlarm()
      .then((at) => (at === null ? this.ctx.storage.setAlarm(Date.now() + this.#sweepEveryMs) : undefined))
      .catch((error: unknown) => {
        this.#alarmArmed = false;
        log("error", "could not arm the sweep alarm", { object: this.constructor.name, error });
      });
  }

  override async alarm(): Promise<void> {
    this.#alarmArmed = false;
    this.sweep(Date.now());
    if (this.#live().size > 0) {
      this.#alarmArmed = true;
      await this.ctx.storage.setAlarm(Date.now() + this.#sweepEveryMs);
    }
  }

  /** Closes sockets whose heartbeat stopped (4000) or whose token expired (4001). */
  protected sweep(now: number): void {
    const timeout = this.config.heartbeatTimeoutMs;
    for (const session of [...this.#live().values()]) {
      const pinged = this.ctx.getWebSocketAutoResponseTimestamp(session.ws)?.getTime() ?? 0;
      if (now - Math.max(session.seen, pinged) >= timeout) {
        this.close(session, CloseCode.heartbeatTimeout, "heartbeat timeout");
      } else if (session.identity.exp !== undefined && now >= session.identity.exp * 1000) {
        this.close(session, CloseCode.tokenExpired, "token expired");
      }
    }
  }
}
