"""F4 snapshot and paging: a view over 1,000,000 conversations of one tenant
(goals: bench/RESULTS.md).

One server process (`switchboard serve --no-demo`) on a fresh PostgreSQL database,
loaded with set-based SQL (`INSERT ... SELECT FROM generate_series`) with
`--f4-rows` conversations of the tenant `bench` (created_at over 30 days, mostly
in business hours; realistic spreads of channel, status, state, team and agent)
and a few thousand of another tenant, inserted in created_at order as a live system
inserts them (load_data), then `ANALYZE`. For each saved view:

* first   `GET /api/v1/views/{id}/rows?limit=100`: the first page over HTTP;
* deep    the same with `&cursor=C`, where C is the cursor of the last row of page
          `--f4-page - 1`, so the answer is page 1,000 (rows 99,901-100,000). C is
          built at setup from that row's sort values (one OFFSET query through the
          server's own statement) with `server.filters.encode_cursor`, and checked
          once against the OFFSET answer;
* ws      websocket `subscribe` with limit 100: from sending the frame to
          receiving the snapshot; the bench unsubscribes (untimed) between samples,
          so every subscribe loads a window from the database.

Two phases. *Cold* comes first, before any websocket has subscribed: no live window
of any view exists, so each `/rows` also counts the whole view for `total` (the
first look at a view nobody watches); page 1 and the deep page only, `--runs` rounds
of `--f4-cold-samples`. *Warm* follows: page 1, the deep page and a ws subscribe,
interleaved sample by sample (so drift on a shared machine hits them alike),
`--runs` rounds of `--f4-samples` each, after one first subscribe (timed apart: it
loads the window, count included) and a warm-up. A window stays live 60 s after its
last subscriber, so in this phase `/rows` takes `total` from it and a subscribe
finds the rows in memory. Reported per view and measurement: p50 and p95 ms per
run, as the median (min-max) of the runs, and the ratio of page 1,000's p95 to page
1's in the same run.

The COUNT's share is measured apart: the server's own statements (page 1, page 1,000, count)
are captured by calling `server.live.queries.page`/`count` on a recording connection,
then run with EXPLAIN (ANALYZE, BUFFERS) and timed in a loop on a connection of
the bench's own, both as a custom plan and as the plan a prepared statement of
the server settles on after five executions (the plan cache may go generic).
Server CPU, PostgreSQL backend CPU and the CPU of exited PostgreSQL processes
(parallel workers) are reported per sample.

The server always runs as its own process; this module imports `server` only to
build the exact statements and cursors the server builds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench import common as c

TITLE = "snapshot and paging over 1,000,000 conversations: first page, page 1,000, ws snapshot"
TENANT = "bench"
OTHER_TENANT = "other"
TIMEZONE = "Europe/Madrid"
SECRET = c.SECRET
TARGET_FIRST_P95_MS = 50.0  # bench/RESULTS.md, the goals
TARGET_DEEP_RATIO = 1.5
LIMIT = 100

# name -> (description, saved view body). Columns are the default ones.
VIEWS: dict[str, tuple[str, dict[str, Any]]] = {
    "all": (
        "every conversation, newest first (the default view)",
        {"name": "All", "filters": [], "sort": []},
    ),
    "wa_queue": (
        "channel in [whatsapp] and status in [queued, offered], newest first",
        {
            "name": "WhatsApp waiting",
            "filters": [
                {"field": "channel", "op": "in", "value": ["whatsapp"]},
                {"field": "status", "op": "in", "value": ["queued", "offered"]},
            ],
            "sort": [],
        },
    ),
    "support": (
        "team = support and channel in [call, chat], newest first",
        {
            "name": "Support calls and chats",
            "filters": [
                {"field": "team", "op": "eq", "value": "support"},
                {"field": "channel", "op": "in", "value": ["call", "chat"]},
            ],
            "sort": [],
        },
    ),
    "by_status": (
        "every conversation, sorted by status, then created_at desc",
        {
            "name": "By status",
            "filters": [],
            "sort": [{"field": "status", "dir": "asc"}, {"field": "created_at", "dir": "desc"}],
        },
    ),
}


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--f4-rows", type=int, default=1_000_000, help="conversations of the measured tenant"
    )
    group.add_argument(
        "--f4-other-rows", type=int, default=5_000, help="conversations of another tenant"
    )
    group.add_argument(
        "--f4-views",
        default=",".join(VIEWS),
        help=f"comma-separated views among {', '.join(VIEWS)} (default: all)",
    )
    group.add_argument(
        "--f4-samples", type=int, default=100, help="samples of each measurement per run"
    )
    group.add_argument("--f4-warmup", type=int, default=10, help="untimed samples per view")
    group.add_argument(
        "--f4-cold-samples",
        type=int,
        default=30,
        help="samples per view per run of the cold phase (no live window: every request "
        "counts the whole view); 0 skips the phase",
    )
    group.add_argument(
        "--f4-page",
        type=int,
        default=1000,
        help="the deep page fetched by cursor (default 1000: rows 99,901-100,000)",
    )
    group.add_argument(
        "--f4-budget",
        type=float,
        default=150.0,
        metavar="SECONDS",
        help="at most this long per view per run; fewer samples are taken if it runs out",
    )
    group.add_argument(
        "--f4-vacuum",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the measured runs on the ANALYZEd table, run VACUUM (which sets the "
        "visibility map, as autovacuum would on a table that has been up a while) and "
        "measure the count queries again (default on)",
    )


# --------------------------------------------------------------------------- the data


def _u(key: int) -> str:
    """A deterministic uniform [0, 1) per (row g, key): the same data on every run.
    Written out inline: as a SQL function it is called, not inlined, and costs 20 µs."""
    bits = f"((hashint8extended(g, {key}) >> 11) & 9007199254740991)"  # 53 bits
    return f"({bits}::float8 / 9007199254740992.0::float8)"


FIRST_NAMES = "'Ana','Luis','Marta','Jordi','Lucía','Pablo','Nora','Iker','Sara','Tom','Lea'"
LAST_NAMES = "'García','Martínez','López','Puig','Sánchez','Ferrer','Romero','Costa'"
DISPOSITIONS = "'resolved','follow_up','billing_adjustment','information','escalated'"

COLUMNS = """
    tenant_id, id, version, status, state, direction, channel, channels, contact,
    contacto_number, customer_id, customer_name, customer_email, customer_phone, team,
    agent_id, agent_name, disposition, wrap_up_note, ticket_id, csat, hangup_source,
    has_recording, created_at, queued_at, answered_at, ended_at, closed_at, wait_s,
    handle_s, handled_s, handling_since, last_occurred_at, offer_id, offer_agent_id,
    offer_expires_at, offer_fallback, change_seq, updated_at"""

# Into the session's staging table: $1 tenant, $2 first g, $3 last g, $4 now.
# Every column of conversations.
GENERATE = f"""
INSERT INTO staging ({COLUMNS})
WITH raw AS MATERIALIZED (
    SELECT g, md5($1 || ':' || g)::uuid::text AS id,
           {_u(1)} AS r_age, {_u(2)} AS r_hour, {_u(3)} AS r_busy,
           {_u(4)} AS r_channel, {_u(5)} AS r_multi,
           {_u(6)} AS r_status, {_u(7)} AS r_state, {_u(8)} AS r_team,
           {_u(9)} AS r_agent, {_u(10)} AS r_first, {_u(11)} AS r_last,
           {_u(12)} AS r_wait, {_u(13)} AS r_handle, {_u(14)} AS r_dir,
           {_u(15)} AS r_misc, {_u(16)} AS r_csat,
           date_trunc('day', $4::timestamptz - {_u(1)} * interval '30 days') AS day
    FROM generate_series($2::bigint, $3::bigint) AS g
), timed AS MATERIALIZED (
    SELECT *,
        -- 80 % in business hours (07:00-19:00 UTC, 08:00-20:00 in Madrid), 20 % any time
        date_trunc('milliseconds', CASE
            WHEN r_busy < 0.8 THEN day + interval '7 hours' + r_hour * interval '12 hours'
            ELSE day + r_hour * interval '24 hours' END) AS at0,
        CASE WHEN r_channel < 0.40 THEN 'call' WHEN r_channel < 0.65 THEN 'chat'
             WHEN r_channel < 0.85 THEN 'whatsapp' ELSE 'sms' END AS channel
    FROM raw
), aged AS MATERIALIZED (
    SELECT *,
        CASE WHEN at0 > $4::timestamptz THEN at0 - interval '1 day' ELSE at0 END AS created_at
    FROM timed
), stat AS MATERIALIZED (
    SELECT *,
        CASE WHEN $4::timestamptz - created_at < interval '1 hour' THEN
            CASE WHEN r_status < 0.03 THEN 'new' WHEN r_status < 0.18 THEN 'queued'
                 WHEN r_status < 0.23 THEN 'offered'
                 WHEN r_status < 0.25 THEN CASE WHEN channel = 'call' THEN 'ringing'
                                                 ELSE 'offered' END
                 WHEN r_status < 0.65 THEN 'active' WHEN r_status < 0.75 THEN 'wrap_up'
                 ELSE 'closed' END
        ELSE
            -- older: nearly all closed; a backlog of messaging conversations waits
            CASE WHEN r_status < 0.965 THEN 'closed' WHEN r_status < 0.975 THEN 'wrap_up'
                 WHEN r_status < 0.983 THEN 'active'
                 WHEN r_status < 0.993 THEN CASE WHEN channel = 'call' THEN 'closed'
                                                  ELSE 'queued' END
                 WHEN r_status < 0.998 THEN 'offered' ELSE 'new' END
        END AS status
    FROM aged
), st AS MATERIALIZED (
    SELECT *,
        CASE WHEN status IN ('active', 'wrap_up') THEN 'customer_answered'
             WHEN status = 'closed' THEN
                CASE WHEN r_state < 0.85 THEN 'customer_answered'
                     WHEN r_state < 0.90 THEN 'dropped'
                     WHEN r_state < 0.94 THEN 'customer_did_not_respond'
                     WHEN r_state < 0.97 THEN 'queue_timeout'
                     WHEN r_state < 0.98 THEN 'agent_assignment_failed'
                     WHEN r_state < 0.99 THEN 'enqueue_failed'
                     ELSE 'out_of_business_hours' END
        END AS state,
        'agent-' || lpad(floor(r_agent * 60)::int::text, 3, '0') AS agent,
        (ARRAY[{FIRST_NAMES}])[1 + floor(r_agent * 60)::int % 11] || ' ' ||
            (ARRAY[{LAST_NAMES}])[1 + floor(r_agent * 60)::int % 8] AS agent_full,
        CASE WHEN channel = 'chat' THEN 'visitor-' || substr(md5(id), 1, 10)
             ELSE '+346' || lpad((abs(hashtext(id)) % 100000000)::text, 8, '0') END AS contact,
        round((5 + r_wait * r_wait * 240)::numeric, 1)::float8 AS wait,
        round((30 + r_handle * 870)::numeric, 1)::float8 AS handle
    FROM stat
), conv AS MATERIALIZED (
    SELECT *,
        state = 'customer_answered' AS answered,
        status IN ('wrap_up', 'closed') AS ended,
        status <> 'new' AS queued,
        created_at + interval '2 seconds' AS queued_at0
    FROM st
)
SELECT
    $1, id,
    3 + floor(r_misc * 10)::int,
    status, state,
    CASE WHEN channel = 'call' AND r_dir < 0.2 THEN 'outgoing' ELSE 'incoming' END,
    channel,
    CASE WHEN r_multi < 0.05 THEN
        CASE WHEN channel = 'call' THEN '|call|sms|' ELSE '|' || channel || '|call|' END
        ELSE '|' || channel || '|' END,
    contact,
    CASE WHEN channel = 'chat' THEN NULL ELSE '+34910000000' END,
    contact,
    (ARRAY[{FIRST_NAMES}])[1 + floor(r_first * 11)::int] || ' ' ||
        (ARRAY[{LAST_NAMES}])[1 + floor(r_last * 8)::int],
    CASE WHEN r_misc < 0.3 THEN 'c' || substr(id, 1, 8) || '@example.com' END,
    CASE WHEN channel <> 'chat' THEN contact END,
    CASE WHEN r_team < 0.5 THEN 'support' WHEN r_team < 0.8 THEN 'sales' ELSE 'billing' END,
    CASE WHEN answered OR status IN ('offered', 'ringing') THEN agent END,
    CASE WHEN answered THEN agent_full END,
    CASE WHEN ended AND answered THEN (ARRAY[{DISPOSITIONS}])[1 + floor(r_handle * 5)::int] END,
    CASE WHEN ended AND answered AND r_misc < 0.5 THEN 'customer satisfied' END,
    CASE WHEN ended AND r_misc > 0.8 THEN 'T-' || (abs(hashtext(id)) % 1000000) END,
    CASE WHEN status = 'closed' AND answered AND r_csat < 0.3
         THEN 1 + floor(r_csat / 0.3 * 5)::int END,
    CASE WHEN ended THEN CASE WHEN r_csat < 0.6 THEN 'customer'
                              WHEN r_csat < 0.95 THEN 'agent' ELSE 'system' END END,
    channel = 'call' AND answered AND ended,
    created_at,
    CASE WHEN queued THEN queued_at0 END,
    CASE WHEN answered THEN queued_at0 + wait * interval '1 second' END,
    CASE WHEN ended THEN queued_at0 + (wait + CASE WHEN answered THEN handle ELSE 0 END)
                                       * interval '1 second' END,
    CASE WHEN status = 'closed'
         THEN queued_at0 + (wait + handle + 30) * interval '1 second' END,
    CASE WHEN answered THEN wait END,
    CASE WHEN answered AND ended THEN handle END,
    CASE WHEN answered AND ended THEN handle END,
    CASE WHEN status = 'active' THEN queued_at0 + wait * interval '1 second' END,
    LEAST($4::timestamptz, queued_at0 + (wait + handle + 30) * interval '1 second'),
    CASE WHEN answered OR status IN ('offered', 'ringing') THEN id || '-offer' END,
    CASE WHEN answered OR status IN ('offered', 'ringing') THEN agent END,
    CASE WHEN status IN ('offered', 'ringing') THEN $4::timestamptz + interval '20 seconds' END,
    CASE WHEN status IN ('offered', 'ringing') THEN 'queued' END,
    g,
    LEAST($4::timestamptz, queued_at0 + (wait + handle + 30) * interval '1 second')
