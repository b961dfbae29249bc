"""F6 recovery: Redis restarted under F5's load; seconds until every
client holds the same rows as a fresh snapshot.

Each round: F5's deployment (two `switchboard serve` processes on a private
redis-server, C msgpack clients split between them on a 2,000-row window, new chat
conversations posted at `--f5-rate`, alternating between the processes). Halfway
through `--f6-seconds` the bench stops Redis by its pid (SIGTERM), waits `--f6-down`
seconds, starts it again on the same port and, as soon as it answers PING, stops the
load: from then on the database no longer changes, so "a fresh snapshot" is one
fixed answer. The bench then subscribes a fresh client (the truth) and waits until
every client's window (ids and versions) and total equal it.

Reported: the outage (Redis stopped to answering again), recovery (Redis answering to
the last client consistent: the time of the last frame any client needed), whether
every client ended exactly at the fresh snapshot with no seq gap, resync or version
delivered twice, and the servers' counters (bus reconnects, rows catch-up recovered).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from bench import common as c
from bench.f5_redis import (
    Load,
    RedisServer,
    Watcher,
    brief,
    cpu_of,
    deployment,
    open_watchers,
    server_metrics,
    warm_up,
)

TITLE = "recovery: Redis restarted under F5's load, seconds to consistency"


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--f6-seconds", type=float, default=8.0, help="load before the restart x2 (8)"
    )
    group.add_argument("--f6-down", type=float, default=0.0, help="seconds Redis stays down (0)")


def consistent(watchers: list[Watcher], truth: Watcher) -> bool:
    return all(w.rows == truth.rows and w.total == truth.total for w in watchers)


async def database_truth(database: str, server_url: str = c.ADMIN_URL) -> Watcher:
    """The fresh snapshot, read from the database itself (not from a server, whose
    windows are shared): the view's first 2,000 rows in its order, and its count."""
    import asyncpg

    conn = await asyncpg.connect(c.asyncpg_dsn(server_url, database), timeout=5)
    try:
        where = "tenant_id = 'bench' AND channel = 'chat'"
        rows = await conn.fetch(
            f"SELECT id, version FROM conversations WHERE {where} "
            "ORDER BY created_at DESC, id DESC LIMIT 2000"
        )
        total = await conn.fetchval(f"SELECT count(*) FROM conversations WHERE {where}")
    finally:
        await conn.close()
    truth = Watcher("database", "")
    truth.rows = {row["id"]: row["version"] for row in rows}
    truth.total = total
    return truth


