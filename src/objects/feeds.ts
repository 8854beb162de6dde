// A holder's feeds: the sockets it holds per room (room sockets and subscriptions) and per user
// (user sockets, for that user's directs). Memory only: rebuilt from the platform's socket list
// and the holder's subscriptions table whenever the holder wakes up (docs/design.md "Failures").
import { Feed } from "./feed";
import type { Session } from "./session";

/**
 * A user or Pusher socket's subscription, as the holder stores it; `member` is who the socket is
 * in that room where that is not its own user (a Pusher presence user_id).
 */
export type SubscriptionRow = { connection: string; room: string; member: string | null };

/**
 * The holder's subscriptions, in its storage: they outlive hibernation there, since an attachment
 * (16 KiB) cannot hold them all (docs/platform.md).
 */
export class SubscriptionTable {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
    sql.exec("CREATE TABLE IF NOT EXISTS subscriptions (connection TEXT NOT NULL, room TEXT NOT NULL, member TEXT, PRIMARY KEY (connection, room))");
  }

  /** Every row. */
  rows(): SubscriptionRow[] {
    return this.#sql.exec<SubscriptionRow>("SELECT connection, room, member FROM subscriptions").toArray();
  }

  /** Deletes a connection's rows, returning them: one statement for a closing socket. */
  take(connection: string): Pick<SubscriptionRow, "room" | "member">[] {
    return this.#sql.exec<Pick<SubscriptionRow, "room" | "member">>("DELETE FROM subscriptions WHERE connection = ? RETURNING room, member", connection).toArray();
  }

  save({ connection, room, member }: SubscriptionRow): void {
    this.#sql.exec("INSERT OR REPLACE INTO subscriptions (connection, room, member) VALUES (?, ?, ?)", connection, room, member);
  }

  /** Deletes a connection's row for `room`, or all its rows. */
  drop(connection: string, room?: string): void {
    if (room === undefined) this.#sql.exec("DELETE FROM subscriptions WHERE connection = ?", connection);
    else this.#sql.exec("DELETE FROM subscriptions WHERE connection = ? AND room = ?", connection, room);
  }
}

export class Feeds {
  readonly rooms = new Map<string, Feed>();
  readonly inboxes = new Map<string, Feed>();

  /**
   * `present`: the connections of every socket the platform still lists, closing ones included
   * (their close events, still to come, need their rows). Rows of other connections are deleted:
   * a restart of the runtime ends sockets without a close event (docs/design.md "Failures").
   */
  constructor(sessions: Iterable<Session>, subscriptions: SubscriptionTable, present: Set<string>) {
    const userSockets = new Map<string, Session>();
    for (const session of sessions) {
      if (session.room !== undefined) this.room(session.room).add(session);
      else {
        if (!session.pusher) this.inbox(session.identity.user).add(session);
        userSockets.set(session.connection, session);
      }
    }
    const gone = new Set<string>();
    for (const { connection, room, member } of subscriptions.rows()) {
      const session = userSockets.get(connection);
      if (session) this.room(room).add(session, undefined, member ?? undefined);
      else if (!present.has(connection)) gone.add(connection);
    }
    for (const connection of gone) subscriptions.drop(connection);
  }

  /** The room's feed, made if there is none: a hole in a room's seqs means lost messages. */
  room(name: string): Feed {
    return made(this.rooms, name, true);
  }

  /** The user's feed, made if there is none: an inbox's refused directs leave holes, harmlessly. */
  inbox(user: string): Feed {
    return made(this.inboxes, user, false);
  }

  /** `session`'s publish to `room` was answered `seq`: its echo is owed if it gets the room's messages (owed.ts). */
  oweEcho(session: Session, room: string, seq: number): void {
    if (this.#awaitsEcho(session, room, seq)) (session.echoes ??= new Map()).set(room, seq);
  }

  /** Whether `session` has the echoes of the publishes it was answered; forgets those it has. */
  echoed(session: Session): boolean {
    for (const [room, seq] of session.echoes ?? []) {
      if (this.#awaitsEcho(session, room, seq)) return false;
      session.echoes!.delete(room);
    }
    return true;
  }

  /** A room socket, or one subscribed, whose feed has not yet delivered `seq` (or nothing since a wake-up). */
  #awaitsEcho(session: Session, room: string, seq: number): boolean {
    const feed = this.rooms.get(room);
    return (feed?.sessions.has(session.connection) ?? false) && (feed!.last === undefined || feed!.last < seq);
  }

  /** Forgets feeds nobody is in or joining any more. */
  dropIfEmpty(room?: string, user?: string): void {
    if (room !== undefined && this.rooms.get(room)?.empty) this.rooms.delete(room);
    if (user !== undefined && this.inboxes.get(user)?.empty) this.inboxes.delete(user);
  }
}

function made(feeds: Map<string, Feed>, key: string, gapless: boolean): Feed {
  let feed = feeds.get(key);
  if (!feed) feeds.set(key, (feed = new Feed(gapless)));
  return feed;
}
