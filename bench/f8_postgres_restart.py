"""F8 PostgreSQL restart: the database stopped for `--f8-down` seconds under load.

Each round, on a PostgreSQL cluster of the bench's own (bench/postgres_cluster.py:
initdb on a free port, never the machine's shared one): one `switchboard serve`
process, C websocket clients watching F5's view (chat conversations, a 2,000-row
window), and `--f8-posters` integrations posting batches of new conversations at
`--f8-rate` changes/s in all. A batch answered anything but 200 (or cut) is sent
again with the same event ids after the client's own back-off of 0.2 s, as an
integration does. After `--f8-before` seconds of load the bench stops the cluster
(`pg_ctl -m fast`), keeps it down `--f8-down` seconds, starts it again and keeps the
load on for `--f8-after` seconds; then it compares every client's window with the
database's own first 2,000 rows and count.

Reported: answers while down (503s, how many carried Retry-After, anything else
that was not a 200 or a 503), seconds from the database's start to /readyz 200, to
the first ingest 200 and to every client consistent; batches half-stored (a 200
whose outcomes are neither all applied nor all duplicates: must be 0), events lost
(posted, never stored: must be 0), rows wrong in the clients' windows (must be 0),
post -> receive p99 before the stop, and the server's RSS at the start, peak and end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import common as c
from bench.f1_fanout import rss_kb
from bench.f3_ingest import prepare
from bench.f5_redis import Watcher, cpu_of, open_watchers
from bench.f6_recovery import database_truth
from bench.postgres_cluster import PostgresCluster, postgres_bin

TITLE = "PostgreSQL restart: the database stopped under load, nothing lost or half-stored"
BATCH = 10
BACK_OFF_S = 0.2


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--f8-rate", type=int, default=500, help="changes per second (500)")
    group.add_argument("--f8-posters", type=int, default=4, help="posting clients (4)")
    group.add_argument("--f8-clients", type=int, default=20, help="websocket clients (20)")
    group.add_argument("--f8-before", type=float, default=5.0, help="load before the stop (5)")
    group.add_argument("--f8-down", type=float, default=10.0, help="seconds stopped (10)")
    group.add_argument("--f8-after", type=float, default=5.0, help="load after the start (5)")


class Posters:
    """`count` integrations, each posting a batch of BATCH new conversations every
    `interval` seconds (paced from its own last success: no backlog burst after the
    outage), retrying a refused batch with the same ids until it is answered 200."""

    def __init__(self, port: int, token: str, count: int, rate: int, tag: str):
        self.port, self.token, self.count, self.tag = port, token, count, tag
        self.interval = BATCH * count / rate
        self.stop = asyncio.Event()
        self.ids: list[str] = []
        self.answers: list[dict[str, Any]] = []  # one per HTTP answer or cut

    async def run(self) -> None:
        await asyncio.gather(*(self._poster(n) for n in range(self.count)))

    async def _poster(self, number: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        base = f"http://127.0.0.1:{self.port}"
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=15) as client:
            batch_no = 0
            while not self.stop.is_set():
                started = time.monotonic()
                stamp = f"t{time.time() * 1000:.3f}"
                at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                ids = [f"{self.tag}-{number}-{batch_no}-{i}" for i in range(BATCH)]
                self.ids.extend(ids)
                events = [
                    {"event_id": cid, "type": "conversation.created", "conversation_id": cid,
                     "occurred_at": at,
                     "data": {"channel": "chat", "contact": cid, "customer": {"name": stamp}}}
                    for cid in ids
                ]  # fmt: skip
                while True:
                    answer: dict[str, Any] = {"at": time.monotonic()}
                    try:
                        response = await client.post("/api/v1/events", json={"events": events})
                        answer["status"] = response.status_code
                        answer["retry_after"] = response.headers.get("retry-after")
                        if response.status_code == 200:
                            answer["outcomes"] = sorted(
                                {r["outcome"] for r in response.json()["results"]}
                            )
                    except httpx.TransportError as exc:
                        answer["status"] = type(exc).__name__
                    self.answers.append(answer)
                    if answer["status"] == 200:
                        break
                    await asyncio.sleep(BACK_OFF_S)
                batch_no += 1
                with contextlib.suppress(TimeoutError):
                    wait = self.interval - (time.monotonic() - started)
                    await asyncio.wait_for(self.stop.wait(), max(0.0, wait))


async def stored(cluster_url: str, database: str, ids: list[str]) -> set[str]:
    """Which of the posted conversations the database holds."""
    import asyncpg

    conn = await asyncpg.connect(c.asyncpg_dsn(cluster_url, database), timeout=5)
    try:
        rows = await conn.fetch("SELECT id FROM conversations WHERE id = ANY($1::text[])", ids)
    finally:
        await conn.close()
    return {row["id"] for row in rows}


def rows_wrong(watcher: Watcher, truth: Watcher) -> int:
    wrong = len(truth.rows.keys() ^ watcher.rows.keys())
    wrong += sum(
        1 for k in truth.rows.keys() & watcher.rows.keys() if watcher.rows[k] != truth.rows[k]
    )
    return wrong


async def watch_readiness(port: int, stop: asyncio.Event, seen: list[tuple[float, int]]) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.TransportError):
                seen.append((time.monotonic(), (await client.get("/readyz")).status_code))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)


def run_round(args, recorder: c.Recorder, round_no: int, bin_dir: Path) -> dict[str, Any]:
    rec: dict[str, Any] = {"type": "run", "mode": "f8", "round": round_no}
    cluster = PostgresCluster(bin_dir)
    data_dir = Path(tempfile.mkdtemp(prefix="sb_bench_f8_"))
    try:
        cluster.create()
        cluster.start()
        database = c.run_async(c.create_database(cluster.url, "sb_bench_f8"))
        env = c.server_env(c.with_database(cluster.url, database), data_dir)
        tokens = prepare(env)
        out = c.run_cli(["token", "--tenant", "bench", "--role", "supervisor", "--user", "s"], env)
        tokens["supervisor"] = out.strip().splitlines()[-1]
        log = recorder.path(f"-r{round_no}-server.log")
        with c.ServerProcess(env, log) as server:
            rss: list[int] = [rss_kb(server.pid)]

            async def measure() -> None:
                watchers = await open_watchers(
                    [f"ws://127.0.0.1:{server.port}/ws"], tokens["supervisor"], args.f8_clients
                )
                posters = Posters(
                    server.port, tokens["service"], args.f8_posters, args.f8_rate, f"r{round_no}"
                )
                ready_stop, readiness = asyncio.Event(), []
                readiness_task = asyncio.create_task(
                    watch_readiness(server.port, ready_stop, readiness)
                )
                posting = asyncio.create_task(posters.run())

                async def sample_rss() -> None:
                    while not ready_stop.is_set():
                        rss.append(rss_kb(server.pid))
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(ready_stop.wait(), 0.5)

                sampling = asyncio.create_task(sample_rss())
                cpu0 = cpu_of([server])
                await asyncio.sleep(args.f8_before)  # the scenario's load, not a wait
                latencies_before = [v for w in watchers for v in w.latencies]
                rec["p99_before_ms"] = c.percentile(latencies_before, 99)
                down_at = time.monotonic()
                await asyncio.to_thread(cluster.stop)
                await asyncio.sleep(max(0.0, args.f8_down - (time.monotonic() - down_at)))
                await asyncio.to_thread(cluster.start)
                up_at = time.monotonic()
                rec["down_s"] = up_at - down_at
                await asyncio.sleep(args.f8_after)
                posters.stop.set()
                await posting
                last_post = time.time()
                truth = await database_truth(database, cluster.url)

                def consistent() -> bool:
                    return all(
                        rows_wrong(w, truth) == 0 and w.total == truth.total for w in watchers
                    )

                for _ in range(6000):  # a minute at most
                    if consistent():
                        break
                    await asyncio.sleep(0.01)
                rec["consistent"] = consistent()
                rec["server_cpu_s"] = cpu_of([server]) - cpu0
                ready_stop.set()
                await asyncio.gather(readiness_task, sampling)

                during = [a for a in posters.answers if down_at <= a["at"] <= up_at + 60]
                refused = [a for a in during if a["status"] != 200]
                rec["answers_503"] = sum(1 for a in refused if a["status"] == 503)
                rec["answers_503_retry_after"] = sum(
                    1 for a in refused if a["status"] == 503 and a["retry_after"]
                )
                rec["answers_other"] = sorted({str(a["status"]) for a in refused} - {"503"})
                rec["answers_other_count"] = sum(1 for a in refused if a["status"] != 503)
                first_ok = min((a["at"] for a in during if a["at"] > up_at and a["status"] == 200),
                               default=float("nan"))  # fmt: skip
                rec["first_200_s"] = first_ok - up_at
                ready_again = min(
                    (t for t, status in readiness if t > up_at and status == 200),
                    default=float("nan"),
                )
                rec["readyz_200_s"] = ready_again - up_at
                rec["readyz_503_seen"] = any(
                    status == 503 for t, status in readiness if down_at <= t <= up_at
                )
                last_frame = max(w.last_frame for w in watchers) / 1000
                rec["consistent_after_last_post_s"] = max(0.0, last_frame - last_post)
                rec["half_stored"] = sum(
                    1
                    for a in posters.answers
                    if a["status"] == 200 and a["outcomes"] not in (["applied"], ["duplicate"])
                )
                rec["events_posted"] = len(posters.ids)
                kept = await stored(cluster.url, database, posters.ids)
                rec["events_lost"] = len(set(posters.ids) - kept)
                rec["rows_wrong"] = sum(rows_wrong(w, truth) for w in watchers)
                rec["totals_wrong"] = sum(1 for w in watchers if w.total != truth.total)
                rec["problems"] = sum(len(w.problems) for w in watchers)
                rec["problem_sample"] = [p for w in watchers for p in w.problems][:5]
                for watcher in watchers:
                    await watcher.close()

            c.run_async(measure())
            rss.append(rss_kb(server.pid))
            rec["rss_start_mb"], rec["rss_peak_mb"], rec["rss_end_mb"] = (
                rss[0] / 1024,
                max(rss) / 1024,
                rss[-1] / 1024,
            )
        rec["ok"] = (
            rec["consistent"]
            and rec["half_stored"] == 0
            and rec["events_lost"] == 0
            and rec["rows_wrong"] == 0
            and rec["totals_wrong"] == 0
            and rec["answers_other_count"] == 0
            and rec["answers_503"] == rec["answers_503_retry_after"]
            and rec["readyz_503_seen"]
        )
    except Exception as exc:
        rec["ok"] = False
        rec["error"] = repr(exc)
        print(f"  f8 round {round_no} failed: {exc!r}", file=sys.stderr)
    finally:
        cluster.remove()
        shutil.rmtree(data_dir, ignore_errors=True)
    recorder.line(**rec)
    return rec


def report(info, runs, args) -> str:
    rows = [r for r in runs if "first_200_s" in r]

    def col(key, digits=0):
        return c.spread([float(r.get(key, float("nan"))) for r in rows], digits)

    header = [
        "ok runs",
        "503s while down (with Retry-After)",
        "other answers",
        "readyz 200 after start s",
        "first ingest 200 after start s",
        "half-stored batches",
        "events lost",
        "rows wrong",
        "p99 before stop ms",
        "RSS start / peak / end MB",
    ]
    table = [
        [
            f"{sum(1 for r in runs if r.get('ok'))}/{len(runs)}",
            f"{col('answers_503')} ({col('answers_503_retry_after')})",
            col("answers_other_count"),
            col("readyz_200_s", 2),
            col("first_200_s", 2),
            col("half_stored"),
            col("events_lost"),
            col("rows_wrong"),
            col("p99_before_ms", 1),
            f"{col('rss_start_mb')} / {col('rss_peak_mb')} / {col('rss_end_mb')}",
        ]
    ]
    return "\n".join(
        [
            f"## F8 PostgreSQL restart ({args.f8_clients} clients, {args.f8_rate} changes/s "
            f"from {args.f8_posters} posters, stopped {args.f8_down:g} s)",
            "",
            c.describe_machine(info),
            "",
            c.markdown_table(header, table),
            "",
            "ok = nothing half-stored or lost, every client's window equal to the database's "
            "own first 2,000 rows and count, every refusal a 503 with Retry-After, /readyz "
            "503 while down.",
            "",
        ]
    )


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.f8_before, args.f8_down, args.f8_after = 2.0, 3.0, 2.0
        args.f8_clients = min(args.f8_clients, 4)
    bin_dir = postgres_bin()
    if bin_dir is None:
        print("F8 needs PostgreSQL's server binaries (initdb, pg_ctl)", file=sys.stderr)
        return 2
    recorder = c.Recorder("f8")
    info = c.machine_info()
    recorder.line(type="meta", bench="f8", argv=sys.argv[1:], **info)
    runs = []
    for round_no in range(1, args.runs + 1):
        busy = c.wait_quiet()
        rec = run_round(args, recorder, round_no, bin_dir)
        rec["busy_before"] = busy
        runs.append(rec)
        brief = {k: v for k, v in rec.items() if k not in ("type", "problem_sample")}
        print(f"  round {round_no}: {json.dumps(brief, default=str)}", file=sys.stderr)
    text = report(info, runs, args)
    recorder.write_markdown(text)
    print(text)
    print(f"raw: {recorder.jsonl}\ntable: {recorder.markdown}", file=sys.stderr)
    return 0 if all(r.get("ok") for r in runs) else 1
