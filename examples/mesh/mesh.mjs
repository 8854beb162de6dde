// The mesh pattern on edge-relay: N service nodes, each holding ONE WebSocket to its own inbox
// (/users/<node>/ws), message each other directly over it. The relay finds the recipient
// wherever it is connected and stores what it cannot deliver yet, so no node needs to know which
// server the others sit on, and a node that drops out misses nothing.
//
//   node_modules/.bin/node examples/mesh/mesh.mjs [relayUrl] [nodes]   (Node >= 22: global WebSocket;
//   node_modules/.bin/node is the Node 22 the project installs)
//
// Against `npm start` (anonymous mode) on http://localhost:8787 by default.

const relayUrl = new URL(process.argv[2] ?? "http://localhost:8787");
const NODES = Number(process.argv[3] ?? 3);
if (!Number.isInteger(NODES) || NODES < 2) throw new Error("nodes must be an integer >= 2");
if (typeof WebSocket !== "function") throw new Error("needs the global WebSocket of Node >= 22");

const ROUNDS = 4;
const ROUND_MS = 1000;
/** Round in which the last node drops its connection, to show that the inbox replays. */
const OUTAGE_ROUND = 2;
const OUTAGE_MS = 1500;
/** After the last round, how long to wait for every message to arrive before giving up. */
const DRAIN_MS = 10_000;
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 8000;

// Messages of this run carry its id, so anything an earlier, interrupted run left unacked in an
// inbox (it is replayed too: that is the point) is told apart from this run's traffic.
const run = Math.random().toString(36).slice(2, 8);
const started = Date.now();
const clock = () => `${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s`;
const log = (...parts) => console.log(clock(), ...parts);

class MeshNode {
  constructor(name) {
    this.name = name;
    this.ws = undefined;
    this.open = false;
    this.stopped = false;
    this.heartbeat = undefined;
    this.backoff = BACKOFF_MIN_MS;
    this.offlineUntil = 0;
    /** Highest inbox seq handled, per inbox epoch: replays after a lost ack are skipped by it. */
    this.epoch = undefined;
    this.lastSeq = 0;
    /** Sends awaiting the relay's ack, by id, so the ack line can say what was sent. */
    this.unacked = new Map();
    /** Frames written while disconnected, sent in order on the next welcome. */
    this.outbox = [];
    /** Ids of this run's messages received, to report duplicates and completeness. */
    this.received = new Set();
    this.duplicates = 0;
    this.counter = 0;
  }

  connect() {
    const url = new URL(`/users/${this.name}/ws`, relayUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    // Anonymous mode: the identity is ?user=. A deployed relay wants ?token=<JWT with sub=name>.
    url.searchParams.set("user", this.name);
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.addEventListener("message", (event) => this.onMessage(event.data));
    // 'error' is always followed by 'close', which is where reconnecting happens.
    ws.addEventListener("error", () => {});
    ws.addEventListener("close", (event) => this.onClose(ws, event));
  }

  onMessage(text) {
    if (text === "pong") return;
    const frame = JSON.parse(text);
    switch (frame.type) {
      case "welcome":
        return this.onWelcome(frame);
      case "direct":
        return this.onDirect(frame);
      case "ack": {
        const sent = this.unacked.get(frame.id);
        this.unacked.delete(frame.id);
        return log(`${this.name} → ${sent?.to ?? "?"}  ${JSON.stringify(sent?.text)}  (${frame.status}, seq ${frame.seq})`);
      }
      case "error":
        // Not sent (inbox_full, rate_limited, internal...): a real service would retry or alert.
        this.unacked.delete(frame.id);
        return log(`${this.name} ✗ ${frame.code}: ${frame.message}`);
    }
  }

  onWelcome(welcome) {
    this.open = true;
    this.backoff = BACKOFF_MIN_MS;
    // A new epoch means the inbox was recreated: its seqs start again from 1.
    if (welcome.epoch !== this.epoch) {
      this.epoch = welcome.epoch;
      this.lastSeq = 0;
    }
    log(`${this.name} connected (inbox seq ${welcome.seq}); anything unacked follows`);
    // The relay closes a socket it hears nothing from; ping at the interval it asks for.
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => this.ws.send("ping"), welcome.heartbeat.interval);
    for (const frame of this.outbox.splice(0)) this.ws.send(frame);
  }

