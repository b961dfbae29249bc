"""Random stored conversations and random view definitions for the filter tests.

`scenario()` draws a tenant zone, a `now` near one of that zone's clock changes, a
set of stored conversation rows and a few views (wire filters, sort, agent scope)
whose values are mostly taken from those rows, so that filters hit as often as
they miss. `oracle()` is a reference reading of the documented semantics, written
independently of server/live/filters.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlalchemy.engine import make_url

from server.live.filters import (
    BOOLEAN,
    CHANNEL_VALUES,
    CHANNELS,
    DATE,
    ENUM,
    ENUM_VALUES,
    FIELD_KINDS,
    INSTANT,
    NUMBER,
    OPERATORS,
    SORTABLE,
    TEXT,
    WITHIN,
)
from server.storage import models as m
from server.storage.db import Database
from server.storage.migrate import migrate
from server.tenants.setup import create_tenant
from tests.support import TEST_DATABASE_URL, asyncpg_dsn

# --- tenants and clocks --------------------------------------------------------------------

# Each zone with days on which (or next to which) its clock changes.
CLOCK_CHANGES: dict[str, tuple[date, ...]] = {
    # 23-hour and 25-hour days.
    "Europe/Madrid": (date(2024, 3, 31), date(2024, 10, 27), date(2024, 6, 15)),
    # DST began at midnight (no 00:00 on 2018-11-04) and ended at midnight (23:00 twice).
    "America/Sao_Paulo": (date(2018, 11, 4), date(2019, 2, 16), date(2024, 1, 10)),
    # UTC+14; 1994-12-31 never happened there (the date line moved).
    "Pacific/Kiritimati": (date(1994, 12, 31), date(1995, 1, 1), date(2024, 6, 1)),
    # Midnight happens twice on 2024-11-03 (DST ends at 01:00 back to 00:00).
    "America/Havana": (date(2024, 11, 3), date(2024, 3, 10)),
    "Asia/Kolkata": (date(2024, 5, 5),),
    "UTC": (date(2024, 2, 29),),
}
ZONES = tuple(CLOCK_CHANGES)


def tenant_of(zone: str) -> str:
    return "t-" + zone.lower().replace("/", "-").replace("_", "-")


async def prepared_database(url: str) -> Database:
    """The schema, and one tenant per zone of ZONES."""
    await asyncio.to_thread(migrate, url)
    db = Database(url)
    async with db.write() as conn:
        for zone in ZONES:
            await create_tenant(conn, tenant_of(zone), zone)
    return db


async def recreate_with_icu_collation(url: str) -> None:
    """Make url's fresh PostgreSQL database again, with an ICU `en-US` default collation
    (as many servers have one from their OS locale), under which 'a' < 'B' < 'b': a view's
    order must not depend on it."""
    name = make_url(url).database
    conn = await asyncpg.connect(asyncpg_dsn(TEST_DATABASE_URL))
    try:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.execute(
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    finally:
        await conn.close()


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


@st.composite
def nows(draw, zone: str) -> datetime:
    tz = ZoneInfo(zone)
    anchor = local_midnight(draw(st.sampled_from(CLOCK_CHANGES[zone])), tz)
    seconds = draw(st.integers(-36 * 3600, 36 * 3600))
    micro = draw(st.sampled_from((0, 1, 500_000, 999_999)))
    return anchor + timedelta(seconds=seconds, microseconds=micro)


def landmarks(now: datetime, tz: ZoneInfo) -> list[datetime]:
    """Instants where membership flips: the tenant's midnights around now, now minus
    each `last_*` span, and now itself."""
    today = now.astimezone(tz).date()
    moments = [local_midnight(today + timedelta(days=k), tz) for k in range(-2, 3)]
    moments += [now - span for span in WITHIN.values() if span is not None]
    moments.append(now)
    return moments


JITTER = tuple(
    timedelta(microseconds=us) for us in (0, 0, 0, 1, -1, 1_000_000, -1_000_000, 3_540_000_000)
)


def instants(moments: list[datetime], now: datetime) -> st.SearchStrategy[datetime]:
    near = st.builds(
        lambda at, jitter: at + jitter, st.sampled_from(moments), st.sampled_from(JITTER)
    )
    spread = st.integers(-31 * 86400, 86400).map(lambda s: now + timedelta(seconds=s))
    return st.one_of(near, near, spread)


# --- text ------------------------------------------------------------------------------------

# Case-folding traps (sharp s, dotted and dotless i, final sigma, Kelvin and Ohm
# signs, titlecase digraphs, ligatures), accented Latin, Greek, Cyrillic and the LIKE
# metacharacters.
FRAGMENTS = (
    *("a", "A", "ab", "Ab", "b", " ", "x"),
    *("é", "É", "Émile", "ÉMILE", "ñ", "Ñ"),
    *("ß", "SS", "ss", "ẞ", "straße", "STRASSE"),
    *("İ", "i̇", "i", "I", "ı", "İstanbul", "istanbul"),  # noqa: RUF001
    *("Σ", "σ", "ς", "ΟΔΟΣ", "οδος", "ΑΣ Α"),  # noqa: RUF001
    *("Ж", "ж", "Ёлка", "ёлка"),
    *("\u212a", "k", "\u2126", "ω", "ǅ", "Ǆ", "ǆ", "ﬁ", "FI"),
    *("%", "_", "\\", "a%", "_b", "\\%", "\\_", "%_\\"),
)
CHARACTERS = st.characters(exclude_categories=("Cs", "Cn", "Co"), exclude_characters="\x00")
TEXTS = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.sampled_from(FRAGMENTS),
        st.text(CHARACTERS, min_size=1, max_size=3),
    ),
    max_size=4,
).map("".join)
AGENTS = ("a1", "a2", "A1", "agént")
AGENT_IDS = st.one_of(st.sampled_from(AGENTS), TEXTS)
NUMBERS = (0, 0.5, 1, 2, 2.5, 3, 4, 5, 30, 59.999, 3600)


def nullable(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


# --- stored rows -----------------------------------------------------------------------------

NULLABLE_TEXT = (
    "customer_name",
    "agent_name",
    "team",
    "disposition",
    "wrap_up_note",
    "contacto_number",
    "ticket_id",
)


@st.composite
def conversation(draw, tenant: str, conversation_id: str, created: st.SearchStrategy) -> dict:
    created_at = draw(created)
    used = draw(st.lists(st.sampled_from(CHANNEL_VALUES), min_size=1, max_size=4, unique=True))
    row = {
        "tenant_id": tenant,
        "id": conversation_id,
        "version": 1,
        "status": draw(st.sampled_from(ENUM_VALUES["status"])),
        "state": draw(nullable(st.sampled_from(ENUM_VALUES["state"]))),
        "direction": draw(st.sampled_from(ENUM_VALUES["direction"])),
        "channel": draw(st.sampled_from(ENUM_VALUES["channel"])),
        "channels": "|" + "|".join(used) + "|",
        "contact": draw(TEXTS),
        "agent_id": draw(nullable(AGENT_IDS)),
        "offer_agent_id": draw(nullable(st.sampled_from(AGENTS))),
        "csat": draw(nullable(st.integers(1, 5))),
        "hangup_source": draw(nullable(st.sampled_from(ENUM_VALUES["hangup_source"]))),
        "has_recording": draw(st.booleans()),
        "wait_s": draw(nullable(number_values())),
        "handle_s": draw(nullable(number_values())),
        "created_at": created_at,
        "last_occurred_at": created_at,
        "change_seq": 1,
        "updated_at": created_at,
    }
    for name in NULLABLE_TEXT:
        row[name] = draw(nullable(TEXTS))
    return row


def number_values() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from(NUMBERS).map(float),
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    )


async def replace_rows(db: Database, tenant: str, rows: list[dict]) -> list[dict]:
    """Make `rows` the only conversations; return them as stored (read back)."""
    table = m.conversations
    async with db.write() as conn:
        await conn.execute(delete(table))
        if rows:
            await conn.execute(table.insert(), rows)
    async with db.read() as conn:
        result = await conn.execute(select(table).where(table.c.tenant_id == tenant))
        return [dict(row._mapping) for row in result]


# --- views -----------------------------------------------------------------------------------


def wire_instant(draw, instant: datetime, tz: ZoneInfo) -> str:
    offset = draw(
        st.sampled_from((UTC, tz, timezone(timedelta(hours=-5, minutes=-30)), timezone.max))
    )
    text = instant.astimezone(offset).isoformat()
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


@dataclass(frozen=True)
class World:
    """What value strategies may take their values from."""

    rows: list[dict]
    now: datetime
    tz: ZoneInfo
    moments: list[datetime]

    def present(self, field: str) -> list:
        return [row[field] for row in self.rows if row[field] is not None]


CASES = (str, str.upper, str.lower, str.swapcase, str.title)


def text_value(draw, world: World, field: str, op: str) -> str:
    present = world.present(field)
    searching = op in ("contains", "not_contains")
    source = draw(st.integers(0, 5))
    if not present or source == 0:
        return draw(TEXTS)
    if searching and source in (1, 2):
        return draw(st.sampled_from(CASES))(draw(st.sampled_from(FRAGMENTS)))
    value = draw(st.sampled_from(present))
    if searching:
        start = draw(st.integers(0, len(value)))
        value = value[start : draw(st.integers(start, len(value)))]
        value = draw(st.sampled_from(CASES))(value)
        if value and draw(st.integers(0, 3)) == 0:
            # a LIKE wildcard where the row has some other character
            at = draw(st.integers(0, len(value) - 1))
            value = value[:at] + draw(st.sampled_from("_%")) + value[at + 1 :]
    return value[:1000]


def scalar(draw, world: World, field: str, op: str) -> Any:
    kind = FIELD_KINDS[field]
    if kind == TEXT:
        return text_value(draw, world, field, op)
    if kind == ENUM:
        return draw(st.sampled_from(ENUM_VALUES[field]))
    if kind == NUMBER:
        pool = [*NUMBERS, *world.present(field)]
        return draw(st.one_of(st.sampled_from(pool), st.integers(-1, 7), number_values()))
    if kind == BOOLEAN:
        return draw(st.booleans())
    if kind == INSTANT:
        pool = [*world.moments, *(row["created_at"] for row in world.rows)]
        return draw(st.one_of(st.sampled_from(pool), instants(pool, world.now)))
    if kind == DATE:
        today = world.now.astimezone(world.tz).date()
        return today + timedelta(days=draw(st.integers(-3, 3)))
    raise AssertionError(kind)


def to_wire(draw, world: World, field: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return wire_instant(draw, value, world.tz)
    if isinstance(value, date):
        return value.isoformat()
    return value


# How often each kind of field is filtered on (text most: case folding, LIKE, NULLs).
KIND_WEIGHTS = (
    *[TEXT] * 4,
    *[ENUM] * 2,
    CHANNELS,
    *[INSTANT] * 3,
    *[DATE] * 2,
    *[NUMBER] * 2,
    BOOLEAN,
)


@st.composite
def condition(draw, world: World) -> dict:
    kind = draw(st.sampled_from(KIND_WEIGHTS))
    field = draw(st.sampled_from([name for name, k in FIELD_KINDS.items() if k == kind]))
    if kind == TEXT and draw(st.booleans()):
        op = draw(st.sampled_from(("contains", "not_contains")))  # where folding matters
    else:
        op = draw(st.sampled_from(OPERATORS[kind]))
    wire: dict[str, Any] = {"field": field, "op": op}
    if op in ("is_empty", "is_not_empty"):
        if draw(st.booleans()):
            wire["value"] = None
        return wire
    if op == "within":
        wire["value"] = draw(st.sampled_from(tuple(WITHIN)))
    elif kind == CHANNELS:
        channels = st.lists(st.sampled_from(CHANNEL_VALUES), min_size=1, max_size=4)
        wire["value"] = draw(st.one_of(st.sampled_from(CHANNEL_VALUES), channels))
    elif op in ("in", "not_in"):
        size = draw(st.integers(1, 4))
        wire["value"] = [
            to_wire(draw, world, field, scalar(draw, world, field, op)) for _ in range(size)
        ]
    elif op == "between":
        low, high = sorted(scalar(draw, world, field, op) for _ in range(2))
        wire["value"] = [to_wire(draw, world, field, low), to_wire(draw, world, field, high)]
    else:
        wire["value"] = to_wire(draw, world, field, scalar(draw, world, field, op))
    return wire


SORTS = st.one_of(
    st.none(),
    st.just([]),
    st.lists(st.sampled_from(SORTABLE), min_size=1, max_size=3, unique=True).flatmap(
        lambda fields: st.tuples(
            *(
                st.one_of(
                    st.just({"field": name}),
                    st.sampled_from(("asc", "desc")).map(lambda d, n=name: {"field": n, "dir": d}),
                )
                for name in fields
            )
        ).map(list)
    ),
)


@dataclass(frozen=True)
class View:
    filters: list[dict]
    sort: list[dict] | None
    agent: str | None
    page_at: int  # which row of the result to page from (modulo its length)
    page_from: int  # and which stored row, in or out of the view (modulo their number)


def views(world: World) -> st.SearchStrategy[View]:
    return st.builds(
        View,
        filters=st.lists(condition(world), max_size=4),
        sort=SORTS,
        agent=st.one_of(st.none(), st.none(), AGENT_IDS),
        page_at=st.integers(0, 10_000),
        page_from=st.integers(0, 10_000),
    )


@dataclass(frozen=True)
class Scenario:
    zone: str
    now: datetime
    rows: list[dict]
    views: list[View]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    @property
    def tenant(self) -> str:
        return tenant_of(self.zone)


@st.composite
def scenario(draw, min_rows: int = 8, max_rows: int = 30, max_views: int = 3) -> Scenario:
    zone = draw(st.sampled_from(ZONES))
    tz = ZoneInfo(zone)
    now = draw(nows(zone))
    moments = landmarks(now, tz)
    ids = draw(st.lists(TEXTS, min_size=min_rows, max_size=max_rows, unique=True))
    created = instants(moments, now)
    rows = [draw(conversation(tenant_of(zone), name, created)) for name in ids]
    world = World(rows, now, tz, moments)
    return Scenario(zone, now, rows, draw(st.lists(views(world), min_size=1, max_size=max_views)))


# --- the reference semantics -----------------------------------------------------------------


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def oracle(filters: list[dict], agent: str | None, row: dict, now: datetime, tz: ZoneInfo) -> bool:
    """docs/views.md read literally: every filter holds, and an agent sees its own."""
    if agent is not None and agent not in (row["agent_id"], row["offer_agent_id"]):
        return False
    return all(_holds(item, row, now, tz) for item in filters)


def _holds(item: dict, row: dict, now: datetime, tz: ZoneInfo) -> bool:
    field, op, wanted = item["field"], item["op"], item.get("value")
    kind = FIELD_KINDS[field]
    if op == "within":
        created = row["created_at"]
        today = now.astimezone(tz).date()
        day = created.astimezone(tz).date()
        if wanted == "today":
            return day == today
        if wanted == "yesterday":
            return day == today - timedelta(days=1)
        return created >= now - WITHIN[wanted]
    if kind == INSTANT:
        value = row["created_at"]
        wanted = [_instant(v) for v in wanted] if op == "between" else _instant(wanted)
    elif kind == DATE:
        value = row["created_at"].astimezone(tz).date()
        wanted = (
            [date.fromisoformat(v) for v in wanted]
            if op == "between"
            else date.fromisoformat(wanted)
        )
    elif kind == CHANNELS:
        used = row["channels"].strip("|").split("|")
        hit = any(channel in used for channel in ([wanted] if isinstance(wanted, str) else wanted))
        return hit if op == "contains" else not hit
    else:
        value = row[field]
    empty = value is None or value == ""
    if op == "is_empty":
        return empty
    if op == "is_not_empty":
        return not empty
    if value is None:
        return op in ("ne", "not_in", "not_contains")
    match op:
        case "eq":
            return value == wanted
        case "ne":
            return value != wanted
        case "in":
            return value in wanted
        case "not_in":
            return value not in wanted
        case "contains":
            return _fold(wanted) in _fold(value)
        case "not_contains":
            return _fold(wanted) not in _fold(value)
        case "gt":
            return value > wanted
        case "gte":
            return value >= wanted
        case "lt":
            return value < wanted
        case "lte":
            return value <= wanted
        case "between":
            return wanted[0] <= value <= wanted[1]
    raise AssertionError(op)


def _fold(text: str) -> str:
    """docs/views.md: Unicode lower-casing, final sigma counting as sigma."""
    return text.lower().replace("\u03c2", "\u03c3")
