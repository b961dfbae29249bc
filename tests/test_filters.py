"""Unit tests of server/live/filters.py: validation of view definitions (422 naming what is
wrong), sort validation, bound parameters against SQL injection, keyset cursors, and
`within` in the tenant's time zone with an injected `now` (midnights on DST days and
across the date line) and `next_time_change`."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from server.core.errors import Refused
from server.live.filters import (
    FIELD_KINDS,
    MAX_FILTERS,
    OPERATORS,
    SortKey,
    compile_view,
    decode_cursor,
    encode_cursor,
    within_range,
)
from server.storage import models as m
from tests.filter_strategies import prepared_database, replace_rows, tenant_of
from tests.support import Backend

MADRID = ZoneInfo("Europe/Madrid")
ALL_OPERATORS = sorted({op for ops in OPERATORS.values() for op in ops})


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def refused(filters=None, sort=None, tz=MADRID) -> Refused:
    with pytest.raises(Refused) as caught:
        compile_view(filters, sort, tz)
    error = caught.value
    assert error.code == "invalid_view"
    assert error.extra["field"] in error.message
    return error


def one(field, op, value=None, **extra) -> list[dict]:
    return [{"field": field, "op": op, "value": value, **extra}]


def row(**values) -> dict:
    """A stored conversation row, as the database gives it back."""
    created = values.pop("created_at", utc(2024, 5, 10, 10))
    base = {
        "tenant_id": tenant_of("Europe/Madrid"),
        "id": "c1",
        "version": 1,
        "status": "queued",
        "state": None,
        "direction": "incoming",
        "channel": "call",
        "channels": "|call|",
        "contact": "+15550100",
        "agent_id": None,
        "offer_agent_id": None,
        "csat": None,
        "hangup_source": None,
        "has_recording": False,
        "wait_s": None,
        "handle_s": None,
        "created_at": created,
        "last_occurred_at": created,
        "change_seq": 1,
        "updated_at": created,
        **{
            name: None
            for name in (
                "customer_name",
                "agent_name",
                "team",
                "disposition",
                "wrap_up_note",
                "contacto_number",
                "ticket_id",
            )
        },
    }
    base.update(values)
    return base


# --- fields and operators --------------------------------------------------------------------


@pytest.mark.parametrize("field", ["colour", "Customer_Name", "created_time", "", 5, None])
def test_an_unknown_field_is_refused_by_name(field):
    error = refused(one(field, "eq", "x"))
    assert error.extra["field"] == "filters[0].field"
    assert repr(field) in error.message


def test_the_error_names_the_filter_that_is_wrong():
    filters = [*one("status", "eq", "queued"), *one("colour", "eq", "x")]
    assert refused(filters).extra["field"] == "filters[1].field"


@pytest.mark.parametrize(
    ("field", "op"),
    [
        ("csat", "contains"),
        ("channel", "gt"),
        ("customer_name", "within"),
        ("customer_name", "between"),
        ("has_recording", "in"),
        ("created_at", "eq"),
        ("created_at", "is_empty"),
        ("channels", "eq"),
        ("status", "contains"),
        ("id", "like"),
        ("id", "EQ"),
        ("id", None),
        ("id", ["eq"]),
    ],
)
def test_an_operator_that_does_not_fit_the_field_is_refused_by_name(field, op):
    error = refused(one(field, op, "x"))
    assert error.extra["field"] == "filters[0].op"
    assert repr(op) in error.message and field in error.message


def test_every_operator_outside_a_fields_kind_is_refused():
    for field, kind in FIELD_KINDS.items():
        for op in ALL_OPERATORS:
            if op not in OPERATORS[kind]:
                assert refused(one(field, op, "x")).extra["field"] == "filters[0].op", (field, op)


@pytest.mark.parametrize(
    ("field", "op", "value"),
    [
        # enums: only the listed values, exactly
        ("status", "eq", "open"),
        ("channel", "eq", "CALL"),
        ("state", "in", ["dropped", "lost"]),
        ("direction", "ne", None),
        ("status", "eq", {"a": 1}),
        ("channels", "contains", "fax"),
        ("channels", "contains", []),
        ("channels", "contains", ["call", "sms", "chat", "whatsapp", "call"]),
        # lists
        ("customer_name", "in", []),
        ("status", "not_in", []),
        ("customer_name", "in", "ann"),
        ("csat", "in", [1, None]),
        ("csat", "in", list(range(1001))),
        # between
        ("csat", "between", [5, 1]),
        ("csat", "between", [1]),
        ("csat", "between", [1, 2, 3]),
        ("csat", "between", "1,5"),
        ("created_date", "between", ["2024-02-02", "2024-02-01"]),
        ("created_at", "between", ["2024-02-01T10:00:00Z", "2024-02-01T09:59:59Z"]),
        ("created_at", "between", ["2024-02-01T10:00:00+01:00", "2024-02-01T08:59:59Z"]),
        # dates and instants
        ("created_date", "eq", "2024-02-30"),
        ("created_date", "eq", "yesterday"),
        ("created_date", "eq", 20240101),
        ("created_date", "eq", "9999-12-31"),
        ("created_date", "gt", "0001-01-01"),
        ("created_at", "gt", "2024-01-01T10:00:00"),
        ("created_at", "gt", "2024-01-01"),
        ("created_at", "gt", "soon"),
        ("created_at", "gt", 1704103200),
        ("created_at", "gt", "0001-01-01T00:00:00+01:00"),
        ("created_at", "lte", "9999-12-31T23:59:59.999999Z"),
        # within
        ("created_at", "within", "last_2h"),
        ("created_at", "within", "Today"),
        ("created_date", "within", "tomorrow"),
        ("created_at", "within", None),
        ("created_at", "within", ["today"]),
        ("created_at", "within", {"today": 1}),
        # is_empty takes no value
        ("customer_name", "is_empty", "x"),
        ("customer_name", "is_not_empty", ""),
        ("csat", "is_empty", 0),
        # numbers and booleans
        ("csat", "eq", "3"),
        ("csat", "eq", True),
        ("csat", "gt", float("nan")),
        ("csat", "gt", float("inf")),
        ("wait_s", "lt", 1e16),
        ("has_recording", "eq", "true"),
        ("has_recording", "eq", 1),
        # text
        ("customer_name", "eq", 5),
        ("customer_name", "eq", None),
        ("customer_name", "contains", "x" * 1001),
        ("customer_name", "contains", "a\x00b"),
        ("customer_name", "eq", "\ud800"),
        ("agent_id", "in", ["a1", "a\x00"]),
    ],
)
def test_a_bad_value_is_refused_by_name(field, op, value):
    error = refused(one(field, op, value))
    assert error.extra["field"] == "filters[0].value"


def test_values_at_their_limits_are_accepted():
    query = compile_view(
        [
            {"field": "customer_name", "op": "is_empty"},
            {"field": "customer_name", "op": "is_not_empty", "value": None},
            {"field": "csat", "op": "between", "value": [3, 3]},
            {"field": "csat", "op": "in", "value": list(range(1000))},
            {"field": "wait_s", "op": "gt", "value": -1e15},
            {"field": "created_date", "op": "between", "value": ["2024-02-01", "2024-02-01"]},
            {"field": "created_at", "op": "gte", "value": "2024-02-01T10:00:00.5+05:30"},
            {"field": "channels", "op": "contains", "value": "sms"},
            {"field": "channels", "op": "not_contains", "value": ["sms", "chat"]},
            {"field": "customer_name", "op": "contains", "value": "x" * 1000},
            {"field": "customer_name", "op": "eq", "value": ""},
        ],
        None,
        MADRID,
    )
    assert [c.value for c in query.conditions[5:7]] == [
        (date(2024, 2, 1), date(2024, 2, 1)),
        utc(2024, 2, 1, 4, 30, 0, 500000),
    ]
    assert query.conditions[7].value == ("sms",)


@pytest.mark.parametrize(
    "filters",
    [
        {"field": "id", "op": "eq", "value": "x"},
        "status=queued",
        [["id", "eq", "x"]],
        [{"field": "id", "op": "eq", "value": "x", "values": ["y"]}],
        [{"field": "id", "op": "eq", "value": "x"}] * (MAX_FILTERS + 1),
    ],
)
def test_a_malformed_filter_list_is_refused(filters):
    refused(filters)


def test_no_filters_is_every_conversation():
    for filters in (None, []):
        query = compile_view(filters, None, MADRID)
        assert query.conditions == () and query.matches(row(), utc(2024, 1, 1))


# --- sort ------------------------------------------------------------------------------------


def test_the_default_sort_is_newest_first_with_id_breaking_ties():
    expected = (SortKey("created_at", True), SortKey("id", True))
    assert compile_view(None, None, MADRID).sort == expected
    assert compile_view(None, [], MADRID).sort == expected


def test_a_sort_always_ends_with_id_in_the_first_keys_direction():
    assert compile_view(None, [{"field": "status"}], MADRID).sort == (
        SortKey("status", False),
        SortKey("id", False),
    )
    sort = [{"field": "contact", "dir": "desc"}, {"field": "created_at", "dir": "asc"}]
    assert compile_view(None, sort, MADRID).sort_fields == ("contact", "created_at", "id")
    sort = [{"field": "id", "dir": "desc"}, {"field": "created_at"}]
    assert compile_view(None, sort, MADRID).sort == (
        SortKey("id", True),
        SortKey("created_at", False),
    )


@pytest.mark.parametrize(
    ("sort", "where"),
    [
        ([{"field": "customer_name"}], "sort[0].field"),
        ([{"field": "csat", "dir": "asc"}], "sort[0].field"),
        ([{"field": "id"}, {"field": ["x"]}], "sort[1].field"),
        ([{"field": "id", "dir": "up"}], "sort[0].dir"),
        ([{"field": "id", "dir": "DESC"}], "sort[0].dir"),
        ([{"field": "status"}, {"field": "status", "dir": "desc"}], "sort[1].field"),
        ([{"field": "id", "direction": "asc"}], "sort[0]"),
        ([["id", "asc"]], "sort[0]"),
        ([{"field": f} for f in ("status", "channel", "direction", "id")], "sort"),
        ({"field": "id"}, "sort"),
        ("created_at", "sort"),
    ],
)
def test_a_bad_sort_is_refused_by_name(sort, where):
    assert refused(sort=sort).extra["field"] == where


def test_sort_key_orders_as_the_sort_says():
    query = compile_view(None, [{"field": "status"}, {"field": "created_at", "dir": "desc"}], UTC)
    rows = [
        row(id="a", status="queued", created_at=utc(2024, 1, 1)),
        row(id="b", status="active", created_at=utc(2024, 1, 1)),
        row(id="c", status="queued", created_at=utc(2024, 1, 2)),
        row(id="d", status="queued", created_at=utc(2024, 1, 2)),
    ]
    assert [r["id"] for r in sorted(rows, key=query.sort_key)] == ["b", "c", "d", "a"]


# --- bound parameters -------------------------------------------------------------------------

INJECTION = "x'; DROP TABLE conversations; --"


def injection_view():
    return compile_view(
        [
            {"field": "customer_name", "op": "eq", "value": INJECTION},
            {"field": "contact", "op": "not_in", "value": [INJECTION, "' OR '1'='1"]},
            {"field": "agent_name", "op": "contains", "value": INJECTION.upper()},
            {"field": "team", "op": "not_contains", "value": "' OR 1=1 --"},
        ],
        None,
        MADRID,
    )


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "pg"])
def test_a_value_is_always_a_bound_parameter(dialect):
    query = injection_view()
    table = m.conversations
    statement = select(table.c.id).where(query.where(table, dialect.name, utc(2024, 1, 1)))
    compiled = statement.compile(dialect=dialect)
    sql = str(compiled)
    for fragment in ("DROP", "drop", "OR '1'", "OR 1=1", "x'"):
        assert fragment not in sql
    params = list(compiled.params.values())
    assert INJECTION in params
    assert f"%{INJECTION.lower()}%" in params  # contains: a folded LIKE pattern
    assert [INJECTION, "' OR '1'='1"] in params


async def test_an_injection_attempt_finds_nothing_and_breaks_nothing(backend: Backend):
    db = await prepared_database(backend.database_url)
    try:
        tenant = tenant_of("Europe/Madrid")
        await replace_rows(db, tenant, [row(customer_name="Ann", agent_name="Bob")])
        query = compile_view(
            [{"field": "customer_name", "op": "eq", "value": INJECTION}], None, MADRID
        )
        table = m.conversations
        async with db.read() as conn:
            found = await conn.execute(
                select(table.c.id).where(query.where(table, db.dialect, utc(2024, 1, 1)))
            )
            assert found.all() == []
            found = await conn.execute(
                select(table.c.id).where(injection_view().where(table, db.dialect, utc(2024, 1, 1)))
            )
            assert found.all() == []
            assert (await conn.execute(select(func.count()).select_from(table))).scalar() == 1
    finally:
        await db.close()


def test_like_metacharacters_are_matched_literally():
    query = compile_view(one("customer_name", "contains", "50%_a\\b"), None, MADRID)
    now = utc(2024, 1, 1)
    assert query.matches(row(customer_name="Save 50%_A\\B now"), now)
    assert not query.matches(row(customer_name="Save 50%XA\\B now"), now)
    assert not query.matches(row(customer_name="Save 500_a\\b now"), now)
    table = m.conversations
    compiled = query.where(table, "sqlite", now).compile(dialect=sqlite.dialect())
    assert "%50\\%\\_a\\\\b%" in compiled.params.values()


# --- cursors ---------------------------------------------------------------------------------


def cursor_of(values) -> str:
    raw = json.dumps(values).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_cursor_gives_back_the_rows_sort_values():
    query = compile_view(None, [{"field": "contact"}], MADRID)
    last = row(id="Ωmega/1", contact="+3460000000", created_at=utc(2024, 3, 31, 1, 0, 0, 1))
    decoded = decode_cursor(query, encode_cursor(query, last))
    assert decoded == {"contact": "+3460000000", "id": "Ωmega/1"}
    query = compile_view(None, None, MADRID)
    decoded = decode_cursor(query, encode_cursor(query, last))
    assert decoded == {"created_at": utc(2024, 3, 31, 1, 0, 0, 1), "id": "Ωmega/1"}
    assert decoded["created_at"].tzinfo is not None


VALID_T = {"t": "2024-01-01T00:00:00+00:00"}


TAMPERED = {
    "empty": "",
    "not base64": "!!!!",
    "not ascii": "é",
    "not json": "bm90IGpzb24",
    "a list": cursor_of(["2024-01-01", "x"]),
    "a field missing": cursor_of({"created_at": VALID_T}),
    "a field too many": cursor_of({"created_at": VALID_T, "id": "x", "status": "new"}),
    "another order": cursor_of({"contact": "x", "id": "x"}),
    "instant as number": cursor_of({"created_at": 1704067200, "id": "x"}),
    "instant as text": cursor_of({"created_at": "2024-01-01T00:00:00Z", "id": "x"}),
    "naive instant": cursor_of({"created_at": {"t": "2024-01-01T00:00:00"}, "id": "x"}),
    "not an instant": cursor_of({"created_at": {"t": "yesterday"}, "id": "x"}),
    "instant key": cursor_of({"created_at": {"u": "2024-01-01T00:00:00Z"}, "id": "x"}),
    "instant number": cursor_of({"created_at": {"t": 5}, "id": "x"}),
    "instant in a list": cursor_of({"created_at": ["2024-01-01T00:00:00Z"], "id": "x"}),
    "instant overflows": cursor_of({"created_at": {"t": "0001-01-01T00:00:00+05:00"}, "id": "x"}),
    "id number": cursor_of({"created_at": VALID_T, "id": 7}),
    "id null": cursor_of({"created_at": VALID_T, "id": None}),
    "id boolean": cursor_of({"created_at": VALID_T, "id": True}),
    "id instant": cursor_of({"created_at": VALID_T, "id": VALID_T}),
    "id list": cursor_of({"created_at": VALID_T, "id": ["x"]}),
    "id with NUL": cursor_of({"created_at": VALID_T, "id": "a\x00"}),
    "id lone surrogate": cursor_of({"created_at": VALID_T, "id": "\ud800"}),
    "truncated": cursor_of({"created_at": VALID_T, "id": "x"})[:-6],
}


@pytest.mark.parametrize("cursor", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_tampered_cursor_is_refused(cursor):
    query = compile_view(None, None, MADRID)
    with pytest.raises(Refused) as caught:
        decode_cursor(query, cursor)
    assert caught.value.code == "invalid_cursor"


def test_a_cursor_of_another_views_order_is_refused():
    by_status = compile_view(None, [{"field": "status"}], MADRID)
    cursor = encode_cursor(by_status, row())
    with pytest.raises(Refused) as caught:
        decode_cursor(compile_view(None, None, MADRID), cursor)
    assert caught.value.code == "invalid_cursor"


async def test_every_cursor_that_decodes_can_be_queried(backend: Backend):
    """What decode_cursor lets through must not fail in SQL (that would be a 500)."""
    db = await prepared_database(backend.database_url)
    try:
        tenant = tenant_of("Europe/Madrid")
        rows = [row(id=f"c{i}", created_at=utc(2024, 1, 1, i)) for i in range(3)]
        await replace_rows(db, tenant, rows)
        query = compile_view(None, [{"field": "status"}, {"field": "created_at"}], MADRID)
        table = m.conversations
        for values in (
            {"status": "queued", "created_at": VALID_T, "id": "c0"},
            {"status": "\u00e9\u00df", "created_at": {"t": "0001-01-01T00:00:00Z"}, "id": ""},
            {"status": "", "created_at": {"t": "9999-12-31T23:59:59.999999+00:00"}, "id": "z"},
        ):
            last = decode_cursor(query, cursor_of(values))
            statement = (
                select(table.c.id)
                .where(query.after(table, db.dialect, last))
                .order_by(*query.order_by(table, db.dialect))
            )
            async with db.read() as conn:
                await conn.execute(statement)
        last = decode_cursor(query, encode_cursor(query, rows[0]))
        statement = (
            select(table.c.id)
            .where(query.after(table, db.dialect, last))
            .order_by(*query.order_by(table, db.dialect))
        )
        async with db.read() as conn:
            assert (await conn.execute(statement)).scalars().all() == ["c1", "c2"]
    finally:
        await db.close()


# --- within, in the tenant's time zone --------------------------------------------------------


def within(period: str, tz: str) -> object:
    return compile_view(one("created_at", "within", period), None, ZoneInfo(tz))


@pytest.mark.parametrize(
    ("tz", "now", "today", "yesterday"),
    [
        # an ordinary day in Madrid (CEST, UTC+2)
        (
            "Europe/Madrid",
            utc(2024, 5, 10, 10),
            (utc(2024, 5, 9, 22), utc(2024, 5, 10, 22)),
            (utc(2024, 5, 8, 22), utc(2024, 5, 9, 22)),
        ),
        # just after midnight, still the previous day in UTC
        (
            "Europe/Madrid",
            utc(2024, 5, 9, 22, 0, 0, 1),
            (utc(2024, 5, 9, 22), utc(2024, 5, 10, 22)),
            (utc(2024, 5, 8, 22), utc(2024, 5, 9, 22)),
        ),
        # clocks go forward at 02:00: a 23-hour day
        (
            "Europe/Madrid",
            utc(2024, 3, 31, 12),
            (utc(2024, 3, 30, 23), utc(2024, 3, 31, 22)),
            (utc(2024, 3, 29, 23), utc(2024, 3, 30, 23)),
        ),
        # clocks go back at 03:00: a 25-hour day
        (
            "Europe/Madrid",
            utc(2024, 10, 27, 12),
            (utc(2024, 10, 26, 22), utc(2024, 10, 27, 23)),
            (utc(2024, 10, 25, 22), utc(2024, 10, 26, 22)),
        ),
        # the day after the 25-hour day: yesterday lasts 25 hours
        (
            "Europe/Madrid",
            utc(2024, 10, 28, 0),
            (utc(2024, 10, 27, 23), utc(2024, 10, 28, 23)),
            (utc(2024, 10, 26, 22), utc(2024, 10, 27, 23)),
        ),
        # DST began at midnight: 2018-11-04 started at 01:00 local
        (
            "America/Sao_Paulo",
            utc(2018, 11, 4, 12),
            (utc(2018, 11, 4, 3), utc(2018, 11, 5, 2)),
            (utc(2018, 11, 3, 3), utc(2018, 11, 4, 3)),
        ),
        # DST ended at midnight: 23:00-24:00 of 2019-02-16 happened twice
        (
            "America/Sao_Paulo",
            utc(2019, 2, 16, 12),
            (utc(2019, 2, 16, 2), utc(2019, 2, 17, 3)),
            (utc(2019, 2, 15, 2), utc(2019, 2, 16, 2)),
        ),
        # midnight happened twice (01:00 back to 00:00): the day starts at the first
        (
            "America/Havana",
            utc(2024, 11, 3, 12),
            (utc(2024, 11, 3, 4), utc(2024, 11, 4, 5)),
            (utc(2024, 11, 2, 4), utc(2024, 11, 3, 4)),
        ),
        # UTC+14: at 09:59 UTC it is 23:59 local; at 10:00 UTC the next day begins
        (
            "Pacific/Kiritimati",
            utc(2024, 6, 1, 9, 59),
            (utc(2024, 5, 31, 10), utc(2024, 6, 1, 10)),
            (utc(2024, 5, 30, 10), utc(2024, 5, 31, 10)),
        ),
        (
            "Pacific/Kiritimati",
            utc(2024, 6, 1, 10),
            (utc(2024, 6, 1, 10), utc(2024, 6, 2, 10)),
            (utc(2024, 5, 31, 10), utc(2024, 6, 1, 10)),
        ),
        # 1994-12-31 never happened on Kiritimati (UTC-10 to UTC+14): yesterday is empty
        (
            "Pacific/Kiritimati",
            utc(1994, 12, 31, 12),
            (utc(1994, 12, 31, 10), utc(1995, 1, 1, 10)),
            (utc(1994, 12, 31, 10), utc(1994, 12, 31, 10)),
        ),
        # half-hour offset
        (
            "Asia/Kolkata",
            utc(2024, 5, 5, 18, 29),
            (utc(2024, 5, 4, 18, 30), utc(2024, 5, 5, 18, 30)),
            (utc(2024, 5, 3, 18, 30), utc(2024, 5, 4, 18, 30)),
        ),
    ],
)
def test_today_and_yesterday_start_at_the_tenants_midnight(tz, now, today, yesterday):
    assert within_range("today", now, ZoneInfo(tz)) == today
    assert within_range("yesterday", now, ZoneInfo(tz)) == yesterday
    micro = timedelta(microseconds=1)
    for period, (low, high) in (("today", today), ("yesterday", yesterday)):
        query = within(period, tz)
        assert not query.matches(row(created_at=low - micro), now)
        assert query.matches(row(created_at=low), now) == (low < high)
        assert query.matches(row(created_at=high - micro), now) == (low < high)
        assert not query.matches(row(created_at=high), now)


def test_created_date_is_the_local_date():
    tz = "America/Sao_Paulo"
    now = utc(2018, 11, 10)
    query = compile_view(one("created_date", "eq", "2018-11-04"), None, ZoneInfo(tz))
    assert not query.matches(row(created_at=utc(2018, 11, 4, 2, 59, 59, 999999)), now)
    assert query.matches(row(created_at=utc(2018, 11, 4, 3)), now)
    assert query.matches(row(created_at=utc(2018, 11, 5, 1, 59, 59)), now)
    assert not query.matches(row(created_at=utc(2018, 11, 5, 2)), now)
    after = compile_view(one("created_date", "gt", "2018-11-04"), None, ZoneInfo(tz))
    assert after.matches(row(created_at=utc(2018, 11, 5, 2)), now)
    assert not after.matches(row(created_at=utc(2018, 11, 5, 1, 59)), now)
    other = compile_view(one("created_date", "ne", "2018-11-04"), None, ZoneInfo(tz))
    assert other.matches(row(created_at=utc(2018, 11, 5, 2)), now)
    assert not other.matches(row(created_at=utc(2018, 11, 4, 3)), now)


def test_created_at_comparisons_take_the_offset_into_account():
    query = compile_view(
        one("created_at", "between", ["2024-01-01T10:00:00+01:00", "2024-01-01T10:00:00Z"]),
        None,
        MADRID,
    )
    now = utc(2024, 2, 1)
    assert query.matches(row(created_at=utc(2024, 1, 1, 9)), now)
    assert query.matches(row(created_at=utc(2024, 1, 1, 10)), now)
    assert not query.matches(row(created_at=utc(2024, 1, 1, 8, 59, 59, 999999)), now)
    assert not query.matches(row(created_at=utc(2024, 1, 1, 10, 0, 0, 1)), now)


@pytest.mark.parametrize(
    ("period", "span"),
    [
        ("last_1h", timedelta(hours=1)),
        ("last_24h", timedelta(hours=24)),
        ("last_7d", timedelta(days=7)),
        ("last_30d", timedelta(days=30)),
    ],
)
def test_last_periods_reach_back_from_now(period, span):
    now = utc(2024, 3, 31, 1, 30)  # across Madrid's DST change: spans are real time
    query = within(period, "Europe/Madrid")
    assert query.relative
    assert query.matches(row(created_at=now - span), now)
    assert not query.matches(row(created_at=now - span - timedelta(microseconds=1)), now)
    assert query.matches(row(created_at=now), now)
    assert query.matches(row(created_at=now + timedelta(minutes=5)), now)  # a clock ahead
    assert within_range(period, now, MADRID) == (now - span, None)


def test_where_uses_the_injected_now():
    query = within("today", "Pacific/Kiritimati")
    table = m.conversations
    clause = query.where(table, "sqlite", utc(2024, 6, 1, 10))
    params = clause.compile(dialect=sqlite.dialect()).params
    assert sorted(params.values()) == [utc(2024, 6, 1, 10), utc(2024, 6, 2, 10)]


# --- next_time_change -------------------------------------------------------------------------


def test_a_view_without_within_never_changes_with_the_clock():
    query = compile_view(one("created_date", "eq", "2024-01-01"), None, MADRID)
    assert not query.relative
    assert query.next_time_change(utc(2024, 1, 1, 12), utc(2024, 1, 1)) is None


@pytest.mark.parametrize(
    ("tz", "now", "expected"),
    [
        ("Europe/Madrid", utc(2024, 5, 10, 10), utc(2024, 5, 10, 22)),
        ("Europe/Madrid", utc(2024, 3, 30, 23, 30), utc(2024, 3, 31, 22)),  # a 23-hour day
        ("Europe/Madrid", utc(2024, 10, 26, 22), utc(2024, 10, 27, 23)),  # a 25-hour day
        ("America/Sao_Paulo", utc(2018, 11, 3, 15), utc(2018, 11, 4, 3)),  # no 00:00
        ("America/Havana", utc(2024, 11, 3, 4, 30), utc(2024, 11, 4, 5)),  # two 00:00
        ("Pacific/Kiritimati", utc(1994, 12, 30, 12), utc(1994, 12, 31, 10)),  # a lost day
        ("Pacific/Kiritimati", utc(2024, 6, 1, 9, 59), utc(2024, 6, 1, 10)),
    ],
)
def test_day_filters_change_at_the_tenants_next_midnight(tz, now, expected):
    for period in ("today", "yesterday"):
        query = within(period, tz)
        assert query.next_time_change(now, None) == expected
        assert query.next_time_change(now, utc(2000, 1, 1)) == expected
    # and membership does change there
    query = within("today", tz)
    just_before = row(created_at=expected - timedelta(microseconds=1))
    assert query.matches(just_before, expected - timedelta(microseconds=1))
    assert not query.matches(just_before, expected)


def test_a_last_period_changes_when_its_oldest_row_falls_out():
    query = within("last_1h", "Europe/Madrid")
    now = utc(2024, 5, 10, 10)
    oldest = now - timedelta(minutes=20)
    moment = query.next_time_change(now, oldest)
    assert moment is not None and moment > now
    assert query.matches(row(created_at=oldest), moment - timedelta(microseconds=1))
    assert not query.matches(row(created_at=oldest), moment)
    # nothing to drop: no change by the clock alone
    assert query.next_time_change(now, None) is None
    # an oldest row already out (a stale value): look again now, never in the past
    assert query.next_time_change(now, now - timedelta(hours=2)) == now


def test_the_earliest_change_of_several_filters_wins():
    query = compile_view(
        [*one("created_at", "within", "last_24h"), *one("created_date", "within", "today")],
        None,
        MADRID,
    )
    now = utc(2024, 5, 10, 10)
    assert query.next_time_change(now, now - timedelta(hours=23)) == (
        now + timedelta(hours=1, microseconds=1)
    )
    assert query.next_time_change(now, now - timedelta(hours=1)) == utc(2024, 5, 10, 22)
