// Who is in each room, kept from what the relay says: a welcome or `subscribed` frame sets it
// (`users` always, the list while the room is small), `join` and `leave` change it, and above the
// relay's PRESENCE_LIST_LIMIT `count` frames say how many without saying who.
import type { PresenceCountFrame, PresenceEntry, PresenceFrame } from "../src/protocol/frames";
import type { PresenceState } from "./types";

interface RoomPresence {
  users: number;
  /** Present while the relay lists the room's users. */
  members?: Set<string>;
}

export class Presence {
  readonly #rooms = new Map<string, RoomPresence>();

  /** A welcome or `subscribed` frame: the room as it is now. */
  set(room: string, frame: { users?: number; presence?: PresenceEntry[] }): PresenceState {
    const members = frame.presence && new Set(frame.presence.map((entry) => entry.user));
    // A version 1 relay sends the list without `users`.
    this.#rooms.set(room, { users: frame.users ?? members?.size ?? 0, ...(members && { members }) });
    return this.state(room)!;
  }

  /** Applies a presence frame; answers the new state, or nothing for a room not known here. */
  apply(frame: PresenceFrame | PresenceCountFrame): PresenceState | undefined {
    const room = this.#rooms.get(frame.room);
    if (!room) return undefined;
    if (frame.event === "count") {
      // Counts come only above the list limit: the list we had is out of date from here on.
      room.users = frame.users;
      delete room.members;
    } else if (room.members) {
      if (frame.event === "join") room.members.add(frame.user);
      else room.members.delete(frame.user);
      room.users = room.members.size;
    } else {
      // Back under the limit the relay names joins and leaves again, but we never had the list.
      room.users = Math.max(0, room.users + (frame.event === "join" ? 1 : -1));
    }
    return this.state(frame.room);
  }

  state(room: string): PresenceState | undefined {
    const known = this.#rooms.get(room);
    if (!known) return undefined;
    return { room, users: known.users, ...(known.members && { members: [...known.members].sort() }) };
  }

  forget(room: string): void {
    this.#rooms.delete(room);
  }
}
