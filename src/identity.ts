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

/** Whether a token's `rooms` claim lets its holder into `room`. */
export function roomAllowed(rooms: string[] | undefined, room: string): boolean {
  if (rooms === undefined) return true;
  return rooms.some((entry) => (entry.endsWith("*") ? room.startsWith(entry.slice(0, -1)) : entry === room));
}
