// The one client of the websocket protocol (docs/api.md) for every page.
//
//   const live = new Live(token);
//   const sub = live.subscribe(definition, 100, {onChange(sub, change) {...}});
//   const sub = live.subscribe(viewId, 100, {columns: [...], onChange, onResync, onEnd});
//   live.on("popup", frame => ...);  live.onOpen(() => live.send({type: "subscribe_wallboard"}));
//
// It keeps each subscription's window exact (snapshot, then pages and deltas in
// order), checks `seq` and subscribes again on a gap or a `resync`, reconnects with
// exponential backoff and full jitter forever, and reports its state: `live`,
// `reconnecting` (the first tries after a loss), `offline` (still trying, less often).

const PROTOCOL = "switchboard.v1.json";
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
const OFFLINE_AFTER_TRIES = 4; // then the page says `offline`, and keeps trying
const PING_EVERY_MS = 15000; // a silent dead socket is found within a ping and its timeout
const REQUEST_TIMEOUT_MS = 10000;

export class Live {
  constructor(token, { path = "/ws" } = {}) {
    this.token = token;
    this.url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
    this.state = "reconnecting";
    this.lastFrameAt = null; // Date.now() of the last frame: the data's age
    this.socket = null;
    this.connecting = false; // asking for a ticket
    this.tries = 0;
    this.refs = 0;
    this.pending = new Map(); // ref -> {resolve, reject, timer}
    this.subscriptions = new Set();
    this.listeners = new Map(); // frame type -> [fn]
    this.openHooks = [];
    this.stateHooks = [];
    this.stopped = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.connect();
    window.addEventListener("online", () => this.retryNow());
  }

  // --- connection -------------------------------------------------------------------

  // A single-use ticket for the next socket (POST /api/v1/ws-tickets), so that the
  // token never goes in a URL, where logs and proxies would keep it. null: no ticket
  // now (offline, or the server is away); a refused token says so and stops.
  async ticket() {
    let response;
    try {
      response = await fetch("/api/v1/ws-tickets", {
        method: "POST",
        headers: { Authorization: `Bearer ${this.token}`, Accept: "application/json" },
      });
    } catch (error) {
      return null;
    }
    if (response.status === 401) {
      this.emit("token_expired", {});
      return null;
    }
    if (!response.ok) return null;
    try {
      return (await response.json()).ticket;
    } catch (error) {
      return null;
    }
  }

  async connect() {
    if (this.stopped || this.connecting) return;
    this.connecting = true;
    const ticket = await this.ticket();
    this.connecting = false;
    if (this.stopped) return;
    if (!ticket) {
      this.lost();
      return;
    }
    const url = `${this.url}?ticket=${encodeURIComponent(ticket)}`;
    let socket;
    try {
      socket = new WebSocket(url, PROTOCOL);
    } catch (error) {
      this.lost();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.tries = 0;
      this.lastFrameAt = Date.now();
      this.setState("live");
      this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
      for (const sub of this.subscriptions) sub.start();
      for (const hook of this.openHooks) hook();
    };
    socket.onmessage = (message) => this.receive(message.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      clearInterval(this.pingTimer);
      for (const [, waiter] of this.pending) waiter.fail(new Error("connection lost"));
      this.pending.clear();
      // Subscriptions end with their socket: nothing to unsubscribe on the next one.
      for (const sub of this.subscriptions) {
        sub.id = null;
        sub.ready = false;
      }
      if (event.code === 4401) this.emit("token_expired", {});
      this.lost();
    };
  }

  lost() {
    if (this.stopped) return;
    this.tries += 1;
    this.setState(this.tries > OFFLINE_AFTER_TRIES || !navigator.onLine ? "offline" : "reconnecting");
    // Full jitter: a server restart must not meet every page reconnecting at once.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (this.tries - 1));
    const delay = Math.random() * ceiling;
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.emit("retry", { tries: this.tries, delay });
  }

