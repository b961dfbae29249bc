"""Hypothesis: a view's SQL form and its in-memory form give the same rows in the same
order, on SQLite and on PostgreSQL.

For random stored conversations and random views (0-4 filters over every field and
operator, random sort, sometimes an agent scope), checks that

* `SELECT id WHERE where(now) ORDER BY order_by()` equals the stored rows kept by
  `matches(row, now)` and sorted by `sort_key` (membership and order);
* that membership is also the one of a reference reading of docs/views.md (oracle);
* paging with `after()` from the cursor of any row gives the rows that sort after it,
  and so does the page statement the server runs (`queries.page_statement`: a row
  comparison, or a UNION ALL of one range per sort level), whole and limited.

pytest-asyncio runs each example of an async `@given` test on the test's event loop,
so the database fixture (schema and tenants) is made once per test function and every
example replaces the conversations with its own.
"""

from __future__ import annotations

import random
import unicodedata
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import select

from server.live.filters import (
    CHANNEL_VALUES,
    ENUM_VALUES,
    ViewQuery,
    compile_view,
    decode_cursor,
    encode_cursor,
)
from server.live.queries import page_statement
from server.storage import models as m
from server.storage.db import Database
from tests.filter_strategies import (
    AGENTS,
    CLOCK_CHANGES,
    FRAGMENTS,
    NULLABLE_TEXT,
    NUMBERS,
    ZONES,
    View,
    World,
    landmarks,
    local_midnight,
    oracle,
    prepared_database,
    recreate_with_icu_collation,
    replace_rows,
    scenario,
    tenant_of,
    views,
)
from tests.support import Backend


def examples(count: int) -> settings:
    return settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


@pytest.fixture
async def database(backend: Backend):
    db = await prepared_database(backend.database_url)
    try:
        yield db
    finally:
        await db.close()


async def select_ids(db: Database, tenant: str, query: ViewQuery, now: datetime, last=None):
    table = m.conversations
    statement = select(table.c.id).where(
        table.c.tenant_id == tenant, query.where(table, db.dialect, now)
    )
    if last is not None:
        statement = statement.where(query.after(table, db.dialect, last))
    statement = statement.order_by(*query.order_by(table, db.dialect))
    async with db.read() as conn:
        return list((await conn.execute(statement)).scalars())


async def page_ids(db: Database, tenant: str, query: ViewQuery, now, last, limit: int):
    statement = page_statement(
        (m.conversations.c.id, *(m.conversations.c[f] for f in query.sort_fields if f != "id")),
        tenant,
        query,
        db.dialect,
        now,
        limit,
        last,
    )
    async with db.read() as conn:
        return [row.id for row in await conn.execute(statement)]


async def check_view(db: Database, tenant: str, stored: list[dict], view: View, now, tz):
    query = compile_view(view.filters, view.sort, tz, agent=view.agent)
    note(f"view: filters={view.filters!r} sort={view.sort!r} agent={view.agent!r}")
    kept = [row for row in stored if query.matches(row, now)]
    expected = [row["id"] for row in sorted(kept, key=query.sort_key)]
    assert await select_ids(db, tenant, query, now) == expected

    reference = {row["id"] for row in stored if oracle(view.filters, view.agent, row, now, tz)}
    assert set(expected) == reference

    by_id = {row["id"]: row for row in stored}
    starts = [by_id[expected[view.page_at % len(expected)]]] if expected else []
    if stored:
        starts.append(stored[view.page_from % len(stored)])
    for last in starts:
        cursor = encode_cursor(query, last)
        decoded = decode_cursor(query, cursor)
        assert decoded == {field: last[field] for field in query.sort_fields}
        beyond = query.sort_key(last)
        rest = [i for i in expected if query.sort_key(by_id[i]) > beyond]
        assert await select_ids(db, tenant, query, now, decoded) == rest
        assert await page_ids(db, tenant, query, now, decoded, len(stored) + 1) == rest
        short = 1 + view.page_at % 3
        assert await page_ids(db, tenant, query, now, decoded, short) == rest[:short]


def same_as_inserted(stored: list[dict], rows: list[dict]) -> None:
    by_id = {row["id"]: row for row in stored}
    assert len(by_id) == len(rows)
    for row in rows:
        assert {key: by_id[row["id"]][key] for key in row} == row


