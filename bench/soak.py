"""Soak: honest clients' latency, the server's memory and their windows' truth, quiet and
while a fixed mix of attacks runs against the same server (issue 17).

One server process (`switchboard serve --no-demo`): by default the embedded one (SQLite in
a temporary directory, the in-process bus); `--soak-database-url` (PostgreSQL, a fresh
database is created in it) and `--soak-redis-url` put it on PostgreSQL and Redis.

Honest clients: `--soak-supervisors` sockets (50), each subscribed to one of
`--soak-views` inline views (10: one team each, window of 50 rows, newest first). One
sender posts a new conversation enqueued to the next team every 1/`--soak-rate` s
(20 per second), so every conversation enters one view, and each of its watchers gets
a delta: post-to-receive is from the POST's first byte to that delta's arrival.

The run: seed (`--soak-seed` conversations, so that 1,000-row windows are real),
`quiet` for `--soak-duration` s, then `attack` for as long with the attackers running
against the same server, then the attackers close and the server settles. The mix:

* pipeliner: one socket sends 200 subscribes of 1,000-row windows without waiting;
* flooder: one socket sends pings as fast as it can, and reads nothing back;
* views: one socket subscribes to 300 distinct inline views;
* webchat: a visitor socket per connection, each with a new visitor id, says hello and a
  message;
* time: events whose `occurred_at` is year 1, year 9999 or a century off;
* oversize: sockets that send a frame over the 64 KiB limit;
* tokens: sockets and requests with bad tokens.

Every attacker reconnects when its socket is closed, and counts what it got (close codes,
HTTP statuses, error codes). Reported: honest post-to-receive p50/p99 quiet vs under attack
and their ratio (goal <= 2x), the server's RSS (start, peak, end after the attackers
closed), the honest clients' resyncs and closes, and rows wrong: every honest client's
window, as kept from its snapshot and deltas, compared with a fresh snapshot at the end
(goal 0).

    .venv/bin/python -m bench soak                # about 2 minutes
    .venv/bin/python -m bench soak --quick        # a smoke check (seconds), no figure
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import common as c

TITLE = "soak: honest clients quiet vs under a mix of attacks (latency, RSS, rows wrong)"
TENANT = "bench"
WIDGET_ORIGIN = "https://shop.example"
WINDOW = 50
MAX_FRAME = 64 * 1024


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--soak-supervisors", type=int, default=50, help="honest sockets (50)")
    group.add_argument("--soak-views", type=int, default=10, help="views they watch (10)")
    group.add_argument("--soak-rate", type=float, default=20.0, help="conversations/s (20)")
    group.add_argument("--soak-duration", type=float, default=30.0, help="s per phase (30)")
    group.add_argument("--soak-seed", type=int, default=2000, help="conversations first (2000)")
    group.add_argument(
        "--soak-database-url",
        default="",
        help="a PostgreSQL server (postgresql+asyncpg://...) to create the database in; "
        "default: the embedded SQLite",
    )
    group.add_argument("--soak-redis-url", default="", help="a Redis for the bus (redis://...)")
    group.add_argument("--soak-out", default="", help="where the files go (bench/out)")
    group.add_argument(
        "--soak-attacks",
        default=",".join(ATTACKS),
        help=f"which attacks run, comma-separated (all: {','.join(ATTACKS)})",
    )


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def team(n: int) -> str:
    return f"soak-{n}"


def view(n: int) -> dict:
    return {
        "filters": [{"field": "team", "op": "eq", "value": team(n)}],
        "columns": ["id", "customer_name", "status", "team", "channel"],
    }


async def connect(port: int, token: str | None, path: str = "/ws", **kwargs):
    import websockets

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await websockets.connect(
        f"ws://127.0.0.1:{port}{path}",
        subprotocols=["switchboard.v1.json"] if path == "/ws" else None,
        additional_headers=headers,
        compression=None,
        ping_interval=None,
        max_size=2**24,
        open_timeout=30,
        **kwargs,
    )


# --------------------------------------------------------------------------- honest clients


class Honest:
    """One supervisor's socket and view: the window as its deltas keep it, and the
    post-to-receive of every conversation it saw enter."""

    def __init__(self, port: int, token: str, view_no: int, sent: dict[str, tuple[float, str]]):
        self.port, self.token, self.view_no, self.sent = port, token, view_no, sent
        self.rows: dict[str, dict] = {}
        self.total = 0
        self.sub: str | None = None
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.seen: set[str] = set()
        self.resyncs = self.closes = self.errors = 0
        self.last_frame = time.monotonic()
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 60)

    async def _run(self) -> None:
        while True:
            try:
                ws = await connect(self.port, self.token)
            except Exception:
                self.closes += 1
                await asyncio.sleep(0.5)
                continue
            self.ws = ws
            try:
                await self._subscribe()
                async for raw in ws:
                    self._on(json.loads(raw))
            except Exception:
                pass
            self.closes += 1
            self.ready.clear()

    async def _subscribe(self) -> None:
        await self.ws.send(
            json.dumps(
                {"type": "subscribe", "ref": "honest", "view": view(self.view_no), "limit": WINDOW}
            )
        )

    def _on(self, frame: dict) -> None:
        now = time.monotonic()
        self.last_frame = now
        kind = frame.get("type")
        if kind == "snapshot":
            self.sub = frame["sub"]
            self.rows = {row["id"]: row for row in frame["rows"]}
            self.total = frame["total"]
            self.seen.update(self.rows)
            self.ready.set()
        elif kind == "delta" and frame.get("sub") == self.sub:
            for row in frame["upsert"]:
                self.rows.setdefault(row["id"], {}).update(row)
                cid = row["id"]
                if cid not in self.seen and cid in self.sent:
                    sent_at, phase = self.sent[cid]
                    self.latency[phase].append(now - sent_at)
                self.seen.add(cid)
            for cid in frame["remove"]:
                self.rows.pop(cid, None)
            self.total = frame["total"]
        elif kind == "resync":
            self.resyncs += 1
            self.ready.clear()
            self.resubscribing = asyncio.ensure_future(self._subscribe())
        elif kind == "error":
            self.errors += 1

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.ws.close()


async def fresh_window(port: int, token: str, view_no: int) -> list[dict]:
    ws = await connect(port, token)
    try:
        await ws.send(
            json.dumps(
                {"type": "subscribe", "ref": "fresh", "view": view(view_no), "limit": WINDOW}
            )
        )
        async with asyncio.timeout(30):
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("ref") == "fresh":
                    if frame["type"] != "snapshot":
                        raise RuntimeError(f"fresh snapshot refused: {frame}")
                    return frame["rows"]
    finally:
        await ws.close()


def rows_wrong(held: dict[str, dict], fresh: list[dict]) -> int:
    """Rows missing, extra, or with a column that differs from the fresh snapshot."""
    want = {row["id"]: row for row in fresh}
    wrong = len(set(held) ^ set(want))
    for cid, row in want.items():
        mine = held.get(cid)
        if mine is not None and any(mine.get(key) != value for key, value in row.items()):
            wrong += 1
    return wrong


# --------------------------------------------------------------------------- load


def at(seconds_ago: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


def new_conversation(cid: str, team_name: str) -> list[dict]:
    now = at()
    return [
        {
            "event_id": f"{cid}-c",
            "type": "conversation.created",
            "conversation_id": cid,
            "occurred_at": now,
            "data": {
                "channel": "chat",
                "contact": f"visitor-{cid}",
                "customer": {"name": f"Customer {cid}"},
            },
        },
        {
            "event_id": f"{cid}-q",
            "type": "routing.enqueued",
            "conversation_id": cid,
            "occurred_at": now,
            "data": {"team": team_name},
        },
    ]


async def post_events(conn: c.HttpConnection, port: int, token: str, events: list[dict]) -> bytes:
    body = json.dumps({"events": events}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    status, answer = await conn.request(
        c.http_request("POST", "/api/v1/events", port, body, headers)
    )
    if status != 200:
        raise RuntimeError(f"POST /api/v1/events: HTTP {status}: {answer[-300:]!r}")
    return answer


async def seed(port: int, token: str, views: int, count: int) -> None:
    conn = await c.HttpConnection.open(port)
    try:
        for start in range(0, count, 100):
            events = []
            for n in range(start, min(count, start + 100)):
                events += new_conversation(f"seed-{n}", team(n % views))
            await post_events(conn, port, token, events)
    finally:
        conn.close()


async def honest_sender(
    port: int, token: str, args, sent: dict, phase: list[str], stop: asyncio.Event
) -> int:
    conn = await c.HttpConnection.open(port)
    n = 0
    interval = 1.0 / args.soak_rate
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            cid = f"h-{n}"
            sent[cid] = (time.monotonic(), phase[0])
            answer = await post_events(
                conn, port, token, new_conversation(cid, team(n % args.soak_views))
            )
            if answer.count(b'"outcome":"applied"') != 2:
                raise RuntimeError(f"honest events not applied: {answer[:300]!r}")
            n += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        conn.close()
    return n


# --------------------------------------------------------------------------- attackers


class Tally:
    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, what: str) -> None:
        self.counts[what] += 1


async def _socket_loop(name, tally, stop, port, token, body) -> None:
    """Run `body(ws)` on a socket, reconnecting when the server closes it."""
    while not stop.is_set():
        try:
            ws = await connect(port, token)
        except Exception as exc:
            tally(f"{name}: connect failed {type(exc).__name__}")
            await asyncio.sleep(0.2)
            continue
        try:
            await body(ws)
        except asyncio.CancelledError:
            await ws.close()
            raise
        except Exception as exc:
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            tally(f"{name}: closed {code if code is not None else type(exc).__name__}")
        finally:
            await ws.close()


async def until(stop, reader: asyncio.Future) -> None:
    """Until the run stops (`stop`: a multiprocessing event) or the socket ends."""
    while not stop.is_set() and not reader.done():
        await asyncio.wait([reader], timeout=0.1)


async def _drain(ws, tally, name) -> None:
    async for raw in ws:
        frame = json.loads(raw)
        tally(f"{name}: {frame.get('type')} {frame.get('code', '')}".rstrip())


ATTACKS = ("pipeliner", "flooder", "views", "webchat", "time", "oversize", "tokens")


def attackers(
    port: int,
    tokens: dict[str, str],
    views: int,
    stop: asyncio.Event,
    tally: Tally,
    chosen: tuple[str, ...] = ATTACKS,
):
    sup = tokens["attacker"]

    async def pipeliner(ws) -> None:
        reader = asyncio.ensure_future(_drain(ws, tally, "pipeliner"))
        try:
            for n in range(200):
                frame = {"type": "subscribe", "ref": n, "view": view(n % views), "limit": 1000}
                await ws.send(json.dumps(frame))
                tally("pipeliner: subscribes sent")
            await until(stop, reader)
        finally:
            reader.cancel()

    async def flooder(ws) -> None:
        frame = json.dumps({"type": "ping", "ref": "flood"})
        sent = 0
        while not stop.is_set():
            await ws.send(frame)  # and never reads
            sent += 1
            if sent % 100 == 0:
                tally.counts["flooder: pings sent"] += 100
                await asyncio.sleep(0)

    async def many_views(ws) -> None:
        reader = asyncio.ensure_future(_drain(ws, tally, "views"))
        try:
            for n in range(300):
                ghost = f"ghost-{secrets.token_hex(4)}-{n}"
                filters = [{"field": "agent_id", "op": "eq", "value": ghost}]
                frame = {"type": "subscribe", "ref": n, "view": {"filters": filters}, "limit": 100}
                await ws.send(json.dumps(frame))
                tally("views: subscribes sent")
            await until(stop, reader)
        finally:
            reader.cancel()

    async def webchat() -> None:
        while not stop.is_set():
            try:
                ws = await connect(port, None, f"/webchat/{TENANT}", origin=WIDGET_ORIGIN)
            except Exception as exc:
                status = getattr(getattr(exc, "response", None), "status_code", "")
                tally(f"webchat: refused {type(exc).__name__} {status}".rstrip())
                await asyncio.sleep(0.05)
                continue
            try:
                visitor = secrets.token_urlsafe(18)
                await ws.send(json.dumps({"type": "hello", "visitor": visitor, "name": "Mallory"}))
                await ws.send(json.dumps({"type": "message", "text": "hello?"}))
                tally("webchat: visitors")
                async with asyncio.timeout(2):
                    frame = json.loads(await ws.recv())
                    tally(f"webchat: {frame.get('type')} {frame.get('code', '')}".rstrip())
            except Exception as exc:
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                tally(f"webchat: closed {code if code is not None else type(exc).__name__}")
            finally:
                await ws.close()

    async def bad_time() -> None:
        conn = await c.HttpConnection.open(port)
        try:
            n = 0
            while not stop.is_set():
                events = []
                for when in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                             "2126-01-01T00:00:00Z", "1926-01-01T00:00:00Z"):  # fmt: skip
                    n += 1
                    for event in new_conversation(f"t-{n}", team(n % views)):
                        events.append({**event, "occurred_at": when})
                body = json.dumps({"events": events}).encode()
                headers = {
                    "Authorization": f"Bearer {tokens['service']}",
                    "Content-Type": "application/json",
                }
                status, answer = await conn.request(
                    c.http_request("POST", "/api/v1/events", port, body, headers)
                )
                tally(f"time: HTTP {status}")
                tally.counts["time: applied"] += answer.count(b'"outcome":"applied"')
                tally.counts["time: rejected"] += answer.count(b'"outcome":"rejected"')
        finally:
            conn.close()

    async def oversize() -> None:
        payload = json.dumps({"type": "ping", "pad": "x" * MAX_FRAME})
        while not stop.is_set():
            try:
                ws = await connect(port, sup, max_queue=1)
                await ws.send(payload)
                await asyncio.wait_for(ws.wait_closed(), 5)
                tally(f"oversize: closed {ws.close_code}")
            except Exception as exc:
                tally(f"oversize: {type(exc).__name__}")

    async def bad_tokens() -> None:
        conn = await c.HttpConnection.open(port)
        try:
            while not stop.is_set():
                token = secrets.choice(["nope", sup[:-4] + "AAAA", "", "x" * 4000])
                try:
                    ws = await connect(port, token)
                    tally("tokens: ws accepted!")
                    await ws.close()
                except Exception as exc:
                    status = getattr(getattr(exc, "response", None), "status_code", None)
                    tally(f"tokens: ws {status or type(exc).__name__}")
                status, _ = await conn.request(
                    c.http_request(
                        "GET", "/api/v1/views", port, b"",
                        {"Authorization": f"Bearer {token}"},
                    )
                )  # fmt: skip
                tally(f"tokens: HTTP {status}")
        finally:
            conn.close()

    every = {
        "pipeliner": lambda: _socket_loop("pipeliner", tally, stop, port, sup, pipeliner),
        "flooder": lambda: _socket_loop("flooder", tally, stop, port, sup, flooder),
        "views": lambda: _socket_loop("views", tally, stop, port, sup, many_views),
        "webchat": webchat,
        "time": bad_time,
        "oversize": oversize,
        "tokens": bad_tokens,
    }
    return [every[name]() for name in chosen]


def attack_process(
    port: int, tokens: dict[str, str], views: int, stop, out, chosen: tuple[str, ...]
) -> None:
    """The attackers' own process (so that they do not slow the honest clients' reading
    in this one): runs until `stop` (a multiprocessing event) is set, then puts its
    tally and the attackers that failed in `out`. It runs at the lowest CPU priority:
    a real attacker is on machines of its own, and on a small machine an attacker at
    full priority takes the cores the honest clients and the server share, so what
    would be measured is the machine's scheduler, not the server's fairness."""
    os.nice(19)

    async def main() -> None:
        tally = Tally()
        tasks = [
            asyncio.ensure_future(a) for a in attackers(port, tokens, views, stop, tally, chosen)
        ]
        out.put("started")
        await asyncio.to_thread(stop.wait)
        done, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        failed = [repr(t.exception()) for t in done if not t.cancelled() and t.exception()]
        out.put((dict(sorted(tally.counts.items())), failed))

    c.run_async(main())


# --------------------------------------------------------------------------- the run


def chosen_attacks(args) -> tuple[str, ...]:
    chosen = tuple(name.strip() for name in args.soak_attacks.split(",") if name.strip())
    unknown = set(chosen) - set(ATTACKS)
    if unknown:
        raise SystemExit(f"--soak-attacks: unknown {', '.join(sorted(unknown))}")
    return chosen


async def measure(args, server: c.ServerProcess, tokens: dict[str, str], recorder) -> dict:
    port, pid = server.port, server.pid
    rss: list[tuple[float, str, int]] = []
    phase = ["seed"]
    t0 = time.monotonic()

    async def sample_rss() -> None:
        while True:
            rss.append((time.monotonic() - t0, phase[0], rss_kb(pid)))
            await asyncio.sleep(0.25)

    sampler = asyncio.ensure_future(sample_rss())
    await seed(port, tokens["service"], args.soak_views, args.soak_seed)
    sent: dict[str, tuple[float, str]] = {}
    honest = [
        Honest(port, tokens["supervisor"], n % args.soak_views, sent)
        for n in range(args.soak_supervisors)
    ]
    for client in honest:
        await client.start()
    print(f"  {len(honest)} honest clients subscribed", file=sys.stderr)
    rss_start = rss_kb(pid)
    phase[0] = "quiet"
    stop_sender = asyncio.Event()
    sender = asyncio.ensure_future(
        honest_sender(port, tokens["service"], args, sent, phase, stop_sender)
    )
    await asyncio.sleep(args.soak_duration)
    context = multiprocessing.get_context("spawn")
    stop_attack, out = context.Event(), context.Queue()
    attack = context.Process(
        target=attack_process,
        args=(port, tokens, args.soak_views, stop_attack, out, chosen_attacks(args)),
    )
    attack.start()
    try:
        started = await asyncio.to_thread(out.get, True, 60)
        assert started == "started", started
        phase[0] = "attack"
        await asyncio.sleep(args.soak_duration)
        phase[0] = "after"
        stop_attack.set()
        stop_sender.set()
        posted = await sender
        attacks, failed = await asyncio.to_thread(out.get, True, 60)
    finally:
        stop_attack.set()
        attack.join(15)
        if attack.is_alive():
            attack.kill()
            attack.join()
    # Settle: every honest client quiet for a second (at most 30 s).
    settle_until = time.monotonic() + 30
    while time.monotonic() < settle_until:
        if all(time.monotonic() - cl.last_frame > 1.0 for cl in honest):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)  # and the server's memory after the attackers left
    rss_end = rss_kb(pid)
    sampler.cancel()
    fresh = {n: await fresh_window(port, tokens["supervisor"], n) for n in range(args.soak_views)}
    wrong = sum(rows_wrong(cl.rows, fresh[cl.view_no]) for cl in honest)
    missing = sum(
        1
        for cl in honest
        for cid, (_, ph) in sent.items()
        if ph in ("quiet", "attack")
        and int(cid.split("-")[1]) % args.soak_views == cl.view_no
        and cid not in cl.seen
    )
    result = {
        "type": "soak",
        "posted": posted,
        "latency_ms": {
            ph: [1000 * v for cl in honest for v in cl.latency[ph]] for ph in ("quiet", "attack")
        },
        "rss_start_kb": rss_start,
        "rss_peak_kb": max(kb for _, _, kb in rss),
        "rss_peak_attack_kb": max((kb for _, ph, kb in rss if ph == "attack"), default=0),
        "rss_end_kb": rss_end,
        "rows_wrong": wrong,
        "entries_missed": missing,
        "resyncs": sum(cl.resyncs for cl in honest),
        "closes": sum(cl.closes for cl in honest),
        "errors": sum(cl.errors for cl in honest),
        "attacks": attacks,
        "attackers_failed": failed,
        "healthz": await healthz(port),
    }
    for client in honest:
        await client.stop()
    recorder.line(**{k: v for k, v in result.items() if k != "latency_ms"})
    recorder.line(type="rss", samples=rss)
    return result


async def healthz(port: int) -> int:
    def get() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            return answer.status

    try:
        return await asyncio.to_thread(get)
    except Exception:
        return 0


def report(info: dict, result: dict, args) -> str:
    lat = result["latency_ms"]

    def p(ph: str, q: float) -> float:
        return c.percentile(lat[ph], q)

    rows = [
        [ph, f"{len(lat[ph]):,}", f"{p(ph, 50):.1f}", f"{p(ph, 99):.1f}"]
        for ph in ("quiet", "attack")
    ]
    ratio50 = p("attack", 50) / p("quiet", 50) if lat["quiet"] else float("nan")
    ratio99 = p("attack", 99) / p("quiet", 99) if lat["quiet"] else float("nan")
    goal = "met" if max(ratio50, ratio99) <= 2 else "missed"
    mb = 1 / 1024
    parts = [
        f"### Soak, {info['date']}",
        "",
        c.describe_machine(info),
        f"* server: {args.soak_backend}; honest: {args.soak_supervisors} supervisors on "
        f"{args.soak_views} views (window {WINDOW}), {args.soak_rate:g} conversations/s, "
        f"{args.soak_duration:g} s quiet then {args.soak_duration:g} s under attack; "
        f"{args.soak_seed} conversations seeded",
        "",
        c.markdown_table(["phase", "deliveries", "p50 ms", "p99 ms"], rows),
        "",
        f"* under attack / quiet: p50 {ratio50:.2f}x, p99 {ratio99:.2f}x (goal <= 2x: {goal})",
        f"* server RSS: start {result['rss_start_kb'] * mb:.0f} MB, peak "
        f"{result['rss_peak_kb'] * mb:.0f} MB (under attack "
        f"{result['rss_peak_attack_kb'] * mb:.0f} MB), end {result['rss_end_kb'] * mb:.0f} MB "
        "(attackers closed)",
        f"* rows wrong at the end: {result['rows_wrong']} (goal 0); entries never delivered: "
        f"{result['entries_missed']}; honest resyncs {result['resyncs']}, socket closes "
        f"{result['closes']}, error frames {result['errors']}; /healthz after: "
        f"{result['healthz']}",
        f"* conversations posted by the honest sender: {result['posted']}",
        "",
        "What the attackers got:",
        "",
        c.markdown_table(["what", "count"], [[k, f"{v:,}"] for k, v in result["attacks"].items()]),
        "",
    ]
    if result["attackers_failed"]:
        parts += ["Attackers that stopped early: " + "; ".join(result["attackers_failed"]), ""]
    return "\n".join(parts)


def run(args: argparse.Namespace) -> int:
    if args.quick:  # a smoke check: small, and shorter still when asked
        args.soak_supervisors = min(args.soak_supervisors, 10)
        args.soak_views = min(args.soak_views, 5)
        args.soak_duration = min(args.soak_duration, 3.0)
        args.soak_seed = min(args.soak_seed, 300)
        args.soak_rate = min(args.soak_rate, 10.0)
    recorder = c.Recorder("soak", Path(args.soak_out) if args.soak_out else c.OUT_DIR)
    info = c.machine_info()
    started = time.monotonic()
    data_dir = Path(tempfile.mkdtemp(prefix="sb_bench_soak_"))
    database = None
    try:
        if args.soak_database_url:
            database = c.run_async(c.create_database(args.soak_database_url, "sb_bench_soak"))
            url = c.with_database(args.soak_database_url, database)
        else:
            url = f"sqlite+aiosqlite:///{data_dir}/switchboard.db"
        env = c.server_env(url, data_dir)
        if args.soak_redis_url:
            env.update(
                REDIS_URL=args.soak_redis_url, SWITCHBOARD_BUS_PREFIX=f"soak{secrets.token_hex(3)}:"
            )
        args.soak_backend = ("PostgreSQL" if database else "SQLite") + (
            " + Redis" if args.soak_redis_url else ", in-process bus"
        )
        recorder.line(type="meta", bench="soak", argv=sys.argv[1:], **info)
        c.run_cli(["migrate"], env)
        c.run_cli(
            ["tenant", "add", TENANT, "--timezone", "Europe/Madrid", "--routing", "external"], env
        )
        tokens = {}
        # The attacker is a supervisor of the same tenant, but another user than the
        # honest ones: a hostile colleague, not the honest supervisors themselves.
        for name, role in (("service", "service"), ("admin", "admin"),
                           ("supervisor", "supervisor"), ("attacker", "supervisor")):  # fmt: skip
            out = c.run_cli(
                ["token", "--tenant", TENANT, "--role", role, "--user", f"soak-{name}"], env
            )
            tokens[name] = out.strip().splitlines()[-1]
        with c.ServerProcess(env, recorder.path("-server.log")) as server:
            setup(server.base_url, tokens["admin"], args.soak_views)
            try:
                result = c.run_async(measure(args, server, tokens, recorder))
            except Exception:
                print(f"  the server's log ends with:\n{server.log_tail()}", file=sys.stderr)
                raise
    finally:
        if database:
            c.run_async(c.drop_database(args.soak_database_url, database))
        shutil.rmtree(data_dir, ignore_errors=True)
    text = report(info, result, args)
    text += f"\nTotal time {time.monotonic() - started:.0f} s.\n"
    recorder.write_markdown(text)
    print(text)
    print(f"raw: {recorder.jsonl}\ntable: {recorder.markdown}", file=sys.stderr)
    return 0


def setup(base_url: str, admin_token: str, views: int) -> None:
    """The teams the views watch, and the widget origin the web chat attacker uses."""

    def put(path: str, body: dict) -> None:
        c.put_json(base_url, path, body, admin_token)

    for n in range(views):
        put(f"/api/v1/teams/{team(n)}", {"queue_capacity": 100_000})
    put("/api/v1/tenant", {"widget_origins": [WIDGET_ORIGIN]})
