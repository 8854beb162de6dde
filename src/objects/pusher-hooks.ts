// What a Room tells the Pusher side of the app (docs/pusher.md): the channel directory behind
// `GET channels`, the app's webhooks, and with subscription counting the channel's count. A
// Room's webhooks are handed, the events of one turn together and in order, to the channel's
// Webhooks object (webhooks.ts), which stores them, POSTs them and tries again. Those that change
// what the app knows of the channel (occupied, vacated, member added or removed; the directory
// follows the first two) are stored in the Room, in the turn that changed its roster, until
// handed over: a restart between the two loses none (they are handed over at the next start).
import type { Config } from "../config";
import { log } from "../log";
import { isPresenceChannel, isUserChannel, subscriptionCountEvent, userChannel, userOfChannel, watchlistEvents } from "../protocol";
import { OncePerSecond } from "./count-frames";
import type { Links } from "./links";
import { type HandedOver, takeBatch } from "./webhooks";

/** A handover carries about this many characters at most (calls between objects stay small). */
const MAX_HANDOVER_CHARS = 1024 * 1024;

/** Waits before each new try of a handover that failed (a call already retries a reset or retryable failure once). */
const HANDOVER_WAITS_MS = [1_000, 2_000, 4_000];

type Webhook = { name: string; channel: string } & Record<string, unknown>;

/** The webhooks kept in the Room's storage until handed over: each changes what the app knows of the channel. */
const KEPT = new Set(["channel_occupied", "channel_vacated", "member_added", "member_removed"]);

/**
 * An event waiting to be handed over: its JSON text, its row while stored, and for the directory
 * whether it (un)occupies the channel. Without text it is for the directory alone, and `told`
 * hears when the directory has it (or the hand-over gave up).
 */
interface Outgoing {
  text?: string;
  row?: number;
  occupied?: boolean;
  told?: () => void;
}

/** How long a join that occupies the channel waits for the directory at most (a directory that fails or stalls holds no join). */
const LISTED_WAIT_MS = 2_000;

/** What subscription counting needs of its Room: the count, and a way to the channel's Pusher subscribers. */
export interface Subscriptions {
  count: () => number;
  /** Sends a frame, in Pusher's format, to every Pusher subscriber of the channel. */
  tell: (frame: string) => void;
  /** The census after the Room's start while it is under way: until it is in, the count may hold lost sockets. */
  settling: () => Promise<void> | undefined;
}

export class PusherHooks {
  readonly #room: string;
  readonly #app: NonNullable<Config["pusher"]>;
  readonly #links: Links;
  readonly #sql: SqlStorage;
  /** Events until they are handed to the Webhooks object (and the directory told). */
  #waiting: Outgoing[] = [];
  /** Whether the loop handing over what waits runs. */
  #sending = false;
  /** What the directory was last told of the channel (unknown after a start): the same again is not sent. */
  #told?: boolean;
  /** With subscription counting (PUSHER_SUBSCRIPTION_COUNT): the count, told at most once a second. */
  readonly #counting?: OncePerSecond;
  readonly #settling: () => Promise<void> | undefined;
  /** A count is on its way (`#countLater`); whether someone joined since the last one was said. */
  #countQueued = false;
  #joinedSince = false;

  /** Whether nothing waits to be handed over or to go to the channel's subscribers. */
  get idle(): boolean {
    return this.#waiting.length === 0 && !this.#sending && !this.#countQueued;
  }

  /** The hooks of `room`, or undefined where it has none (no Pusher app, or a user's own channel). */
  static of(room: string, config: Config, sql: SqlStorage, links: Links, subscriptions: Subscriptions): PusherHooks | undefined {
    return config.pusher === undefined || isUserChannel(room) ? undefined : new PusherHooks(room, config.pusher, sql, links, subscriptions);
  }

