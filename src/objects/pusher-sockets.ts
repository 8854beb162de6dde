// What a hub does with the frames of a Pusher client (docs/pusher.md): ping, subscribe with
// Pusher's channel auth, unsubscribe and client events. Subscriptions are the hub's own (one
// room per channel), so a Pusher socket gets what a room socket gets, in Pusher's format.
import type { Config } from "../config";
import { log } from "../log";
import {
  cacheMiss,
  clientEvent,
  dataProblem,
  decodePusherFrame,
  FrameError,
  isCacheChannel,
  isEncryptedChannel,
  isPresenceChannel,
  isPrivateChannel,
  isUserChannel,
  isValidSigninId,
  MAX_DATA_DEPTH,
  PUSHER_PONG,
  PusherClose,
  pusherError,
  MAX_WATCHLIST,
  SIGNIN_ID_RULE,
  signinSuccess,
  stillSubscribed,
  SubscribeRefused,
  subscribingTo,
  unsubscribingFrom,
  subscriptionError,
  subscriptionSucceeded,
  type Json,
  type PusherClientFrame,
  type ResumePoint,
  userChannel,
} from "../protocol";
import type { Admission, JoinRequest, Member } from "./feed";
import type { StubOf } from "./links";
import type { Session } from "./session";

/** What the hub lends this module: its subscriptions, and a way to reach a room. */
export interface PusherHost {
  config: Config;
  send(session: Session, text: string): void;
  /** Closes `session` with `code` (already a Pusher close code). */
  close(session: Session, code: number, reason: string): void;
  /** `vet` runs in the subscription's turn, so a later unsubscribe cannot overtake the auth check. */
  subscribe(session: Session, room: string, resume: ResumePoint, answer: (admission: Admission) => void, vet: () => Promise<Member | undefined>): Promise<void>;
  unsubscribe(session: Session, room: string): Promise<boolean>;
  /** Who `session` is in `room` (its presence user_id), or null when it has not subscribed. */
  memberOf(session: Session, room: string): string | null;
  /** Calls `room`'s Room. */
  toRoom<T>(room: string, call: (stub: StubOf<"room">) => Promise<T> | T): Promise<T>;
}

/** Pusher's longest user_id the relay keeps. */
const MAX_USER_ID = 128;

const encoder = new TextEncoder();

/** Pusher's channel auth: `key:hex(HMAC-SHA256(secret, signed))`, checked in constant time. */
async function validAuth(auth: string, key: string, secret: string, signed: string): Promise<boolean> {
  const [givenKey, signature] = auth.split(":");
  if (givenKey !== key || signature === undefined || !/^[0-9a-f]{64}$/i.test(signature)) return false;
  const hmac = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  const bytes = new Uint8Array(signature.match(/../g)!.map((pair) => Number.parseInt(pair, 16)));
  return crypto.subtle.verify("HMAC", hmac, bytes, encoder.encode(signed));
}

export class PusherSockets {
  readonly #host: PusherHost;

  constructor(host: PusherHost) {
    this.#host = host;
  }

  async onText(session: Session, text: string): Promise<void> {
    let frame: PusherClientFrame;
    try {
      frame = decodePusherFrame(text);
    } catch (error) {
      // A channel's handlers (and Echo's .error()) hear only a subscription_error on the channel.
      if (error instanceof SubscribeRefused) this.#host.send(session, subscriptionError(error.channel, 400, error.message));
      throw error;
    }
    switch (frame.event) {
      case "pusher:ping":
        return this.#host.send(session, PUSHER_PONG);
      case "pusher:pong":
        return; // the answer to the relay's own ping: its arrival was the point

      case "pusher:subscribe":
        return this.#subscribe(session, frame);
      case "pusher:unsubscribe":
        await this.#host.unsubscribe(session, frame.channel);
        return;
      case "pusher:signin":
        return this.#signin(session, frame);
      case "other":
        throw new FrameError("bad_frame", `the relay does not take ${frame.name} (see docs/pusher.md)`);
      default:
        return this.#clientEvent(session, frame);
    }
  }

