"""Thin data access over the tables of models.py. Functions take an open connection and
never commit: the service that opened the transaction decides (db.Database.write)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import JSON, bindparam, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from server.storage import models as m
from state_machine import Conversation, State, Status

CONVERSATION_FIELDS = tuple(field.name for field in dataclasses.fields(Conversation))


# --- conversations ---------------------------------------------------------------------


def encode_channels(channels: Iterable[str]) -> str:
    return "|" + "|".join(channels) + "|"


def decode_channels(stored: str) -> list[str]:
    return [channel for channel in stored.split("|") if channel]


def conversation_from_row(row: Mapping[str, Any]) -> Conversation:
    return Conversation(**dict(zip(CONVERSATION_FIELDS, conversation_fields(row), strict=True)))


_STATUS, _STATE, _FALLBACK, _CHANNELS = (
    CONVERSATION_FIELDS.index(name) for name in ("status", "state", "offer_fallback", "channels")
)


def conversation_fields(row: Mapping[str, Any]) -> list[Any]:
    """A stored row's values in the order of Conversation's fields, typed as the machine
    has them: conversation_from_row without the object (whose attribute dict, with
    that many fields, costs about five times a tuple of them)."""
    values = [row[name] for name in CONVERSATION_FIELDS]
    values[_STATUS] = Status(values[_STATUS])
    values[_STATE] = State(values[_STATE]) if values[_STATE] else None
    values[_FALLBACK] = Status(values[_FALLBACK]) if values[_FALLBACK] else None
    values[_CHANNELS] = tuple(decode_channels(values[_CHANNELS]))
    return values


_ENUM_FIELDS = ("status", "state", "offer_fallback")


def conversation_values(conversation: Conversation) -> dict[str, Any]:
    values = vars(conversation).copy()  # a plain dataclass: its fields are its attributes
    for name in _ENUM_FIELDS:
        value = values[name]
        if value is not None:
            values[name] = value.value
    values["channels"] = encode_channels(conversation.channels)
    return values


def lock_key(tenant: str, conversation_id: str) -> int:
    digest = hashlib.blake2b(f"{tenant}\x00{conversation_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_LOAD_CONVERSATIONS = select(m.conversations).where(
    m.conversations.c.tenant_id == bindparam("tenant"),
    m.conversations.c.id.in_(bindparam("ids", expanding=True)),
)


async def load_conversation_rows(
    conn: AsyncConnection, tenant: str, ids: Iterable[str]
) -> dict[str, Mapping[str, Any]]:
    ids = list(ids)
    if not ids:
        return {}
    result = await conn.execute(_LOAD_CONVERSATIONS, {"tenant": tenant, "ids": ids})
    return {row.id: row._mapping for row in result}


async def get_conversation_row(
    conn: AsyncConnection, tenant: str, conversation_id: str
) -> Mapping[str, Any] | None:
    rows = await load_conversation_rows(conn, tenant, [conversation_id])
    return rows.get(conversation_id)


@dataclass(frozen=True)
class Visibility:
    """Which commits a read snapshot saw, told by their commit tokens (commit_stamp):
    PostgreSQL's snapshot (xmin, xmax, the transactions running at the time); on
    SQLite, every sequence number below xmin."""

    xmin: int
    xmax: int
    running: frozenset[int] = frozenset()

    def saw(self, token: int) -> bool:
        return token < self.xmin or (token < self.xmax and token not in self.running)


async def snapshot_visibility(conn: AsyncConnection) -> Visibility:
    """Call first in a snapshot transaction (Database.snapshot)."""
    if conn.dialect.name == "postgresql":
        snapshot = (await conn.execute(text("SELECT pg_current_snapshot()::text"))).scalar_one()
        xmin, xmax, running = snapshot.split(":")
        return Visibility(int(xmin), int(xmax), frozenset(int(x) for x in running.split(",") if x))
    current = await conn.execute(select(func.max(m.conversations.c.change_seq)))
    seen = (current.scalar() or 0) + 1
    return Visibility(seen, seen)


_AGENT_NAMES = select(m.agents.c.id, m.agents.c.name).where(
    m.agents.c.tenant_id == bindparam("tenant"),
    m.agents.c.id.in_(bindparam("ids", expanding=True)),
)


async def agent_names(conn: AsyncConnection, tenant: str, ids: Iterable[str]) -> dict[str, str]:
    ids = list(set(ids))
    if not ids:
        return {}
    result = await conn.execute(_AGENT_NAMES, {"tenant": tenant, "ids": ids})
    # Not dict(result): a Result has .keys() (its column names), so dict() would take
    # it for a mapping.
    return {agent_id: name for agent_id, name in result}


# --- the ingest's transaction ------------------------------------------------------------

# Database.ingest_write(): on PostgreSQL the bare asyncpg connection, on SQLite
# SQLAlchemy's.
IngestConnection = AsyncConnection | asyncpg.Connection


def _is_driver(conn: IngestConnection) -> bool:
    return not isinstance(conn, AsyncConnection)


#
# Three round trips whatever the size of the group: lock and stamp, load, write (plus
# the agents' names when an agent changes). Every statement is built once, here. On
# PostgreSQL the id lists are bound as one array each and the write is one statement
# of set-based INSERTs and UPDATEs over unnest(); SQLite, in-process, runs the same
# writes as one executemany per table.


@dataclass
class IngestRows:
    """Every row one ingest transaction writes. Each list holds at most one row per key
    (the ingest keeps the last), so that one set-based statement per table does what
    running the rows one by one would; a message's status changed in the same group
    is on its new row as well as in `statuses` (which updates a message stored
    before)."""

    new_conversations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    changed_conversations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rejected: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    customers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    statuses: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    tickets: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    recordings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # What ingest's Alongside recorders add (server/routing/timers.py): durable timers
    # armed (one row per key) and disarmed (tenant_id, key; never a key armed here),
    # offers made.
    timers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    disarmed_timers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    offers: list[dict[str, Any]] = dataclasses.field(default_factory=list)


_PG_LOCK_AND_STAMP = (
    # Volatile functions run after the sort, so the locks are taken in key order.
    "WITH locked AS MATERIALIZED ("
    "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k ORDER BY k) "
    "SELECT nextval('conversation_change_seq'), pg_current_xact_id()::text::bigint, "
    "(SELECT count(*) FROM locked)"
)
_SQLITE_STAMP = select(func.max(m.conversations.c.change_seq))


async def lock_and_stamp(
    conn: IngestConnection, tenant: str, ids: Iterable[str]
) -> tuple[int, int]:
    """Serialise writers of the same conversations, existing or about to be created,
    and return this transaction's change sequence number and commit token.

    PostgreSQL: transaction-scoped advisory locks on a hash of (tenant, id), taken in
    one fixed order so that concurrent groups cannot deadlock; the number comes from a
    sequence (never blocks another writer), the token is the transaction id, by which
    a reader tells whether its snapshot already saw this commit (snapshot_visibility).
    SQLite: the transaction already holds the database's single write lock, so the
    greatest stored number plus one (an index lookup) is in commit order, and serves
    as both."""
    if _is_driver(conn):
        keys = sorted({lock_key(tenant, conversation_id) for conversation_id in ids})
        seq, token, _locks = await conn.fetchrow(_PG_LOCK_AND_STAMP, keys)
        return seq, token
    seq = ((await conn.execute(_SQLITE_STAMP)).scalar() or 0) + 1
    return seq, seq


# One primary-key probe per id (LATERAL ... LIMIT 1, which the planner cannot turn
# into a join), whatever the planner's statistics say: without them, `id = ANY(...)`
# or a join read the whole tenant through a tenant-only index.
_PG_LOAD = (
    "SELECT known.event_ids AS known_event_ids, known.agents AS known_agents, c.* FROM ("
    "SELECT ARRAY("
    "SELECT e.event_id FROM unnest($3::text[]) AS k(id), LATERAL ("
    "SELECT event_id FROM events WHERE tenant_id = $1 AND event_id = k.id LIMIT 1) AS e"
    ") AS event_ids, ARRAY("
    "SELECT ARRAY[a.id::text, a.name] FROM unnest($4::text[]) AS k(id), LATERAL ("
    "SELECT id, name FROM agents WHERE tenant_id = $1 AND id = k.id LIMIT 1) AS a"
    ") AS agents) AS known "
    "LEFT JOIN (unnest($2::text[]) AS k(id) CROSS JOIN LATERAL ("
    "SELECT * FROM conversations WHERE tenant_id = $1 AND id = k.id LIMIT 1) AS c) ON true"
)
_SQLITE_SEEN = select(m.events.c.event_id).where(
    m.events.c.tenant_id == bindparam("tenant"),
    m.events.c.event_id.in_(bindparam("ids", expanding=True)),
)


@dataclass
class IngestState:
    """What an ingest transaction reads before it judges its events."""

    rows: dict[str, dict[str, Any]]  # the stored conversations, by id
    seen: set[str]  # which of the event ids the log already has
    agent_names: dict[str, str]  # the names of the agents asked about that have a row


async def load_for_ingest(
    conn: IngestConnection,
    tenant: str,
    ids: Iterable[str],
    event_ids: Iterable[str],
    agent_ids: Iterable[str],
) -> IngestState:
    """One round trip on PostgreSQL. Call after lock_and_stamp, so that no other writer
    changes these conversations meanwhile."""
    ids, event_ids, agent_ids = list(ids), list(event_ids), list(agent_ids)
    if _is_driver(conn):
        rows = [dict(row) for row in await conn.fetch(_PG_LOAD, tenant, ids, event_ids, agent_ids)]
        # Every row repeats what is known; the outer join gives one row with no
        # conversation when none is stored.
        state = IngestState({}, set(rows[0]["known_event_ids"]), dict(rows[0]["known_agents"]))
        for values in rows:
            del values["known_event_ids"], values["known_agents"]
            if values["id"] is not None:
                state.rows[values["id"]] = values
        return state
    rows = await load_conversation_rows(conn, tenant, ids)
    seen = set()
    if event_ids:
        result = await conn.execute(_SQLITE_SEEN, {"tenant": tenant, "ids": event_ids})
        seen = set(result.scalars())
    names = await agent_names(conn, tenant, agent_ids)
    return IngestState({cid: dict(row) for cid, row in rows.items()}, seen, names)


def _pg_array_type(column) -> str:
    """The PostgreSQL array type to bind a column's values as. Without a length: an
    explicit cast to varchar(n) would cut a long value short, where the assignment to
    the column refuses it."""
    name = column.type.compile(dialect=postgresql.dialect())
    return re.sub(r"\(\d+\)", "", name) + "[]"


class _PgWrite:
    """One statement writing every non-empty list of IngestRows: a chain of
    data-modifying CTEs, each over unnest() of one array per column. The CTEs are built
    once at import from the tables, so a new column needs no edit here; a statement
    holds the CTEs of the lists a group fills (a group of single events fills a few of
    the fifteen), built once per such shape. Every empty array still cost the driver
    an encoding and PostgreSQL a CTE to plan and run: about half the statement's CPU
    for a small group."""

    PARAMETER = "$?"  # numbered when a shape's statement is built

    def __init__(self):
        # IngestRows list -> (its CTE, (key in the rows, is JSON) per parameter)
        self.parts: dict[str, tuple[str, list[tuple[str, bool]]]] = {}
        self._statements: dict[tuple[str, ...], tuple[str, list[tuple[str, str, bool]]]] = {}
        params: list[tuple[str, bool]] = []

        def add(rows: str, cte: str) -> None:
            self.parts[rows] = (cte, params[:])
            params.clear()

        def arrays(rows: str, columns, keys: dict[str, str] | None = None) -> str:
            # keys: the name a column's value has in the rows, where it is not its own
            casts = []
            for column in columns:
                key = (keys or {}).get(column.name, column.name)
                params.append((key, isinstance(column.type, JSON)))
                casts.append(f"{self.PARAMETER}::{_pg_array_type(column)}")
            return f"unnest({', '.join(casts)})"

        def insert(rows: str, table, tail: str = "", skip=()) -> None:
            columns = [column for column in table.columns if column.name not in skip]
            names = ", ".join(column.name for column in columns)
            add(
                rows,
                f"w_{rows} AS (INSERT INTO {table.name} ({names}) "
                f"SELECT * FROM {arrays(rows, columns)}{tail})",
            )

        def update(rows: str, table, keys: dict[str, str], columns) -> None:
            # keys: the table's key columns -> their names in the rows
            source = arrays(rows, [*(table.c[name] for name in keys), *columns], keys)
            aliases = ", ".join([*keys, *(column.name for column in columns)])
            sets = ", ".join(f"{column.name} = r.{column.name}" for column in columns)
            where = " AND ".join(f"t.{name} = r.{name}" for name in keys)
            add(
                rows,
                f"w_{rows} AS (UPDATE {table.name} AS t SET {sets} "
                f"FROM {source} AS r({aliases}) WHERE {where})",
            )

        conversations = m.conversations
        insert("new_conversations", conversations)
        keys = {"tenant_id": "tenant_id", "id": "id"}
        update(
            "changed_conversations",
            conversations,
            keys,
            [column for column in conversations.columns if column.name not in keys],
        )
        insert("events", m.events)
        insert("rejected", m.rejected_events, skip={"id"})
        insert(
            "customers",
            m.customers,
            " ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, "
            "email = excluded.email, phone = excluded.phone, contact = excluded.contact, "
            "updated_at = excluded.updated_at",
        )
        insert("messages", m.messages, " ON CONFLICT DO NOTHING")
        update(
            "statuses",
            m.messages,
            {
                "tenant_id": "k_tenant",
                "conversation_id": "k_conversation",
                "message_id": "k_message",
            },
            [m.messages.c.status],
        )
        insert(
            "tickets",
            m.tickets,
            " ON CONFLICT (tenant_id, conversation_id, ticket_id) DO UPDATE SET "
            "system = excluded.system, url = excluded.url",
        )
        insert("recordings", m.recordings, " ON CONFLICT DO NOTHING")
        timers = m.timers
        source = arrays("disarmed_timers", [timers.c.tenant_id, timers.c.key])
        add(
            "disarmed_timers",
            f"w_disarmed_timers AS (DELETE FROM timers AS t USING {source} AS r(tenant_id, key) "
            "WHERE t.tenant_id = r.tenant_id AND t.key = r.key)",
        )
        insert(
            "timers",
            timers,
            " ON CONFLICT (tenant_id, key) DO UPDATE SET kind = excluded.kind, "
            "conversation_id = excluded.conversation_id, due_at = excluded.due_at, "
            "event = excluded.event, claimed_until = excluded.claimed_until",
        )
        insert("offers", m.offers, " ON CONFLICT DO NOTHING")

    def statement(self, rows: IngestRows) -> tuple[str, list] | None:
        """The SQL and parameters writing `rows`; None when every list is empty."""
        shape = tuple(name for name in self.parts if getattr(rows, name))
        if not shape:
            return None
        built = self._statements.get(shape)
        if built is None:  # at most one per subset of the lists: bounded
            built = self._statements[shape] = self._build(shape)
        sql, params = built
        values = []
        for name, key, is_json in params:
            batch = getattr(rows, name)
            if is_json:
                values.append([json.dumps(row[key]) for row in batch])
            else:
                values.append([row[key] for row in batch])
        return sql, values

    def _build(self, shape: tuple[str, ...]) -> tuple[str, list[tuple[str, str, bool]]]:
        ctes, params = [], []
        for name in shape:
            cte, keys = self.parts[name]
            pieces = cte.split(self.PARAMETER)
            numbered = [pieces[0]]
            for piece in pieces[1:]:
                numbered.append(f"${len(params) + len(numbered)}{piece}")
            ctes.append("".join(numbered))
            params.extend((name, key, is_json) for key, is_json in keys)
        return "WITH " + ",\n".join(ctes) + "\nSELECT 1", params


_PG_WRITE = _PgWrite()

_SQLITE_WRITES = (
    ("new_conversations", m.conversations.insert()),
    (
        "changed_conversations",
        update(m.conversations)
        .where(
            m.conversations.c.tenant_id == bindparam("tenant_id_"),
            m.conversations.c.id == bindparam("id_"),
        )
        .values(
            {
                column.name: bindparam(column.name)
                for column in m.conversations.columns
                if column.name not in ("tenant_id", "id")
            }
        ),
    ),
    ("events", m.events.insert()),
    ("rejected", m.rejected_events.insert()),
    (
        "customers",
        (customers := sqlite.insert(m.customers)).on_conflict_do_update(
            index_elements=["tenant_id", "id"],
            set_={
                name: customers.excluded[name]
                for name in ("name", "email", "phone", "contact", "updated_at")
            },
        ),
    ),
    ("messages", sqlite.insert(m.messages).on_conflict_do_nothing()),
    (
        "statuses",
        update(m.messages)
        .where(
            m.messages.c.tenant_id == bindparam("k_tenant"),
            m.messages.c.conversation_id == bindparam("k_conversation"),
            m.messages.c.message_id == bindparam("k_message"),
        )
        .values(status=bindparam("status")),
    ),
    (
        "tickets",
        (tickets := sqlite.insert(m.tickets)).on_conflict_do_update(
            index_elements=["tenant_id", "conversation_id", "ticket_id"],
            set_={"system": tickets.excluded.system, "url": tickets.excluded.url},
        ),
    ),
    ("recordings", sqlite.insert(m.recordings).on_conflict_do_nothing()),
    (
        "disarmed_timers",
        delete(m.timers).where(
            m.timers.c.tenant_id == bindparam("tenant_id"), m.timers.c.key == bindparam("key")
        ),
    ),
    (
        "timers",
        (timers := sqlite.insert(m.timers)).on_conflict_do_update(
            index_elements=["tenant_id", "key"],
            set_={
                name: timers.excluded[name]
                for name in ("kind", "conversation_id", "due_at", "event", "claimed_until")
            },
        ),
    ),
    ("offers", sqlite.insert(m.offers).on_conflict_do_nothing()),
)


async def write_ingest_rows(conn: IngestConnection, rows: IngestRows) -> None:
    """Write what one ingest transaction changed: one statement on PostgreSQL."""
    if _is_driver(conn):
        statement = _PG_WRITE.statement(rows)
        if statement is not None:
            await conn.execute(statement[0], *statement[1])
        return
    for name, statement in _SQLITE_WRITES:
        batch = getattr(rows, name)
        if name == "changed_conversations":
            batch = [{**row, "tenant_id_": row["tenant_id"], "id_": row["id"]} for row in batch]
        if batch:
            await conn.execute(statement, batch)


# --- the event log ----------------------------------------------------------------------


async def timeline(conn: AsyncConnection, tenant: str, conversation_id: str) -> list[dict]:
    table = m.events
    result = await conn.execute(
        select(
            table.c.event_id,
            table.c.type,
            table.c.occurred_at,
            table.c.received_at,
            table.c.outcome,
            table.c.version,
            table.c.message,
            table.c.data,
        )
        .where(table.c.tenant_id == tenant, table.c.conversation_id == conversation_id)
        .order_by(table.c.version, table.c.received_at, table.c.event_id)
    )
    return [dict(row._mapping) for row in result]


def _insert(conn: AsyncConnection, table):
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


# --- the conversation's detail ----------------------------------------------------------


async def rows_of(conn: AsyncConnection, table, tenant: str, conversation_id: str, order) -> list:
    result = await conn.execute(
        select(table)
        .where(table.c.tenant_id == tenant, table.c.conversation_id == conversation_id)
        .order_by(*order)
    )
    return [dict(row._mapping) for row in result]


async def customer_of_contact(conn: AsyncConnection, tenant: str, contact: str) -> dict | None:
    """The customer last known at a contact (keyed by the contact, or by an
    integrator's id with this contact), or None."""
    c = m.customers.c
    result = await conn.execute(
        select(m.customers)
        .where(c.tenant_id == tenant, (c.id == contact) | (c.contact == contact))
        .order_by(c.updated_at.desc())
        .limit(1)
    )
    row = result.first()
    return dict(row._mapping) if row else None


async def get_customer(conn: AsyncConnection, tenant: str, customer_id: str) -> dict | None:
    result = await conn.execute(
        select(m.customers).where(
            m.customers.c.tenant_id == tenant, m.customers.c.id == customer_id
        )
    )
    row = result.first()
    return dict(row._mapping) if row else None


# --- tenants, teams, agents ---------------------------------------------------------------


async def get_tenant(conn: AsyncConnection, tenant: str) -> dict | None:
    row = (await conn.execute(select(m.tenants).where(m.tenants.c.id == tenant))).first()
    return dict(row._mapping) if row else None


async def upsert(conn: AsyncConnection, table, values: dict[str, Any], keys: list[str]) -> None:
    statement = _insert(conn, table).values(values)
    changed = {name: statement.excluded[name] for name in values if name not in keys}
    if changed:
        statement = statement.on_conflict_do_update(index_elements=keys, set_=changed)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=keys)
    await conn.execute(statement)