FROM conv
"""

CHUNK = 100_000

# From staging into the table in created_at order, as a live system inserts them (so
# the heap is in created_at order, as in production), with change_seq in that order.
COPY_ORDERED = f"""
INSERT INTO conversations ({COLUMNS})
SELECT {COLUMNS.replace("change_seq", "n")}
FROM ordered WHERE n > $1 AND n <= $2 ORDER BY n
"""


async def load_data(dsn: str, rows: int, other_rows: int, now: datetime) -> dict[str, Any]:
    """Fill `conversations` with set-based SQL, then ANALYZE. Returns timings.

    The rows are generated into a temporary table, numbered in created_at order,
    and inserted in that order in chunks of CHUNK rows (both tenants interleaved)."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    timings: dict[str, Any] = {}
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        await conn.execute("SET statement_timeout = '900s'")
        await conn.execute("SET maintenance_work_mem = '256MB'")
        await conn.execute("SET temp_buffers = '1GB'")
        await conn.execute("SET work_mem = '256MB'")
        started = time.monotonic()
        await conn.execute("CREATE TEMP TABLE staging (LIKE conversations)")
        for first in range(1, rows + 1, CHUNK):
            await conn.execute(GENERATE, TENANT, first, min(rows, first + CHUNK - 1), now)
        if other_rows:
            await conn.execute(GENERATE, OTHER_TENANT, rows + 1, rows + other_rows, now)
        await conn.execute(
            "CREATE TEMP TABLE ordered AS SELECT *, "
            "row_number() OVER (ORDER BY created_at, tenant_id, id) AS n FROM staging"
        )
        await conn.execute("DROP TABLE staging")
        timings["generate_s"] = time.monotonic() - started
        print(f"  generated in {timings['generate_s']:.0f} s", file=sys.stderr)
        total = rows + other_rows
        for low in range(0, total, CHUNK):
            await conn.execute(COPY_ORDERED, low, min(total, low + CHUNK))
            print(
                f"  inserted {min(total, low + CHUNK):,} of {total:,} "
                f"({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
            )
        await conn.execute("DROP TABLE ordered")
        await conn.execute(
            "SELECT setval('conversation_change_seq', (SELECT max(change_seq) FROM conversations))"
        )
        timings["insert_s"] = time.monotonic() - started
        started = time.monotonic()
        await conn.execute("ANALYZE")
        timings["analyze_s"] = time.monotonic() - started
        size = await conn.fetchrow(
            "SELECT pg_table_size('conversations') AS heap, "
            "pg_indexes_size('conversations') AS indexes, "
            "(SELECT count(*) FROM conversations) AS n"
        )
        timings.update(heap_bytes=size["heap"], index_bytes=size["indexes"], total_rows=size["n"])
        spread = await conn.fetch(
            "SELECT status, channel, count(*) AS n FROM conversations WHERE tenant_id = $1 "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            TENANT,
        )
        timings["spread"] = [dict(row) for row in spread]
    finally:
        await conn.close()
    return timings


