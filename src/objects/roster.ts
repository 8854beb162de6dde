// Who is in a room, across every object holding its sockets: per holder, each user's number of
// connections, as rows in the Room's storage. The Room may hibernate while holders keep their
// sockets, and a socket's close can wake it after the platform stopped listing that socket, so
// counts are kept, not recounted (docs/design.md "Joining, counting and presence").
import type { PresenceEntry } from "../protocol";

/** The Room's own sockets, in the roster's holder column. */
export const HERE = "";

/** A holder's answer to a census: each user's sockets there, and how many of them are still joining. */
export interface CensusAnswer {
  counts: Record<string, number>;
  joining?: Record<string, number>;
}

/** A user's number in a census record; an answer from another object has Object's prototype, so `constructor` is not a count. */
function countIn(record: Record<string, number>, user: string): number {
  return Object.hasOwn(record, user) ? record[user]! : 0;
}

/** How a user's presence changed with one report. */
export type Change = "joined" | "left" | undefined;

export class Roster {
  readonly #sql: SqlStorage;
  readonly #holders = new Map<string, Map<string, number>>();
  readonly #totals = new Map<string, number>();
  #connections = 0;
  /** Bumped on every report of a holder's counts, so a census answer that raced one is ignored. */
  readonly #versions = new Map<string, number>();
  /** Told after each change of `connections`, by how much (not while the stored rows are read). */
  #onConnections?: (change: number) => void;

  constructor(sql: SqlStorage, onConnections?: (change: number) => void) {
    this.#sql = sql;
    sql.exec(
      "CREATE TABLE IF NOT EXISTS members (holder TEXT NOT NULL, user TEXT NOT NULL, connections INTEGER NOT NULL, PRIMARY KEY (holder, user))",
    );
    for (const row of sql.exec<{ holder: string; user: string; connections: number }>("SELECT holder, user, connections FROM members")) {
      this.#apply(row.holder, row.user, row.connections);
    }
    this.#onConnections = onConnections;
  }

  /** Every connection of the room, on every holder. */
  get connections(): number {
    return this.#connections;
  }

  /** Distinct users present. */
  get users(): number {
    return this.#totals.size;
  }

  /** Whether `user` is present (on any holder). */
  has(user: string): boolean {
    return this.#totals.has(user);
  }

  /** One user's connections on one holder. */
  at(holder: string, user: string): number {
    return this.#holders.get(holder)?.get(user) ?? 0;
  }

