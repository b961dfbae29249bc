"""F2 many views: server CPU per change at 100 vs 10,000 subscriptions.

One server process (`switchboard serve --no-demo`, in-process bus) on a fresh PostgreSQL
database, pinned to core 0, with the F3 directory (3 teams, 60 agents). Subscriptions are
inline views with distinct filters and a small window (limit 5), spread over websocket
connections (Python `websockets` client in this process, JSON subprotocol):

* the base set, 100 subscriptions on 20 connections (5 each): agent_id = each of the 60
  agents, team = each of the 3 teams, channel = c AND status = s for the 4 channels x 8
  statuses, and 5 team = <unknown team>. The stream's changes match these.
* the extra set, 9,900 subscriptions on 20 more connections (495 each): agent_id =
  <unknown agent> and team = <unknown team>, distinct, matching none of the stream.

So the deliveries are the same with 100 and with 10,000 subscriptions; what differs is only
how many subscriptions the server must consider for each change. That is what F2's ratio
is meant to measure (the index should make it near 1).

The stream: F3's realistic conversations (created, enqueued to a team, offered to and
accepted by an agent, messages, hang-up, wrap-up ...), posted in order by one sender in
batches of `--f2-batch` events. A change is one event; each matches a few subscriptions
(its agent's, its team's, its channel-and-status one). Phases, in this order:
0 subscriptions (1 run: the ingest cost alone), 100 (runs), 10,000 (runs), 100 again
(1 run: drift check). Reported: server CPU-s per 1k changes (utime+stime of the server's
pid), the ratio 10,000 / 100, and the ratio of the live part alone (CPU minus the
0-subscription run's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common as c
from bench.f1_fanout import pin, rss_kb
from bench.f3_ingest import AGENTS, TEAMS, EventSource, prepare, seed_directory

TITLE = "many views: server CPU per change at 100 vs 10,000 subscriptions"
CHANNELS = ("call", "chat", "whatsapp", "sms")
STATUSES = ("new", "queued", "offered", "dialing", "ringing", "active", "wrap_up", "closed")
COLUMNS = ["id", "customer_name", "status", "agent_id", "team"]


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--f2-subs", type=int, default=10_000, help="the large set (10000)")
    group.add_argument("--f2-conns", type=int, default=20, help="connections per set (20)")
    group.add_argument("--f2-changes", type=int, default=2000, help="events per run (2000)")
    group.add_argument("--f2-batch", type=int, default=20, help="events per POST (20)")
    group.add_argument("--f2-limit", type=int, default=5, help="window per subscription (5)")


def base_filters() -> list[list[dict]]:
    out = [[{"field": "agent_id", "op": "eq", "value": f"agent-{n:03d}"}] for n in range(AGENTS)]
    out += [[{"field": "team", "op": "eq", "value": t}] for t in TEAMS]
    out += [
        [
            {"field": "channel", "op": "in", "value": [ch]},
            {"field": "status", "op": "eq", "value": s},
        ]
        for ch in CHANNELS
        for s in STATUSES
    ]
    out += [[{"field": "team", "op": "eq", "value": f"ghost-team-base-{n}"}] for n in range(5)]
    return out[:100]


def extra_filters(count: int) -> list[list[dict]]:
    out = []
    for n in range(count):
        if n % 5 == 4:
            out.append([{"field": "team", "op": "eq", "value": f"ghost-team-{n:05d}"}])
        else:
            out.append([{"field": "agent_id", "op": "eq", "value": f"ghost-agent-{n:05d}"}])
    return out


class Client:
    """One websocket connection holding many subscriptions; counts delta frames."""

    def __init__(self, ws):
        self.ws = ws
        self.deltas = 0
        self.rows = 0
        self.errors = 0
        self.resyncs = 0
        self.snapshots = 0
        self.waiter: asyncio.Future | None = None
        self.want = 0
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "delta":
                self.deltas += 1
                self.rows += len(frame.get("upsert") or ())
            elif kind == "snapshot":
                self.snapshots += 1
                if self.waiter and not self.waiter.done() and self.snapshots >= self.want:
                    self.waiter.set_result(None)
            elif kind == "error":
                self.errors += 1
                if self.waiter and not self.waiter.done():
                    self.waiter.set_exception(RuntimeError(f"error frame: {raw[:300]}"))
            elif kind == "resync":
                self.resyncs += 1

    async def subscribe(self, filter_sets: list[list[dict]], limit: int) -> None:
        self.want = self.snapshots + len(filter_sets)
        self.waiter = asyncio.get_running_loop().create_future()
        for n, filters in enumerate(filter_sets):
            await self.ws.send(
                json.dumps(
                    {
                        "type": "subscribe",
                        "ref": str(n),
                        "limit": limit,
                        "view": {"filters": filters, "columns": COLUMNS},
                    }
                )
            )
        async with asyncio.timeout(300):
            await self.waiter

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()


async def open_clients(port: int, token: str, sets: list[list[list[dict]]], limit: int):
    import websockets

    clients = []
    for _ in sets:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws",
            subprotocols=["switchboard.v1.json"],
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            ping_interval=None,
            max_size=2**24,
        )
        clients.append(Client(ws))
    await asyncio.gather(*(cl.subscribe(fs, limit) for cl, fs in zip(clients, sets, strict=True)))
    return clients


def split(items: list, parts: int) -> list[list]:
    return [items[k::parts] for k in range(parts)]


async def post_stream(
    port: int, token: str, source: EventSource, changes: int, batch: int, meter: c.CpuMeter
) -> dict[str, Any]:
    conn = await c.HttpConnection.open(port)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    batches = [source.next_batch(batch, 1) for _ in range(changes // batch)]
    bodies = [
        c.http_request("POST", "/api/v1/events", port, json.dumps({"events": b}).encode(), headers)
        for b in batches
    ]
    applied = errors = 0
    try:
        meter.start()
        for body in bodies:
            status, answer = await conn.request(body)
            errors += status != 200
            applied += answer.count(b'"outcome":"applied"')
        await asyncio.sleep(0.3)  # let the last push interval (20 ms) and its deltas go out
        cpu = meter.stop()
    finally:
        conn.close()
    return {"events": len(batches) * batch, "applied": applied, "post_errors": errors, **cpu}


async def measure(args, server, tokens, database, recorder) -> list[dict]:
    source = EventSource("f2", 11, args.f2_batch)
    runs = []
    base = base_filters()
    extra = extra_filters(args.f2_subs - len(base))

    async def one(phase: str, subs: int, clients: list[Client], n: int) -> None:
        await asyncio.to_thread(c.wait_quiet)
        d0 = sum(cl.deltas for cl in clients)
        r0 = sum(cl.rows for cl in clients)
        meter = c.CpuMeter(server.pid, database=database)
        got = await post_stream(
            server.port, tokens["service"], source, args.f2_changes, args.f2_batch, meter
        )
        rec = {
            "type": "run",
            "phase": phase,
            "subs": subs,
            "run": n,
            **got,
            "deltas": sum(cl.deltas for cl in clients) - d0,
            "delta_rows": sum(cl.rows for cl in clients) - r0,
            "errors": sum(cl.errors for cl in clients),
            "resyncs": sum(cl.resyncs for cl in clients),
            "rss_kb": rss_kb(server.pid),
        }
        rec["server_cpu_ms_per_change"] = 1000 * rec["server_cpu_s"] / rec["events"]
        rec["postgres_cpu_ms_per_change"] = 1000 * rec["postgres_cpu_s"] / rec["events"]
        rec["changes_per_s"] = rec["events"] / rec["wall_s"]
        recorder.line(**rec)
        runs.append(rec)
        print(
            f"  {phase} {subs} subs run {n}: {rec['server_cpu_ms_per_change']:.3f} ms CPU "
            f"per change, {rec['deltas']} deltas, {rec['applied']}/{rec['events']} applied, "
            f"others {rec['others_cores']:.2f} cores",
            file=sys.stderr,
        )

    # warm-up: the same stream with nothing subscribed
    meter = c.CpuMeter(server.pid, postgres=False)
    await post_stream(
        server.port, tokens["service"], source, args.f2_changes // 2, args.f2_batch, meter
    )
    await one("none", 0, [], 1)
    t0 = time.monotonic()
    base_clients = await open_clients(
        server.port, tokens["supervisor"], split(base, args.f2_conns), args.f2_limit
    )
    print(f"  100 subscriptions in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    for n in range(1, args.runs + 1):
        await one("small", len(base), base_clients, n)
    rss_small = rss_kb(server.pid)
    t0 = time.monotonic()
    extra_clients = await open_clients(
        server.port, tokens["supervisor"], split(extra, args.f2_conns), args.f2_limit
    )
    subscribe_s = time.monotonic() - t0
    rss_large = rss_kb(server.pid)
    print(
        f"  {len(extra)} more subscriptions in {subscribe_s:.1f} s; RSS {rss_small} -> "
        f"{rss_large} kB",
        file=sys.stderr,
    )
    recorder.line(
        type="subscribe",
        extra=len(extra),
        seconds=subscribe_s,
        rss_small_kb=rss_small,
        rss_large_kb=rss_large,
    )
    everyone = base_clients + extra_clients
    for n in range(1, args.runs + 1):
        await one("large", len(base) + len(extra), everyone, n)
    for cl in extra_clients:
        await cl.close()
    await asyncio.sleep(1.0)
    await one("small-again", len(base), base_clients, 1)
    for cl in base_clients:
        await cl.close()
    runs.append(
        {
            "type": "subscribe",
            "seconds": subscribe_s,
            "extra": len(extra),
            "rss_small_kb": rss_small,
            "rss_large_kb": rss_large,
        }
    )
    return runs


def report(info, runs, args) -> str:
    def rows(phase):
        return [r for r in runs if r.get("phase") == phase]

    header = [
        "subscriptions",
        "runs",
        "server CPU ms / change",
        "postgres backend CPU ms / change",
        "changes/s",
        "delta frames / run",
        "rows in deltas / run",
        "others' cores",
        "server RSS MB",
    ]
    table = []
    for phase, label in (
        ("none", "0 (ingest only)"),
        ("small", "100"),
        ("large", f"{args.f2_subs:,}"),
        ("small-again", "100 (after, drift)"),
    ):
        rs = rows(phase)
        if not rs:
            continue

        def col(key, digits=0, scale=1.0, rs=rs):
            return c.spread([r[key] for r in rs], digits, scale)

        table.append(
            [
                label,
                str(len(rs)),
                col("server_cpu_ms_per_change", 3),
                col("postgres_cpu_ms_per_change", 3),
                col("changes_per_s"),
                col("deltas"),
                col("delta_rows"),
                col("others_cores", 2),
                col("rss_kb", 1, 1 / 1024),
            ]
        )
    small = rows("small")
    large = rows("large")
    none = rows("none")
    sub = next((r for r in runs if r.get("type") == "subscribe"), None)
    parts = [
        f"### F2 many views, {info['date']}",
        "",
        c.describe_machine(info),
        f"* load: {args.f2_changes} changes per run (F3's conversation events, one sender, "
        f"{args.f2_batch} per POST); subscriptions limit {args.f2_limit}, on "
        f"{args.f2_conns} connections per set; median (min-max)",
        "",
        c.markdown_table(header, table),
        "",
    ]
    if small and large:
        s = c.median([r["server_cpu_ms_per_change"] for r in small])
        big = c.median([r["server_cpu_ms_per_change"] for r in large])
        pairs = [
            lg["server_cpu_ms_per_change"] / sm["server_cpu_ms_per_change"]
            for sm, lg in zip(small, large, strict=False)
        ]
        parts.append(
            f"* CPU per change, {args.f2_subs:,} / 100 subscriptions: {big / s:.2f}x "
            f"(medians; run by run {c.spread(pairs, 2)}x). Goal <= 1.5x: "
            + ("met" if big / s <= 1.5 else f"missed by {big / s / 1.5:.2f}x")
        )
        if none:
            z = c.median([r["server_cpu_ms_per_change"] for r in none])
            if s - z > 0:
                parts.append(
                    f"* the live part alone (minus the 0-subscription run, "
                    f"{z:.3f} ms): {s - z:.3f} ms at 100, {big - z:.3f} ms at "
                    f"{args.f2_subs:,}: {(big - z) / (s - z):.2f}x"
                )
    if sub:
        parts.append(
            f"* subscribing the extra {sub['extra']:,} took {sub['seconds']:.1f} s; "
            f"server RSS {sub['rss_small_kb'] / 1024:.0f} -> "
            f"{sub['rss_large_kb'] / 1024:.0f} MB "
            f"({(sub['rss_large_kb'] - sub['rss_small_kb']) * 1024 / sub['extra']:,.0f}"
            " bytes per subscription)"
        )
    errs = sum(r.get("errors", 0) for r in runs if r.get("type") == "run")
    parts.append(
        f"* error frames {errs}, resyncs "
        f"{max((r.get('resyncs', 0) for r in runs if r.get('type') == 'run'), default=0)}"
    )
    parts.append("")
    return "\n".join(parts)


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.f2_subs, args.f2_changes = 1000, 400
    recorder = c.Recorder("f2")
    info = c.machine_info()
    try:
        info["postgres"] = c.run_async(c.postgres_version(c.ADMIN_URL))
    except Exception as exc:
        print(f"F2 needs PostgreSQL at {c.ADMIN_URL}: {exc!r}", file=sys.stderr)
        return 2
    recorder.line(type="meta", bench="f2", argv=sys.argv[1:], **info)
    started = time.monotonic()
    data_dir = Path(tempfile.mkdtemp(prefix="sb_bench_f2_"))
    database = c.run_async(c.create_database(c.ADMIN_URL, "sb_bench_f2"))
    try:
        env = c.server_env(c.with_database(c.ADMIN_URL, database), data_dir)
        tokens = prepare(env)
        out = c.run_cli(
            ["token", "--tenant", "bench", "--role", "supervisor", "--user", "sup"], env
        )
        tokens["supervisor"] = out.strip().splitlines()[-1]
        with c.ServerProcess(env, recorder.path("-server.log")) as server:
            pin(server.pid, 0)
            seed_directory(server.base_url, tokens["admin"])
            try:
                runs = c.run_async(measure(args, server, tokens, database, recorder))
            except Exception:
                print(f"  the server's log ends with:\n{server.log_tail()}", file=sys.stderr)
                raise
    finally:
        c.run_async(c.drop_database(c.ADMIN_URL, database))
        shutil.rmtree(data_dir, ignore_errors=True)
    text = report(info, runs, args)
    text += f"\nTotal time {time.monotonic() - started:.0f} s.\n"
    recorder.write_markdown(text)
    print(text)
    print(f"raw: {recorder.jsonl}\ntable: {recorder.markdown}", file=sys.stderr)
    return 0
