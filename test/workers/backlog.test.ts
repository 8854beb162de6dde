// When a socket counts as too slow (src/objects/backlog.ts). The policy is about time and numbers
// the runtime reports, so it is told here with sockets that report what a test sets; the whole
// path, with a real client that stops reading, is in test/e2e/adversarial.test.ts.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Backlog, LOOK_AFTER_MS } from "../../src/objects/backlog";

const BOUND = 1024 * 1024;

/** What the Backlog reads of a socket: how much waits for its client, and whether it is open. */
interface Reported {
  bufferedAmount: number;
  readyState: number;
}

function socket(bufferedAmount: number): Reported & WebSocket {
  return { bufferedAmount, readyState: WebSocket.OPEN } as Reported & WebSocket;
}

describe("Backlog", () => {
  let closed: { ws: WebSocket; reason: string }[];
  let backlog: Backlog;
  beforeEach(() => {
    vi.useFakeTimers();
    closed = [];
    backlog = new Backlog(BOUND, (ws, reason) => closed.push({ ws, reason }));
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("leaves alone a socket that never falls more than the bound behind", () => {
    const ws = socket(BOUND);
    backlog.sent(ws);
    vi.advanceTimersByTime(LOOK_AFTER_MS * 3);
    expect(closed).toEqual([]);
  });

  it("closes a socket still as far behind LOOK_AFTER_MS after its first look (a second after it passed the bound), saying how far", () => {
    const ws = socket(BOUND + 1);
    backlog.sent(ws);
    vi.advanceTimersByTime(LOOK_AFTER_MS);
    expect(closed).toEqual([]);
    vi.advanceTimersByTime(1_000);
    expect(closed).toEqual([{ ws, reason: `too slow: ${BOUND + 1} bytes sent and not read` }]);
  });

  it("closes a socket that falls further behind while it is watched", () => {
    const ws = socket(2 * BOUND);
    backlog.sent(ws);
    vi.advanceTimersByTime(1_000);
    ws.bufferedAmount = 5 * BOUND;
    vi.advanceTimersByTime(LOOK_AFTER_MS);
    expect(closed.map((c) => c.ws)).toEqual([ws]);
  });

  it("keeps a socket that is catching up, however long it takes, and forgets it once it has", () => {
    const ws = socket(8 * BOUND);
    backlog.sent(ws);
    for (let left = 7; left >= 2; left--) {
      ws.bufferedAmount = left * BOUND;
      vi.advanceTimersByTime(LOOK_AFTER_MS);
    }
    expect(closed).toEqual([]);
    ws.bufferedAmount = 0;
    vi.advanceTimersByTime(1_000);
    expect(vi.getTimerCount()).toBe(0);
    // Behind again later: a new watch, with a new LOOK_AFTER_MS to catch up.
    ws.bufferedAmount = 3 * BOUND;
    backlog.sent(ws);
    vi.advanceTimersByTime(LOOK_AFTER_MS - 1_000);
    expect(closed).toEqual([]);
  });

  it("measures a burst once the turn that sent it is over: a replay that then drains is not taken for a stall", () => {
    // A resume's replay goes out in one turn: the socket passes the bound early in it, and the
    // object reads it again each lookEvery bytes sent until the whole replay is queued.
    const ws = socket(BOUND + 1);
    for (let queued = 1; queued <= 6; queued++) {
      ws.bufferedAmount = queued * BOUND + 1;
      backlog.sent(ws);
    }
    vi.advanceTimersByTime(1_000); // the first look: 6 MiB behind
    ws.bufferedAmount = 5 * BOUND; // draining slowly: more than where the burst passed the bound
    vi.advanceTimersByTime(LOOK_AFTER_MS);
    expect(closed).toEqual([]);
    // Then it stops reading: closed once LOOK_AFTER_MS passes with no less unread.
    vi.advanceTimersByTime(LOOK_AFTER_MS);
    expect(closed).toEqual([{ ws, reason: `too slow: ${5 * BOUND} bytes sent and not read` }]);
  });

  it("forgets a socket that closed meanwhile, and keeps no timer once nothing is watched", () => {
    const ws = socket(4 * BOUND);
    backlog.sent(ws);
    ws.readyState = WebSocket.CLOSED;
    vi.advanceTimersByTime(LOOK_AFTER_MS * 2);
    expect(closed).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });
});
