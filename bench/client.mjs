// One benchmark client process: holds many `ws` sockets, sends open-loop, counts what arrives.
// Driven by the runner over IPC ({id, cmd, ...} in, {id, result | error} out). Several of these
// run at once so the receiving side is not one Node thread.
//
// A frame counts as a delivery when it contains `"t":` (the timestamp every benchmark payload
// carries), so welcome, presence and ack frames of any server are never counted; `bytes` and
// `frames` count every frame received (payload bytes, welcome and presence included). Timestamps are
// CLOCK_MONOTONIC microseconds (process.hrtime), which every process on the machine shares.
import WebSocket from "ws";

const T_KEY = Buffer.from('"t":');
/** The same key inside a JSON string (a Pusher event's `data` is the payload stringified). */
const T_KEY_ESCAPED = Buffer.from('\\"t\\":');
const DIRECT_PREFIX = Buffer.from('{"type":"direct"');
const SEQ = /"seq":(\d+)/;

/** Monotonic microseconds, comparable across processes. */
function nowUs() {
  const [s, ns] = process.hrtime();
  return s * 1e6 + ns / 1e3;
}

/** @type {WebSocket[]} */
let sockets = [];
let received = 0;
let bytes = 0;
let frames = 0;
/** When on, each socket checks that the `seq`s of counted frames rise by one: gaps and repeats. */
let checkSeq = false;
let seqGaps = 0;
let seqRepeats = 0;
let recordLatency = false;
let ackEvery = 0;
/** @type {number[]} latencies in ms */
let latencies = [];
/** @type {[number, number][]} (time us, received) every 100 ms while tracking */
let timeline = [];
let sampler;

function parseT(data, at) {
  let i = at + 4;
  let value = 0;
  for (;;) {
    const c = data[i++];
    if (c === undefined || c < 48 || c > 57) break;
    value = value * 10 + (c - 48);
  }
  return value;
}

function onMessage(ws, data) {
  frames++;
  bytes += data.length;
  let at = data.indexOf(T_KEY);
  if (at < 0) {
    at = data.indexOf(T_KEY_ESCAPED);
    if (at < 0) return;
    at += T_KEY_ESCAPED.length - T_KEY.length;
  }
  received++;
  if (checkSeq) {
    const seq = Number(SEQ.exec(data.toString())?.[1]);
    if (seq > 0) {
      const last = ws.benchSeq ?? 0;
      if (seq <= last) seqRepeats++;
      else if (last > 0 && seq > last + 1) seqGaps++;
      ws.benchSeq = Math.max(last, seq);
    }
  }
  if (recordLatency && latencies.length < 2_000_000) latencies.push((nowUs() - parseT(data, at)) / 1000);
  if (ackEvery > 0 && data.subarray(0, DIRECT_PREFIX.length).equals(DIRECT_PREFIX)) {
    ws.benchDirects = (ws.benchDirects ?? 0) + 1;
    if (ws.benchDirects % ackEvery === 0) {
      const seq = SEQ.exec(data.toString())?.[1];
      if (seq !== undefined) ws.send(`{"type":"ack","seq":${seq}}`);
    }
  }
}

function openOne(url, waitWelcome, timeoutMs) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    let done = false;
    const finish = (error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (error) {
        ws.terminate();
        reject(error);
      } else resolve(ws);
    };
    const timer = setTimeout(() => finish(new Error("open timed out")), timeoutMs);
    ws.on("error", (error) => finish(error));
    ws.once("unexpected-response", (_req, res) => finish(new Error(`upgrade answered ${res.statusCode}`)));
    ws.on("message", (data) => onMessage(ws, data));
    ws.on("close", (code) => (ws.benchCloseCode = code));
    if (waitWelcome === "pusher") {
      // Pusher protocol 7: connection_established, then subscribe to the channel named by the
      // URL's bench_channel parameter (the relay ignores it); open once subscription_succeeded.
      const channel = new URL(url).searchParams.get("bench_channel");
      const onFrame = (data) => {
        const text = data.toString();
        if (text.includes('"pusher:connection_established"')) ws.send(JSON.stringify({ event: "pusher:subscribe", data: { channel } }));
        else if (text.includes('"pusher_internal:subscription_succeeded"')) {
          ws.off("message", onFrame);
          finish();
        } else if (text.includes('"pusher:error"') || text.includes("subscription_error")) finish(new Error(text.slice(0, 200)));
      };
      ws.on("message", onFrame);
    } else if (waitWelcome) ws.once("message", () => finish());
    else ws.once("open", () => finish());
  });
}

