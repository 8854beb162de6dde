#!/usr/bin/env node
// Prints a signed token for local use: `npm run token -- <user> [rooms...] [--ttl seconds]`.
// The secret comes from AUTH_SECRET in the environment, else from .dev.vars (what `wrangler dev`
// reads), so the token works against `npm run dev` and `npm start` with that file.
import { existsSync, readFileSync } from "node:fs";
import { sign } from "hono/jwt";

const USAGE = `usage: npm run token -- <user> [room or prefix* ...] [--ttl seconds]

  <user>        the token's sub: 1-128 of A-Z a-z 0-9 _ . : - starting with a letter or digit
  rooms         rooms the holder may join (a trailing * is a prefix); none means every room;
                1-164 of A-Z a-z 0-9 _ . : - = @ , ; (every Pusher channel name)
  --ttl N       seconds until it expires (default 86400; 0 for a token that never expires)

The secret is AUTH_SECRET from the environment or from .dev.vars.`;

// The rules of src/protocol/names.ts (docs/protocol.md "Names"); a prefix is any start of a room id.
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
const ROOM = /^[A-Za-z0-9_.:\-=@,;]{1,164}$/;

function fail(message) {
  process.stderr.write(`${message}\n\n${USAGE}\n`);
  process.exit(2);
}

/** AUTH_SECRET from a dotenv-style file: KEY=value lines, optional quotes, # comments. */
function secretFromDevVars(path) {
  if (!existsSync(path)) return undefined;
  for (const line of readFileSync(path, "utf8").split(/\r?\n/)) {
    const match = line.match(/^\s*AUTH_SECRET\s*=\s*(.*?)\s*$/);
    if (match) return match[1].replace(/^(["'])(.*)\1$/, "$2");
  }
  return undefined;
}

const args = process.argv.slice(2);
if (args.includes("-h") || args.includes("--help")) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
let ttl = 86_400;
const ttlAt = args.indexOf("--ttl");
if (ttlAt !== -1) {
  const value = args[ttlAt + 1];
  if (value === undefined || !/^\d+$/.test(value)) fail("--ttl needs a whole number of seconds");
  ttl = Number(value);
  args.splice(ttlAt, 2);
}
const [user, ...rooms] = args;
if (user === undefined) fail("missing <user>");
if (!NAME.test(user)) fail(`"${user}" is not a valid user id`);
for (const room of rooms) {
  const name = room.endsWith("*") ? room.slice(0, -1) : room;
  if (name !== "" && !ROOM.test(name)) fail(`"${room}" is not a valid room id or prefix`);
}
if (rooms.length > 64) fail("a token may name at most 64 rooms");

const secret = process.env.AUTH_SECRET?.trim() || secretFromDevVars(".dev.vars");
if (!secret) fail("no AUTH_SECRET: set it in the environment or put AUTH_SECRET=... in .dev.vars");

const payload = { sub: user, iat: Math.floor(Date.now() / 1000) };
if (ttl > 0) payload.exp = payload.iat + ttl;
if (rooms.length > 0) payload.rooms = rooms;
process.stdout.write(`${await sign(payload, secret, "HS256")}\n`);