# --------------------------------------------------------------------------- the server's SQL


class _Recording:
    """Stands in for an AsyncConnection: `server.live.queries.page` and `count` build their
    statements against it, and it keeps them instead of running them."""

    def __init__(self) -> None:
        from sqlalchemy.dialects.postgresql.asyncpg import dialect

        self.dialect = dialect()
        self.statements: list[Any] = []

    async def execute(self, statement):
        self.statements.append(statement)
        return _Empty()


class _Empty:
    def __iter__(self):
        return iter(())

    def scalar_one(self):
        return 0

    def scalar(self):
        return None


@dataclass
class ServerSql:
    """One view's statements exactly as the server builds them, compiled for asyncpg."""

    first: tuple[str, list]
    deep: tuple[str, list]
    count: tuple[str, list]
    offset_statement: Any  # SQLAlchemy Select for the row whose cursor we need


def _compiled(statement, dialect) -> tuple[str, list]:
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    return str(compiled), [params[name] for name in compiled.positiontup]


async def server_sql(definition: dict, now: datetime, after: dict | None) -> tuple[Any, ServerSql]:
    """The compiled ViewQuery and its page/count statements (server/live/queries.py)."""
    from zoneinfo import ZoneInfo

    from server.live import queries
    from server.live.definitions import parse_definition

    parsed = parse_definition(definition, ZoneInfo(TIMEZONE))
    query = parsed.compile(ZoneInfo(TIMEZONE))
    recording = _Recording()

    await queries.page(recording, TENANT, query, now, LIMIT)
    await queries.page(recording, TENANT, query, now, LIMIT, after or _placeholder(query))
    await queries.count(recording, TENANT, query, now)
    await queries.page(recording, TENANT, query, now, 1)
    first, deep, count, single = recording.statements
    dialect = recording.dialect
    return query, ServerSql(
        _compiled(first, dialect), _compiled(deep, dialect), _compiled(count, dialect), single
    )