async def list_rows(conn: AsyncConnection, table, tenant: str, order) -> list[dict]:
    result = await conn.execute(select(table).where(table.c.tenant_id == tenant).order_by(order))
    return [dict(row._mapping) for row in result]


async def get_row(conn: AsyncConnection, table, tenant: str, key_column: str, key) -> dict | None:
    result = await conn.execute(
        select(table).where(table.c.tenant_id == tenant, table.c[key_column] == key)
    )
    row = result.first()
    return dict(row._mapping) if row else None


# --- catch-up (server/live/catchup.py) -------------------------------------------------------


async def change_mark(conn: AsyncConnection) -> int:
    """The greatest change sequence number handed out so far (PostgreSQL: the
    sequence's last value, committed or not; SQLite: the greatest stored one, which
    is in commit order). Call inside a snapshot, after snapshot_visibility."""
    if conn.dialect.name == "postgresql":
        result = await conn.execute(
            text(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM conversation_change_seq"
            )
        )
        return result.scalar_one()
    current = await conn.execute(select(func.max(m.conversations.c.change_seq)))
    return current.scalar() or 0


async def changed_since(
    conn: AsyncConnection, tenants: Iterable[str], low: int
) -> list[tuple[str, str, int]]:
    """(tenant, id, version) of the tenants' rows stamped with a change sequence
    number above `low` (the change_seq index)."""
    tenants = list(tenants)
    if not tenants:
        return []
    table = m.conversations
    result = await conn.execute(
        select(table.c.tenant_id, table.c.id, table.c.version).where(
            table.c.change_seq > low, table.c.tenant_id.in_(tenants)
        )
    )
    return [tuple(row) for row in result]