  /** Who `session` is in `channel` once its auth holds; undefined, having said why, when it does not. */
  async #vet(session: Session, frame: Extract<PusherClientFrame, { event: "pusher:subscribe" }>): Promise<Member | undefined> {
    const { channel } = frame;
    if (isUserChannel(channel)) {
      // pusher-js subscribes to it after signin_success; the sign-in already holds it.
      if (this.#host.memberOf(session, channel) !== null) return { member: session.identity.user };
      const message = `sign in (pusher:signin) as the user of ${channel} before subscribing to it`;
      this.#host.send(session, subscriptionError(channel, 403, message));
      this.#host.send(session, pusherError(PusherClose.unauthorized, message));
      return undefined;
    }
    if (!isPrivateChannel(channel)) return { member: session.identity.user };
    const pusher = this.#host.config.pusher!;
    const presence = isPresenceChannel(channel);
    const signed = presence ? `${session.connection}:${channel}:${frame.channelData ?? ""}` : `${session.connection}:${channel}`;
    if (frame.auth === undefined || !(await validAuth(frame.auth, pusher.key, pusher.secret, signed))) {
      const message = `invalid signature for ${channel}: expected ${pusher.key}:HMAC-SHA256(secret, "${signed.slice(0, 300)}")`;
      this.#host.send(session, subscriptionError(channel, 401, message));
      this.#host.send(session, pusherError(PusherClose.unauthorized, message));
      return undefined;
    }
    if (!presence) return { member: session.identity.user };
    const data = parseMember(frame.channelData);
    if (!data) {
      const message =
        `channel_data of ${channel} must be JSON with a "user_id" of 1-${MAX_USER_ID} characters ` +
        `(and a "user_info" of at most ${MAX_DATA_DEPTH} levels, whose numbers a double can carry)`;
      this.#host.send(session, subscriptionError(channel, 400, message));
      this.#host.send(session, pusherError(null, message));
      return undefined;
    }
    return data;
  }

  async #subscribe(session: Session, frame: Extract<PusherClientFrame, { event: "pusher:subscribe" }>): Promise<void> {
    const { channel } = frame;
    // pusher-js subscribes to the channel its sign-in joined: answered at once, the socket never
    // leaves it (a repeat join would take it out of the room for a moment; docs/pusher.md).
    if (isUserChannel(channel) && frame.since === undefined && this.#host.memberOf(session, channel) !== null) {
      return this.#host.send(session, stillSubscribed(channel));
    }
    const resume = { ...(frame.since !== undefined && { since: frame.since }), ...(frame.epoch !== undefined && { epoch: frame.epoch }) };
    // A cache channel's new subscriber gets its last event, or pusher:cache_miss (a resume gets what it missed instead).
    const cached = isCacheChannel(channel) && frame.since === undefined;
    const join: ResumePoint & Pick<JoinRequest, "cached"> = { ...resume, ...(cached && { cached }) };
    try {
      await this.#host.subscribe(
        session,
        channel,
        join,
        (admission) => {
          const members = isPresenceChannel(channel)
            ? (admission.presence ?? []).map(({ user }) => ({ user, info: infoText(admission, user) }))
            : undefined;
          const { seq, epoch, users, recovered } = admission;
          this.#host.send(session, subscriptionSucceeded(channel, seq, epoch, members, users, recovered));
          if (cached && admission.replay.length === 0) this.#host.send(session, cacheMiss(channel));
        },
        () => this.#vet(session, frame),
      );
    } catch (error) {
      if (!(error instanceof FrameError)) throw error;
      const full = error.code === "room_full";
      const status = full ? 503 : error.code === "presence_full" ? 403 : 400;
      this.#host.send(session, subscriptionError(channel, status, error.message));
      if (!full) throw error;
      // Pusher's answer to "over capacity": the error, then a 4100 close, on which pusher-js
      // backs off and reconnects (docs/protocol.md "Pusher Channels compatibility").
      this.#host.send(session, pusherError(error.code, error.message));
      this.#host.close(session, PusherClose.overCapacity, "over capacity");
    }
  }

  /**
   * Pusher user authentication: with the app's signature over `socket_id::user::user_data`, the
   * socket joins its user's channel, then hears pusher:signin_success, so an event sent to the
   * user as soon as it is signed in reaches it (docs/pusher.md "User authentication").
   */
  async #signin(session: Session, { auth, userData }: { auth: string; userData: string }): Promise<void> {
    const pusher = this.#host.config.pusher!;
    const signed = `${session.connection}::user::${userData}`;
    if (!(await validAuth(auth, pusher.key, pusher.secret, signed))) {
      const message = `invalid signature for pusher:signin: expected ${pusher.key}:HMAC-SHA256(secret, "${signed.slice(0, 300)}")`;
      return this.#host.send(session, pusherError(PusherClose.unauthorized, message));
    }
    const user = signinUser(userData);
    if (user === undefined) {
      return this.#host.send(session, pusherError(PusherClose.unauthorized, `user_data must be a JSON object with an "id" of ${SIGNIN_ID_RULE}`));
    }
    const member = { member: session.identity.user };
    let joined = false;
    await this.#host.subscribe(session, userChannel(user.id), {}, () => {
      joined = true;
      this.#host.send(session, signinSuccess(userData));
    }, async () => member);
    // Its watchlist (none: none) replaces the last; the online ones of it come through the channel.
    if (!joined) return;
    await this.#host
      .toRoom(userChannel(user.id), (stub) => stub.watch(user.watchlist))
      .catch((error: unknown) => log("warn", "could not keep a signed-in user's watchlist", { user: user.id, error }));
  }

  /**
   * Whether a frame passes the rate limit uncounted: an unsubscribe from a channel the socket
   * holds. pusher-js forgets a channel as it sends the unsubscribe and never sends it again, so a
   * dropped one would leave the socket there (a presence member, a held slot) until it closed.
   * There are never more of them than subscribes the limit let in (docs/protocol.md decision 48).
   */
  unlimited(session: Session, text: string): boolean {
    const channel = unsubscribingFrom(text);
    return channel !== undefined && this.#host.memberOf(session, channel) !== null;
  }

  /** Tells a client its frame was refused; a subscribe refused unread also on its channel, all pusher-js hears there. */
  refuse(session: Session, error: FrameError, unread?: string | ArrayBuffer): void {
    const channel = typeof unread === "string" ? subscribingTo(unread) : undefined;
    if (channel !== undefined) this.#host.send(session, subscriptionError(channel, error.code === "too_large" ? 413 : 429, error.message));
    this.#host.send(session, pusherError(error.code, error.message));
  }

  async #clientEvent(session: Session, frame: { event: string; channel: string; data: Json }): Promise<void> {
    const { channel, event, data } = frame;
    // Pusher answers this one with code null (4009 would say the connection is unauthorized).
    if (!isPrivateChannel(channel)) throw new FrameError("bad_frame", "Client event rejected - only supported on private and presence channels");
    // Their data would be plain text among ciphertext; pusher-js itself never sends them.
    if (isEncryptedChannel(channel)) throw new FrameError("bad_frame", "Client event rejected - not supported on encrypted channels");
    const member = this.#host.memberOf(session, channel);
    if (member === null) throw new FrameError("forbidden", `subscribe to ${channel} before sending it client events`);
    const text = clientEvent(channel, event, data, isPresenceChannel(channel) ? member : undefined);
    await this.#host.toRoom(channel, (stub) => stub.clientEvent(text, session.connection));
  }
}