def _placeholder(query) -> dict:
    values: dict[str, Any] = {}
    for field in query.sort_fields:
        values[field] = datetime(2000, 1, 1, tzinfo=UTC) if field == "created_at" else ""
    return values


# --------------------------------------------------------------------------- setup


def prepare(env: dict[str, str]) -> str:
    """Migrate, add both tenants; returns a supervisor token of the measured tenant."""
    c.run_cli(["migrate"], env)
    for tenant in (TENANT, OTHER_TENANT):
        c.run_cli(["tenant", "add", tenant, "--timezone", TIMEZONE, "--routing", "external"], env)
    out = c.run_cli(["token", "--tenant", TENANT, "--role", "supervisor", "--user", "bench"], env)
    return out.strip().splitlines()[-1]


@dataclass
class ViewCase:
    name: str
    description: str
    body: dict[str, Any]
    view_id: str = ""
    total: int = 0
    deep_page: int = 0  # the page actually fetched by cursor (may be < --f4-page)
    cursor: str | None = None
    sql: ServerSql | None = None
    first_ids: list[str] | None = None
    deep_first_id: str | None = None


async def _http_json(conn: c.HttpConnection, port: int, method: str, path: str, token: str,
                     body: dict | None = None) -> tuple[int, Any]:  # fmt: skip
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    status, answer = await conn.request(c.http_request(method, path, port, data, headers))
    return status, json.loads(answer) if answer else None


