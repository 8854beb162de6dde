// Sockets and requests for the scale project: SOCKETS_PER_OBJECT=3, PRESENCE_LIST_LIMIT=3,
// MAX_SUBSCRIPTIONS=3, MAX_CONNECTIONS_PER_ROOM=12, USER_HUBS=4 (vitest.config.ts).
import { sign } from "hono/jwt";
import type { TestClient } from "../support/client";
import { connect, freshRoom, join, request } from "../workers/connect";

export { connect, freshRoom, join, request };

export const KEY = { Authorization: "Bearer test-api-key" };

/** A fresh user id, so hubs and inboxes start empty in every test. */
export function freshUser(prefix = "user"): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}

export function token(claims: Record<string, unknown>): Promise<string> {
  return sign(claims, "scale-secret", "HS256");
}

/** Opens `user`'s own socket (held by a hub) and reads its welcome. */
export async function openUser(user = freshUser(), query = `user=${user}`): Promise<{ client: TestClient; user: string }> {
  const client = await connect(`/users/${user}/ws?${query}`);
  const welcome = await client.json();
  if (welcome.type !== "welcome") throw new Error(`expected welcome, got ${JSON.stringify(welcome)}`);
  return { client, user };
}

/** Subscribes `client` to `room` and answers the `subscribed` frame. */
export async function subscribe(client: TestClient, room: string, extra: Record<string, unknown> = {}): Promise<Record<string, any>> {
  client.send({ type: "subscribe", room, ...extra });
  return client.nextOf("subscribed");
}

export async function info(room: string): Promise<Record<string, any>> {
  const res = await request(`/rooms/${room}`, { headers: KEY });
  if (res.status !== 200) throw new Error(`GET /rooms/${room}: ${res.status} ${await res.text()}`);
  return res.json();
}

/** Publishes through the server API and answers the seq. */
export async function serverPublish(room: string, data: unknown): Promise<number> {
  const res = await request(`/rooms/${room}/messages`, { method: "POST", headers: KEY, body: JSON.stringify({ data }) });
  if (res.status !== 200) throw new Error(`POST: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { seq: number }).seq;
}