  retryNow() {
    if (this.socket || this.connecting || this.stopped) return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  async ping() {
    try {
      await this.request({ type: "ping" });
    } catch (error) {
      // No pong in time: the socket is dead without having said so.
      if (this.socket) this.socket.close();
    }
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    for (const hook of this.stateHooks) hook(state);
  }

  onState(hook) {
    this.stateHooks.push(hook);
    hook(this.state);
  }

  onOpen(hook) {
    this.openHooks.push(hook);
    if (this.state === "live") hook();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.socket) this.socket.close(1000, "page closed");
  }

  // --- frames -----------------------------------------------------------------------

  send(frame) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  // Sends a frame with a fresh ref; resolves with its `ok`/`pong`/... answer, rejects
  // with an Error (its `code` and `frame` set) on an `error` answer.
  request(frame) {
    const ref = `r${++this.refs}`;
    return new Promise((resolve, reject) => {
      const fail = (error) => {
        clearTimeout(timer);
        reject(error);
      };
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new Error(`no answer to ${frame.type} in time`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(ref, {
        resolve: (answer) => {
          clearTimeout(timer);
          resolve(answer);
        },
        fail,
      });
      if (!this.send({ ...frame, ref })) {
        this.pending.delete(ref);
        fail(new Error("not connected"));
      }
    });
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (error) {
      return;
    }
    this.lastFrameAt = Date.now();
    const waiter = frame.ref !== undefined ? this.pending.get(frame.ref) : undefined;
    if (waiter) {
      this.pending.delete(frame.ref);
      if (frame.type === "error") {
        const error = new Error(frame.message || frame.code);
        error.code = frame.code;
        error.frame = frame;
        waiter.fail(error);
      } else {
        waiter.resolve(frame);
      }
    }
    if (frame.sub !== undefined) {
      for (const sub of this.subscriptions) if (sub.id === frame.sub) sub.receive(frame);
    }
    this.emit(frame.type, frame);
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }

  emit(type, frame) {
    for (const fn of this.listeners.get(type) || []) fn(frame);
  }

  // --- subscriptions ----------------------------------------------------------------

  subscribe(view, limit, handlers = {}) {
    const sub = new Subscription(this, view, limit, handlers);
    this.subscriptions.add(sub);
    if (this.state === "live") sub.start();
    return sub;
  }
}

// One window over a view: `rows` (id -> row) is exactly the view's first `window`
// rows, in the order `sorted()` gives.
// Text in code point order, as the server sorts it (UTF-8 bytes: COLLATE "C" on
// PostgreSQL, BINARY on SQLite). JavaScript's < compares UTF-16 code units, which
// differs where a character above U+FFFF (a surrogate pair) meets one in
// U+E000-U+FFFF; moving the code units from U+D800 up puts them in code point order.
export function byCodePoint(x, y) {
  if (typeof x !== "string" || typeof y !== "string") return x < y ? -1 : x > y ? 1 : 0;
  const length = Math.min(x.length, y.length);
  for (let i = 0; i < length; i++) {
    let a = x.charCodeAt(i);
    let b = y.charCodeAt(i);
    if (a === b) continue;
    if (a >= 0xd800 && b >= 0xd800) {
      a += a >= 0xe000 ? -0x800 : 0x2000;
      b += b >= 0xe000 ? -0x800 : 0x2000;
    }
    return a < b ? -1 : 1;
  }
  return Math.sign(x.length - y.length);
}

export class Subscription {
  constructor(live, view, limit, handlers) {
    this.live = live;
    this.view = view; // a saved view's id, or an inline {filters, columns, sort}
    this.window = limit;
    this.handlers = handlers;
    this.id = null;
    this.seq = 0;
    this.rows = new Map();
    this.total = null;
    this.columns = [];
    this.ready = false;
    this.closed = false;
    this.fetching = false;
    this.attempt = 0;
  }

