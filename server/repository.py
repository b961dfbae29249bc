"""Thin data access over the tables of models.py. Functions take an open connection and
never commit: the service that opened the transaction decides (db.Database.write)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from state_machine import Conversation, State, Status

from . import models as m

CONVERSATION_FIELDS = tuple(field.name for field in dataclasses.fields(Conversation))


# --- conversations ---------------------------------------------------------------------


def encode_channels(channels: Iterable[str]) -> str:
    return "|" + "|".join(channels) + "|"


def decode_channels(stored: str) -> list[str]:
    return [channel for channel in stored.split("|") if channel]


def conversation_from_row(row: Mapping[str, Any]) -> Conversation:
    values = {name: row[name] for name in CONVERSATION_FIELDS}
    values["status"] = Status(values["status"])
    values["state"] = State(values["state"]) if values["state"] else None
    values["offer_fallback"] = (
        Status(values["offer_fallback"]) if values["offer_fallback"] else None
    )
    values["channels"] = tuple(decode_channels(values["channels"]))
    return Conversation(**values)


def conversation_values(conversation: Conversation) -> dict[str, Any]:
    values = {name: getattr(conversation, name) for name in CONVERSATION_FIELDS}
    for name in ("status", "state", "offer_fallback"):
        values[name] = str(values[name]) if values[name] is not None else None
    values["channels"] = encode_channels(conversation.channels)
    return values


def lock_key(tenant: str, conversation_id: str) -> int:
    digest = hashlib.blake2b(f"{tenant}\x00{conversation_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_conversations(conn: AsyncConnection, tenant: str, ids: Iterable[str]) -> None:
    """Serialise writers of the same conversations, existing or about to be created,
    taking the locks in one fixed order so that concurrent batches cannot deadlock.
    On SQLite the transaction already holds the database's single write lock."""
    if conn.dialect.name != "postgresql":
        return
    keys = sorted({lock_key(tenant, conversation_id) for conversation_id in ids})
    if keys:
        await conn.execute(
            text(
                "SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k "
                "ORDER BY k"
            ),
            {"keys": keys},
        )


async def load_conversation_rows(
    conn: AsyncConnection, tenant: str, ids: Iterable[str]
) -> dict[str, Mapping[str, Any]]:
    ids = list(ids)
    if not ids:
        return {}
    table = m.conversations
    result = await conn.execute(
        select(table).where(table.c.tenant_id == tenant, table.c.id.in_(ids))
    )
    return {row.id: row._mapping for row in result}


async def get_conversation_row(
    conn: AsyncConnection, tenant: str, conversation_id: str
) -> Mapping[str, Any] | None:
    rows = await load_conversation_rows(conn, tenant, [conversation_id])
    return rows.get(conversation_id)


async def commit_stamp(conn: AsyncConnection) -> tuple[int, int]:
    """The change sequence number for this transaction's rows, and the token by which a
    reader tells whether its snapshot already saw this commit (snapshot_visibility).

    PostgreSQL: a sequence (never blocks another writer) and the transaction id.
    SQLite has one writer at a time, so the greatest stored number plus one (an index
    lookup) is already in commit order, and serves as both."""
    if conn.dialect.name == "postgresql":
        result = await conn.execute(
            text("SELECT nextval('conversation_change_seq'), pg_current_xact_id()::text::bigint")
        )
        seq, txid = result.one()
        return seq, txid
    current = await conn.execute(select(func.max(m.conversations.c.change_seq)))
    seq = (current.scalar() or 0) + 1
    return seq, seq


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


async def insert_conversations(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(m.conversations.insert(), rows)


async def update_conversations(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = m.conversations
    columns = [name for name in rows[0] if name not in ("tenant_id", "id")]
    statement = (
        update(table)
        .where(table.c.tenant_id == bindparam("k_tenant"), table.c.id == bindparam("k_id"))
        .values({name: bindparam(name) for name in columns})
    )
    await conn.execute(
        statement, [{**row, "k_tenant": row["tenant_id"], "k_id": row["id"]} for row in rows]
    )


async def agent_names(conn: AsyncConnection, tenant: str, ids: Iterable[str]) -> dict[str, str]:
    ids = list(set(ids))
    if not ids:
        return {}
    result = await conn.execute(
        select(m.agents.c.id, m.agents.c.name).where(
            m.agents.c.tenant_id == tenant, m.agents.c.id.in_(ids)
        )
    )
    # Not dict(result): a Result has .keys() (its column names), so dict() would take
    # it for a mapping.
    return {agent_id: name for agent_id, name in result}


# --- the event log ----------------------------------------------------------------------


async def existing_event_ids(conn: AsyncConnection, tenant: str, ids: Iterable[str]) -> set[str]:
    ids = list(set(ids))
    if not ids:
        return set()
    result = await conn.execute(
        select(m.events.c.event_id).where(
            m.events.c.tenant_id == tenant, m.events.c.event_id.in_(ids)
        )
    )
    return set(result.scalars())


async def insert_events(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(m.events.insert(), rows)


async def insert_rejected(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(m.rejected_events.insert(), rows)


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


# --- what the effects record ------------------------------------------------------------


def _insert(conn: AsyncConnection, table):
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


async def upsert_customers(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    statement = _insert(conn, m.customers)
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "id"],
        set_={
            name: statement.excluded[name]
            for name in ("name", "email", "phone", "contact", "updated_at")
        },
    )
    await conn.execute(statement, rows)


async def insert_messages(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if rows:
        statement = _insert(conn, m.messages).on_conflict_do_nothing()
        await conn.execute(statement, rows)


async def set_message_statuses(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = m.messages
    await conn.execute(
        update(table)
        .where(
            table.c.tenant_id == bindparam("k_tenant"),
            table.c.conversation_id == bindparam("k_conversation"),
            table.c.message_id == bindparam("k_message"),
        )
        .values(status=bindparam("status")),
        rows,
    )


async def insert_tickets(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if rows:
        statement = _insert(conn, m.tickets)
        statement = statement.on_conflict_do_update(
            index_elements=["tenant_id", "conversation_id", "ticket_id"],
            set_={"system": statement.excluded.system, "url": statement.excluded.url},
        )
        await conn.execute(statement, rows)


async def insert_recordings(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(_insert(conn, m.recordings).on_conflict_do_nothing(), rows)


# --- the conversation's detail ----------------------------------------------------------


async def rows_of(conn: AsyncConnection, table, tenant: str, conversation_id: str, order) -> list:
    result = await conn.execute(
        select(table)
        .where(table.c.tenant_id == tenant, table.c.conversation_id == conversation_id)
        .order_by(*order)
    )
    return [dict(row._mapping) for row in result]


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


# --- catch-up (server/catchup.py) -------------------------------------------------------


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
