"""F3 ingest: events into PostgreSQL over HTTP.

One server process (`switchboard serve --no-demo`) on a fresh PostgreSQL database.
The load is whole conversations, each a sequence of events in order (created,
enqueued, offered, accepted, messages and their status or a recording, hangup,
wrap-up, sometimes a ticket and a CSAT score), so about nine events in ten update an
existing conversation. Modes, interleaved round by round so that drift on a shared
machine hits every mode alike:

* floor   GET /healthz from 32 senders: the same HTTP stack doing no work, the
          baseline the ingest figures are divided by (measured in the same run).
* single  32 concurrent senders, one event per request.
* batch   requests of 100 events from `--f3-batch-senders` senders.

Reported per mode: events/s, requests/s, p50/p99 ms per request, server CPU-s per
1k events (utime+stime of the server's pid), events per server-CPU-second, and the
CPU of PostgreSQL, of the generator and of the whole machine, to say which one was
saturated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import common as c

TITLE = "ingest: single events (32 senders) and batches of 100, PostgreSQL"
TARGETS = {"single": 2_000, "batch": 10_000}  # events/s, bench/RESULTS.md, the goals
TENANT = "bench"
SECRET = c.SECRET
TEAMS = ("support", "sales", "billing")
AGENTS = 60
MAX_EVENTS_PER_RUN = 400_000  # every run is bounded in count as well as in time


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--f3-modes",
        default="floor,single,batch",
        help="comma-separated modes among floor, single, batch (default: all)",
    )
    group.add_argument("--f3-duration", type=float, default=10.0, help="seconds per run")
    group.add_argument("--f3-warmup", type=float, default=3.0, help="warm-up seconds per mode")
    group.add_argument("--f3-senders", type=int, default=32, help="senders in single mode")
    group.add_argument("--f3-batch-senders", type=int, default=8, help="senders in batch mode")
    group.add_argument("--f3-batch-size", type=int, default=100)
    group.add_argument(
        "--f3-batch-conversations",
        type=int,
        default=50,
        help="conversations a batch sender has open; each batch takes the next events of "
        "each in turn (default 50: two events per conversation per batch of 100)",
    )
    group.add_argument(
        "--f3-sqlite",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run single mode on the embedded SQLite database, for comparison",
    )
    group.add_argument(
        "--f3-analyze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ANALYZE the database before each round, as autovacuum would on a database "
        "that has been up for a while (default on; --no-f3-analyze measures a fresh "
        "database without statistics)",
    )
    group.add_argument(
        "--f3-ceiling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the generator's own ceiling against a stub server first",
    )
    group.add_argument(
        "--f3-profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the measured runs, py-spy the server for this long per mode "
        "(needs py-spy: pip install py-spy into the venv)",
    )


# --------------------------------------------------------------------------- the load


FIRST_NAMES = ("Ana", "Luis", "Marta", "Jordi", "Lucía", "Pablo", "Nora", "Iker", "Sara")
LAST_NAMES = ("García", "Martínez", "López", "Puig", "Sánchez", "Ferrer", "Romero")
TEXTS = (
    "Hola, tengo un problema con mi factura de este mes",
    "Claro, ¿me puede indicar el número de cliente?",
    "Es el 4431-221, gracias",
    "Veo un cargo duplicado; lo anulo ahora mismo y le llegará el abono en 3 días",
    "Perfecto, muchas gracias por la rapidez",
    "¿Puedo ayudarle en algo más?",
    "No, eso es todo. ¡Buen día!",
)
DISPOSITIONS = ("resolved", "follow_up", "billing_adjustment", "information", "escalated")


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Conversation:
    """The events of one realistic inbound conversation, in order."""

    def __init__(self, cid: str, rng: random.Random, start: datetime):
        self.cid = cid
        self.events: list[dict[str, Any]] = []
        self.at = start
        self.rng = rng
        channel = rng.choice(("call", "call", "chat", "chat", "whatsapp", "sms"))
        text_channel = channel != "call"
        agent = f"agent-{rng.randrange(AGENTS):03d}"
        offer = f"{cid}-offer"
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        contact = (
            f"visitor-{rng.getrandbits(40):x}"
            if channel == "chat"
            else f"+346{rng.randrange(10**8):08d}"
        )
        created = {"channel": channel, "contact": contact, "customer": {"name": name}}
        if channel != "chat":
            created["contacto_number"] = "+34910000000"
            created["customer"]["phone"] = contact
        self.add("conversation.created", created)
        self.add("routing.enqueued", {"team": rng.choice(TEAMS)})
        self.add(
            "routing.offered",
            {"agent_id": agent, "offer_id": offer, "expires_at": iso(self.at + timedelta(20))},
        )
        self.add("agent.accepted", {"agent_id": agent, "offer_id": offer})
        if text_channel:
            messages = rng.randint(2, 6)
            for n in range(messages):
                self.add(
                    "media.message",
                    {
                        "message_id": f"m{n}",
                        "sender": "customer" if n % 2 == 0 else "agent",
                        "text": TEXTS[n % len(TEXTS)],
                    },
                )
            self.add("media.message_status", {"message_id": "m1", "status": "read"})
        self.add("media.hangup", {"source": rng.choice(("customer", "agent"))})
        if not text_channel:
            self.add(
                "media.recording_ready",
                {
                    "recording_id": f"{cid}-rec",
                    "duration_s": round(rng.uniform(30, 900), 1),
                    "content_type": "audio/ogg",
                },
            )
        self.add(
            "wrapup.submitted",
            {"disposition": rng.choice(DISPOSITIONS), "note": "customer satisfied"},
        )
        if rng.random() < 0.2:
            self.add("ticket.linked", {"ticket_id": f"T-{rng.randrange(10**6)}", "system": "zd"})
        if rng.random() < 0.3:
            self.add("csat.received", {"score": rng.randint(3, 5)})
        self.next = 0

    def add(self, kind: str, data: dict[str, Any]) -> None:
        self.at += timedelta(seconds=self.rng.uniform(1, 30))
        self.events.append(
            {
                "event_id": f"{self.cid}-{len(self.events)}",
                "type": kind,
                "conversation_id": self.cid,
                "occurred_at": iso(self.at),
                "data": data,
            }
        )

    def take(self) -> dict[str, Any] | None:
        if self.next >= len(self.events):
            return None
        self.next += 1
        return self.events[self.next - 1]


class EventSource:
    """One sender's stream: `open` conversations interleaved, each replaced by a new
    one when its last event is taken. A sender waits for each answer before the
    next request, so every conversation's events arrive in order."""

    def __init__(self, tag: str, seed: int, open_conversations: int):
        self.tag = tag
        self.rng = random.Random(seed)
        self.count = 0
        self.start = datetime.now(UTC) - timedelta(hours=2)
        self.slots = [self._new() for _ in range(open_conversations)]
        self.turn = 0

    def _new(self) -> Conversation:
        self.count += 1
        self.start += timedelta(seconds=self.rng.uniform(0.5, 3))
        return Conversation(f"{self.tag}-{self.count}", self.rng, self.start)

    def next_event(self) -> dict[str, Any]:
        index = self.turn % len(self.slots)
        self.turn += 1
        event = self.slots[index].take()
        while event is None:
            self.slots[index] = self._new()
            event = self.slots[index].take()
        return event

    def next_batch(self, size: int, per_conversation: int) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        while len(batch) < size:
            index = self.turn % len(self.slots)
            self.turn += 1
            for _ in range(min(per_conversation, size - len(batch))):
                event = self.slots[index].take()
                if event is None:
                    self.slots[index] = self._new()
                    event = self.slots[index].take()
                batch.append(event)
        return batch


