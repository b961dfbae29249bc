"""View definitions: validated once, compiled into two forms that must agree.

* `ViewQuery.where(table, dialect, now)`: a SQL clause with bound parameters only
  (snapshots, pages, counts);
* `ViewQuery.matches(row, now)`: the same test on a stored row in memory (live
  changes).

A property test holds the two to the same answers. Both read a *stored* row: the
columns of models.conversations, so `created_date` and `within` are computed from
`created_at` in the tenant's time zone, and `channels` is the "|a|b|" text.

Semantics a supervisor can rely on (docs/views.md): a conversation is in the view
when it satisfies every filter; `ne`, `not_in` and `not_contains` include rows where
the field is empty; every other operator excludes them; `contains` and
`not_contains` ignore case (Unicode lower-casing, the same in Python, in SQLite
through our function `sb_fold` and in PostgreSQL through ICU).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import total_ordering
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, false, func, literal, or_, true, tuple_
from sqlalchemy.sql import ColumnElement

from server.core.errors import Refused
from server.core.text import FINAL_SIGMA, SIGMA, fold, storable
from server.storage.repository import decode_channels
from state_machine import State, Status

# --- fields ----------------------------------------------------------------------------

TEXT, ENUM, CHANNELS, INSTANT, DATE, NUMBER, BOOLEAN = (
    "text",
    "enum",
    "channels",
    "instant",
    "date",
    "number",
    "boolean",
)

ENUM_VALUES = {
    "direction": ("incoming", "outgoing"),
    "state": tuple(state.value for state in State),  # the machine's, in its order
    "channel": ("call", "chat", "sms", "whatsapp", "omnichannel"),
    "status": tuple(status.value for status in Status),
    "hangup_source": ("customer", "agent", "system"),
}
CHANNEL_VALUES = ("call", "chat", "sms", "whatsapp")

FIELD_KINDS: dict[str, str] = {
    **{
        name: TEXT
        for name in (
            "id",
            "customer_name",
            "agent_name",
            "agent_id",
            "team",
            "disposition",
            "wrap_up_note",
            "contact",
            "contacto_number",
            "ticket_id",
        )
    },
    **{name: ENUM for name in ENUM_VALUES},
    "channels": CHANNELS,
    "created_at": INSTANT,
    "created_date": DATE,
    "csat": NUMBER,
    "wait_s": NUMBER,
    "handle_s": NUMBER,
    "has_recording": BOOLEAN,
}

OPERATORS: dict[str, tuple[str, ...]] = {
    TEXT: ("eq", "ne", "in", "not_in", "contains", "not_contains", "is_empty", "is_not_empty"),
    ENUM: ("eq", "ne", "in", "not_in", "is_empty", "is_not_empty"),
    CHANNELS: ("contains", "not_contains"),
    INSTANT: ("gt", "gte", "lt", "lte", "between", "within"),
    DATE: ("eq", "ne", "gt", "gte", "lt", "lte", "between", "within"),
    NUMBER: (
        "eq",
        "ne",
        "in",
        "not_in",
        "gt",
        "gte",
        "lt",
        "lte",
        "between",
        "is_empty",
        "is_not_empty",
    ),
    BOOLEAN: ("eq", "ne"),
}

# Columns a view may be sorted by: never empty, so keyset paging stays simple.
SORTABLE = ("created_at", "id", "status", "channel", "direction", "contact")

WITHIN = {
    "today": None,
    "yesterday": None,
    "last_1h": timedelta(hours=1),
    "last_24h": timedelta(hours=24),
    "last_7d": timedelta(days=7),
    "last_30d": timedelta(days=30),
}

MAX_FILTERS = 20
MAX_SORT_KEYS = 3
MAX_LIST = 1000
MAX_TEXT = 1000


# --- validation -------------------------------------------------------------------------


def _invalid(field: str, message: str) -> Refused:
    return Refused("invalid_view", f"{field}: {message}", field=field)


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any  # validated and converted: str, list, datetime, date, float, bool, None


@dataclass(frozen=True)
class SortKey:
    field: str
    descending: bool


def parse_conditions(filters: Any) -> tuple[Condition, ...]:
    if filters is None:
        return ()
    if not isinstance(filters, list):
        raise _invalid("filters", "must be a list of {field, op, value} objects")
    if len(filters) > MAX_FILTERS:
        raise _invalid("filters", f"at most {MAX_FILTERS} filters")
    return tuple(_condition(item, index) for index, item in enumerate(filters))


def _condition(item: Any, index: int) -> Condition:
    where = f"filters[{index}]"
    if not isinstance(item, dict):
        raise _invalid(where, "must be an object {field, op, value}")
    extra = set(item) - {"field", "op", "value"}
    if extra:
        raise _invalid(f"{where}.{sorted(extra)[0]}", "unknown key (field, op, value)")
    field, op = item.get("field"), item.get("op")
    if not isinstance(field, str) or field not in FIELD_KINDS:
        raise _invalid(
            f"{where}.field",
            f"unknown field {field!r}; filterable fields: {', '.join(FIELD_KINDS)}",
        )
    kind = FIELD_KINDS[field]
    if op not in OPERATORS[kind]:
        raise _invalid(
            f"{where}.op",
            f"operator {op!r} does not fit {field} ({kind}); use "
            f"one of {', '.join(OPERATORS[kind])}",
        )
    value = _value(field, kind, op, item.get("value"), f"{where}.value")
    return Condition(field, op, value)


def _value(field: str, kind: str, op: str, value: Any, where: str) -> Any:
    if op in ("is_empty", "is_not_empty"):
        if value is not None:
            raise _invalid(where, f"{op} takes no value")
        return None
    if op == "within":
        if not isinstance(value, str) or value not in WITHIN:
            raise _invalid(where, f"must be one of {', '.join(WITHIN)}")
        return value
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or len(value) > MAX_LIST:
            raise _invalid(where, f"must be a list of 1 to {MAX_LIST} values")
        return tuple(_scalar(field, kind, item, where) for item in value)
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise _invalid(where, "must be a list [low, high]")
        low, high = (_scalar(field, kind, item, where) for item in value)
        if low > high:
            raise _invalid(where, "low must not be greater than high")
        return (low, high)
    if kind == CHANNELS:
        items = value if isinstance(value, list) else [value]
        if not items or len(items) > len(CHANNEL_VALUES):
            raise _invalid(where, "must be a channel or a list of channels")
        return tuple(_scalar(field, kind, item, where) for item in items)
    return _scalar(field, kind, value, where)


def _scalar(field: str, kind: str, value: Any, where: str) -> Any:
    if kind == TEXT:
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise _invalid(where, f"must be a string of at most {MAX_TEXT} characters")
        if not storable(value):
            raise _invalid(where, "must not contain NUL characters or lone surrogates")
        return value
    if kind == ENUM:
        if value not in ENUM_VALUES[field]:
            raise _invalid(where, f"must be one of {', '.join(ENUM_VALUES[field])}")
        return value
    if kind == CHANNELS:
        if value not in CHANNEL_VALUES:
            raise _invalid(where, f"must be one of {', '.join(CHANNEL_VALUES)}")
        return value
    if kind == NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise _invalid(where, "must be a number")
        if abs(value) > 1e15:
            raise _invalid(where, "is out of range")
        return float(value)
    if kind == BOOLEAN:
        if not isinstance(value, bool):
            raise _invalid(where, "must be true or false")
        return value
    if kind == DATE:
        try:
            day = date.fromisoformat(value)
        except (TypeError, ValueError):
            raise _invalid(where, "must be a date YYYY-MM-DD") from None
        if not 1 < day.year < 9999:  # so that its midnights and the next day exist
            raise _invalid(where, "is out of range")
        return day
    if kind == INSTANT:
        try:
            instant = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise _invalid(where, "must be an RFC 3339 timestamp") from None
        if instant.tzinfo is None:
            raise _invalid(where, "needs a time zone offset (Z or +hh:mm)")
        try:
            instant = instant.astimezone(UTC)
        except OverflowError:
            raise _invalid(where, "is out of range") from None
        if not 1 < instant.year < 9999:  # so that instant ± 1 µs exists
            raise _invalid(where, "is out of range")
        return instant
    raise AssertionError(kind)


def parse_sort(sort: Any) -> tuple[SortKey, ...]:
    """The view's order, always ending with `id` so that it is total."""
    if sort is None or sort == []:
        keys = [SortKey("created_at", True)]
    else:
        if not isinstance(sort, list) or len(sort) > MAX_SORT_KEYS:
            raise _invalid(
                "sort", f"must be a list of at most {MAX_SORT_KEYS} {{field, dir}} objects"
            )
        keys = []
        for index, item in enumerate(sort):
            where = f"sort[{index}]"
            if not isinstance(item, dict) or set(item) - {"field", "dir"}:
                raise _invalid(where, "must be an object {field, dir}")
            if item.get("field") not in SORTABLE:
                raise _invalid(f"{where}.field", f"must be one of {', '.join(SORTABLE)}")
            if item.get("dir", "asc") not in ("asc", "desc"):
                raise _invalid(f"{where}.dir", "must be asc or desc")
            if any(key.field == item["field"] for key in keys):
                raise _invalid(f"{where}.field", "is already in the sort")
            keys.append(SortKey(item["field"], item.get("dir", "asc") == "desc"))
    if keys[-1].field != "id" and all(key.field != "id" for key in keys):
        keys.append(SortKey("id", keys[0].descending))
    return tuple(keys)