  private constructor(room: string, app: NonNullable<Config["pusher"]>, sql: SqlStorage, links: Links, { count, tell, settling }: Subscriptions) {
    this.#room = room;
    this.#app = app;
    this.#links = links;
    this.#sql = sql;
    this.#settling = settling;
    sql.exec("CREATE TABLE IF NOT EXISTS pusher_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL)");
    // Left over from before a restart (or a handover that failed): they go first.
    for (const { id, event } of sql.exec<{ id: number; event: string }>("SELECT id, event FROM pusher_outbox ORDER BY id")) {
      this.#queue({ text: event, row: id, ...occupancyOf((JSON.parse(event) as Webhook).name) });
    }
    // As Pusher: presence channels have their members instead. A last leave says 0 to nobody:
    // channel_vacated says it to the app.
    if (app.subscriptionCount && !isPresenceChannel(room)) {
      this.#counting = new OncePerSecond(count, (subscriptions, heard) => {
        if (subscriptions === heard) return false;
        if (subscriptions === 0) return true;
        tell(subscriptionCountEvent(room, subscriptions));
        this.#send({ name: "subscription_count", channel: room, subscription_count: subscriptions });
        return true;
      });
    }
  }

  /**
   * The channel's number of subscriptions changed (`grew`: someone joined): its subscribers and
   * the app hear it within a second (docs/pusher.md "Subscription counting").
   */
  subscriptionsChanged(grew: boolean): void {
    if (this.#counting === undefined) return;
    if (grew) this.#joinedSince = true;
    if (this.#countQueued) return;
    this.#countQueued = true;
    void this.#countLater(this.#counting);
  }

  // Counted a microtask later at least: a join's answer is made in the turn that counted it, so
  // the count goes out after it, and a newcomer hears the count that includes it after its
  // subscription_succeeded. After a start, once the census is in (no lost sockets counted): the
  // start's own recount changes the roster before the census of the other holders begins.
  async #countLater(counting: OncePerSecond): Promise<void> {
    try {
      await undefined;
      for (let settling = this.#settling(); settling !== undefined; settling = this.#settling()) await settling;
    } catch (error) {
      log("warn", "the census failed before a subscription count", { room: this.#room, error });
    }
    this.#countQueued = false;
    // A newcomer has heard no count yet: said again even if it is the last one said.
    if (this.#joinedSince) counting.forget();
    this.#joinedSince = false;
    counting.changed();
  }

  /** The room gained its first user or lost its last: the channel list, and channel_occupied/vacated. */
  occupied(occupied: boolean): void {
    this.#send({ name: occupied ? "channel_occupied" : "channel_vacated", channel: this.#room });
  }

  /**
   * Resolves once the directory lists the channel as occupied, in order with the changes queued
   * before: a join that occupies the channel waits for it, so `GET channels` lists the channel
   * by the time its first subscriber hears it is subscribed (docs/protocol.md, `GET channels`).
   */
  async listed(): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#queue({ occupied: true, told: resolve });
    const timer = setTimeout(resolve, LISTED_WAIT_MS);
    await promise;
    clearTimeout(timer);
  }

  /** The join `listed` was for was refused, and the room is still empty: the directory forgets it again. */
  unlisted(): void {
    this.#queue({ occupied: false });
  }

  /** A subscriber of a cache channel found no event to start from (it gets pusher:cache_miss). */
  cacheMiss(): void {
    this.#send({ name: "cache_miss", channel: this.#room });
  }

  /** A user joined or left a presence channel: member_added/removed. */
  member(event: "join" | "leave", user: string): void {
    if (isPresenceChannel(this.#room)) this.#send({ name: event === "join" ? "member_added" : "member_removed", channel: this.#room, user_id: user });
  }

  /** A client event, as its frame went to the channel's other Pusher subscribers. */
  clientEvent(frame: string, socketId: string): void {
    if (this.#app.webhookUrl === undefined) return;
    const { event, data, user_id: userId } = JSON.parse(frame) as { event: string; data: string; user_id?: string };
    this.#send({ name: "client_event", channel: this.#room, event, data, socket_id: socketId, ...(userId !== undefined && { user_id: userId }) });
  }

  /** Queues a webhook (occupancy changes also without a webhook URL: the directory hears of them). */
  #send(webhook: Webhook): void {
    const occupancy = occupancyOf(webhook.name);
    if (this.#app.webhookUrl === undefined && occupancy.occupied === undefined) return;
    const text = JSON.stringify(webhook);
    const row = KEPT.has(webhook.name) ? this.#sql.exec<{ id: number }>("INSERT INTO pusher_outbox (event) VALUES (?) RETURNING id", text).one().id : undefined;
    this.#queue({ text, ...(row !== undefined && { row }), ...occupancy });
  }

  #queue(outgoing: Outgoing): void {
    this.#waiting.push(outgoing);
    if (!this.#sending) {
      this.#sending = true;
      void this.#handOver();
    }
  }

  async #handOver(): Promise<void> {
    try {
      await scheduler.wait(0); // the rest of this turn's events go in the same call
      while (this.#waiting.length > 0) {
        const batch = takeBatch(this.#waiting, (outgoing) => outgoing.text?.length ?? 0, MAX_HANDOVER_CHARS);
        for (let tries = 0; ; tries++) {
          try {
            await this.#deliver(batch);
            break;
          } catch (error) {
            if (tries === HANDOVER_WAITS_MS.length) {
              for (const { told } of batch) told?.();
              throw error;
            }
            await scheduler.wait(HANDOVER_WAITS_MS[tries]!); // the events after it wait: the order holds
          }
        }
      }
    } catch (error) {
      // The stored ones stay, for the Room's next start; the rest are lost.
      log("error", "could not hand webhooks over, or tell the channel directory", { room: this.#room, error });
      for (const { told } of this.#waiting) told?.();
      this.#waiting = [];
    } finally {
      this.#sending = false; // in the turn that found nothing left: a later event starts a new loop
    }
  }

  /** Tells the directory the batch's last occupancy change, hands its events over, and forgets its stored rows. */
  async #deliver(batch: Outgoing[]): Promise<void> {
    const occupied = batch.findLast((outgoing) => outgoing.occupied !== undefined)?.occupied;
    // A join that waited for `listed` is followed by its channel_occupied: one call tells both.
    if (occupied !== undefined && occupied !== this.#told) {
      await this.#links.call("directory", "channels", (stub) => stub.occupied(this.#room, occupied));
      this.#told = occupied;
    }
    for (const { told } of batch) told?.();
    const events =
      this.#app.webhookUrl === undefined ? [] : batch.flatMap(({ text, row }): HandedOver[] => (text === undefined ? [] : [{ text, ...(row !== undefined && { kept: true }) }]));
    if (events.length > 0) await this.#links.call("webhooks", this.#room, (stub) => stub.post(this.#room, events));
    // A batch's stored rows are consecutive: events are stored and queued in the same order.
    const rows = batch.flatMap((outgoing) => outgoing.row ?? []);
    if (rows.length > 0) this.#sql.exec("DELETE FROM pusher_outbox WHERE id BETWEEN ? AND ?", rows[0]!, rows.at(-1)!);
  }
}

/** For the directory: whether a webhook (by its name) says the channel became occupied or vacant. */
function occupancyOf(name: string): { occupied?: boolean } {
  return name === "channel_occupied" ? { occupied: true } : name === "channel_vacated" ? { occupied: false } : {};
}

/**
 * A signed-in user's watchlist, both ways, kept by that user's channel Room (Pusher watchlists):
 * whom the user watches (its latest sign-in's list), and who watches the user. Watchers are told
 * when the user comes online or goes offline through their own Room, the one path every event
 * they hear takes (the state at sign-up included), so the events reach them in order. A
 * watcher that no longer watches the user, or is signed in nowhere, is forgotten when told
 * (unless it signed up again meanwhile: `signup` changes at each sign-up). A change is stored
 * with the roster change that made it until every watcher was told, and told again after a
 * restart that came in between (a watcher may hear it twice, never miss it).
 */
export class Watchers {
  readonly #sql: SqlStorage;
  readonly #user: string;
  readonly #links: Links;

  constructor(sql: SqlStorage, channel: string, links: Links) {
    this.#sql = sql;
    this.#user = userOfChannel(channel);
    this.#links = links;
    sql.exec("CREATE TABLE IF NOT EXISTS watchers (user TEXT PRIMARY KEY, signup TEXT NOT NULL)");
    sql.exec("CREATE TABLE IF NOT EXISTS watching (user TEXT PRIMARY KEY)");
    sql.exec("CREATE TABLE IF NOT EXISTS watch_news (id INTEGER PRIMARY KEY AUTOINCREMENT, online INTEGER NOT NULL)");
    for (const { id, online } of sql.exec<{ id: number; online: number }>("SELECT id, online FROM watch_news ORDER BY id").toArray()) {
      this.#tellAll(id, online === 1);
    }
  }

  /** The user signed in with `watchlist`: it replaces the last one, and each user on it hears of the watcher. */
  watch(watchlist: string[]): void {
    this.#sql.exec("DELETE FROM watching");
    for (const watched of watchlist) {
      this.#sql.exec("INSERT OR IGNORE INTO watching (user) VALUES (?)", watched);
      this.#links
        .call("room", userChannel(watched), (stub) => stub.watchedBy(this.#user))
        .catch((error: unknown) => log("warn", "could not sign up as a watcher", { user: this.#user, watched, error }));
    }
  }

  /** `watcher` signs up; `online` says whether it hears at once that the user is online. */
  add(watcher: string, online: boolean): void {
    const signup = crypto.randomUUID();
    this.#sql.exec("INSERT OR REPLACE INTO watchers (user, signup) VALUES (?, ?)", watcher, signup);
    if (online) void this.#tell(watcher, signup, watchlistEvents("online", [this.#user]));
  }

  /** Whether the user still watches `user` (a watcher asked to hear of it). */
  watches(user: string): boolean {
    return this.#sql.exec("SELECT 1 FROM watching WHERE user = ?", user).toArray().length > 0;
  }

  /** The user came online (its first connection) or went offline (its last left). */
  changed(online: boolean): void {
    const { id } = this.#sql.exec<{ id: number }>("INSERT INTO watch_news (online) VALUES (?) RETURNING id", online ? 1 : 0).one();
    this.#tellAll(id, online);
  }

  /** Tells every watcher the change stored as `id`, then forgets it. */
  #tellAll(id: number, online: boolean): void {
    const frame = watchlistEvents(online ? "online" : "offline", [this.#user]);
    const watchers = this.#sql.exec<{ user: string; signup: string }>("SELECT user, signup FROM watchers").toArray();
    void Promise.all(watchers.map(({ user, signup }) => this.#tell(user, signup, frame))).then(() => this.#sql.exec("DELETE FROM watch_news WHERE id = ?", id));
  }

  /** Tells one watcher; never fails (a failure is logged). */
  #tell(watcher: string, signup: string, frame: string): Promise<void> {
    return this.#links
      .call("room", userChannel(watcher), (stub) => stub.tell(frame, this.#user))
      .then((heard) => void (heard || this.#sql.exec("DELETE FROM watchers WHERE user = ? AND signup = ?", watcher, signup)))
      .catch((error: unknown) => log("warn", "could not tell a watcher", { user: this.#user, watcher, error }));
  }
}