  onDirect(frame) {
    if (frame.seq > this.lastSeq) {
      this.lastSeq = frame.seq;
      const { data } = frame;
      if (data?.run === run) {
        if (this.received.has(frame.id)) this.duplicates++;
        this.received.add(frame.id);
        log(`${this.name} ← ${frame.from}  ${JSON.stringify(data.text)}  (seq ${frame.seq})`);
      } else {
        log(`${this.name} ← ${frame.from}  (left over from an earlier run, seq ${frame.seq})`);
      }
    }
    // Ack everything handled, replays included, so the inbox can drop it.
    this.ws.send(JSON.stringify({ type: "ack", seq: this.lastSeq }));
  }

  onClose(ws, event) {
    if (ws !== this.ws) return;
    this.open = false;
    clearInterval(this.heartbeat);
    if (this.stopped) return;
    // Exponential backoff with jitter, so nodes cut off together do not return in lockstep.
    const wait = Math.max(this.backoff * (0.5 + Math.random()), this.offlineUntil - Date.now());
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    log(`${this.name} disconnected (${event.code}); reconnecting in ${Math.round(wait)} ms`);
    setTimeout(() => this.connect(), wait);
  }

  /**
   * Sends a direct to `to` and answers its id. While disconnected it waits in the outbox. (A send
   * that is on the wire when the connection drops may or may not have been taken; a service that
   * needs it would resend it with the same id and have receivers skip ids they already saw.)
   */
  send(to, text) {
    const id = `${this.name}:${++this.counter}`;
    this.unacked.set(id, { to, text });
    const frame = JSON.stringify({ type: "direct", to, id, data: { run, text } });
    if (this.open) this.ws.send(frame);
    else this.outbox.push(frame);
    return id;
  }

  /** Drops the connection as a crash or deploy would; reconnecting brings back what was missed. */
  dropFor(ms) {
    this.offlineUntil = Date.now() + ms;
    log(`${this.name} goes away for ${ms} ms`);
    // Not open from here on: a closing socket silently discards what is sent on it.
    this.open = false;
    this.ws.close(1000, "simulated outage");
  }

  stop() {
    this.stopped = true;
    clearInterval(this.heartbeat);
    this.ws.close(1000, "done");
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const nodes = Array.from({ length: NODES }, (_, i) => new MeshNode(`mesh-node-${i + 1}`));
log(`${NODES} nodes on ${relayUrl.origin}, run ${run}`);
for (const node of nodes) node.connect();

/** Every id a node sent, with the node that must receive it. */
const expected = new Map();
for (let round = 1; round <= ROUNDS; round++) {
  await sleep(ROUND_MS);
  if (round === OUTAGE_ROUND) nodes.at(-1).dropFor(OUTAGE_MS);
  for (const [i, node] of nodes.entries()) {
    // Each round, every node messages the next one round-robin (skipping itself).
    const to = nodes[(i + round) % NODES === i ? (i + 1) % NODES : (i + round) % NODES];
    expected.set(node.send(to.name, `round ${round}: hello ${to.name}, from ${node.name}`), to);
  }
}

// Wait until everything sent has reached its recipient (the dropped node gets its share from
// the inbox replay once it is back), or give up after DRAIN_MS.
const deadline = Date.now() + DRAIN_MS;
const missing = () => [...expected].filter(([id, to]) => !to.received.has(id)).map(([id]) => id);
while (missing().length > 0 && Date.now() < deadline) await sleep(100);

for (const node of nodes) node.stop();
const lost = missing();
const duplicates = nodes.reduce((sum, node) => sum + node.duplicates, 0);
log(`done: ${expected.size} sent, ${expected.size - lost.length} received, ${lost.length} missing, ${duplicates} duplicates`);
if (lost.length > 0) log(`missing: ${lost.join(", ")}`);
process.exitCode = lost.length === 0 && duplicates === 0 ? 0 : 1;
