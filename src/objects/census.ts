// How a Room keeps its roster true across every object holding its sockets: after each start it
// recounts its own sockets from the platform's list and asks every other holder for its counts (a
// census), which it asks again on each sweep alarm (docs/design.md "Joining, counting and
// presence"). Until the census after a start is in, what counts users waits for it (`settling`).
import { log } from "../log";
import { within } from "./links";
import { HERE, type CensusAnswer, type Roster } from "./roster";

/**
 * How long a holder has to answer the census after a start, which joins and reports wait for;
 * and any later one, which the next waits for (a slow holder may take a while to wake).
 */
const START_CENSUS_WAIT_MS = 2_000;
const CENSUS_WAIT_MS = 30_000;

export class Census {
  readonly #room: string;
  readonly #roster: Roster;
  readonly #ask: (holder: string) => Promise<CensusAnswer>;
  readonly #changed: (user: string, change: "joined" | "left") => void;
  #started = false;
  /** The census under way, if one is. */
  #counting?: Promise<void>;
  /** The census after a start, until it is in. */
  #settling?: Promise<void>;

  constructor(
    room: string,
    roster: Roster,
    ask: (holder: string) => Promise<CensusAnswer>,
    changed: (user: string, change: "joined" | "left") => void,
  ) {
    this.#room = room;
    this.#roster = roster;
    this.#ask = ask;
    this.#changed = changed;
  }

  /** Once after a start: the Room's own counts as `own` gives them, then a census of the others. */
  start(own: () => Record<string, number>): void {
    if (this.#started) return;
    this.#started = true;
    this.correct(HERE, { counts: own() });
    this.#settling = this.take(true).then(() => void (this.#settling = undefined));
  }

  /** The census after a start, while it is under way. */
  get settling(): Promise<void> | undefined {
    return this.#settling;
  }

  /**
   * Asks every other holder for its counts; one census at a time. After a `start` it only takes
   * counts down: a user it finds that the roster lacks is joining, and its own join counts it
   * and announces it to everyone but itself.
   */
  take(start = false): Promise<void> {
    this.#counting ??= Promise.all(this.#roster.others().map((holder) => this.#check(holder, start))).then(() => void (this.#counting = undefined));
    return this.#counting;
  }

  /** Sets `holder`'s counts from `answer` (Roster.replace); each change is announced. */
  correct(holder: string, answer: CensusAnswer, onlyFewer = false): void {
    this.#roster.replace(holder, answer, onlyFewer, this.#changed);
  }

  /** Replaces a holder's counts with what it reports, unless a report came while it answered. */
  async #check(holder: string, start: boolean): Promise<void> {
    const version = this.#roster.version(holder);
    try {
      const answer = await within(this.#ask(holder), start ? START_CENSUS_WAIT_MS : CENSUS_WAIT_MS);
      // A holder still on an older version of the code answers the counts alone.
      const counted = typeof answer.counts === "object" ? answer : { counts: answer as unknown as Record<string, number> };
      if (this.#roster.version(holder) === version) this.correct(holder, counted, start);
    } catch (error) {
      log("warn", "census of a holder failed", { room: this.#room, holder, error });
    }
  }
}