async function open({ urls, concurrency, waitWelcome, timeoutMs = 30_000 }) {
  const start = nowUs();
  let next = 0;
  let failed = 0;
  const errors = [];
  const opened = new Array(urls.length);
  async function lane() {
    while (next < urls.length) {
      const index = next++;
      try {
        opened[index] = await openOne(urls[index], waitWelcome, timeoutMs);
      } catch (error) {
        failed++;
        if (errors.length < 3) errors.push(String(error?.message ?? error));
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, urls.length) }, lane));
  const end = nowUs();
  for (const ws of opened) if (ws) sockets.push(ws);
  return { opened: urls.length - failed, failed, errors, startUs: start, endUs: end, total: sockets.length };
}

function track({ latency = false, ack = 0, seq = false }) {
  received = 0;
  bytes = 0;
  frames = 0;
  checkSeq = seq;
  seqGaps = 0;
  seqRepeats = 0;
  latencies = [];
  recordLatency = latency;
  ackEvery = ack;
  timeline = [[nowUs(), 0]];
  clearInterval(sampler);
  sampler = setInterval(() => timeline.push([nowUs(), received]), 100);
  return { ok: true };
}

function report({ stop = false }) {
  timeline.push([nowUs(), received]);
  if (stop) clearInterval(sampler);
  return { received, bytes, frames, seqGaps, seqRepeats, timeline, latencies };
}

/**
 * Open-loop sending: each listed socket sends `rate` frames a second for `durationMs`, whatever
 * comes back. Frame i carries its *intended* send time, so a late sender counts against latency
 * (no coordinated omission); the lag of the send loop itself is reported.
 */
function send({ senders, rate, durationMs }) {
  return new Promise((resolve) => {
    const start = nowUs();
    const intervalUs = 1e6 / rate;
    const total = Math.floor((rate * durationMs) / 1000);
    let sent = 0;
    let maxLagMs = 0;
    const targets = senders.map(({ socket, prefix, suffix }) => ({ ws: sockets[socket], prefix, suffix }));
    const tick = () => {
      const now = nowUs();
      const due = Math.min(total, Math.floor((now - start) / intervalUs) + 1);
      if (due > sent) maxLagMs = Math.max(maxLagMs, (now - (start + sent * intervalUs)) / 1000);
      for (; sent < due; sent++) {
        const t = Math.round(start + sent * intervalUs);
        for (const { ws, prefix, suffix } of targets) ws.send(prefix + t + suffix);
      }
      if (sent < total) setTimeout(tick, 1);
      else resolve({ sent: sent * targets.length, startUs: start, endUs: nowUs(), maxLagMs });
    };
    tick();
  });
}

async function closeAll() {
  const count = sockets.length;
  for (const ws of sockets) ws.terminate();
  sockets = [];
  return { closed: count };
}

/** Sockets this process holds that are not open (closed by the server, or failing). */
function census() {
  const states = { open: 0, notOpen: 0, closeCodes: {} };
  for (const ws of sockets) {
    if (ws.readyState === WebSocket.OPEN) states.open++;
    else {
      states.notOpen++;
      const code = ws.benchCloseCode ?? "none";
      states.closeCodes[code] = (states.closeCodes[code] ?? 0) + 1;
    }
  }
  return states;
}

/**
 * Closed-loop HTTP POSTs: `inflight` requests at a time to `url` for `durationMs`, each body
 * `prefix + <intended time us> + suffix`. Answers counts by status and the answer times.
 */
async function post({ url, headers, prefix, suffix, inflight, durationMs }) {
  const start = nowUs();
  const end = start + durationMs * 1000;
  const statuses = {};
  const times = [];
  let ok = 0;
  let lastOkUs = start;
  async function lane() {
    while (nowUs() < end) {
      const t0 = nowUs();
      let status;
      try {
        const res = await fetch(url, { method: "POST", headers, body: prefix + Math.round(t0) + suffix });
        await res.arrayBuffer();
        status = res.status;
      } catch (error) {
        status = String(error?.cause?.code ?? error?.message ?? error);
      }
      const t1 = nowUs();
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status === 200) {
        ok++;
        lastOkUs = t1;
        if (times.length < 500_000) times.push((t1 - t0) / 1000);
      }
    }
  }
  await Promise.all(Array.from({ length: inflight }, lane));
  const stop = nowUs();
  times.sort((a, b) => a - b);
  const pct = (p) => (times.length ? times[Math.min(times.length - 1, Math.floor((p / 100) * times.length))] : null);
  return { ok, statuses, startUs: start, endUs: stop, seconds: (stop - start) / 1e6, okPerSecond: ok / ((stop - start) / 1e6), p50: pct(50), p99: pct(99) };
}

const commands = { open, track, report, send, closeAll, census, post };

process.on("message", async (message) => {
  const { id, cmd, ...args } = message;
  try {
    const result = await commands[cmd](args);
    process.send({ id, result });
  } catch (error) {
    process.send({ id, error: String(error?.stack ?? error) });
  }
});
process.on("disconnect", () => process.exit(0));
