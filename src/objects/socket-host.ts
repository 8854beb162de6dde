// What every socket-holding object shares: accepting hibernatable sockets, per-socket state that
// survives hibernation, liveness and token-expiry sweeps, abuse limits, the close handshake and
// sends that one bad socket cannot abort. Holder (and so Room) overrides the hooks.
import { DurableObject } from "cloudflare:workers";
import { configOf, type Config } from "../config";
import type { Identity } from "../identity";
import { log } from "../log";
import {
  CloseCode,
  closeReason,
  decodeClientFrame,
  errorFrame,
  FrameError,
  frameId,
  isOversized,
  PING,
  PONG,
  sendableCloseCode,
  type ClientFrame,
  type Heartbeat,
  type ServerFrame,
} from "../protocol";
import { Opens, OversizeCounter, rateFor, RateLimiter } from "./limits";
import { Owed } from "./owed";
import { livenessTimes, type LivenessTimes } from "./liveness";
import { Reset } from "./reset";
import { Backlog } from "./backlog";
import { hold, liveAttachment, release, saveAttachment, transmit, watch, type Attachment, type Session } from "./session";

export abstract class SocketHost extends DurableObject<Env> {
  protected readonly config: Config;
  /** The room id or user id this object was addressed by. */
  protected readonly name: string;
  // Built lazily from the platform's socket list, so it is right after every wake-up.
  #sessions?: Map<WebSocket, Session>;
  /** Sockets already reported gone, so a close and an error for one socket count once. */
  #departed = new WeakSet<WebSocket>();
  #alarmArmed = false;
  /** An alarm handler is under way (a reset waits for it: reset.ts). */
  #alarmRunning = false;
  readonly #owed = new Owed({
    isOpen: (session) => this.#live().get(session.ws) === session,
    close: (session, code, reason) => this.close(session, code, reason),
    echoed: (session) => this.echoed(session),
  });
  /** New sockets whose frames wait for their 101 answer to go out, and the one timer that sends them. */
  #opening: WebSocket[] = [];
  /** Sockets still opening, counted with `sessions` against SOCKETS_PER_OBJECT. */
  protected readonly opens = new Opens();
  readonly #reset = new Reset(this.ctx, () => this.quiet());
  /** Closes a socket whose client stopped reading what it is sent (backlog.ts); none with MAX_BACKLOG_BYTES 0. */
  readonly #backlog?: Backlog;
  readonly #times: LivenessTimes;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.config = configOf(env);
    this.#times = livenessTimes(this.config.heartbeatTimeoutMs);
    if (this.config.maxBacklogBytes > 0) this.#backlog = new Backlog(this.config.maxBacklogBytes, (ws, reason) => this.#tooSlow(ws, reason));
    if (ctx.id.name === undefined) throw new Error(`${new.target.name} must be addressed by name`);
    this.name = ctx.id.name;
    // Answered by the runtime itself, even while the object hibernates (docs/platform.md).
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING, PONG));
  }

  /** The heartbeat settings every welcome frame carries. */
  protected get heartbeat(): Heartbeat {
    return { interval: this.config.heartbeatIntervalMs, timeout: this.config.heartbeatTimeoutMs };
  }

  // ---- hooks ----

  /** A decoded text frame from `session`, `size` characters long. Throw FrameError to refuse it. */
  protected abstract onFrame(session: Session, frame: ClientFrame, size: number): void | Promise<void>;

  /** A binary frame from `session`. Default: refused, in the socket's own dialect (`refuse`). */
  protected onBinary(session: Session, _data: ArrayBuffer): void {
    this.refuse(session, new FrameError("bad_frame", "binary frames are not accepted here"));
  }

  /** `session` is gone (closed, errored or timed out); called exactly once per socket. */
  protected onLeave(_session: Session): void {}

  /**
   * Runs before any single frame or close goes out. Room stores its pending batch here, so a
   * socket gets the echoes of what it published before an error or close about a later frame.
   */
  protected beforeSend(): void {}

  /**
   * Whether a reset would lose nothing but memory: no socket open, opening or still closing.
   * Holder and Room add the calls, batches, streams and webhooks they may have under way.
   */
  protected quiet(): boolean {
    if (this.#live().size > 0 || this.opens.size > 0 || this.#opening.length > 0 || this.#alarmRunning) return false;
    return this.ctx.getWebSockets().every((ws) => ws.readyState === WebSocket.CLOSED);
  }

  /** Whether the sweep alarm must keep running; Room also needs it for other holders' census. */
  protected wantsAlarm(): boolean {
    return this.#live().size > 0;
  }

  // ---- sessions ----

  /** Every open socket's session. */
  protected get sessions(): ReadonlyMap<WebSocket, Session> {
    return this.#live();
  }

  #live(): Map<WebSocket, Session> {
    if (this.#sessions) return this.#sessions;
    const sessions = new Map<WebSocket, Session>();
    for (const ws of this.ctx.getWebSockets()) {
      // The list can still hold closing sockets (docs/platform.md); their close events follow.
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
    return attachment.seen + this.#times.saveEveryMs;
  }

  #add(sessions: Map<WebSocket, Session>, ws: WebSocket, attachment: Attachment, seen: number): Session {
    const session = this.#session(ws, attachment, seen);
    sessions.set(ws, session);
    return session;
  }

  #session(ws: WebSocket, attachment: Attachment, seen: number): Session {
    const now = Date.now();
    if (this.#backlog) watch(ws, this.#backlog);
    return {
      ws,
      identity: attachment.identity,
      connection: attachment.connection,
      ...(attachment.room !== undefined && { room: attachment.room }),
      ...(attachment.pusher && { pusher: true as const }),
      seen,
      savedSeen: attachment.seen,
      rate: new RateLimiter(this.config.rateLimitPerSecond, now),
      oversize: new OversizeCounter(),
    };
  }

  /** Accepts `ws` as hibernatable: a room socket when `room` is given, else a user (or Pusher) socket. */
  protected accept(ws: WebSocket, identity: Identity, connection: string, kind: { room?: string; pusher?: true } = {}): Session {
    const sessions = this.#live();
    this.ctx.acceptWebSocket(ws);
    const now = Date.now();
    const attachment: Attachment = { identity, connection, ...kind, seen: now };
    ws.serializeAttachment(attachment);
    const session = this.#add(sessions, ws, attachment, now);
    this.#hold(ws);
    this.armAlarm();
    return session;
  }

  /**
   * What is sent on a new socket goes out after its 101 answer (session.ts). One zero timer
   * releases every socket opened before it fires: a timer a socket cost ~15% of a connection's CPU.
   */
  #hold(ws: WebSocket): void {
    hold(ws);
    if (this.#opening.push(ws) > 1) return;
    setTimeout(() => {
      const opened = this.#opening;
      this.#opening = [];
      for (const socket of opened) release(socket);
    }, 0);
  }

  /** Forgets `ws`; calls onLeave once however many close paths report it. */
  #depart(ws: WebSocket): void {
    if (this.#departed.has(ws)) return;
    const sessions = this.#live();
    let session = sessions.get(ws);
    if (session) {
      sessions.delete(ws);
    } else {
      // A close that wakes a hibernated object arrives for a socket the platform no longer
      // lists, so the rebuild above never counted it: it still has to leave.
      const attachment = liveAttachment(ws);
      if (!attachment) return;
      session = this.#session(ws, attachment, attachment.seen);
    }
    this.#departed.add(ws);
    this.onLeave(session);
  }

  // ---- sending ----

  /** Sends one frame; a socket that cannot take it is left to the close path. */
  protected send(ws: WebSocket, frame: ServerFrame | string): void {
    this.beforeSend();
    transmit(ws, typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** The backlog found `ws`'s client not catching up (backlog.ts). */
  #tooSlow(ws: WebSocket, reason: string): void {
    const session = this.#live().get(ws);
    if (session) this.close(session, CloseCode.tooSlow, reason);
  }

  /** Closes `session` from our side and counts it as left at once. */
  protected close(session: Session, code: number, reason: string): void {
    this.beforeSend();
    release(session.ws); // what it was sent goes before the close
    try {
      saveAttachment(session, true);
      session.ws.close(this.closeCodeFor(session, code), closeReason(reason));
    } catch {
      // Already closing.
    }
    this.#depart(session.ws);
  }

  // ---- platform events ----

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    const session = this.#live().get(ws);
    if (!session || this.#owed.closing(session)) return; // closed by us, or about to be: no more frames
    const now = Date.now();
    this.#touch(session, now);
    this.#owed.owe(session); // this frame's answer, until its handler is done
    try {
      if (isOversized(message, this.config.maxMessageBytes)) {
        if (session.oversize.add(now)) return this.#owed.close(session, CloseCode.tooLarge, "message too large");
        // Parsed only for its id: at most twice in 10 s per socket, since the third closes it.
        return this.refuse(session, new FrameError("too_large", `frames are limited to ${this.config.maxMessageBytes} bytes`, frameId(message)), message);
      }
      if (message === PING) return; // the auto-response normally takes these; exempt from limits
      switch (this.unlimited(session, message) ? "accept" : rateFor(session, message, this.config, now).take(now)) {
        case "accept":
          break;
        case "drop":
          return;
        case "drop-and-tell":
          // Parsed only for its id (at most once a second), so the client can tell which frame.
          return this.refuse(
            session,
            new FrameError("rate_limited", `more than ${this.config.rateLimitPerSecond} frames a second; frame dropped`, frameId(message)),
            message,
          );
        case "close":
          return this.#owed.close(session, CloseCode.policy, "rate limit exceeded");
      }
      if (typeof message !== "string") return this.onBinary(session, message);
      await this.onText(session, message);
    } catch (error) {
      if (error instanceof FrameError) return this.refuse(session, error);
      log("error", "frame handler failed", { object: this.constructor.name, error });
      this.refuse(session, new FrameError("internal", "the relay failed to handle this frame"));
      this.close(session, CloseCode.internal, "internal error");
    } finally {
      this.#owed.settle(session);
    }
  }

  /** `answer` settles once it has sent a frame's answer: a socket closed for flooding waits for it (owed.ts). */
  protected answering(session: Session, answer: Promise<unknown>): void {
    this.#owed.oweUntil(session, answer);
  }

  /** Whether the echoes of `session`'s answered room publishes have reached it (Holder tells). */
  protected echoed(_session: Session): boolean {
    return true;
  }

  /** After a delivery to this object's sockets: a socket to be closed may be owed nothing more now. */
  protected delivered(): void {
    this.#owed.delivered();
  }

  /** Whether a frame passes the rate limit without counting; Holder frees a Pusher client's unsubscribes. */
  protected unlimited(_session: Session, _message: string | ArrayBuffer): boolean {
    return false;
  }

  /** A text frame that passed the limits; Holder reads Pusher clients' frames its own way. */
  protected async onText(session: Session, text: string): Promise<void> {
    const frame = decodeClientFrame(text);
    try {
      await this.onFrame(session, frame, text.length);
    } catch (error) {
      // A handler's refusal keeps the frame's id so the client can match it.
      if (error instanceof FrameError && error.id === undefined && "id" in frame && frame.id !== undefined) {
        throw new FrameError(error.code, error.message, frame.id);
      }
      throw error;
    }
  }

  /** The close code `session`'s client understands for `code`; Pusher clients have their own. */
  protected closeCodeFor(_session: Session, code: number): number {
    return code;
  }

  /** Tells a socket its frame was refused (`unread`: refused before it was read); the connection stays open. */
  protected refuse(session: Session, error: FrameError, _unread?: string | ArrayBuffer): void {
    this.send(session.ws, errorFrame(error.code, error.message, error.id));
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    // The client's answer to a close of ours: we departed it then (or marked its attachment).
    const ours = this.#departed.has(ws);
    // Hibernatable sockets do not answer the peer's close by themselves (docs/platform.md).
    try {
      ws.close(sendableCloseCode(code), closeReason(reason));
    } catch {
      // Already closed.
    }
    this.#depart(ws);
    // Such a client's connection may stay up until the object resets (reset.ts). The attachment
    // is read only once the object is empty, not on a busy hub's every close.
    if (this.#live().size === 0 && (ours || (ws.deserializeAttachment() as Attachment | null)?.closed === true)) this.#reset.whenQuiet();
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    log("warn", "socket error", { object: this.constructor.name, error });
    this.#depart(ws);
  }

  // ---- liveness ----

  #touch(session: Session, now: number): void {
    session.seen = now;
    if (now - session.savedSeen >= this.#times.saveEveryMs) saveAttachment(session);
  }

  // One coarse alarm while sockets exist: an alarm every second would keep the object from ever
  // hibernating (docs/platform.md).
  protected armAlarm(): void {
    if (this.#alarmArmed) return;
    this.#alarmArmed = true;
    void this.ctx.storage
      .getAlarm()
      .then((at) => (at === null ? this.ctx.storage.setAlarm(Date.now() + this.#times.sweepEveryMs) : undefined))
      .catch((error: unknown) => {
        this.#alarmArmed = false;
        log("error", "could not arm the sweep alarm", { object: this.constructor.name, error });
      });
  }

  override async alarm(): Promise<void> {
    this.#alarmArmed = false;
    this.#alarmRunning = true;
    try {
      await this.onAlarm(Date.now());
      if (this.wantsAlarm()) {
        this.#alarmArmed = true;
        await this.ctx.storage.setAlarm(Date.now() + this.#times.sweepEveryMs);
      }
    } finally {
      this.#alarmRunning = false;
    }
  }

  /** Runs on every sweep alarm; Room adds its census of other holders. */
  protected onAlarm(now: number): void | Promise<void> {
    this.sweep(now);
  }

  /** Closes sockets whose heartbeat stopped (4000) or whose token expired (4001). */
  protected sweep(now: number): void {
    const timeout = this.config.heartbeatTimeoutMs;
    for (const session of [...this.#live().values()]) {
      const pinged = this.ctx.getWebSocketAutoResponseTimestamp(session.ws)?.getTime() ?? 0;
      const quiet = now - Math.max(session.seen, pinged);
      if (quiet >= this.#times.silentForMs) {
        this.close(session, CloseCode.heartbeatTimeout, "heartbeat timeout");
      } else if (session.identity.exp !== undefined && now >= session.identity.exp * 1000) {
        this.close(session, CloseCode.tokenExpired, "token expired");
      } else if (quiet >= timeout / 2) {
        this.onQuiet(session);
      }
    }
  }

  /**
   * `session` has sent nothing for half the timeout. The relay's own clients ping by themselves;
   * Holder asks Pusher clients, which ping only when *they* hear nothing (docs/pusher.md).
   */
  protected onQuiet(_session: Session): void {}
}