@examples(120)
@given(case=scenario())
async def test_sql_and_python_agree_on_random_data_and_views(database: Database, case):
    note(f"zone={case.zone} now={case.now.isoformat()}")
    stored = await replace_rows(database, case.tenant, case.rows)
    same_as_inserted(stored, case.rows)
    for view in case.views:
        await check_view(database, case.tenant, stored, view, case.now, case.tz)


# --- many views over one larger data set -------------------------------------------------------

ANCHOR_ZONE = "Europe/Madrid"
ANCHOR = local_midnight(CLOCK_CHANGES[ANCHOR_ZONE][1], ZoneInfo(ANCHOR_ZONE))  # a 25-hour day


def _random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 4)):
        if rng.random() < 0.6:
            parts.append(rng.choice(FRAGMENTS))
            continue
        while True:
            char = chr(rng.randrange(1, 0x30000))
            if unicodedata.category(char) not in ("Cs", "Cn", "Co"):
                parts.append(char)
                break
    return "".join(parts)


def fixed_rows(tenant: str, count: int = 400, seed: int = 20240) -> list[dict]:
    """A seeded data set around ANCHOR, with many ties in the sort columns."""
    rng = random.Random(seed)
    moments = landmarks(ANCHOR + timedelta(hours=11), ZoneInfo(ANCHOR_ZONE))
    rows, ids = [], set()
    while len(rows) < count:
        conversation_id = _random_text(rng)
        if conversation_id in ids:
            continue
        ids.add(conversation_id)
        if rng.random() < 0.5:
            created = rng.choice(moments) + timedelta(microseconds=rng.choice((0, 1, -1)))
        else:
            created = ANCHOR + timedelta(seconds=rng.randint(-40 * 86400, 3 * 86400))

        def maybe(value):
            return None if rng.random() < 0.25 else value

        row = {
            "tenant_id": tenant,
            "id": conversation_id,
            "version": 1,
            "status": rng.choice(ENUM_VALUES["status"]),
            "state": maybe(rng.choice(ENUM_VALUES["state"])),
            "direction": rng.choice(ENUM_VALUES["direction"]),
            "channel": rng.choice(ENUM_VALUES["channel"]),
            "channels": "|" + "|".join(rng.sample(CHANNEL_VALUES, rng.randint(1, 4))) + "|",
            "contact": rng.choice((_random_text(rng), "+15550100", "visitor-1")),
            "agent_id": maybe(rng.choice((*AGENTS, _random_text(rng)))),
            "offer_agent_id": maybe(rng.choice(AGENTS)),
            "csat": maybe(rng.randint(1, 5)),
            "hangup_source": maybe(rng.choice(ENUM_VALUES["hangup_source"])),
            "has_recording": rng.random() < 0.5,
            "wait_s": maybe(float(rng.choice(NUMBERS))),
            "handle_s": maybe(rng.uniform(0, 1e4)),
            "created_at": created,
            "last_occurred_at": created,
            "change_seq": 1,
            "updated_at": created,
        }
        for name in NULLABLE_TEXT:
            row[name] = maybe(_random_text(rng))
        rows.append(row)
    return rows


@st.composite
def views_over(draw, rows: list[dict]):
    zone = draw(st.sampled_from(ZONES))
    tz = ZoneInfo(zone)
    now = ANCHOR + timedelta(seconds=draw(st.integers(-36 * 3600, 36 * 3600)))
    world = World(rows, now, tz, landmarks(now, tz))
    return zone, now, draw(st.lists(views(world), min_size=1, max_size=4))


FIXED_TENANT = tenant_of(ANCHOR_ZONE)
FIXED_ROWS = fixed_rows(FIXED_TENANT)


@pytest.fixture
async def loaded(backend: Backend):
    """FIXED_ROWS stored; on PostgreSQL in a database whose default collation is ICU
    `en-US` rather than the server's C.UTF-8 (the other test runs on that one)."""
    if backend.name.startswith("postgresql"):
        await recreate_with_icu_collation(backend.database_url)
    database = await prepared_database(backend.database_url)
    try:
        stored = await replace_rows(database, FIXED_TENANT, FIXED_ROWS)
        same_as_inserted(stored, FIXED_ROWS)
        yield database, stored
    finally:
        await database.close()


@examples(200)
@given(case=views_over(FIXED_ROWS))
async def test_sql_and_python_agree_on_many_views_of_one_data_set(loaded, case):
    database, stored = loaded
    zone, now, some_views = case
    note(f"zone={zone} now={now.isoformat()}")
    for view in some_views:
        await check_view(database, FIXED_TENANT, stored, view, now, ZoneInfo(zone))
