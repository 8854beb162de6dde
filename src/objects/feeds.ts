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

export class Feeds {
  readonly rooms = new Map<string, Feed>();
  readonly inboxes = new Map<string, Feed>();

  constructor(sessions: Iterable<Session>, subscriptions: () => SubscriptionRow[]) {
    const userSockets = new Map<string, Session>();
    for (const session of sessions) {
      if (session.room !== undefined) this.room(session.room).add(session);
      else {
        if (!session.pusher) this.inbox(session.identity.user).add(session);
        userSockets.set(session.connection, session);
      }
    }
    if (userSockets.size === 0) return;
    for (const { connection, room, member } of subscriptions()) {
      const session = userSockets.get(connection);
      if (session) this.room(room).add(session, undefined, member ?? undefined);
    }
  }

  /** The room's feed, made if there is none: a hole in a room's seqs means lost messages. */
  room(name: string): Feed {
    return made(this.rooms, name, true);
  }

  /** The user's feed, made if there is none: an inbox's refused directs leave holes, harmlessly. */
  inbox(user: string): Feed {
    return made(this.inboxes, user, false);
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
