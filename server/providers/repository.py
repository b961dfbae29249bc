"""Data access for channels: provider configuration, the call reference map, the
conversation a message belongs to, and initiate requests. Never commits (the caller's
`Database.write()` does)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, exists, func, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.storage import models as m
from server.storage.repository import _insert, encode_channels, upsert
from state_machine import Status

# --- providers -----------------------------------------------------------------------------


async def list_providers(conn: AsyncConnection, tenant: str) -> list[dict]:
    table = m.providers
    result = await conn.execute(
        select(table).where(table.c.tenant_id == tenant).order_by(table.c.provider)
    )
    return [dict(row._mapping) for row in result]


async def put_provider(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await upsert(conn, m.providers, row, ["tenant_id", "provider"])


async def set_provider_channels(
    conn: AsyncConnection, tenant: str, provider: str, channels: list[str]
) -> None:
    table = m.providers
    await conn.execute(
        update(table)
        .where(table.c.tenant_id == tenant, table.c.provider == provider)
        .values(channels=channels)
    )


# --- calls -----------------------------------------------------------------------------------


async def call_conversation(
    conn: AsyncConnection, tenant: str, provider: str, call_id: str
) -> dict | None:
    table = m.channel_calls
    row = (
        await conn.execute(
            select(table).where(
                table.c.tenant_id == tenant,
                table.c.provider == provider,
                table.c.call_id == call_id,
            )
        )
    ).first()
    return dict(row._mapping) if row else None


async def remember_call(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """Map a call reference to its conversation; the first mapping stays."""
    await conn.execute(_insert(conn, m.channel_calls).values(row).on_conflict_do_nothing())


async def set_provider_call_id(
    conn: AsyncConnection, tenant: str, provider: str, call_id: str, provider_call_id: str
) -> None:
    table = m.channel_calls
    await conn.execute(
        update(table)
        .where(
            table.c.tenant_id == tenant,
            table.c.provider == provider,
            table.c.call_id == call_id,
        )
        .values(provider_call_id=provider_call_id)
    )


async def calls_of(conn: AsyncConnection, tenant: str, conversation_id: str) -> list[dict]:
    table = m.channel_calls
    result = await conn.execute(
        select(table)
        .where(table.c.tenant_id == tenant, table.c.conversation_id == conversation_id)
        .order_by(table.c.created_at)
    )
    return [dict(row._mapping) for row in result]


# --- messages --------------------------------------------------------------------------------


async def latest_conversation_of_contact(
    conn: AsyncConnection,
    tenant: str,
    contact: str,
    channel: str | None = None,
    open_only: bool = True,
) -> dict | None:
    """The newest conversation of `contact` (on `channel`, when given): its open one,
    or with open_only=False the newest whatever its status (for a late status)."""
    table = m.conversations
    query = select(table.c.id, table.c.status, table.c.channels).where(
        table.c.tenant_id == tenant, table.c.contact == contact
    )
    if channel is not None:
        query = query.where(table.c.channels.like(f"%{encode_channels([channel])}%"))
    if open_only:
        query = query.where(table.c.status != Status.CLOSED)
    query = query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(1)
    row = (await conn.execute(query)).first()
    return dict(row._mapping) if row else None


ANY_CHANNEL = "*"  # the claim key of a tenant with merge_channels: one per contact


async def claim_opening(
    conn: AsyncConnection,
    tenant: str,
    contact: str,
    channel: str,
    conversation_id: str,
    *,
    any_channel: bool = False,
) -> tuple[str, str]:
    """The conversation the contact's first inbound message on `channel` opens, and the
    channel its opener came in on: the claim already made while its conversation is
    not closed (it may not be stored yet: its opener is still ingesting it), else
    (`conversation_id`, `channel`). One claim per channel, or with `any_channel`
    (merge_channels) one per contact. One statement; concurrent claims of one key
    queue on its row (PostgreSQL) or the write lock (SQLite), so every claimer gets
    the same answer."""
    table = m.inbound_openings
    insert = _insert(conn, table).values(
        tenant_id=tenant,
        channel=ANY_CHANNEL if any_channel else channel,
        contact=contact,
        conversation_id=conversation_id,
        opened_on=channel,
    )
    # The stored row's conversation, by its primary key. SQLAlchemy does not correlate
    # a subquery with the row of ON CONFLICT DO UPDATE, so the row's column is named.
    claimed = literal_column(f"{table.name}.{table.c.conversation_id.name}")
    claimed_is_closed = exists().where(
        m.conversations.c.tenant_id == tenant,
        m.conversations.c.id == claimed,
        m.conversations.c.status == Status.CLOSED,
    )

    def kept_unless_closed(column):
        return case((claimed_is_closed, insert.excluded[column.name]), else_=column)

    # Both SET expressions see the row as it was, so the conversation and its channel
    # are replaced together or kept together.
    statement = insert.on_conflict_do_update(
        index_elements=[table.c.tenant_id, table.c.channel, table.c.contact],
        set_={
            "conversation_id": kept_unless_closed(table.c.conversation_id),
            "opened_on": kept_unless_closed(table.c.opened_on),
        },
    ).returning(table.c.conversation_id, table.c.opened_on)
    row = (await conn.execute(statement)).one()
    return row.conversation_id, row.opened_on


# --- initiate requests -------------------------------------------------------------------------


async def get_initiate(conn: AsyncConnection, tenant: str, user: str, key: str) -> dict | None:
    table = m.initiate_requests
    row = (
        await conn.execute(
            select(table).where(
                table.c.tenant_id == tenant, table.c.user_id == user, table.c.key == key
            )
        )
    ).first()
    return dict(row._mapping) if row else None


async def claim_initiate(conn: AsyncConnection, row: dict[str, Any]) -> bool:
    """Insert the request's row; False when one with its key exists already."""
    result = await conn.execute(
        _insert(conn, m.initiate_requests).values(row).on_conflict_do_nothing()
    )
    return result.rowcount == 1


async def finish_initiate(
    conn: AsyncConnection, tenant: str, user: str, key: str, status_code: int, response: dict
) -> None:
    table = m.initiate_requests
    await conn.execute(
        update(table)
        .where(table.c.tenant_id == tenant, table.c.user_id == user, table.c.key == key)
        .values(status_code=status_code, response=response)
    )


async def forget_initiate(conn: AsyncConnection, tenant: str, user: str, key: str) -> None:
    table = m.initiate_requests
    await conn.execute(
        delete(table).where(
            table.c.tenant_id == tenant, table.c.user_id == user, table.c.key == key
        )
    )


async def initiates_since(
    conn: AsyncConnection, tenant: str, user: str, since: datetime
) -> tuple[int, datetime | None]:
    """How many initiate requests the user made since `since`, and the oldest of them."""
    table = m.initiate_requests
    row = (
        await conn.execute(
            select(func.count(), func.min(table.c.created_at)).where(
                table.c.tenant_id == tenant,
                table.c.user_id == user,
                table.c.created_at > since,
            )
        )
    ).one()
    return row[0], row[1]
