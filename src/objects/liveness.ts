// How a socket-holding object times its sockets' heartbeats, from HEARTBEAT_TIMEOUT_MS
// (docs/protocol.md "Liveness" has the whole bound these make).

export interface LivenessTimes {
  /** How often the sweep runs: a quarter of the timeout, so a close lands within 1.5x of it. */
  sweepEveryMs: number;
  /**
   * How long a socket may stay silent before a sweep closes it: the timeout and a twentieth of
   * it (at most a second). A socket's clock starts when it is accepted, a little before its
   * client sees the 101, so the client too finds the close no earlier than the timeout.
   */
  silentForMs: number;
  /** How stale the stored `seen` may get before it is rewritten. */
  saveEveryMs: number;
}

export function livenessTimes(timeoutMs: number): LivenessTimes {
  return {
    sweepEveryMs: Math.max(100, Math.floor(timeoutMs / 4)),
    silentForMs: timeoutMs + Math.min(Math.floor(timeoutMs / 20), 1000),
    saveEveryMs: Math.floor(timeoutMs / 10),
  };
}