/** A sign-in's user: its `id`, and the valid ids of its `watchlist` (at most MAX_WATCHLIST); undefined without a usable id. */
function signinUser(userData: string): { id: string; watchlist: string[] } | undefined {
  let fields: { id?: unknown; watchlist?: unknown } | null;
  try {
    fields = JSON.parse(userData) as { id?: unknown; watchlist?: unknown } | null;
  } catch {
    return undefined;
  }
  const id = fields?.id;
  if (!isValidSigninId(id)) return undefined;
  const listed = Array.isArray(fields!.watchlist) ? fields!.watchlist : [];
  return { id, watchlist: [...new Set(listed.filter(isValidSigninId))].filter((watched) => watched !== id).slice(0, MAX_WATCHLIST) };
}

/** A presence subscription's `channel_data`: `{"user_id", "user_info"?}`; undefined when malformed. */
function parseMember(channelData: string | undefined): { member: string; info: unknown } | undefined {
  if (channelData === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(channelData);
  } catch {
    return undefined;
  }
  const fields = typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
  const id = fields?.user_id;
  const member = typeof id === "number" && Number.isFinite(id) ? String(id) : id;
  if (typeof member !== "string" || member.length === 0 || member.length > MAX_USER_ID) return undefined;
  const info = fields!.user_info ?? null;
  return dataProblem(info) !== undefined ? undefined : { member, info };
}

/** A listed member's user_info as JSON text, from a Room on this code or on the code before it. */
export function infoText({ infoTexts, infos }: Admission, user: string): string | undefined {
  if (infoTexts !== undefined) return Object.hasOwn(infoTexts, user) ? infoTexts[user] : undefined;
  return infos !== undefined && Object.hasOwn(infos, user) ? JSON.stringify(infos[user]) : undefined;
}
