// Frame ids: the relay's answers (echo, ack, error, subscribed) name the frame by its id, so ids
// must not collide with another client's. `crypto.randomUUID` exists only in secure contexts
// (https, localhost), so a page served over plain http on a LAN address gets the same kind of
// id from `crypto.getRandomValues`, which exists everywhere.
export function newId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x40; // version 4
  bytes[8] = (bytes[8]! & 0x3f) | 0x80; // RFC 4122 variant
  const hex = Array.from(bytes, (byte: number) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
