// A holder's joins and counts to the Rooms whose sockets it holds: one ordered queue per room,
// with one call out at a time, so what comes meanwhile goes together in the next call; and the
// Room's half, which takes them (docs/design.md "Joining, counting and presence").
import type { Admission, JoinRequest, RoomFull, RosterAnswer, RosterChange } from "./feed";
import { Batches, type Links, type StubOf } from "./links";

/** workerd's error for a call of a method the callee lacks (its test harness words it without "the method"). */
const NOT_IMPLEMENTED = /does not implement (the method )?"changeRoster"/;

export class RosterCalls {
  readonly #links: Links;
  /** The name the holder joins as (a Room joins as the roster's own marker). */
  readonly #holder: () => string;
  readonly #batches: Batches<RosterChange, RosterAnswer>;

  constructor(links: Links, holder: () => string) {
    this.#links = links;
    this.#holder = holder;
    this.#batches = new Batches((room, changes) => this.#send(room, changes));
  }

  /** Counts a joining socket in `room`; answers its welcome's contents or the refusal. */
  async join(room: string, request: JoinRequest): Promise<Admission | RoomFull> {
    // A call carries at most MAX_CALL_SIZE (links.ts): a Pusher member's user_info counts.
    const size = 200 + room.length + request.user.length + (request.info === undefined ? 0 : JSON.stringify(request.info).length);
    return (await this.#push(room, { join: request }, size))!;
  }

  /** Tells `room` how many of `user`'s sockets the holder has now (0: all gone). */
  async count(room: string, user: string, connections: number): Promise<void> {
    await this.#push(room, { count: { user, connections } }, 100 + user.length);
  }

  async #push(room: string, change: RosterChange, size: number): Promise<Admission | RoomFull | null> {
    const answer = await this.#batches.push(room, change, size);
    if (answer !== null && "failed" in answer) throw new Error(`room ${room} could not make a roster change: ${answer.failed}`);
    return answer;
  }

  /** Sends `changes` until each is answered: a Room answers fewer when their replays grow too big for one answer. */
  async #send(room: string, changes: RosterChange[]): Promise<RosterAnswer[]> {
    const answers: RosterAnswer[] = [];
    while (answers.length < changes.length) {
      const rest = changes.slice(answers.length);
      let taken: RosterAnswer[];
      try {
        taken = await this.#links.call("room", room, (stub) => this.#call(stub, rest));
        if (taken.length === 0) throw new Error(`room ${room} took none of ${rest.length} roster changes`);
      } catch (error) {
        if (answers.length === 0) throw error;
        taken = rest.map(() => ({ failed: String(error) })); // those answered already stand
      }
      answers.push(...taken);
    }
    return answers;
  }

  async #call(stub: StubOf<"room">, changes: RosterChange[]): Promise<RosterAnswer[]> {
    try {
      return (await stub.changeRoster(this.#holder(), changes)) as RosterAnswer[];
    } catch (error) {
      // A Room still on code from before changeRoster gets each change alone: objects take up a
      // deploy's code one by one, over minutes (docs/platform.md "Calls between objects").
      if (!(error instanceof TypeError && NOT_IMPLEMENTED.test(error.message))) throw error;
      const calls = changes.map((change) =>
        "join" in change ? (stub.join(change.join) as Promise<Admission | RoomFull>) : stub.count(this.#holder(), change.count.user, change.count.connections).then(() => null),
      );
      return Promise.all(calls.map((call) => call.catch((failure: unknown) => ({ failed: String(failure) }))));
    }
  }
}

/**
 * Characters past which one answer takes no more joins: a call's answer may be at most 32 MiB
 * serialized (docs/platform.md, two bytes a character at worst), and what passes the budget is
 * one join's answer, at most MAX_JOIN_ANSWER.
 */
const ANSWER_BUDGET = 4 * 1024 * 1024;

/**
 * The most characters one join's answer carries to another object (answerSize); one past it goes
 * without its replay, a resume answered `recovered: false` (docs/protocol.md decision 57). Above
 * every default: 100 messages of 64 KiB are 6.5 Mi, and without its replay an answer holds at
 * most 100 user_infos of 64 KiB and their list.
 */
const MAX_JOIN_ANSWER = 8 * 1024 * 1024;

/** About how many characters a join's answer carries: its replay, its presence list and user_infos. */
function answerSize(answer: Admission): number {
  let size = 0;
  for (const frame of answer.replay) size += frame.length;
  for (const { user } of answer.presence ?? []) size += user.length + 32;
  for (const info of Object.values(answer.infoTexts ?? {})) size += info.length;
  return size;
}

/** `answer` and its size, its replay dropped when too big to hand over (a resume then reloads, as one past the history). */
function handedOver(answer: Admission): { answer: Admission; size: number } {
  const size = answerSize(answer);
  if (size <= MAX_JOIN_ANSWER) return { answer, size };
  const bare = { ...answer, replay: [], ...(answer.recovered !== undefined && { recovered: false }) };
  return { answer: bare, size: answerSize(bare) };
}

/**
 * The Room's half (Room `changeRoster`): applies `changes` in order, each answered on its own (one
 * that throws answers `failed`), and stops once the answers pass ANSWER_BUDGET; the holder sends
 * the rest again.
 */
export async function applyRosterChanges(
  changes: RosterChange[],
  room: { join(request: JoinRequest): Promise<Admission | RoomFull>; count(user: string, connections: number): Promise<void>; failed(error: unknown): void },
): Promise<RosterAnswer[]> {
  const answers: RosterAnswer[] = [];
  let size = 0;
  for (const change of changes) {
    if (size >= ANSWER_BUDGET) break;
    try {
      if ("count" in change) {
        await room.count(change.count.user, change.count.connections);
        answers.push(null);
        continue;
      }
      const joined = await room.join(change.join);
      if ("refused" in joined) {
        answers.push(joined);
        continue;
      }
      const { answer, size: more } = handedOver(joined);
      size += more;
      answers.push(answer);
    } catch (error) {
      room.failed(error);
      answers.push({ failed: String(error) });
    }
  }
  return answers;
}