# --- the compiled query ---------------------------------------------------------------------


@total_ordering
class _Descending:
    """Wraps a sort value so that Python's ascending sort orders it descending."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return self.value == other.value

    def __lt__(self, other):
        return self.value > other.value

    def __hash__(self):
        return hash(self.value)


@dataclass(frozen=True)
class ViewQuery:
    conditions: tuple[Condition, ...]
    sort: tuple[SortKey, ...]
    tz: ZoneInfo
    # An agent sees only its own conversations in any view: its own, or offered to it.
    agent: str | None = None

    @property
    def sort_fields(self) -> tuple[str, ...]:
        return tuple(key.field for key in self.sort)

    @property
    def relative(self) -> bool:
        """Membership changes as time passes (a `within` filter)."""
        return any(condition.op == "within" for condition in self.conditions)

    # ----- in memory

    def matches(self, row: Mapping[str, Any], now: datetime) -> bool:
        if self.agent is not None and self.agent not in (row["agent_id"], row["offer_agent_id"]):
            return False
        return all(self._test(condition, row, now) for condition in self.conditions)

    def sort_key(self, row: Mapping[str, Any]) -> tuple:
        return tuple(
            _Descending(row[key.field]) if key.descending else row[key.field] for key in self.sort
        )

    def _test(self, c: Condition, row: Mapping[str, Any], now: datetime) -> bool:
        kind = FIELD_KINDS[c.field]
        if kind in (DATE, INSTANT):
            value = row["created_at"]
            low, high = self._instant_range(c, now)
            inside = (low is None or value >= low) and (high is None or value < high)
            return not inside if c.op == "ne" else inside
        value = row[c.field]
        if kind == CHANNELS:
            used = set(decode_channels(value))
            hit = any(channel in used for channel in c.value)
            return hit if c.op == "contains" else not hit
        if c.op == "is_empty":
            return value is None or value == ""
        if c.op == "is_not_empty":
            return value is not None and value != ""
        if value is None:
            return c.op in ("ne", "not_in", "not_contains")
        if kind == BOOLEAN:
            value = bool(value)
        return _COMPARE[c.op](value, c.value)

    # ----- in SQL

    def where(self, table, dialect: str, now: datetime) -> ColumnElement:
        clauses = [self._clause(condition, table, dialect, now) for condition in self.conditions]
        if self.agent is not None:
            clauses.append(
                or_(table.c.agent_id == self.agent, table.c.offer_agent_id == self.agent)
            )
        return and_(true(), *clauses)

    def order_by(self, table, dialect: str) -> list:
        return [
            self._sort_column(table, key.field, dialect).desc()
            if key.descending
            else self._sort_column(table, key.field, dialect).asc()
            for key in self.sort
        ]

    @property
    def one_direction(self) -> bool:
        """Every sort key runs the same way: `after` is then one row comparison."""
        return len({key.descending for key in self.sort}) == 1

    def after(self, table, dialect: str, last: Mapping[str, Any]) -> ColumnElement:
        """Rows that sort after `last` (its sort values), for keyset paging.

        With one direction, a row comparison: a single index bound. With mixed
        directions no single bound exists; `after_levels` gives the ranges that seek."""
        if self.one_direction:
            columns = tuple_(*(self._sort_column(table, k.field, dialect) for k in self.sort))
            values = tuple_(*(_bound(table, k.field, last[k.field]) for k in self.sort))
            return columns < values if self.sort[0].descending else columns > values
        return or_(*self.after_levels(table, dialect, last))

    def after_levels(self, table, dialect: str, last: Mapping[str, Any]) -> list[ColumnElement]:
        """`after` as disjoint ranges that follow one another in the view's order, the
        deepest first: equal on the first i keys and beyond on key i+1. Each is one
        index range, so a page is a UNION ALL of them, each limited
        (server/live/queries.py page_statement)."""
        levels = []
        for index in reversed(range(len(self.sort))):
            equal = [
                self._sort_column(table, k.field, dialect) == last[k.field]
                for k in self.sort[:index]
            ]
            key = self.sort[index]
            column = self._sort_column(table, key.field, dialect)
            beyond = column < last[key.field] if key.descending else column > last[key.field]
            levels.append(and_(*equal, beyond))
        return levels

    def _sort_column(self, table, field: str, dialect: str):
        column = table.c[field]
        if dialect == "postgresql" and FIELD_KINDS.get(field) in (TEXT, ENUM):
            return column.collate("C")  # code point order, as Python compares strings
        return column

    def _clause(self, c: Condition, table, dialect: str, now: datetime) -> ColumnElement:
        kind = FIELD_KINDS[c.field]
        if kind in (DATE, INSTANT):
            column = table.c.created_at
            low, high = self._instant_range(c, now)
            parts = []
            if low is not None:
                parts.append(column >= low)
            if high is not None:
                parts.append(column < high)
            inside = and_(true(), *parts)
            return ~inside if c.op == "ne" else inside
        column = table.c[c.field]
        if kind == CHANNELS:
            hits = [column.like(f"%|{channel}|%") for channel in c.value]
            return or_(*hits) if c.op == "contains" else ~or_(false(), *hits)
        if c.op == "is_empty":
            return or_(column.is_(None), column == "") if kind == TEXT else column.is_(None)
        if c.op == "is_not_empty":
            if kind == TEXT:
                return and_(column.is_not(None), column != "")
            return column.is_not(None)
        if c.op in ("contains", "not_contains"):
            pattern = "%" + _escape_like(fold(c.value)) + "%"
            hit = _fold_sql(column, dialect).like(pattern, escape="\\")
            return hit if c.op == "contains" else or_(column.is_(None), ~hit)
        if kind == BOOLEAN:
            test = column == literal(c.value) if c.op == "eq" else column != literal(c.value)
            return test
        if kind in (TEXT, ENUM):
            # Equality is the same in every deterministic collation; compared in the
            # sort indexes' collation, the indexes can serve the filter too.
            column = self._sort_column(table, c.field, dialect)
        if c.op == "eq":
            return column == c.value
        if c.op == "ne":
            return or_(column.is_(None), column != c.value)
        if c.op == "in":
            return column.in_(c.value)
        if c.op == "not_in":
            return or_(column.is_(None), column.not_in(c.value))
        if c.op == "between":
            return column.between(*c.value)
        return {
            "gt": column > c.value,
            "gte": column >= c.value,
            "lt": column < c.value,
            "lte": column <= c.value,
        }[c.op]

    # ----- time

    def _instant_range(
        self, c: Condition, now: datetime
    ) -> tuple[datetime | None, datetime | None]:
        """The [low, high) range of created_at the condition accepts (`ne` negates)."""
        if c.op == "within":
            return within_range(c.value, now, self.tz)
        if FIELD_KINDS[c.field] == DATE:
            day = self._midnight
            if c.op in ("eq", "ne"):
                return day(c.value), day(c.value + timedelta(days=1))
            if c.op == "between":
                return day(c.value[0]), day(c.value[1] + timedelta(days=1))
            return {
                "gt": (day(c.value + timedelta(days=1)), None),
                "gte": (day(c.value), None),
                "lt": (None, day(c.value)),
                "lte": (None, day(c.value + timedelta(days=1))),
            }[c.op]
        epsilon = timedelta(microseconds=1)
        if c.op == "between":
            return c.value[0], c.value[1] + epsilon
        return {
            "gt": (c.value + epsilon, None),
            "gte": (c.value, None),
            "lt": (None, c.value),
            "lte": (None, c.value + epsilon),
        }[c.op]

    def _midnight(self, day: date) -> datetime:
        return midnight(day, self.tz)

    def next_time_change(self, now: datetime, oldest: datetime | None) -> datetime | None:
        """The next instant at which membership may change with the clock alone:
        the tenant's next midnight for day filters, and the moment the oldest
        matching row (`oldest`, its created_at) falls out of a `last_*` filter."""
        moments = []
        for c in self.conditions:
            if c.op != "within":
                continue
            span = WITHIN[c.value]
            if span is None:
                moments.append(
                    midnight(now.astimezone(self.tz).date() + timedelta(days=1), self.tz)
                )
            elif oldest is not None:
                # At oldest + span the row is still inside (created_at >= now - span).
                moments.append(max(oldest + span + timedelta(microseconds=1), now))
        return min(moments) if moments else None


def within_range(name: str, now: datetime, tz: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    span = WITHIN[name]
    if span is not None:
        return now - span, None
    today = now.astimezone(tz).date()
    if name == "today":
        return midnight(today, tz), midnight(today + timedelta(days=1), tz)
    return midnight(today - timedelta(days=1), tz), midnight(today, tz)


def midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of `day` in `tz`, in UTC."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda value, wanted: value == wanted,
    "ne": lambda value, wanted: value != wanted,
    "in": lambda value, wanted: value in wanted,
    "not_in": lambda value, wanted: value not in wanted,
    "contains": lambda value, wanted: fold(wanted) in fold(value),
    "not_contains": lambda value, wanted: fold(wanted) not in fold(value),
    "gt": lambda value, wanted: value > wanted,
    "gte": lambda value, wanted: value >= wanted,
    "lt": lambda value, wanted: value < wanted,
    "lte": lambda value, wanted: value <= wanted,
    "between": lambda value, wanted: wanted[0] <= value <= wanted[1],
}


def _bound(table, field: str, value):
    """A cursor value as a parameter of its column's type (it may be one already:
    views caches statements with the cursor as named parameters)."""
    if isinstance(value, ColumnElement):
        return value
    return literal(value, type_=table.c[field].type)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _fold_sql(column, dialect: str):
    if dialect == "postgresql":
        return func.replace(func.lower(column.collate("und-x-icu")), FINAL_SIGMA, SIGMA)
    return func.sb_fold(column)


def compile_view(filters: Any, sort: Any, tz: ZoneInfo, agent: str | None = None) -> ViewQuery:
    return ViewQuery(parse_conditions(filters), parse_sort(sort), tz, agent)


# --- keyset cursors ----------------------------------------------------------------------------


def encode_cursor(query: ViewQuery, row: Mapping[str, Any]) -> str:
    values = {}
    for field in query.sort_fields:
        value = row[field]
        values[field] = {"t": value.isoformat()} if isinstance(value, datetime) else value
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(query: ViewQuery, cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, dict) or set(values) != set(query.sort_fields):
            raise ValueError
        decoded = {}
        for field, value in values.items():
            # Each value must have its column's type, or it would fail in SQL (a 500).
            if FIELD_KINDS[field] == INSTANT:
                value = datetime.fromisoformat(value["t"])
                if value.tzinfo is None:
                    raise ValueError
                value = value.astimezone(UTC)
            elif not isinstance(value, str) or not storable(value):
                raise ValueError
            decoded[field] = value
        return decoded
    except (
        ValueError,
        KeyError,
        TypeError,
        OverflowError,
        binascii.Error,
        UnicodeDecodeError,
    ):
        raise Refused("invalid_cursor", "the cursor is not one this view gave out") from None
