// Ids on the wire (docs/protocol.md "Names"). User ids: 1 to 128 characters of
// `A-Z a-z 0-9 _ . : -` starting with a letter or digit, so `..` and `.hidden` are refused.
// Room ids (1.1): 1 to 164 characters that also allow `= @ , ;`, so every Pusher channel name
// is a room id. `#` and `/` are never part of either, which is what lets object names such as
// `<room>#2` (a room's shard) never collide with a room's own name.
const USER = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
const ROOM = /^[A-Za-z0-9_.:\-=@,;]{1,164}$/;

export const NAME_RULE = "1-128 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit";
export const ROOM_RULE = "1-164 characters of A-Z a-z 0-9 _ . : - = @ , ;";

/** Whether `value` is a valid user id (also the rule for a message's `from`). */
export function isValidName(value: unknown): value is string {
  return typeof value === "string" && USER.test(value);
}

export function isValidRoom(value: unknown): value is string {
  // `.` and `..` would be valid, but no URL can carry them as a path segment.
  return typeof value === "string" && ROOM.test(value) && value !== "." && value !== "..";
}