async def setup_views(
    cases: list[ViewCase], port: int, token: str, url: str, now: datetime, page: int
) -> None:
    """Save each view, find the cursor of its deep page (one OFFSET query through the
    server's own statement), and check it against the server's answer, untimed."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from server.live.filters import encode_cursor

    engine = create_async_engine(url, pool_size=1)
    conn = await c.HttpConnection.open(port)
    try:
        for case in cases:
            status, saved = await _http_json(
                conn, port, "POST", "/api/v1/views", token, {**case.body, "visibility": "tenant"}
            )
            if status != 201:
                raise RuntimeError(f"POST /api/v1/views {case.name}: HTTP {status}: {saved}")
            case.view_id = saved["id"]
            status, first = await _http_json(
                conn, port, "GET", f"/api/v1/views/{case.view_id}/rows?limit={LIMIT}", token
            )
            if status != 200:
                raise RuntimeError(f"first page of {case.name}: HTTP {status}: {first}")
            case.total = first["total"]
            case.first_ids = [row["id"] for row in first["rows"]]
            pages = case.total // LIMIT
            case.deep_page = min(page, pages)
            query, sql = await server_sql(case.body, now, None)
            offset = (case.deep_page - 1) * LIMIT  # rows before the deep page
            async with engine.connect() as db:
                expected_first = [
                    row.id for row in await db.execute(sql.offset_statement.limit(LIMIT).offset(0))
                ]
                if expected_first != case.first_ids:
                    raise RuntimeError(f"{case.name}: the first page differs from ORDER BY")
                if case.deep_page >= 2:
                    rows = (
                        await db.execute(sql.offset_statement.limit(2).offset(offset - 1))
                    ).all()
                    before, expected = rows[0]._mapping, rows[1]._mapping
                    case.cursor = encode_cursor(query, before)
                    case.deep_first_id = expected["id"]
            if case.cursor is not None:
                status, deep = await _http_json(
                    conn,
                    port,
                    "GET",
                    f"/api/v1/views/{case.view_id}/rows?limit={LIMIT}&cursor={quote(case.cursor)}",
                    token,
                )
                if status != 200 or not deep["rows"]:
                    raise RuntimeError(f"page {case.deep_page} of {case.name}: HTTP {status}")
                if deep["rows"][0]["id"] != case.deep_first_id:
                    raise RuntimeError(
                        f"{case.name}: page {case.deep_page} by cursor starts at "
                        f"{deep['rows'][0]['id']}, OFFSET says {case.deep_first_id}"
                    )
                after = {field: before[field] for field in query.sort_fields}
                _, sql = await server_sql(case.body, now, after)
            case.sql = sql
            print(
                f"  view {case.name}: {case.total:,} rows, deep page {case.deep_page} "
                f"(cursor checked against OFFSET {offset:,})",
                file=sys.stderr,
            )
    finally:
        conn.close()
        await engine.dispose()


# --------------------------------------------------------------------------- measuring


class WsClient:
    """One websocket to /ws (JSON subprotocol) for subscribe/unsubscribe samples."""

    def __init__(self, port: int, token: str):
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.token = token
        self.ws = None
        self.ref = 0

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(
            self.url,
            subprotocols=["switchboard.v1.json"],
            additional_headers={"Authorization": f"Bearer {self.token}"},
            compression=None,
            max_size=None,
            ping_interval=None,
            open_timeout=10,
        )

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def snapshot(self, view_id: str) -> tuple[float, int, int]:
        """Seconds from sending subscribe to the snapshot; rows and total received.
        Unsubscribes afterwards (untimed), so the next subscribe loads a window."""
        self.ref += 1
        ref = str(self.ref)
        frame = json.dumps({"type": "subscribe", "ref": ref, "view": view_id, "limit": LIMIT})
        started = time.perf_counter()
        await self.ws.send(frame)
        while True:
            raw = await self.ws.recv()
            elapsed = time.perf_counter() - started
            answer = json.loads(raw)
            if answer.get("ref") == ref:
                break
        if answer.get("type") != "snapshot":
            raise RuntimeError(f"subscribe answered {str(answer)[:300]}")
        self.ref += 1
        await self.ws.send(
            json.dumps({"type": "unsubscribe", "ref": str(self.ref), "sub": answer["sub"]})
        )
        while True:
            done = json.loads(await self.ws.recv())
            if done.get("ref") == str(self.ref):
                break
        if done.get("type") != "ok":
            raise RuntimeError(f"unsubscribe answered {str(done)[:300]}")
        return elapsed, len(answer["rows"]), answer["total"]


async def _timed_get(conn: c.HttpConnection, request: bytes) -> tuple[float, bytes]:
    started = time.perf_counter()
    status, body = await conn.request(request)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
    return elapsed, body


async def measure_view(
    case: ViewCase, port: int, token: str, samples: int, warmup: int, budget: float,
    meter: c.CpuMeter, run: int, cold: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Interleaved samples of first page, deep page and ws snapshot for one view.

    `cold`: page 1 and the deep page over HTTP only, before any websocket has
    subscribed to any view, so no live window exists and every request counts the
    whole view for `total` (the first look at a view nobody watches)."""
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/api/v1/views/{case.view_id}/rows?limit={LIMIT}"
    first_request = c.http_request("GET", path, port, headers=headers)
    deep_request = (
        c.http_request("GET", f"{path}&cursor={quote(case.cursor)}", port, headers=headers)
        if case.cursor
        else None
    )
    # Wait (bounded) for other people's work to calm down first: a keep-alive
    # connection left idle for 5 s is closed by uvicorn.
    await asyncio.to_thread(c.wait_quiet)
    http = await c.HttpConnection.open(port)
    ws = WsClient(port, token)
    if not cold:
        await ws.open()
    lat: dict[str, list[float]] = {"first": [], "deep": [], "ws": []}
    first_subscribe = None
    try:
        kinds = ["first", "deep", "ws"] if deep_request else ["first", "ws"]
        if cold:
            kinds.remove("ws")

        async def one(kind: str) -> float:
            if kind == "first":
                elapsed, body = await _timed_get(http, first_request)
                if body.count(b'"id":') < min(LIMIT, case.total):
                    raise RuntimeError(f"{case.name}: short first page")
                return elapsed
            if kind == "deep":
                elapsed, body = await _timed_get(http, deep_request)
                if b'"id":"' + case.deep_first_id.encode() not in body:
                    raise RuntimeError(f"{case.name}: the deep page moved")
                return elapsed
            elapsed, rows, total = await ws.snapshot(case.view_id)
            if rows != min(LIMIT, case.total) or total != case.total:
                raise RuntimeError(f"{case.name}: snapshot of {rows} rows, total {total}")
            return elapsed

        if not cold:
            # The first subscribe of a view in this server loads a window from the
            # database (rows and count); later ones find it live (kept 60 s idle).
            first_subscribe = await one("ws")
        for _ in range(warmup):
            for kind in kinds:
                await one(kind)
        meter.start()
        deadline = time.perf_counter() + budget
        taken = 0
        while taken < samples and time.perf_counter() < deadline:
            # Rotate the order, so that no measurement always follows the same one.
            order = kinds[taken % len(kinds) :] + kinds[: taken % len(kinds)]
            for kind in order:
                lat[kind].append(await one(kind))
            taken += 1
        cpu = meter.stop()
        exited = cpu["postgres_exited_cpu_s"]
    finally:
        http.close()
        await ws.close()
    result: dict[str, Any] = {
        "view": case.name,
        "run": run,
        "phase": "cold" if cold else "warm",
        "first_subscribe_ms": None if first_subscribe is None else first_subscribe * 1000,
        "samples": taken,
        "total": case.total,
        "deep_page": case.deep_page if deep_request else None,
        **cpu,
        "server_cpu_ms_per_sample": 1000 * cpu["server_cpu_s"] / max(1, taken),
        "postgres_cpu_ms_per_sample": 1000 * (cpu["postgres_cpu_s"] - exited) / max(1, taken),
        "exited_postgres_cpu_s": exited,
        "exited_postgres_cpu_ms_per_sample": 1000 * exited / max(1, taken),
        # Other people's work: what the machine did beyond the server, our backends,
        # the bench and the exited PostgreSQL processes (mostly our parallel workers),
        # which the meter counts as ours.
        "others_net_cores": cpu["others_cores"],
    }
    for kind, values in lat.items():
        if values:
            result[f"{kind}_p50_ms"] = c.percentile(values, 50) * 1000
            result[f"{kind}_p95_ms"] = c.percentile(values, 95) * 1000
            result[f"{kind}_max_ms"] = max(values) * 1000
    if lat["deep"]:
        result["deep_over_first_p95"] = result["deep_p95_ms"] / result["first_p95_ms"]
        result["deep_over_first_p50"] = result["deep_p50_ms"] / result["first_p50_ms"]
    return result


