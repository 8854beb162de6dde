// Who a connection belongs to and what it may join: the vocabulary the Worker (which establishes
// it) and the objects (which keep it with each socket) share. Neither layer owns it.

/** Who a socket belongs to, as the Worker established it. */
export interface Identity {
  user: string;
  /** Token expiry, seconds since the epoch. */
  exp?: number;
  /** The token's `rooms` claim: room ids, or `prefix*` patterns; undefined means every room. */
  rooms?: string[];
}

/** Rooms named like Pusher's private and presence channels: only a claim that names them opens them. */
export function isPrivateRoom(room: string): boolean {
  return room.startsWith("private-") || room.startsWith("presence-");
}

/**
 * Whether a token's `rooms` claim lets its holder into `room`. A private or presence room needs
 * an entry that names it: the exact id, or a prefix that itself starts with `private-` or
 * `presence-` (docs/protocol.md "Pusher Channels compatibility"); an absent claim is not enough.
 */
export function roomAllowed(rooms: string[] | undefined, room: string): boolean {
  if (rooms === undefined) return !isPrivateRoom(room);
  return rooms.some((entry) => {
    if (!entry.endsWith("*")) return entry === room;
    const prefix = entry.slice(0, -1);
    return room.startsWith(prefix) && (!isPrivateRoom(room) || isPrivateRoom(prefix));
  });
}