def run_f6(args, recorder: c.Recorder, round_no: int) -> dict[str, Any]:
    rec: dict[str, Any] = {"type": "run", "mode": "f6", "round": round_no}
    redis = RedisServer()
    redis.start()
    try:
        label = f"f6r{round_no}"
        with deployment(recorder, label, 2, redis.url) as (servers, tokens, database):

            async def measure() -> None:
                ports = [s.port for s in servers]
                await warm_up(ports, tokens["service"], args.f5_rate, database, f"w{round_no}")
                urls = [f"ws://127.0.0.1:{s.port}/ws" for s in servers]
                watchers = await open_watchers(urls, tokens["supervisor"], args.f5_clients)
                load = Load(
                    ports,
                    tokens["service"],
                    args.f5_rate,
                    args.f6_seconds,
                    f"r{round_no}",
                )
                cpu0 = cpu_of(servers)

                async def restart() -> None:
                    await asyncio.sleep(args.f6_seconds / 2)
                    rec["down_at"] = time.time() * 1000
                    await asyncio.to_thread(redis.stop)
                    await asyncio.sleep(args.f6_down)
                    await asyncio.to_thread(redis.start)
                    rec["up_at"] = time.time() * 1000
                    load.stop.set()

                await asyncio.gather(load.run(), restart())
                truth = await database_truth(database)
                server_truth = Watcher(urls[0], tokens["supervisor"])  # a late subscriber
                await server_truth.open()
                watchers.append(server_truth)
                for _ in range(6000):  # a minute at most
                    if consistent(watchers, truth):
                        break
                    await asyncio.sleep(0.01)
                rec["consistent"] = consistent(watchers, truth)
                rec["differences"] = [
                    {
                        "url": w.url,
                        "total": [w.total, truth.total],
                        "rows": [len(w.rows), len(truth.rows)],
                        "missing": sorted(truth.rows.keys() - w.rows.keys())[:3],
                        "extra": sorted(w.rows.keys() - truth.rows.keys())[:3],
                        "versions": [
                            k
                            for k in w.rows.keys() & truth.rows.keys()
                            if w.rows[k] != truth.rows[k]
                        ][:3],
                    }
                    for w in watchers
                    if w.rows != truth.rows or w.total != truth.total
                ][:4]
                last = max(w.last_frame for w in watchers[:-1])
                rec["outage_s"] = (rec["up_at"] - rec["down_at"]) / 1000
                rec["recovery_s"] = max(0.0, (last - rec["up_at"]) / 1000)
                rec["from_down_s"] = max(0.0, (last - rec["down_at"]) / 1000)
                rec["changes"] = len(load.ids)
                rec["rate"] = load.achieved_rate
                rec["post_errors"] = load.errors
                rec["problems"] = sum(len(w.problems) for w in watchers)
                rec["problem_sample"] = [p for w in watchers for p in w.problems][:5]
                rec["server_cpu_s"] = cpu_of(servers) - cpu0
                for watcher in watchers:
                    await watcher.close()

            c.run_async(measure())
            for server in servers:
                for key, value in server_metrics(server.port).items():
                    rec[key] = rec.get(key, 0) + value
            rec["ok"] = rec["consistent"] and rec["problems"] == 0 and rec["post_errors"] == 0
    except Exception as exc:
        rec["ok"] = False
        rec["error"] = repr(exc)
        print(f"  f6 round {round_no} failed: {exc!r}", file=sys.stderr)
    finally:
        redis.stop()
    recorder.line(**rec)
    return rec


def report(info, runs, args) -> str:
    header = [
        "ok runs",
        "changes/s reached",
        "Redis outage s",
        "recovery s (Redis back -> every client consistent)",
        "from Redis stop s",
        "bus reconnects",
        "catch-up rows",
        "bus dropped",
    ]
    rows = [r for r in runs if "recovery_s" in r]

    def col(key, digits=0):
        return c.spread([r.get(key, float("nan")) for r in rows], digits)

    table = [
        [
            f"{sum(1 for r in runs if r.get('ok'))}/{len(runs)}",
            col("rate"),
            col("outage_s", 2),
            col("recovery_s", 2),
            col("from_down_s", 2),
            col("bus_reconnects"),
            col("catchup_rows"),
            col("bus_dropped"),
        ]
    ]
    return "\n".join(
        [
            f"## F6 recovery: Redis restarted under F5's load ({args.f5_clients} clients, "
            f"{args.f5_rate} changes/s, restart after {args.f6_seconds / 2:g} s, "
            f"{args.f6_down:g} s down)",
            "",
            c.describe_machine(info),
            "",
            c.markdown_table(header, table),
            "",
            "Goal: <= 2 s to consistency, nothing missed (ok = every client ended exactly "
            "at a fresh snapshot, with no seq gap, resync or version delivered twice).",
            "",
        ]
    )


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.f6_seconds = min(args.f6_seconds, 4.0)
        args.f5_clients = min(args.f5_clients, 6)
    recorder = c.Recorder("f6")
    info = c.machine_info()
    try:
        info["postgres"] = c.run_async(c.postgres_version(c.ADMIN_URL))
    except Exception as exc:
        print(f"F6 needs PostgreSQL at {c.ADMIN_URL}: {exc!r}", file=sys.stderr)
        return 2
    recorder.line(type="meta", bench="f6", argv=sys.argv[1:], **info)
    runs = []
    for round_no in range(1, args.runs + 1):
        busy = c.wait_quiet()
        rec = run_f6(args, recorder, round_no)
        rec["busy_before"] = busy
        runs.append(rec)
        print(f"  round {round_no}: {brief(rec)}", file=sys.stderr)
    text = report(info, runs, args)
    recorder.write_markdown(text)
    print(text)
    print(f"raw: {recorder.jsonl}\ntable: {recorder.markdown}", file=sys.stderr)
    return 0