  /** Connections on one holder. */
  countAt(holder: string): number {
    let n = 0;
    for (const count of this.#holders.get(holder)?.values() ?? []) n += count;
    return n;
  }

  /** Holders other than the Room itself that have at least one connection. */
  others(): string[] {
    return [...this.#holders.keys()].filter((holder) => holder !== HERE);
  }

  /** Holders with connections, the Room itself included when it has any. */
  get objects(): number {
    return this.#holders.size;
  }

  version(holder: string): number {
    return this.#versions.get(holder) ?? 0;
  }

  /**
   * Sets `user`'s connections on `holder` (an absolute count, so a repeated report is harmless).
   * The Room's own counts are recounted from the platform's socket list after every start (Room
   * `#members`), so for them a row only marks that the user is here, written when the first
   * socket comes and deleted when the last goes: a user's second tab costs no write.
   */
  set(holder: string, user: string, connections: number): Change {
    // Bumped even when nothing changes: a census answer that a report overtook is stale anyway.
    this.#versions.set(holder, this.version(holder) + 1);
    const before = this.#totals.has(user);
    const old = this.at(holder, user);
    if (connections === old) return undefined;
    if (connections === 0) {
      this.#sql.exec("DELETE FROM members WHERE holder = ? AND user = ?", holder, user);
    } else if (holder !== HERE || old === 0) {
      this.#sql.exec("INSERT OR REPLACE INTO members (holder, user, connections) VALUES (?, ?, ?)", holder, user, connections);
    } // else the Room's own user is still here: the marker row stands
    this.#apply(holder, user, connections);
    const after = this.#totals.has(user);
    return before === after ? undefined : after ? "joined" : "left";
  }

  /**
   * Sets `holder`'s counts from its census answer, telling `changed` of each user whose presence
   * changed as soon as it did (the roster then counts everyone else as they still are, so the
   * last leave reads as the last). Counts go down to what the holder has, its sockets still joining included (the Room may have
   * counted a join the holder has not heard the answer to yet), and up only to the sockets it
   * admitted: a joiner's own join counts it, checking the room's limits and keeping its Pusher
   * user_info. With `onlyFewer` (the census after a start) counts only go down.
   */
  replace(holder: string, { counts, joining = {} }: CensusAnswer, onlyFewer: boolean, changed: (user: string, change: "joined" | "left") => void): void {
    const users = new Set([...(this.#holders.get(holder)?.keys() ?? []), ...Object.keys(counts)]);
    for (const user of users) {
      let count = countIn(counts, user);
      const now = this.at(holder, user);
      if (count > now) {
        count = onlyFewer ? now : Math.max(now, count - countIn(joining, user));
        if (count === now) continue;
      }
      const change = this.set(holder, user, count);
      if (change) changed(user, change);
    }
  }

  #apply(holder: string, user: string, connections: number): void {
    let users = this.#holders.get(holder);
    const old = users?.get(user) ?? 0;
    if (old === connections) return;
    if (!users) this.#holders.set(holder, (users = new Map()));
    if (connections > 0) users.set(user, connections);
    else users.delete(user);
    if (users.size === 0) this.#holders.delete(holder);
    const total = (this.#totals.get(user) ?? 0) - old + connections;
    if (total > 0) this.#totals.set(user, total);
    else this.#totals.delete(user);
    this.#connections += connections - old;
    this.#onConnections?.(connections - old);
  }

  /** Every user and their connections, in user id order. */
  list(): PresenceEntry[] {
    return [...this.#totals.keys()].sort().map((user) => ({ user, connections: this.#totals.get(user)! }));
  }

  /** Up to `limit` users after `after`, in user id order, and the cursor for the next page. */
  page(after: string | undefined, limit: number): { presence: PresenceEntry[]; next?: string } {
    const users = [...this.#totals.keys()].filter((user) => after === undefined || user > after).sort();
    const presence = users.slice(0, limit).map((user) => ({ user, connections: this.#totals.get(user)! }));
    return users.length > limit ? { presence, next: presence[presence.length - 1]!.user } : { presence };
  }
}

/** Pusher presence members' user_info, kept while the member is in the room (docs/pusher.md). */
export class MemberInfos {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
    sql.exec("CREATE TABLE IF NOT EXISTS member_info (user TEXT PRIMARY KEY, info TEXT NOT NULL)");
  }

  set(user: string, info: unknown): void {
    this.#sql.exec("INSERT OR REPLACE INTO member_info (user, info) VALUES (?, ?)", user, JSON.stringify(info));
  }

  /** Whether any Pusher presence member is here. */
  any(): boolean {
    return this.#sql.exec("SELECT 1 FROM member_info LIMIT 1").toArray().length > 0;
  }

  get(user: string): unknown {
    const row = this.#sql.exec<{ info: string }>("SELECT info FROM member_info WHERE user = ?", user).toArray()[0];
    return row === undefined ? undefined : JSON.parse(row.info);
  }

  delete(user: string): void {
    this.#sql.exec("DELETE FROM member_info WHERE user = ?", user);
  }

  /**
   * The info of each of `users` that has one, as its stored JSON text (subscription_succeeded
   * takes it as it is), read in one query: the table holds only members present, at most
   * PRESENCE_LIST_LIMIT of them where a list is sent at all (docs/pusher.md).
   */
  of(users: string[]): Record<string, string> {
    const wanted = new Set(users);
    // From entries: user ids as own keys (`__proto__` included), on a plain object RPC can carry.
    const infos: [string, string][] = [];
    for (const { user, info } of this.#sql.exec<{ user: string; info: string }>("SELECT user, info FROM member_info")) {
      if (wanted.has(user)) infos.push([user, info]);
    }
    return Object.fromEntries(infos);
  }
}
