// What a holder keeps per source it receives: the sockets it holds for one room (room sockets
// and subscriptions alike) or for one user's inbox, and the sockets waiting for their welcome.
import { FrameError, toPusher, type PresenceEntry, type ResumePoint, type TooLarge } from "../protocol";
import type { CensusAnswer } from "./roster";
import { transmit, type Session } from "./session";

/** Who a subscription is in its room: the socket's user, or a Pusher presence user_id and its info. */
export interface Member {
  member: string;
  info?: unknown;
}

/** A holder asking a Room to count one more (or fewer) of a user's sockets, and to join it. */
export interface JoinRequest extends ResumePoint {
  /** The holder object's name; the Room's own sockets use the roster's `HERE`. */
  holder: string;
  /** Who joins: the socket's user, or a Pusher presence member's user_id. */
  user: string;
  /** A Pusher presence member's user_info (JSON; typed unknown to keep RPC stub types shallow). */
  info?: unknown;
  connection: string;
  /** The user's sockets in the room at this holder, counting the one joining (absolute). */
  connections: number;
  /** A Pusher cache channel's subscribe without `since`: the replay is the last message, if fresh. */
  cached?: true;
}

/**
 * One change a holder asks of a Room's roster: a join, or a user's new count of sockets there.
 * A holder's changes to one room travel in one ordered queue (roster-calls.ts), so a
 * count never overtakes the join it follows.
 */
export type RosterChange = { join: JoinRequest } | { count: { user: string; connections: number } };

/** A Room's answer to each change: a join's admission or refusal, `null` for a count, `failed` for either that threw. */
export type RosterAnswer = Admission | RoomFull | null | { failed: string };

/** What a Room answers a join: a welcome's contents and the frames to replay. */
export interface Admission {
  seq: number;
  epoch: string;
  /** The Room's last mark (see FeedEntry): what it emitted up to here is in this answer's state. */
  mark: number;
  users: number;
  presence?: PresenceEntry[];
  /** user_info of the listed users that gave one, as JSON text (presence- rooms, for Pusher clients). */
  infoTexts?: Record<string, string>;
  /** The same as values, from a Room on code before infoTexts (objects take up a deploy one by one). */
  infos?: Record<string, unknown>;
  recovered?: boolean;
  replay: string[];
}

/** What a welcome or `subscribed` frame says of an admission: not its replay, mark or user_infos. */
export function admitted({ seq, epoch, users, presence, recovered }: Admission): Pick<Admission, "seq" | "epoch" | "users" | "presence" | "recovered"> {
  return { seq, epoch, users, ...(presence !== undefined && { presence }), ...(recovered !== undefined && { recovered }) };
}

/** A publish's seq, or its refusal as the FrameError a socket answers with. */
export function storedSeq(answer: number | TooLarge): number {
  if (typeof answer !== "number") throw new FrameError("too_large", answer.message);
  return answer;
}

export interface RoomFull {
  /** `presence_full`: a Pusher presence channel at PRESENCE_LIST_LIMIT members refuses a new one. */
  refused: "room_full" | "presence_full";
  message: string;
}

/** What an Inbox answers a hub attaching one of its user's sockets. */
export interface Attachment {
  seq: number;
  epoch: string;
  /** Every unacknowledged direct, oldest first. */
  pending: string[];
}

/** One frame a source sends its holders, in its order. */
export interface FeedEntry {
  /** The encoded frame; an ArrayBuffer is a room's binary frame (room sockets only). */
  frame: string | ArrayBuffer;
  /** Set on numbered frames (room messages, directs): a holder checks these arrive without a hole. */
  seq?: number;
  /**
   * Set by a Room on every entry, growing with each emission. Entries without a seq (presence,
   * binary, client events) are told apart by it: a socket whose join was answered at or past an
   * entry's mark has the presence it tells of in its welcome (or joined after it was sent), so it
   * must not get it as well (docs/design.md "Joining, counting and presence").
   */
  mark?: number;
  /**
   * Connections that must not get this entry: a presence join's own newcomer, a binary's sender,
   * newcomers that a count frame would tell what they hold already.
   */
  except?: string[];
  /** The only connections to get this entry: newcomers a count frame is news to, when it is to no one else. */
  only?: string[];
  /** For Pusher clients only: a client event, already in Pusher's format. */
  pusherOnly?: true;
  /** A joining member's user_info, for Pusher's member_added. */
  info?: unknown;
}

