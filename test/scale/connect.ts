// Sockets and requests for the scale project: SOCKETS_PER_OBJECT=3, PRESENCE_LIST_LIMIT=3,
// MAX_SUBSCRIPTIONS=3, MAX_CONNECTIONS_PER_ROOM=12, USER_HUBS=4 (vitest.config.ts).
import { env, runInDurableObject } from "cloudflare:test";
import { sign } from "hono/jwt";
import { expect } from "vitest";
import { hubFor } from "../../src/objects/connect";
import type { Admission, JoinRequest, RoomFull, RosterAnswer, RosterChange } from "../../src/objects/feed";
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

type Join = (request: JoinRequest) => Promise<Admission | RoomFull>;

/**
 * Patches `room`'s Room so a join `plan` picks is answered only when `release()` is called: `plan`
 * gets the request and the real join, and answers how to wait for the gate (or undefined: at
 * once). RPC calls the class's methods, so the class is patched, for this room only; `restore()`.
 */
export async function holdJoins(room: string, plan: (request: JoinRequest, join: Join) => ((gate: Promise<void>) => Promise<Admission | RoomFull>) | undefined) {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const restore = await runInDurableObject(env.ROOMS.getByName(room), (instance) => {
    const roomClass = Object.getPrototypeOf(instance) as typeof instance;
    const join = roomClass.join;
    roomClass.join = function (this: typeof instance, request) {
      const held = this.ctx.id.name === room ? plan(request, (r) => join.call(this, r)) : undefined;
      return held ? held(gate) : join.call(this, request);
    };
    return () => void (roomClass.join = join);
  });
  return { release, restore };
}

/**
 * `count` fresh user ids whose sockets land on hub `users-<hub>` (it holds 3: SOCKETS_PER_OBJECT).
 * Each test takes a hub of its own, since the sockets of one before it may still be open.
 */
export function usersOnHub(hub: number, count: number): string[] {
  const users: string[] = [];
  while (users.length < count) {
    const user = freshUser();
    if (hubFor(user, 4) === `users-${hub}`) users.push(user);
  }
  return users;
}

/**
 * Puts `wrap` around `room`'s Room's changeRoster (for this room only) until `restore()`: `wrap`
 * gets the real method's call, the holder and the changes.
 */
export async function wrapChangeRoster(
  room: string,
  wrap: (real: () => Promise<RosterAnswer[]>, holder: string, changes: RosterChange[]) => Promise<RosterAnswer[]>,
): Promise<() => void> {
  return runInDurableObject(env.ROOMS.getByName(room), (instance) => {
    const roomClass = Object.getPrototypeOf(instance) as typeof instance;
    const changeRoster = roomClass.changeRoster;
    roomClass.changeRoster = function (this: typeof instance, holder, changes) {
      const real = () => changeRoster.call(this, holder, changes);
      return this.ctx.id.name === room ? wrap(real, holder, changes) : real();
    };
    return () => void (roomClass.changeRoster = changeRoster);
  });
}

/** Records how many changes each call to `room`'s changeRoster carried, until `restore()`. */
export async function recordCalls(room: string): Promise<{ sizes: number[]; restore: () => void }> {
  const sizes: number[] = [];
  const restore = await wrapChangeRoster(room, (real, _, changes) => (sizes.push(changes.length), real()));
  return { sizes, restore };
}

/** The users whose sockets are joining `room` on hub `users-<hub>`, with how many each. */
export function joiningAt(hub: number, room: string): Promise<Record<string, number>> {
  return runInDurableObject(env.HOLDERS.getByName(`users-${hub}`), (instance) => ({ ...instance.census(room).joining }));
}

/** Holds `first`'s join at `room`'s Room and sends its socket's subscribe; answers once the Room has it. */
export async function holdFirstJoin(room: string, first: string) {
  let arrived = false;
  const held = await holdJoins(room, (request, join) => {
    if (request.user !== first) return undefined;
    arrived = true;
    return (gate) => gate.then(() => join(request));
  });
  const socket = await openUser(first);
  socket.client.send({ type: "subscribe", room, id: "first" });
  await expect.poll(() => arrived).toBe(true);
  return { ...held, socket };
}