# --------------------------------------------------------------------------- the database side


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return "'" + value.isoformat() + "'"
    return "'" + str(value).replace("'", "''") + "'"


def _plan_summary(plan: list[str]) -> str:
    """The plan's node lines, shortened: the shape at a glance."""
    nodes = []
    for line in plan:
        text = line.strip()
        if text.startswith("->"):
            text = text[2:].strip()
        if not text or text.startswith(("Planning", "Execution", "Buffers", "I/O")):
            continue
        if ":" in text.split("(")[0]:
            continue  # Index Cond:, Filter:, Sort Key: ...
        nodes.append(re.sub(r"\s*\(cost=.*", "", text))
    return " > ".join(nodes)


def _timing(plan: list[str], name: str) -> float | None:
    for line in plan:
        if line.strip().startswith(name):
            return float(line.split(":")[1].split()[0])
    return None


async def explain_view(dsn: str, case: ViewCase, repeats: int, label: str) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the server's statements for one view, as a custom
    plan (what the first five executions of a prepared statement get) and as the
    generic plan (what the plan cache may switch to after five), plus timed repeats of
    each as the server runs it (a prepared statement through asyncpg)."""
    import asyncpg

    assert case.sql is not None
    conn = await asyncpg.connect(dsn, timeout=10)
    out: dict[str, Any] = {"view": case.name, "state": label}
    try:
        await conn.execute("SET statement_timeout = '120s'")
        statements = {"first": case.sql.first, "count": case.sql.count}
        if case.cursor:
            statements["deep"] = case.sql.deep
        for kind, (sql, params) in statements.items():
            plan = [
                row[0] for row in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *params)
            ]
            out[f"{kind}_plan"] = plan
            out[f"{kind}_shape"] = _plan_summary(plan)
            out[f"{kind}_exec_ms"] = _timing(plan, "Execution Time")
            # The plan the server's prepared statement settles on after five runs.
            name = f"f4_{kind}"
            await conn.execute(f"PREPARE {name} AS {sql}")
            execute = f"EXECUTE {name}(" + ", ".join(_literal(p) for p in params) + ")"
            for _ in range(6):
                await conn.execute(execute)
            generic = [row[0] for row in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + execute)]
            await conn.execute(f"DEALLOCATE {name}")
            out[f"{kind}_plan_after_5"] = generic
            out[f"{kind}_shape_after_5"] = _plan_summary(generic)
            out[f"{kind}_exec_ms_after_5"] = _timing(generic, "Execution Time")
            prepared = await conn.prepare(sql)
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                await prepared.fetch(*params)
                times.append(time.perf_counter() - started)
            out[f"{kind}_p50_ms"] = c.percentile(times, 50) * 1000
            out[f"{kind}_min_ms"] = min(times) * 1000
    finally:
        await conn.close()
    return out


async def vacuum(dsn: str) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("SET statement_timeout = '900s'")
        started = time.monotonic()
        await conn.execute("VACUUM (ANALYZE) conversations")
        return time.monotonic() - started
    finally:
        await conn.close()


# --------------------------------------------------------------------------- report


def _verdict(case: ViewCase, rows: list[dict], phase: str) -> str:
    p95 = c.median([r["first_p95_ms"] for r in rows])
    line = (
        f"* `{case.name}` ({phase}): page 1 p95 {p95:.1f} ms: "
        + ("meets" if p95 <= TARGET_FIRST_P95_MS else "misses")
        + f" <= {TARGET_FIRST_P95_MS:.0f} ms"
    )
    if case.cursor:
        ratio = c.median([r["deep_over_first_p95"] for r in rows])
        line += (
            f"; page {case.deep_page} / page 1 = {ratio:.2f}x: "
            + ("meets" if ratio <= TARGET_DEEP_RATIO else "misses")
            + f" <= {TARGET_DEEP_RATIO}x"
        )
    return line


def _first_subscribe(rows: list[dict]) -> str:
    """Run 1's first subscribe surely loaded a window; later runs' may have found one
    still live (kept 60 s after its last subscriber)."""
    by_run = {r["run"]: r.get("first_subscribe_ms") for r in rows}
    first = by_run.get(1)
    later = [f"{v:.0f}" for run, v in sorted(by_run.items()) if run != 1 and v is not None]
    return (f"{first:.0f}" if first is not None else "-") + (
        f" ({', '.join(later)})" if later else ""
    )


def report(info: dict, load: dict, cases: list[ViewCase], runs: list[dict],
           explains: list[dict], args) -> str:  # fmt: skip
    def rows_of(view: str, phase: str = "warm") -> list[dict]:
        return [r for r in runs if r["view"] == view and r.get("phase", "warm") == phase]

    header = [
        "view",
        "rows in view",
        "samples/run",
        "page 1 p50 ms",
        "page 1 p95 ms",
        "deep page",
        "deep p50 ms",
        "deep p95 ms",
        "deep/page 1 (p95)",
        "ws snapshot p50 ms",
        "ws snapshot p95 ms",
        "first ws subscribe ms (run 1; runs 2-3)",
        "server CPU ms / sample (3 requests)",
        "PostgreSQL backend CPU ms / sample",
        "parallel workers CPU ms / sample",
        "others' cores",
    ]
    table = []
    for case in cases:
        rows = rows_of(case.name)
        if not rows:
            continue

        def col(key, digits=1, rows=rows):
            return c.spread([r[key] for r in rows if key in r], digits)

        table.append(
            [
                f"`{case.name}`: {case.description}",
                f"{case.total:,}",
                col("samples", 0),
                col("first_p50_ms"),
                col("first_p95_ms"),
                str(case.deep_page) if case.cursor else "-",
                col("deep_p50_ms") if case.cursor else "-",
                col("deep_p95_ms") if case.cursor else "-",
                (col("deep_over_first_p95", 2) + "x") if case.cursor else "-",
                col("ws_p50_ms"),
                col("ws_p95_ms"),
                _first_subscribe(rows),
                col("server_cpu_ms_per_sample"),
                col("postgres_cpu_ms_per_sample"),
                col("exited_postgres_cpu_ms_per_sample"),
                col("others_net_cores", 2),
            ]
        )
    cold_header = [
        "view",
        "samples/run",
        "page 1 p50 ms",
        "page 1 p95 ms",
        "deep p50 ms",
        "deep p95 ms",
        "deep/page 1 (p95)",
        "server CPU ms / sample (2 requests)",
        "PostgreSQL backend CPU ms / sample",
        "parallel workers CPU ms / sample",
        "others' cores",
    ]
    cold_table = []
    for case in cases:
        rows = rows_of(case.name, "cold")
        if not rows:
            continue

        def cold_col(key, digits=1, rows=rows):
            return c.spread([r[key] for r in rows if key in r], digits)

        cold_table.append(
            [
                f"`{case.name}`",
                cold_col("samples", 0),
                cold_col("first_p50_ms"),
                cold_col("first_p95_ms"),
                cold_col("deep_p50_ms") if case.cursor else "-",
                cold_col("deep_p95_ms") if case.cursor else "-",
                (cold_col("deep_over_first_p95", 2) + "x") if case.cursor else "-",
                cold_col("server_cpu_ms_per_sample"),
                cold_col("postgres_cpu_ms_per_sample"),
                cold_col("exited_postgres_cpu_ms_per_sample"),
                cold_col("others_net_cores", 2),
            ]
        )
    verdicts = []
    for phase in ("warm", "cold"):
        for case in cases:
            rows = rows_of(case.name, phase)
            if rows:
                verdicts.append(_verdict(case, rows, phase))
    db_header = [
        "view",
        "state",
        "page 1 query ms",
        "deep query ms",
        "count ms",
        "count / cold HTTP page 1 p50",
        "cold HTTP page 1 p50 - page 1 query - count",
        "page 1 plan",
        "deep plan",
        "count plan",
    ]
    db_rows = []
    for e in explains:
        rows = rows_of(e["view"])
        rows = rows_of(e["view"], "cold")  # the page requests that count
        http = c.median([r["first_p50_ms"] for r in rows]) if rows else float("nan")
        db_rows.append(
            [
                f"`{e['view']}`",
                e["state"],
                f"{e['first_p50_ms']:.1f}",
                f"{e['deep_p50_ms']:.1f}" if "deep_p50_ms" in e else "-",
                f"{e['count_p50_ms']:.1f}",
                f"{e['count_p50_ms'] / http:.0%}" if http == http else "-",
                f"{http - e['first_p50_ms'] - e['count_p50_ms']:.1f}" if http == http else "-",
                e["first_shape"],
                e.get("deep_shape", "-"),
                e["count_shape"],
            ]
        )
    changed = [
        f"* `{e['view']}` {kind} ({e['state']}): after 5 executions the plan becomes "
        f"{e[f'{kind}_shape_after_5']} ({e[f'{kind}_exec_ms_after_5']:.1f} ms)"
        for e in explains
        for kind in ("first", "deep", "count")
        if f"{kind}_shape" in e and e[f"{kind}_shape_after_5"] != e[f"{kind}_shape"]
    ]
    spread = {}
    for row in load.get("spread", []):
        spread.setdefault(row["status"], 0)
        spread[row["status"]] += row["n"]
    parts = [
        f"### F4 snapshot and paging, {info['date']}",
        "",
        c.describe_machine(info),
        f"* data: {args.f4_rows:,} conversations of tenant `{TENANT}` and "
        f"{args.f4_other_rows:,} of `{OTHER_TENANT}`, loaded in {load['insert_s']:.0f} s "
        f"(ANALYZE {load['analyze_s']:.0f} s); table {load['heap_bytes'] / 2**20:,.0f} MiB, "
        f"its indexes {load['index_bytes'] / 2**20:,.0f} MiB. Statuses: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(spread.items(), key=lambda kv: -kv[1])),
        f"* load: cold phase first, {args.runs} runs per view of up to {args.f4_cold_samples} "
        f"samples (one page 1 and one page {args.f4_page} by cursor over HTTP) after 2 "
        f"warm-up samples; then the warm phase, {args.runs} runs per view of up to "
        f"{args.f4_samples} samples (each sample "
        f"is one page 1, one page {args.f4_page} by cursor, one ws subscribe, interleaved), "
        f"after one first subscribe and {args.f4_warmup} warm-up samples; at most "
        f"{args.f4_budget:g} s per view per run; limit 100; one keep-alive HTTP "
        "connection and one websocket, one request in flight; "
        "median (min-max) of the runs' p50 and p95",
        "* CPU columns: the server's pid; the PostgreSQL backends of the bench's database; "
        "PostgreSQL processes that exited during the run (the postmaster's children time: "
        "the parallel workers of our count and sort plans, plus any backend of another "
        "database that disconnected meanwhile); others' cores is the rest of the machine",
        "",
        "Warm: a window of the view is live in the server (a websocket subscribed to it "
        "within the last minute), so `/rows` takes `total` from it and a subscribe finds "
        "its rows in memory.",
        "",
        c.markdown_table(header, table),
        "",
        "Cold: no window of any view exists yet (measured first, over HTTP only), so every "
        "request also counts the whole view for `total`:",
        "",
        c.markdown_table(cold_header, cold_table) if cold_table else "(not measured)",
        "",
        "Against the goals (page 1 p95 <= 50 ms; page 1,000 within 1.5x of page 1):",
        "",
        *verdicts,
        "",
        "The database side: the server's own statements, run on a connection of the "
        "bench's own (prepared, as asyncpg runs them; median of "
        f"{EXPLAIN_REPEATS} runs), and their EXPLAIN ANALYZE plans:",
        "",
        c.markdown_table(db_header, db_rows),
        "",
    ]
    if changed:
        parts += ["Plans that change once a prepared statement goes generic:", "", *changed, ""]
    return "\n".join(parts)


EXPLAIN_REPEATS = 10


# --------------------------------------------------------------------------- entry


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.f4_rows = min(args.f4_rows, 200_000)
        args.f4_samples, args.f4_warmup, args.f4_budget = 10, 2, 30.0
        args.f4_cold_samples = min(args.f4_cold_samples, 5)
    if args.runs < 3 and not args.quick:
        print("  note: fewer than 3 runs: not a reportable figure", file=sys.stderr)
    names = [n.strip() for n in args.f4_views.split(",") if n.strip()]
    unknown = [n for n in names if n not in VIEWS]
    if unknown:
        print(f"unknown F4 view(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    recorder = c.Recorder("f4")
    info = c.machine_info()
    try:
        info["postgres"] = c.run_async(c.postgres_version(c.ADMIN_URL))
    except Exception as exc:
        print(f"F4 needs PostgreSQL at {c.ADMIN_URL}: {exc!r}", file=sys.stderr)
        return 2
    recorder.line(type="meta", bench="f4", argv=sys.argv[1:], **info)
    started = time.monotonic()
    data_dir = Path(tempfile.mkdtemp(prefix="services-bench-f4-"))
    database = None
    cases = [ViewCase(name, *VIEWS[name]) for name in names]
    runs: list[dict] = []
    explains: list[dict] = []
    try:
        database = c.run_async(c.create_database(c.ADMIN_URL, "sb_bench_f4"))
        url = c.with_database(c.ADMIN_URL, database)
        dsn = c.asyncpg_dsn(c.ADMIN_URL, database)
        env = c.server_env(url, data_dir)
        token = prepare(env)
        now = datetime.now(UTC)
        print(f"  database {database}: loading {args.f4_rows:,} conversations", file=sys.stderr)
        load = c.run_async(load_data(dsn, args.f4_rows, args.f4_other_rows, now))
        recorder.line(type="load", **load)
        print(
            f"  loaded in {load['insert_s']:.0f} s, ANALYZE {load['analyze_s']:.0f} s",
            file=sys.stderr,
        )
        with c.ServerProcess(env, recorder.path("-server.log")) as server:
            print(f"  server pid {server.pid} on port {server.port}", file=sys.stderr)
            try:
                c.run_async(setup_views(cases, server.port, token, url, now, args.f4_page))
                meter = c.CpuMeter(server.pid, postgres=True, database=database)
                # Cold first, before any websocket has made a window of any view.
                phases = [("cold", args.f4_cold_samples, 2)] if args.f4_cold_samples else []
                phases.append(("warm", args.f4_samples, args.f4_warmup))
                for phase, samples, warmup in phases:
                    for round_ in range(1, args.runs + 1):
                        for case in cases:
                            result = c.run_async(
                                measure_view(
                                    case, server.port, token, samples, warmup,
                                    args.f4_budget, meter, round_, cold=phase == "cold",
                                )
                            )  # fmt: skip
                            recorder.line(type="run", **result)
                            runs.append(result)
                            print(
                                f"  {phase} run {round_} {case.name:10} n={result['samples']:3}  "
                                f"page1 p50 {result['first_p50_ms']:7.1f} p95 "
                                f"{result['first_p95_ms']:7.1f}  "
                                + (
                                    f"page{case.deep_page} p50 {result['deep_p50_ms']:7.1f} "
                                    f"p95 {result['deep_p95_ms']:7.1f}  "
                                    if case.cursor
                                    else ""
                                )
                                + (
                                    f"ws p50 {result['ws_p50_ms']:7.1f} "
                                    f"p95 {result['ws_p95_ms']:7.1f} "
                                    f"first subscribe {result['first_subscribe_ms']:7.1f}"
                                    if phase == "warm"
                                    else ""
                                )
                                + f"  workers "
                                f"{result['exited_postgres_cpu_s'] / result['wall_s']:.2f}"
                                f"  others {result['others_net_cores']:.2f} cores",
                                file=sys.stderr,
                            )
            except Exception:
                print(f"  the server's log ends with:\n{server.log_tail()}", file=sys.stderr)
                raise
        for case in cases:
            e = c.run_async(explain_view(dsn, case, EXPLAIN_REPEATS, "ANALYZE only"))
            recorder.line(type="explain", **e)
            explains.append(e)
        if args.f4_vacuum:
            seconds = c.run_async(vacuum(dsn))
            print(f"  VACUUM (ANALYZE): {seconds:.0f} s", file=sys.stderr)
            for case in cases:
                e = c.run_async(explain_view(dsn, case, EXPLAIN_REPEATS, "after VACUUM"))
                recorder.line(type="explain", **e)
                explains.append(e)
    finally:
        if database is not None:
            c.run_async(c.drop_database(c.ADMIN_URL, database))
        shutil.rmtree(data_dir, ignore_errors=True)
    text = report(info, load, cases, runs, explains, args)
    plans = [f"\n#### Plans ({recorder.jsonl.name})\n"]
    for e in explains:
        for kind in ("first", "deep", "count"):
            if f"{kind}_plan" in e:
                plans.append(f"`{e['view']}` {kind}, {e['state']}:\n\n```")
                plans.extend(e[f"{kind}_plan"])
                plans.append("```\n")
    text += f"\nTotal time {time.monotonic() - started:.0f} s.\n" + "\n".join(plans)
    recorder.write_markdown(text)
    print(text)
    print(f"raw: {recorder.jsonl}\ntable: {recorder.markdown}", file=sys.stderr)
    return 0
