#!/usr/bin/env node
'use strict';
// F1 load client (bench/f1_fanout.py): N websocket connections to Switchboard's /ws from ONE
// Node process, each subscribed to the same inline view with a window of `limit + fetch`
// rows (subscribe, then `fetch` to grow the window past the server's 1,000-row limit).
// Counts the rows in every delta frame's `upsert` list and stamps their receive time; the
// latency of a row is receive time - the post time the poster put in `customer_name`
// ("t<epoch ms>"). Needs the `ws` package: NODE_PATH=<dir with node_modules/ws>.
//
//   node f1_client.js --url ws://127.0.0.1:PORT/ws --token T --conns 1000 --expect 2000
//        --view '{"filters":[...],"columns":[...]}' --limit 1000 --fetch 1000 [--timeout 120]
//
// stdout, one JSON object a line: {"event":"ready",...} once every connection holds its
// snapshot (and page); then {"event":"done",...} when every connection has received
// --expect rows (or --timeout seconds after "GO" on stdin). Loopback only.
const WebSocket = require('ws');
const readline = require('readline');
const { performance } = require('perf_hooks');

function arg(name, def) {
  const i = process.argv.indexOf('--' + name);
  if (i < 0) return def;
  return process.argv[i + 1];
}
const T0 = performance.timeOrigin;
const nowMs = () => T0 + performance.now();

const url = new URL(arg('url'));
const token = arg('token');
const C = Number(arg('conns', 1000));
const EXPECT = Number(arg('expect', 2000));
const view = JSON.parse(arg('view'));
const LIMIT = Number(arg('limit', 1000));
const FETCH = Number(arg('fetch', 0));
const timeoutS = Number(arg('timeout', 120));
const parallel = Number(arg('parallel', 50));
if (!['127.0.0.1', 'localhost'].includes(url.hostname)) {
  console.error('refusing non-loopback target', url.hostname);
  process.exit(2);
}

const TOTAL = C * EXPECT;
const lat = new Float64Array(TOTAL);
let n = 0; // rows received, all connections
let frames = 0;
let firstRecvMs = 0;
let lastRecvMs = 0;
let goMs = 0;
let seqGaps = 0;
let resyncs = 0;
let errors = 0;
let closedEarly = 0;
let finished = false;
let complete = 0;
const perConn = new Uint32Array(C);
const conns = [];

// A frame is stamped as it arrives and parsed later, in a check-phase callback: the
// event loop reads and stamps every socket that is ready before it parses any of them,
// so a frame's latency does not include the JSON parse of the frames read before it
// (the peers' raw client stamps before parsing too).
let pending = [];
let parseScheduled = false;

function onArrival(i, data, state) {
  pending.push([i, nowMs(), data, state]);
  if (!parseScheduled) {
    parseScheduled = true;
    setImmediate(parsePending);
  }
}

function parsePending() {
  parseScheduled = false;
  const batch = pending;
  pending = [];
  for (const [i, t, data, state] of batch) onMessage(i, t, data, state);
}

function onMessage(i, t, data, state) {
  const f = JSON.parse(data);
  if (f.type === 'delta') {
    frames++;
    if (f.seq !== state.seq + 1) seqGaps++;
    state.seq = f.seq;
    const up = f.upsert || [];
    for (let k = 0; k < up.length; k++) {
      const name = up[k].customer_name;
      if (typeof name === 'string' && name.charCodeAt(0) === 116 /* t */) {
        const sent = Number(name.slice(1));
        if (n < TOTAL) lat[n] = t - sent;
        n++;
        perConn[i]++;
      }
    }
    if (firstRecvMs === 0) firstRecvMs = t;
    lastRecvMs = t;
    if (perConn[i] >= EXPECT && !state.done) {
      state.done = true;
      complete++;
      if (complete === C) finish('complete');
    }
  } else if (f.type === 'snapshot') {
    state.sub = f.sub;
    state.seq = f.seq;
    if (FETCH > 0) state.ws.send(JSON.stringify({ type: 'fetch', ref: 'f', sub: f.sub, limit: FETCH }));
    else state.ready();
  } else if (f.type === 'page') {
    state.ready();
  } else if (f.type === 'resync') {
    resyncs++;
  } else if (f.type === 'error') {
    errors++;
    if (!state.isReady) state.fail(new Error('error frame: ' + data));
  }
}

function open(i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.href, 'switchboard.v1.json', {
      headers: { Authorization: 'Bearer ' + token }, perMessageDeflate: false,
      skipUTF8Validation: true, // as the peers' raw client: no per-byte work before the stamp
    });
    const state = { ws, seq: 0, sub: null, done: false, isReady: false };
    state.ready = () => { state.isReady = true; resolve(ws); };
    state.fail = reject;
    ws.on('open', () => ws.send(JSON.stringify({ type: 'subscribe', ref: 's', limit: LIMIT, view })));
    ws.on('message', (data) => onArrival(i, data, state));
    ws.on('error', (e) => { if (!state.isReady) reject(e); });
    ws.on('close', (code) => {
      if (!state.isReady) reject(new Error('closed ' + code));
      else if (!finished) { closedEarly++; state.closeCode = code; }
    });
  });
}

function finish(reason) {
  if (finished) return;
  finished = true;
  const got = Math.min(n, TOTAL);
  const l = lat.subarray(0, got).sort();
  const pct = (p) => (got ? l[Math.min(got - 1, Math.floor(p * got))] : null);
  let short = 0;
  for (let k = 0; k < C; k++) if (perConn[k] < EXPECT) short++;
  console.log(JSON.stringify({
    event: 'done', reason, conns: C, expected: TOTAL, delivered: n, frames,
    conns_incomplete: short, seq_gaps: seqGaps, resyncs, errors, closed_early: closedEarly,
    first_recv_ms: firstRecvMs, last_recv_ms: lastRecvMs, go_ms: goMs,
    lat_ms: { min: pct(0), p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), max: got ? l[got - 1] : null },
  }));
  setTimeout(() => process.exit(0), 5000);
}

async function main() {
  const t0 = nowMs();
  let next = 0;
  async function worker() {
    while (next < C) {
      const i = next++;
      conns[i] = await open(i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, C) }, worker));
  console.log(JSON.stringify({ event: 'ready', conns: C, connect_s: (nowMs() - t0) / 1000 }));
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('close', () => { if (finished) process.exit(0); else finish('stdin closed'); });
  rl.on('line', (line) => {
    if (line.trim() !== 'GO') return;
    goMs = nowMs();
    console.log(JSON.stringify({ event: 'go' }));
    setTimeout(() => finish('timeout'), timeoutS * 1000);
  });
}

main().catch((e) => {
  console.log(JSON.stringify({ event: 'error', message: String((e && e.message) || e) }));
  process.exit(1);
});