@dataclass
class Tally:
    events: int = 0
    requests: int = 0
    errors: int = 0
    applied: int = 0
    results: int = 0
    latencies: list[float] = field(default_factory=list)
    first_error: str | None = None
    budget: int = MAX_EVENTS_PER_RUN

    def record(self, events: int, started: float, status: int, body: bytes) -> None:
        self.latencies.append(time.perf_counter() - started)
        self.requests += 1
        if status != 200:
            self.errors += 1
            if self.first_error is None:
                self.first_error = f"HTTP {status}: {body[:300]!r}"
            return
        self.events += events
        self.applied += body.count(b'"outcome":"applied"')
        self.results += body.count(b'"outcome":')


@dataclass
class Load:
    """What one run sends."""

    mode: str
    port: int
    token: str
    senders: int
    duration: float
    batch_size: int = 100
    batch_conversations: int = 50
    tag: str = "run"

    def header(self) -> bytes:
        return (
            f"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()


async def _sender(load: Load, index: int, conn: c.HttpConnection, tally: Tally, stop: float):
    header = load.header()
    dumps = json.dumps
    clock = time.perf_counter
    if load.mode == "floor":
        request = c.http_request("GET", "/healthz", load.port)
        while clock() < stop and tally.requests < tally.budget:
            started = clock()
            status, body = await conn.request(request)
            tally.record(0, started, status, body)
        return
    if load.mode == "single":
        seed = zlib.crc32(f"{load.tag}-{index}".encode())
        source = EventSource(f"{load.tag}-s{index}", seed, 4)
        while clock() < stop and tally.events < tally.budget:
            body = dumps(source.next_event(), ensure_ascii=False).encode()
            started = clock()
            status, answer = await conn.request(header + b"%d\r\n\r\n" % len(body) + body)
            tally.record(1, started, status, answer)
        return
    seed = zlib.crc32(f"{load.tag}-{index}".encode())
    source = EventSource(f"{load.tag}-b{index}", seed, load.batch_conversations)
    per_conversation = max(1, -(-load.batch_size // load.batch_conversations))
    while clock() < stop and tally.events < tally.budget:
        events = source.next_batch(load.batch_size, per_conversation)
        body = dumps({"events": events}, ensure_ascii=False).encode()
        started = clock()
        status, answer = await conn.request(header + b"%d\r\n\r\n" % len(body) + body)
        tally.record(len(events), started, status, answer)


async def drive(
    load: Load, meter: c.CpuMeter, pg: PgStats | None, quiet: bool = False
) -> dict[str, Any]:
    """Open the senders' connections, run the load for `duration`, measure. With
    `quiet`, first wait (bounded) for other people's work on the machine to calm down."""
    busy_before = await asyncio.to_thread(c.wait_quiet) if quiet else None
    conns = [await c.HttpConnection.open(load.port) for _ in range(load.senders)]
    tally = Tally()
    try:
        pg_before = await pg.sample() if pg else None
        meter.start()
        stop = time.perf_counter() + load.duration
        async with asyncio.timeout(load.duration + 60):
            await asyncio.gather(
                *(_sender(load, i, conn, tally, stop) for i, conn in enumerate(conns))
            )
        cpu = meter.stop()
        pg_after = await pg.sample() if pg else None
    finally:
        for conn in conns:
            conn.close()
    wall = cpu["wall_s"]
    count = tally.events if load.mode != "floor" else tally.requests
    result = {
        "mode": load.mode,
        "senders": load.senders,
        "batch_size": load.batch_size if load.mode == "batch" else 1,
        "events": tally.events,
        "requests": tally.requests,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "applied": tally.applied,
        "not_applied": tally.results - tally.applied,
        "events_per_s": tally.events / wall,
        "requests_per_s": tally.requests / wall,
        "p50_ms": c.percentile(tally.latencies, 50) * 1000,
        "p99_ms": c.percentile(tally.latencies, 99) * 1000,
        "max_ms": max(tally.latencies, default=float("nan")) * 1000,
        **cpu,
        "server_cores": cpu["server_cpu_s"] / wall,
        "postgres_cores": cpu["postgres_cpu_s"] / wall,
        "postgres_shared_cores": cpu["postgres_shared_cpu_s"] / wall,
        "postgres_autovacuum_cores": cpu["postgres_autovacuum_cpu_s"] / wall,
        "client_cores": cpu["client_cpu_s"] / wall,
        "server_cpu_s_per_1k": 1000 * cpu["server_cpu_s"] / count if count else float("nan"),
        "postgres_cpu_s_per_1k": 1000 * cpu["postgres_cpu_s"] / count if count else float("nan"),
        "client_cpu_s_per_1k_req": 1000 * cpu["client_cpu_s"] / tally.requests
        if tally.requests
        else float("nan"),
        "per_server_cpu_s": count / cpu["server_cpu_s"] if cpu["server_cpu_s"] else float("nan"),
        "busy_before": busy_before,
    }
    if pg_before and pg_after:
        result["wal_bytes_per_event"] = (
            (pg_after["wal"] - pg_before["wal"]) / tally.events if tally.events else None
        )
        # Other people's CREATE/DROP DATABASE force checkpoints; after each one the
        # first change to every page writes a full-page image, inflating WAL and CPU.
        result["checkpoints"] = pg_after["checkpoints"] - pg_before["checkpoints"]
        # Approximate: backends flush these counters at most once a second.
        result["commits_per_request"] = (
            (pg_after["commits"] - pg_before["commits"]) / tally.requests
            if tally.requests
            else None
        )
    return result


class PgStats:
    """WAL written and transactions committed (a second connection of the bench's own;
    the WAL position is the cluster's, so other databases' writes count too)."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.conn = None

    async def __aenter__(self) -> PgStats:
        import asyncpg

        self.conn = await asyncpg.connect(self.dsn, timeout=5)
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.conn.close()

    async def sample(self) -> dict[str, int]:
        row = await self.conn.fetchrow(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS wal, "
            "(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) "
            "AS commits, "
            "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) AS checkpoints"
        )
        return {key: int(row[key]) for key in ("wal", "commits", "checkpoints")}

    async def analyze(self) -> None:
        """What autovacuum does for a table that has grown: without it, a database
        minutes old has no statistics, and the planner answers primary-key lookups
        with a tenant_id-only secondary index, reading every row of the tenant."""
        await self.conn.execute("ANALYZE")

    async def tables(self) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, seq_scan, idx_scan, "
            "autovacuum_count, autoanalyze_count, "
            "pg_total_relation_size(relid) AS bytes, "
            "(SELECT count(*) FROM pg_index i WHERE i.indrelid = relid) AS indexes "
            "FROM pg_stat_user_tables ORDER BY relname"
        )
        return [dict(row) for row in rows]


# --------------------------------------------------------------------------- setup


@dataclass
class Backend:
    name: str  # postgresql or sqlite
    env: dict[str, str]
    database: str | None = None  # the PostgreSQL database to drop afterwards
    data_dir: Path | None = None


def prepare(env: dict[str, str]) -> dict[str, str]:
    """Migrate, add the tenant, mint tokens. Returns the tokens by role."""
    c.run_cli(["migrate"], env)
    c.run_cli(
        ["tenant", "add", TENANT, "--timezone", "Europe/Madrid", "--routing", "external"], env
    )
    tokens = {}
    for role in ("service", "admin"):
        out = c.run_cli(["token", "--tenant", TENANT, "--role", role, "--user", "bench"], env)
        tokens[role] = out.strip().splitlines()[-1]
    return tokens


def seed_directory(base_url: str, admin_token: str) -> None:
    """Teams and agents, so that accepted offers find the agent's name as they would."""

    def put(path: str, body: dict) -> None:
        c.put_json(base_url, path, body, admin_token)

    for team in TEAMS:
        put(f"/api/v1/teams/{team}", {"queue_capacity": 10_000})
    rng = random.Random(7)
    for n in range(AGENTS):
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        put(f"/api/v1/agents/agent-{n:03d}", {"name": name, "teams": [TEAMS[n % len(TEAMS)]]})


# --------------------------------------------------------------------------- runs


async def measure_backend(
    args: argparse.Namespace,
    backend: Backend,
    server: c.ServerProcess,
    token: str,
    modes: list[str],
    recorder: c.Recorder,
    pg_dsn: str | None,
) -> list[dict[str, Any]]:
    runs = []
    duration = args.f3_duration
    pg_stats = PgStats(pg_dsn) if pg_dsn else None
    if pg_stats:
        await pg_stats.__aenter__()
    try:

        def load(mode: str, tag: str, seconds: float) -> Load:
            return Load(
                mode=mode,
                port=server.port,
                token=token,
                senders=args.f3_batch_senders if mode == "batch" else args.f3_senders,
                duration=seconds,
                batch_size=args.f3_batch_size,
                batch_conversations=args.f3_batch_conversations,
                tag=f"{backend.name[:2]}-{tag}",
            )

        meter = c.CpuMeter(
            server.pid, postgres=backend.name == "postgresql", database=backend.database
        )
        for mode in modes:
            if args.f3_warmup > 0:
                warm = await drive(load(mode, f"warm-{mode}", args.f3_warmup), meter, None)
                _check(warm, backend.name, "warm-up")
        for round_ in range(1, args.runs + 1):
            if pg_stats and args.f3_analyze:
                await pg_stats.analyze()
            for mode in modes:
                seconds = duration / 2 if mode == "floor" else duration
                result = await drive(
                    load(mode, f"r{round_}-{mode}", seconds), meter, pg_stats, quiet=True
                )
                result.update(backend=backend.name, run=round_)
                _check(result, backend.name, f"run {round_}")
                recorder.line(type="run", **result)
                runs.append(result)
                print(
                    f"  {backend.name:10} {mode:6} run {round_}: "
                    f"{result['events_per_s'] or result['requests_per_s']:9,.0f}/s  "
                    f"p99 {result['p99_ms']:6.1f} ms  server {result['server_cores']:.2f} cores  "
                    f"pg {result['postgres_cores']:.2f}  gen {result['client_cores']:.2f}  "
                    f"machine {result['machine_busy']:.0%}  others {result['others_cores']:.2f}",
                    file=sys.stderr,
                )
        if pg_stats:
            for table in await pg_stats.tables():
                recorder.line(type="table", backend=backend.name, **table)
                runs.append({"type": "table", **table})
    finally:
        if pg_stats:
            await pg_stats.__aexit__(None, None, None)
    return runs


def _check(result: dict[str, Any], backend: str, what: str) -> None:
    if result["errors"]:
        raise RuntimeError(
            f"{backend} {result['mode']} {what}: {result['errors']} requests failed, "
            f"first: {result['first_error']}"
        )
    if result["mode"] != "floor" and result["not_applied"]:
        print(
            f"  warning: {backend} {result['mode']} {what}: {result['not_applied']} events "
            "were not applied (the load should apply every event)",
            file=sys.stderr,
        )


def ceiling(args: argparse.Namespace, modes: list[str], recorder: c.Recorder) -> list[dict]:
    """The generator against a stub that answers at once: its capacity and its CPU."""
    results = []
    with c.StubServer() as stub:
        for mode in [m for m in modes if m != "floor"]:
            load = Load(
                mode=mode,
                port=stub.port,
                token="x" * 180,
                senders=args.f3_batch_senders if mode == "batch" else args.f3_senders,
                duration=min(4.0, args.f3_duration),
                batch_size=args.f3_batch_size,
                batch_conversations=args.f3_batch_conversations,
                tag=f"stub-{mode}",
            )
            result = c.run_async(drive(load, c.CpuMeter(stub.proc.pid, postgres=False), None))
            result.update(backend="stub", run=1)
            recorder.line(type="ceiling", **result)
            results.append(result)
            print(
                f"  generator ceiling {mode:6}: {result['requests_per_s']:9,.0f} req/s "
                f"({result['events_per_s']:,.0f} events/s), generator "
                f"{result['client_cores']:.2f} cores, "
                f"{result['client_cpu_s_per_1k_req'] * 1000:.0f} us CPU per request",
                file=sys.stderr,
            )
    return results


def run_backend(
    args: argparse.Namespace, name: str, modes: list[str], recorder: c.Recorder, info: dict
) -> list[dict[str, Any]]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"sb-bench-{name}-"))
    database = None
    try:
        if name == "postgresql":
            database = c.run_async(c.create_database(c.ADMIN_URL, "sb_bench_f3"))
            url = c.with_database(c.ADMIN_URL, database)
            pg_dsn = c.asyncpg_dsn(c.ADMIN_URL, database)
        else:
            url = f"sqlite+aiosqlite:///{data_dir}/switchboard.db"
            pg_dsn = None
        backend = Backend(name, c.server_env(url, data_dir), database, data_dir)
        tokens = prepare(backend.env)
        log_path = recorder.path(f"-{name}-server.log")
        with c.ServerProcess(backend.env, log_path) as server:
            print(f"  {name}: server pid {server.pid} on port {server.port}", file=sys.stderr)
            seed_directory(server.base_url, tokens["admin"])
            try:
                runs = c.run_async(
                    measure_backend(
                        args, backend, server, tokens["service"], modes, recorder, pg_dsn
                    )
                )
            except Exception:
                print(f"  the server's log ends with:\n{server.log_tail()}", file=sys.stderr)
                raise
            if args.f3_profile > 0:
                profile(args, server, tokens["service"], name, modes, recorder, info)
        return runs
    finally:
        if database is not None:
            c.run_async(c.drop_database(c.ADMIN_URL, database))
        shutil.rmtree(data_dir, ignore_errors=True)


# --------------------------------------------------------------------------- profile


def py_spy() -> str | None:
    script = Path(sys.executable).parent / "py-spy"
    return str(script) if script.exists() else shutil.which("py-spy")


def profile(args, server, token, backend, modes, recorder, info) -> None:
    tool = py_spy()
    if tool is None:
        print("  profile skipped: py-spy not found (pip install py-spy)", file=sys.stderr)
        return
    seconds = args.f3_profile
    for mode in [m for m in modes if m != "floor"]:
        out = recorder.path(f"-{backend}-{mode}.folded")
        spy = subprocess.Popen(
            [tool, "record", "--pid", str(server.pid), "--duration", str(int(seconds)),
             "--rate", "250", "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            time.sleep(1.0)  # py-spy attaches
            load = Load(
                mode=mode,
                port=server.port,
                token=token,
                senders=args.f3_batch_senders if mode == "batch" else args.f3_senders,
                duration=seconds + 1,
                batch_size=args.f3_batch_size,
                batch_conversations=args.f3_batch_conversations,
                tag=f"{backend[:2]}-prof-{mode}",
            )
            result = c.run_async(drive(load, c.CpuMeter(server.pid, postgres=False), None))
            _, err = spy.communicate(timeout=seconds + 30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        if spy.returncode != 0 or not out.exists():
            print(f"  py-spy failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
            continue
        summary = summarise_profile(out)
        summary["events_per_s_while_profiled"] = result["events_per_s"]
        recorder.line(type="profile", backend=backend, mode=mode, file=str(out), **summary)
        info.setdefault("profiles", []).append({"backend": backend, "mode": mode, **summary})
        print(f"  profile {backend} {mode}: {out}", file=sys.stderr)
        for label, share in summary["by_area"][:12]:
            print(f"    {share:6.1%}  {label}", file=sys.stderr)


# Where a sample's time goes, judged from the innermost frame that names one of these
# (first match wins, innermost first). Order matters: specific before general.
AREAS = (
    ("logging / JSON log lines", ("/logging/", "server/logs.py")),
    ("json encode/decode", ("/json/",)),
    ("prometheus metrics", ("prometheus_client",)),
    ("JWT verify", ("/jwt/", "server/auth.py")),
    ("asyncpg (protocol, codecs)", ("asyncpg",)),
    ("SQLAlchemy: compile SQL", ("sqlalchemy/sql/compiler", "sqlalchemy/sql/")),
    ("SQLAlchemy: execute, result rows", ("sqlalchemy/engine/",)),
    ("SQLAlchemy: asyncpg dialect", ("sqlalchemy/dialects/",)),
    ("SQLAlchemy: pool", ("sqlalchemy/pool/",)),
    ("SQLAlchemy: other", ("sqlalchemy/",)),
    ("state machine", ("state_machine/",)),
    ("server: ingest", ("server/ingest.py",)),
    ("server: repository", ("server/repository.py",)),
    ("server: other", ("server/",)),
    ("starlette", ("starlette/",)),
    ("uvicorn / httptools", ("uvicorn/", "httptools")),
    ("asyncio / uvloop", ("asyncio/", "uvloop")),
)


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):
        for label, needles in AREAS:
            if any(needle in frame for needle in needles):
                return label
    return "other"


def summarise_profile(path: Path) -> dict[str, Any]:
    """Self time by area, and inclusive time of the server's own functions, from
    py-spy's collapsed stacks (`frame;frame;... count`)."""
    by_area: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        by_area[_area(frames)] += count
        leaf[frames[-1]] += count
        for frame in set(frames):
            if any(f in frame for f in ("server/", "state_machine/", "sqlalchemy/", "asyncpg/")):
                inclusive[frame] += count
    if not total:
        return {"samples": 0, "by_area": [], "inclusive": [], "leaf": []}
    return {
        "samples": total,
        "by_area": [(label, n / total) for label, n in by_area.most_common()],
        "inclusive": [(frame, n / total) for frame, n in inclusive.most_common(40)],
        "leaf": [(frame, n / total) for frame, n in leaf.most_common(25)],
    }


# --------------------------------------------------------------------------- report


def report(info: dict, runs: list[dict], ceilings: list[dict], args) -> str:
    def rows_of(backend: str, mode: str) -> list[dict]:
        return [r for r in runs if r.get("backend") == backend and r.get("mode") == mode]

    header = [
        "backend",
        "mode",
        "events/s",
        "vs target",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "server CPU-s / 1k ev",
        "events / server-CPU-s",
        "server cores",
        "postgres cores (backends + autovacuum + shared)",
        "generator cores",
        "others' cores",
        "machine busy",
    ]
    table = []
    for backend in ("postgresql", "sqlite"):
        for mode in ("floor", "single", "batch"):
            rows = rows_of(backend, mode)
            if not rows:
                continue

            def col(key, digits=0, scale=1.0, rows=rows):
                return c.spread([r[key] for r in rows], digits, scale)

            if mode == "floor":
                rate, vs, per_cpu = "(GET /healthz)", "", col("per_server_cpu_s") + " req"
                per_k = col("server_cpu_s_per_1k", 3) + " per 1k req"
            else:
                rate = col("events_per_s")
                target = TARGETS[mode]
                vs = c.spread([r["events_per_s"] / target for r in rows], 2) + "x"
                per_k = col("server_cpu_s_per_1k", 3)
                per_cpu = col("per_server_cpu_s")
            table.append(
                [
                    backend,
                    f"{mode} ({rows[0]['senders']} senders"
                    + (f", {rows[0]['batch_size']}/req)" if mode == "batch" else ")"),
                    rate,
                    vs,
                    col("requests_per_s"),
                    col("p50_ms", 1),
                    col("p99_ms", 1),
                    per_k,
                    per_cpu,
                    col("server_cores", 2),
                    (
                        col("postgres_cores", 2)
                        + " + "
                        + col("postgres_autovacuum_cores", 2)
                        + " + "
                        + col("postgres_shared_cores", 2)
                    )
                    if backend == "postgresql"
                    else "-",
                    col("client_cores", 2),
                    col("others_cores", 2),
                    col("machine_busy", 0, 100) + " %",
                ]
            )
    parts = [
        f"### F3 ingest, {info['date']}",
        "",
        c.describe_machine(info),
        f"* load: {args.runs} runs of {args.f3_duration:g} s per mode (floor: half that), "
        f"interleaved, after {args.f3_warmup:g} s of warm-up per mode; "
        "median (min-max) of the runs; "
        + ("ANALYZE before each round" if args.f3_analyze else "no ANALYZE (fresh statistics)"),
        "",
        c.markdown_table(header, table),
        "",
    ]
    ratios = []
    for backend in ("postgresql", "sqlite"):
        floor_rows = rows_of(backend, "floor")
        floor_rate = c.median([r["requests_per_s"] for r in floor_rows])
        floor_cpu = c.median([r["server_cpu_s_per_1k"] for r in floor_rows])
        for mode in ("single", "batch"):
            rows = rows_of(backend, mode)
            if rows and floor_rows:
                ratios.append(
                    f"* {backend} {mode}: events/s = "
                    + c.spread([r["events_per_s"] / floor_rate for r in rows], 2)
                    + "x the floor's requests/s; one event costs the server "
                    + c.spread([r["server_cpu_s_per_1k"] / floor_cpu for r in rows], 1)
                    + "x the CPU of one floor request"
                )
    if ratios:
        parts += ["Ratios (same run):", "", *ratios, ""]
    if ceilings:
        parts += ["Generator ceiling (same client against a stub server that answers at once):", ""]
        for r in ceilings:
            parts.append(
                f"* {r['mode']}: {r['requests_per_s']:,.0f} requests/s "
                f"({r['events_per_s']:,.0f} events/s) with {r['client_cores']:.2f} generator "
                f"cores; {r['client_cpu_s_per_1k_req'] * 1000:.0f} us of generator CPU per "
                "request"
            )
        parts.append("")
    verdicts = []
    for backend in ("postgresql", "sqlite"):
        for mode in ("single", "batch"):
            rows = rows_of(backend, mode)
            if rows:
                verdicts.append(f"* {backend} {mode}: {saturation(rows)}")
    if verdicts:
        parts += ["Who was saturated (medians):", "", *verdicts, ""]
    diag = [r for r in runs if r.get("backend") == "postgresql" and "wal_bytes_per_event" in r]
    if diag:
        parts += ["PostgreSQL per event (medians):", ""]
        for mode in ("single", "batch"):
            rows = [r for r in diag if r["mode"] == mode]
            if rows:
                parts.append(
                    f"* {mode}: {c.spread([r['wal_bytes_per_event'] for r in rows])} WAL bytes "
                    f"per event, {c.spread([r['postgres_cpu_s_per_1k'] for r in rows], 3)} "
                    "PostgreSQL backend CPU-s per 1k events, "
                    f"{c.spread([r['checkpoints'] for r in rows])} checkpoints per run "
                    "(mostly forced by other databases' CREATE/DROP DATABASE)"
                )
        tables = [r for r in runs if r.get("type") == "table" and r["relname"] == "conversations"]
        for t in tables:
            hot = t["n_tup_hot_upd"] / t["n_tup_upd"] if t["n_tup_upd"] else 0
            parts.append(
                f"* conversations: {t['n_tup_ins']:,} inserts, {t['n_tup_upd']:,} updates of "
                f"which {hot:.0%} HOT, {t['indexes']} indexes, {t['seq_scan']} sequential "
                f"scans, autovacuumed {t['autovacuum_count']} and auto-analyzed "
                f"{t['autoanalyze_count']} times"
            )
        parts.append("")
    return "\n".join(parts)


def saturation(rows: list[dict]) -> str:
    server = c.median([r["server_cores"] for r in rows])
    client = c.median([r["client_cores"] for r in rows])
    pg = c.median([r["postgres_cores"] for r in rows])
    busy = c.median([r["machine_busy"] for r in rows])
    others = c.median([r["others_cores"] for r in rows])
    said = []
    if server >= 0.9:
        said.append(f"the server's one event loop ({server:.2f} of 1 core)")
    if client >= 0.9:
        said.append(f"the generator ({client:.2f} of 1 core)")
    if busy >= 0.95:
        said.append(
            f"the machine (both cores {busy:.0%} busy, {others:.2f} cores of it other work)"
        )
    if not said:
        return (
            f"nothing CPU-bound (server {server:.2f}, postgres {pg:.2f}, generator "
            f"{client:.2f} cores, machine {busy:.0%}): waiting on I/O or locks"
        )
    return (
        "saturated: "
        + "; ".join(said)
        + f" (server {server:.2f}, postgres {pg:.2f}, generator {client:.2f} cores)"
    )


# --------------------------------------------------------------------------- entry


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.f3_duration, args.f3_warmup = 3.0, 1.0
    if args.runs < 3 and not args.quick:
        print("  note: fewer than 3 runs: not a reportable figure", file=sys.stderr)
    modes = [m.strip() for m in args.f3_modes.split(",") if m.strip()]
    bad = set(modes) - {"floor", "single", "batch"}
    if bad:
        print(f"unknown F3 mode(s): {', '.join(sorted(bad))}", file=sys.stderr)
        return 2
    recorder = c.Recorder("f3")
    info = c.machine_info()
    try:
        info["postgres"] = c.run_async(c.postgres_version(c.ADMIN_URL))
    except Exception as exc:
        print(f"F3 needs PostgreSQL at {c.ADMIN_URL}: {exc!r}", file=sys.stderr)
        return 2
    busy = c.machine_cpu()
    time.sleep(1.0)
    after = c.machine_cpu()
    info["background_busy"] = (after[0] - busy[0]) / max(1, after[1] - busy[1])
    recorder.line(type="meta", bench="f3", argv=sys.argv[1:], **info)
    started = time.monotonic()
    ceilings = ceiling(args, modes, recorder) if args.f3_ceiling else []
    runs = run_backend(args, "postgresql", modes, recorder, info)
    if args.f3_sqlite and "single" in modes:
        sqlite_modes = [m for m in modes if m in ("floor", "single")]
        runs += run_backend(args, "sqlite", sqlite_modes, recorder, info)
    text = report(info, runs, ceilings, args)
    text += (
        f"\nBackground load before the run: {info['background_busy']:.0%} of the machine. "
        f"Total time {time.monotonic() - started:.0f} s.\n"
    )
    recorder.write_markdown(text)
    print(text)
    print(f"raw: {recorder.jsonl}\ntable: {recorder.markdown}", file=sys.stderr)
    return 0
