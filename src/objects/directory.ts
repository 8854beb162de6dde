// Directory: which rooms are occupied now, for Pusher's `GET /apps/:id/channels` (docs/pusher.md).
// Rooms tell it when they gain their first socket or lose their last, nothing per message or per
// join, so it is the one list the relay keeps of its rooms, and only for this query.
import { DurableObject } from "cloudflare:workers";

/** The most channels one listing answers. */
const MAX_LISTED = 10_000;

export class Directory extends DurableObject<Env> {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS occupied (room TEXT PRIMARY KEY)");
  }

  /** A room gained its first socket (true) or lost its last (false). */
  occupied(room: string, occupied: boolean): void {
    if (occupied) this.ctx.storage.sql.exec("INSERT OR IGNORE INTO occupied (room) VALUES (?)", room);
    else this.ctx.storage.sql.exec("DELETE FROM occupied WHERE room = ?", room);
  }

  /** Occupied rooms whose name starts with `prefix`, in name order. */
  list(prefix: string): string[] {
    // LIKE would need its wildcards escaped; a range on the primary key needs nothing.
    return this.ctx.storage.sql
      .exec<{ room: string }>("SELECT room FROM occupied WHERE room >= ? AND room < ? ORDER BY room LIMIT ?", prefix, `${prefix}\uffff`, MAX_LISTED)
      .toArray()
      .map((row) => row.room);
  }
}