/** A socket between asking its source to join and getting the answer: it keeps what arrives. */
export interface Joiner {
  user: string;
  entries: FeedEntry[];
}

/** Sends one entry to one socket, in the socket's own dialect; never throws. */
export type Send = (session: Session, entry: FeedEntry) => void;

export class Feed {
  /** Live sockets here, by connection id. */
  readonly sessions = new Map<string, Session>();
  readonly #users = new Map<string, number>();
  /** Who each socket is here, where that is not its own user (a Pusher presence member). */
  readonly #members = new Map<string, string>();
  readonly #joiners = new Set<Joiner>();
  /** Sockets that joined ahead of what has arrived here: the seq and mark each already has. */
  readonly #floors = new Map<string, { seq?: number; mark?: number }>();
  /** The highest seq delivered here; unknown after a wake-up until the next entry. */
  last?: number;
  /** The mark of the last marked entry delivered here. */
  #lastMark?: number;
  /** Whether a hole in the seqs means lost frames (rooms), or is normal (an inbox's refused directs do not). */
  readonly #gapless: boolean;

  constructor(gapless: boolean) {
    this.#gapless = gapless;
  }

  /** This user's sockets here, counting those still joining: what the holder reports. */
  count(user: string): number {
    let joining = 0;
    for (const joiner of this.#joiners) if (joiner.user === user) joining++;
    return (this.#users.get(user) ?? 0) + joining;
  }

  /** Users with a socket here and how many each, joiners included; and the joiners alone. */
  census(): CensusAnswer {
    const joining = new Map<string, number>();
    for (const { user } of this.#joiners) joining.set(user, (joining.get(user) ?? 0) + 1);
    const users = new Set([...this.#users.keys(), ...joining.keys()]);
    // Built from entries, so a user named `__proto__` is a key like any other; plain objects, since
    // RPC does not carry objects without Object's prototype.
    return { counts: Object.fromEntries([...users].map((user) => [user, this.count(user)])), joining: Object.fromEntries(joining) };
  }

  get empty(): boolean {
    return this.held === 0;
  }

  /**
   * Sockets here, those still joining included: what a source that delivers is told. A joiner
   * was counted by its source before the source's answer got here, and a delivery can overtake
   * that answer; told 0, the source would count the joiner out.
   */
  get held(): number {
    return this.sessions.size + this.#joiners.size;
  }

  startJoin(user: string): Joiner {
    const joiner: Joiner = { user, entries: [] };
    this.#joiners.add(joiner);
    return joiner;
  }

  /** Ends a join; answers what arrived meanwhile after `seq` and `mark` (the source's state in its answer). */
  endJoin(joiner: Joiner, seq: number | undefined, mark?: number): FeedEntry[] {
    this.#joiners.delete(joiner);
    if (seq === undefined) return [];
    // With nobody here yet, the source's answer is where this feed starts: a batch still on its
    // way from before this holder was a target again must not look like a hole. With sockets
    // here, `last` is theirs; the newcomer gets a floor instead (see `add`).
    if (this.sessions.size === 0) this.last = Math.max(this.last ?? seq, seq);
    return joiner.entries.filter((entry) => (entry.seq === undefined ? !marked(entry, mark) : entry.seq > seq));
  }

  /**
   * Adds `session`, which has everything up to `floor` (its welcome's seq) and `mark`. Entries at
   * or below them that are still on their way to the sockets already here are not sent to it again.
   */
  add(session: Session, floor?: number, member = session.identity.user, mark?: number): void {
    if (this.sessions.has(session.connection)) return;
    const seq = floor !== undefined && (this.last === undefined || this.last < floor) ? floor : undefined;
    if (seq !== undefined || mark !== undefined) this.#floors.set(session.connection, { seq, mark });
    this.sessions.set(session.connection, session);
    if (member !== session.identity.user) this.#members.set(session.connection, member);
    this.#users.set(member, (this.#users.get(member) ?? 0) + 1);
  }

  /** Who `session` is in this feed. */
  memberOf(session: Session): string {
    return this.#members.get(session.connection) ?? session.identity.user;
  }

  /** Removes `session`; answers whether it was here. */
  remove(session: Session): boolean {
    const user = this.memberOf(session);
    if (!this.sessions.delete(session.connection)) return false;
    this.#floors.delete(session.connection);
    this.#members.delete(session.connection);
    const left = this.#users.get(user)! - 1;
    if (left === 0) this.#users.delete(user);
    else this.#users.set(user, left);
    return true;
  }

  /** Distinct users with a live socket here (joiners not counted). */
  get users(): ReadonlyMap<string, number> {
    return this.#users;
  }

  /**
   * Sends `entries` to every socket here and keeps them for joiners. Answers false when a seq is
   * missing before them: the sockets here missed a message and must resume from history.
   */
  deliver(entries: FeedEntry[], send: Send): boolean {
    for (const entry of entries) {
      if (entry.seq !== undefined) {
        if (this.last !== undefined && entry.seq <= this.last) continue; // already delivered
        if (this.#gapless && this.last !== undefined && entry.seq > this.last + 1) return false;
        this.last = entry.seq;
      }
      // Floors exist only just after a join, and most entries are for everyone: most deliveries skip both lookups.
      const floors = this.#floors.size > 0;
      const everyone = entry.except === undefined && entry.only === undefined;
      for (const session of this.sessions.values()) {
        if (!everyone && !reaches(entry, session.connection)) continue;
        if (floors && below(entry, this.#floors.get(session.connection))) continue;
        send(session, entry);
      }
      for (const joiner of this.#joiners) joiner.entries.push(entry);
      if (entry.mark !== undefined) this.#lastMark = entry.mark;
    }
    if (this.#floors.size > 0) {
      for (const [connection, { seq, mark }] of this.#floors) {
        const seqPassed = seq === undefined || (this.last !== undefined && seq <= this.last);
        const markPassed = mark === undefined || (this.#lastMark !== undefined && mark <= this.#lastMark);
        if (seqPassed && markPassed) this.#floors.delete(connection);
      }
    }
    return true;
  }
}

/** Whether an entry without a seq was emitted at or before `mark` (a joiner's answer had it). */
function marked(entry: FeedEntry, mark: number | undefined): boolean {
  return entry.mark !== undefined && mark !== undefined && entry.mark <= mark;
}

/** Whether a socket whose join was answered at `floor` already has `entry`. */
function below(entry: FeedEntry, floor: { seq?: number; mark?: number } | undefined): boolean {
  if (floor === undefined) return false;
  return entry.seq !== undefined ? floor.seq !== undefined && entry.seq <= floor.seq : marked(entry, floor.mark);
}

/** An entry's size for a call's budget (links.ts MAX_CALL_SIZE): characters, or bytes of a binary frame. */
export function entrySize(entry: FeedEntry): number {
  return typeof entry.frame === "string" ? entry.frame.length : entry.frame.byteLength;
}

/** What arrived while `session` was joining, after its welcome (its own join's entry excepted). */
export function sendKept(session: Session, kept: FeedEntry[]): void {
  for (const entry of kept) if (reaches(entry, session.connection)) sendEntry(session, entry);
}

/** Whether `entry` is for the socket `connection` (its `except` and `only`). */
function reaches({ except, only }: FeedEntry, connection: string): boolean {
  return only !== undefined ? only.includes(connection) : !except?.includes(connection);
}

/** Pusher's text for each entry, made once however many Pusher sockets get it. */
const inPusherFormat = new WeakMap<FeedEntry, string | null>();

/**
 * Sends one entry to one socket in the socket's dialect, without throwing (a socket that cannot
 * take it is left to its close event): the relay's frames as they are; Pusher events translated
 * (docs/pusher.md); binary frames to room sockets only, which alone can tell their room.
 */
export const sendEntry: Send = (session, entry) => {
  let payload: string | ArrayBuffer | undefined = entry.frame;
  if (session.pusher) {
    if (typeof entry.frame !== "string") return;
    if (!entry.pusherOnly) {
      let text = inPusherFormat.get(entry);
      if (text === undefined) inPusherFormat.set(entry, (text = toPusher(entry.frame, entry.info) ?? null));
      payload = text ?? undefined;
    }
  } else if (entry.pusherOnly || (typeof entry.frame !== "string" && session.room === undefined)) return;
  if (payload !== undefined) transmit(session.ws, payload);
};
