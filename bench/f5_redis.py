"""F5 two processes behind Redis: every client receives every change;
p99 ms end to end at 2,000 changes/s.

Each round, on a fresh PostgreSQL database and a private redis-server (a free port,
started and stopped by its pid; never the shared one):

* baseline  one `switchboard serve` with the in-process bus (REDIS_URL=memory://),
            every client on it.
* f5        two `switchboard serve` processes on the private Redis, the clients split
            between them, the posts alternating between them.

Before the clients subscribe, warm_up posts two seconds of the same load and ANALYZEs
the database, as autovacuum would have on a database that has been up (this
PostgreSQL runs without it). The load is the same for both: C websocket clients
(msgpack) in this process, each
subscribed to the view "channel is chat" with a window of 2,000 rows (subscribe 1,000,
then fetch 1,000); `--f5-rate` new chat conversations a second for `--f5-seconds`,
posted over HTTP in batches every 10 ms (a paced open loop). Each row's customer name
is "t<epoch ms>" taken right before its batch is sent, so a client gets the latency
post -> receive from the row itself. A row counts as received the first time an
upsert brings it.

Reported: the rate reached, rows missed (summed over clients), p50/p99/max ms post ->
receive, server CPU-s per 1,000 changes (all server processes), and from the servers'
/metrics the bus messages dropped and the rows catch-up had to recover (both 0 when
the bus did all the work).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from bench import common as c
from bench.f3_ingest import prepare

TITLE = "two processes behind Redis: every change to every client, p99 at 2,000 changes/s"
VIEW = {
    "filters": [{"field": "channel", "op": "in", "value": ["chat"]}],
    "columns": ["id", "customer_name", "status"],
}
TICK_S = 0.01  # one batch per tick
CONNECTIONS_PER_SERVER = 4  # HTTP keep-alive connections the poster uses per server
WARM_UP_S = 2.0  # posted at the same rate before the clients subscribe, then ANALYZE


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--f5-clients", type=int, default=20, help="websocket clients (20)")
    group.add_argument("--f5-rate", type=int, default=2000, help="changes per second (2000)")
    group.add_argument("--f5-seconds", type=float, default=10.0, help="load duration (10)")


# --------------------------------------------------------------------------- Redis


class RedisServer:
    """A private redis-server on a free loopback port, stopped and started by its pid."""

    def __init__(self) -> None:
        self.port = c.free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            time.sleep(0.01)
        self.stop()
        raise RuntimeError("redis-server did not answer within 10 s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


# --------------------------------------------------------------------------- clients


@dataclass
class Watcher:
    """One websocket client: its window (id -> version), when it first got each row,
    and the latency of each first receive."""

    url: str
    token: str
    rows: dict[str, int] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    total: int = 0
    seq: int = 0
    last_frame: float = 0.0
    problems: list[str] = field(default_factory=list)

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        self.socket = await connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            subprotocols=["switchboard.v1.msgpack"],
            compression=None,
            max_size=2**24,
        )
        await self._send({"type": "subscribe", "ref": "s", "limit": 1000, "view": VIEW})
        snapshot = await self._answer("s")
        self.sub = snapshot["sub"]
        self.total = snapshot["total"]
        self.seq = snapshot["seq"]
        self.rows = {row["id"]: row["version"] for row in snapshot["rows"]}
        await self._send({"type": "fetch", "ref": "f", "sub": self.sub, "limit": 1000})
        for row in (await self._answer("f"))["rows"]:
            self.rows[row["id"]] = row["version"]
        self.reader = asyncio.create_task(self._read())

    async def _send(self, frame: dict) -> None:
        await self.socket.send(msgpack.packb(frame))

    async def _answer(self, ref: str) -> dict:
        """The answer to `ref`; deltas that come first are applied, not dropped."""
        while True:
            frame = msgpack.unpackb(await self.socket.recv())
            if frame.get("ref") == ref:
                if frame["type"] == "error":
                    raise RuntimeError(f"error frame: {frame}")
                return frame
            self._handle(frame, time.time() * 1000)

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.socket:
                self._handle(msgpack.unpackb(raw), time.time() * 1000)

    def _handle(self, frame: dict, now: float) -> None:
        if frame["type"] == "resync":
            self.problems.append("resync")
        if frame["type"] != "delta":
            return
        self.last_frame = now
        if frame["seq"] != self.seq + 1:
            self.problems.append(f"seq {frame['seq']} after {self.seq}")
        self.seq = frame["seq"]
        self.total = frame["total"]
        for row_id in frame["remove"]:
            self.rows.pop(row_id, None)
        for row in frame["upsert"]:
            row_id, version = row["id"], row["version"]
            held = self.rows.get(row_id)
            if held is not None and version <= held:
                self.problems.append(f"{row_id} v{held} then v{version}")
            self.rows[row_id] = version
            if row_id not in self.first:
                self.first[row_id] = now
                name = row.get("customer_name")
                if isinstance(name, str) and name.startswith("t"):
                    self.latencies.append(now - float(name[1:]))

    async def close(self) -> None:
        await self.socket.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


async def open_watchers(urls: list[str], token: str, count: int) -> list[Watcher]:
    watchers = [Watcher(urls[n % len(urls)], token) for n in range(count)]
    for watcher in watchers:
        await watcher.open()
    return watchers


# --------------------------------------------------------------------------- load


@dataclass
class Load:
    """Paced posts of new chat conversations, alternating between servers."""

    ports: list[int]
    token: str
    rate: int
    seconds: float
    tag: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ids: list[str] = field(default_factory=list)
    errors: int = 0
    started: float = 0.0
    ended: float = 0.0

    async def run(self) -> None:
        per_tick = max(1, round(self.rate * TICK_S))
        interval = per_tick / self.rate
        free: dict[int, asyncio.Queue] = {}
        for port in self.ports:
            free[port] = asyncio.Queue()
            for _ in range(CONNECTIONS_PER_SERVER):
                free[port].put_nowait(await c.HttpConnection.open(port))
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        tasks = set()
        ticks = int(self.seconds / interval)
        self.started = time.perf_counter()
        for tick in range(ticks):
            if self.stop.is_set():
                break
            delay = self.started + tick * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            port = self.ports[tick % len(self.ports)]
            conn = await free[port].get()
            stamp = f"t{time.time() * 1000:.3f}"
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            events = []
            for _ in range(per_tick):
                cid = f"{self.tag}-{len(self.ids)}"
                self.ids.append(cid)
                events.append(
                    {
                        "event_id": cid,
                        "type": "conversation.created",
                        "conversation_id": cid,
                        "occurred_at": at,
                        "data": {"channel": "chat", "contact": cid, "customer": {"name": stamp}},
                    }
                )
            body = json.dumps({"events": events}).encode()
            task = asyncio.create_task(
                self._post(
                    conn, free[port], c.http_request("POST", "/api/v1/events", port, body, headers)
                )
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        self.ended = time.perf_counter()
        for queue in free.values():
            while not queue.empty():
                queue.get_nowait().close()

    async def _post(self, conn, free: asyncio.Queue, request: bytes) -> None:
        try:
            status, _ = await conn.request(request)
            if status != 200:
                self.errors += 1
        except ConnectionError:
            self.errors += 1
        free.put_nowait(conn)

    @property
    def achieved_rate(self) -> float:
        return len(self.ids) / max(1e-9, self.ended - self.started)


async def all_received(watchers: list[Watcher], ids: list[str], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    wanted = set(ids)
    while time.monotonic() < deadline:
        if all(wanted <= w.first.keys() for w in watchers):
            return
        await asyncio.sleep(0.05)


def missed(watchers: list[Watcher], ids: list[str]) -> int:
    return sum(len(set(ids) - w.first.keys()) for w in watchers)


# --------------------------------------------------------------------------- servers


def server_metrics(port: int) -> dict[str, float]:
    """The fault counters of one server's /metrics."""
    wanted = {
        "switchboard_bus_dropped_total": "bus_dropped",
        "switchboard_catchup_rows_total": "catchup_rows",
        "switchboard_bus_reconnects_total": "bus_reconnects",
    }
    found = dict.fromkeys(wanted.values(), 0.0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            name = line.split("{")[0].split(" ")[0]
            if name in wanted and not line.startswith("#"):
                found[wanted[name]] += float(line.rsplit(" ", 1)[1])
    return found


async def warm_up(ports: list[int], token: str, rate: int, database: str, tag: str) -> None:
    """A database that has been up: WARM_UP_S of the load (more rows than the window
    holds), then statistics as autovacuum keeps them. This PostgreSQL runs without
    autovacuum, and plans cached while the tables were empty scan every row (91 ms
    for one ingest read at 20,000 rows, 0.3 ms with statistics): F3 and R1 ANALYZE too."""
    await Load(ports, token, rate, WARM_UP_S, tag).run()
    await c.analyze(database)


@contextlib.contextmanager
def deployment(recorder: c.Recorder, label: str, processes: int, bus_url: str):
    """A fresh database, and `processes` servers on it sharing `bus_url`. Yields
    (servers, tokens, database name)."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"sb_bench_{label}_"))
    database = c.run_async(c.create_database(c.ADMIN_URL, f"sb_bench_{label}"))
    try:
        env = c.server_env(c.with_database(c.ADMIN_URL, database), data_dir)
        env.update(REDIS_URL=bus_url, SWITCHBOARD_BUS_PREFIX=f"bench:{secrets.token_hex(4)}:")
        tokens = prepare(env)
        out = c.run_cli(
            ["token", "--tenant", "bench", "--role", "supervisor", "--user", "sup"], env
        )
        tokens["supervisor"] = out.strip().splitlines()[-1]
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(
                    c.ServerProcess(env, recorder.path(f"-{label}-p{n}-server.log"))
                )
                for n in range(processes)
            ]
            yield servers, tokens, database
    finally:
        c.run_async(c.drop_database(c.ADMIN_URL, database))
        shutil.rmtree(data_dir, ignore_errors=True)


def cpu_of(servers) -> float:
    return sum(c.proc_cpu_seconds(server.pid) for server in servers)


def latency_figures(watchers: list[Watcher]) -> dict[str, float]:
    latencies = [value for w in watchers for value in w.latencies]
    return {
        "p50_ms": c.percentile(latencies, 50),
        "p99_ms": c.percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
    }


# --------------------------------------------------------------------------- F5


def run_f5(args, recorder: c.Recorder, round_no: int, mode: str, redis: RedisServer) -> dict:
    processes, bus_url = (1, "memory://") if mode == "baseline" else (2, redis.url)
    rec: dict[str, Any] = {"type": "run", "mode": mode, "round": round_no}
    try:
        label = f"f5{mode[0]}r{round_no}"
        with deployment(recorder, label, processes, bus_url) as (servers, tokens, database):

            async def measure() -> None:
                ports = [s.port for s in servers]
                await warm_up(ports, tokens["service"], args.f5_rate, database, f"w{round_no}")
                urls = [f"ws://127.0.0.1:{s.port}/ws" for s in servers]
                watchers = await open_watchers(urls, tokens["supervisor"], args.f5_clients)
                load = Load(
                    ports,
                    tokens["service"],
                    args.f5_rate,
                    args.f5_seconds,
                    f"r{round_no}{mode[0]}",
                )
                cpu0, busy0 = cpu_of(servers), c.machine_cpu()
                client0, wall0 = c.self_cpu_seconds(), time.perf_counter()
                await load.run()
                await all_received(watchers, load.ids, 30)
                cpu1, busy1 = cpu_of(servers), c.machine_cpu()
                # This process (the poster and every client): a core of its own at most.
                rec["client_cores"] = (c.self_cpu_seconds() - client0) / (
                    time.perf_counter() - wall0
                )
                rec.update(latency_figures(watchers))
                rec["changes"] = len(load.ids)
                rec["rate"] = load.achieved_rate
                rec["post_errors"] = load.errors
                rec["missed"] = missed(watchers, load.ids)
                rec["problems"] = sum(len(w.problems) for w in watchers)
                rec["server_cpu_s_per_1k"] = (cpu1 - cpu0) / max(1, len(load.ids)) * 1000
                rec["machine_busy"] = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
                for watcher in watchers:
                    await watcher.close()

            c.run_async(measure())
            for server in servers:
                for key, value in server_metrics(server.port).items():
                    rec[key] = rec.get(key, 0) + value
            rec["ok"] = rec["missed"] == 0 and rec["problems"] == 0 and rec["post_errors"] == 0
    except Exception as exc:
        rec["ok"] = False
        rec["error"] = repr(exc)
        print(f"  {mode} round {round_no} failed: {exc!r}", file=sys.stderr)
    recorder.line(**rec)
    return rec


def report(info, runs, args) -> str:
    header = [
        "mode",
        "ok runs",
        "changes/s reached",
        "rows missed",
        "p50 ms",
        "p99 ms",
        "max ms",
        "server CPU-s per 1k changes",
        "bus dropped",
        "catch-up rows",
        "machine busy",
        "bench process cores (poster + clients)",
    ]
    names = {
        "baseline": "baseline: 1 process, in-process bus",
        "f5": "F5: 2 processes behind Redis",
    }
    table = []
    for mode in ("baseline", "f5"):
        rows = [r for r in runs if r["mode"] == mode and "p99_ms" in r]

        def col(key, digits=0, rows=rows):
            return c.spread([r.get(key, float("nan")) for r in rows], digits)

        table.append(
            [
                names[mode],
                f"{sum(1 for r in rows if r.get('ok'))}/{sum(r['mode'] == mode for r in runs)}",
                col("rate"),
                col("missed"),
                col("p50_ms", 1),
                col("p99_ms", 1),
                col("max_ms", 1),
                col("server_cpu_s_per_1k", 3),
                col("bus_dropped"),
                col("catchup_rows"),
                col("machine_busy", 2),
                col("client_cores", 2),
            ]
        )
    base = [r["p99_ms"] for r in runs if r["mode"] == "baseline" and "p99_ms" in r]
    f5 = [r["p99_ms"] for r in runs if r["mode"] == "f5" and "p99_ms" in r]
    ratio = c.median(f5) / c.median(base) if base and f5 else float("nan")
    return "\n".join(
        [
            f"## F5 two processes behind Redis ({args.f5_clients} clients, "
            f"{args.f5_rate} changes/s for {args.f5_seconds:g} s, window 2,000)",
            "",
            c.describe_machine(info),
            "",
            c.markdown_table(header, table),
            "",
            f"p99 F5 / baseline (medians, same rounds): {ratio:.2f}x. Goal: nothing missed, "
            "p99 <= 50 ms.",
            "",
        ]
    )


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.f5_seconds = min(args.f5_seconds, 3.0)
        args.f5_clients = min(args.f5_clients, 6)
    recorder = c.Recorder("f5")
    info = c.machine_info()
    try:
        info["postgres"] = c.run_async(c.postgres_version(c.ADMIN_URL))
    except Exception as exc:
        print(f"F5 needs PostgreSQL at {c.ADMIN_URL}: {exc!r}", file=sys.stderr)
        return 2
    recorder.line(type="meta", bench="f5", argv=sys.argv[1:], **info)
    runs = []
    redis = RedisServer()
    redis.start()
    try:
        for round_no in range(1, args.runs + 1):
            for mode in ("baseline", "f5"):
                busy = c.wait_quiet()
                rec = run_f5(args, recorder, round_no, mode, redis)
                rec["busy_before"] = busy
                runs.append(rec)
                print(f"  round {round_no} {mode}: {brief(rec)}", file=sys.stderr)
    finally:
        redis.stop()
    text = report(info, runs, args)
    recorder.write_markdown(text)
    print(text)
    print(f"raw: {recorder.jsonl}\ntable: {recorder.markdown}", file=sys.stderr)
    return 0


def brief(rec: dict) -> str:
    keys = ("ok", "rate", "missed", "p50_ms", "p99_ms", "max_ms", "bus_dropped", "catchup_rows")
    keys += ("recovery_s", "outage_s", "error")
    return json.dumps({k: rec[k] for k in keys if k in rec}, default=str)