  // Subscribes (again): after a (re)connect, a gap in `seq`, or a `resync`. The
  // window's size is kept, so a table scrolled far down comes back whole.
  async start() {
    if (this.closed) return;
    const attempt = ++this.attempt;
    const old = this.id;
    this.id = null;
    this.ready = false;
    if (old) this.live.send({ type: "unsubscribe", sub: old });
    let snapshot;
    try {
      const frame = { type: "subscribe", view: this.view, limit: this.window };
      if (this.handlers.columns) frame.columns = this.handlers.columns; // with a saved view's id
      snapshot = await this.live.request(frame);
    } catch (error) {
      if (error.code) this.handlers.onError?.(error);
      return; // connection lost: the next open starts it again
    }
    if (attempt !== this.attempt || this.closed) {
      this.live.send({ type: "unsubscribe", sub: snapshot.sub });
      return;
    }
    this.id = snapshot.sub;
    this.seq = snapshot.seq;
    this.total = snapshot.total;
    this.columns = snapshot.columns;
    this.rows = new Map(snapshot.rows.map((row) => [row.id, row]));
    this.ready = true;
    this.fetching = false;
    this.handlers.onChange?.(this, { snapshot: true, upserted: [], removed: [] });
  }

  receive(frame) {
    if (!this.ready) return;
    if (frame.type === "delta") {
      if (frame.seq !== this.seq + 1) {
        this.start(); // something was lost: a fresh snapshot is the truth
        return;
      }
      this.seq = frame.seq;
      for (const id of frame.remove) this.rows.delete(id);
      for (const row of frame.upsert) this.rows.set(row.id, { ...this.rows.get(row.id), ...row });
      this.total = frame.total;
      this.handlers.onChange?.(this, {
        snapshot: false,
        upserted: frame.upsert.map((row) => row.id),
        removed: frame.remove,
      });
    } else if (frame.type === "resync") {
      // The server ended it. A saved view that changed (`view_changed`) may be taken
      // over by the page (`onResync` answering true), e.g. to re-read its columns.
      this.id = null;
      this.ready = false;
      if (!this.handlers.onResync?.(this, frame)) this.start();
    } else if (frame.type === "unsubscribed") {
      // Over for good: the saved view was deleted or is no longer visible to us.
      this.id = null;
      this.ready = false;
      this.closed = true;
      this.live.subscriptions.delete(this);
      this.handlers.onEnd?.(this, frame);
    }
  }

  // The next `limit` rows after the window; they belong to it from then on.
  async fetch(limit) {
    if (!this.ready || this.fetching || this.rows.size >= this.total) return;
    this.fetching = true;
    const sub = this.id;
    try {
      const page = await this.live.request({ type: "fetch", sub, limit });
      if (sub !== this.id) return;
      this.window += limit;
      for (const row of page.rows) this.rows.set(row.id, row);
      this.handlers.onChange?.(this, { snapshot: false, upserted: page.rows.map((r) => r.id), removed: [], page: true });
    } catch (error) {
      // Lost with the connection: the resubscribe brings the window back.
    } finally {
      this.fetching = false;
    }
  }

  // The rows in the view's order: its sort keys, ties broken by id in the direction
  // of the first key; text by code point, as the server sorts.
  sorted(sort) {
    const keys = sort && sort.length ? sort : [{ field: "created_at", dir: "desc" }];
    const tieDir = keys[0].dir === "asc" ? 1 : -1;
    const order = [...keys.map((k) => [k.field, k.dir === "asc" ? 1 : -1]), ["id", tieDir]];
    return [...this.rows.values()].sort((a, b) => {
      for (const [field, dir] of order) {
        const by = byCodePoint(a[field] ?? "", b[field] ?? "");
        if (by) return by * dir;
      }
      return 0;
    });
  }

  close() {
    this.closed = true;
    this.live.subscriptions.delete(this);
    if (this.id) this.live.send({ type: "unsubscribe", sub: this.id });
  }
}
