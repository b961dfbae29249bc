"""Data access for routing: timers, offers, agents' presence and load, what the router
reads, popups' content. Like repository.py, nothing here commits. Which statuses mean
what comes from the machine's groups (state_machine)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.storage import models as m
from server.storage.repository import _insert
from server.tenants.settings import TEAM_DEFAULTS
from state_machine import HANDLING_STATUSES, HOLDING_STATUSES, ROUTABLE_STATUSES, Status

# What the router keeps (router_state.py): the conversations it decides on and those
# that put load on an agent; `new` only incoming.
KEPT = ROUTABLE_STATUSES | HOLDING_STATUSES


async def timer_settings(conn: AsyncConnection, tenant: str) -> dict[str, Any]:
    row = (
        await conn.execute(
            select(
                m.tenants.c.routing, m.tenants.c.wrap_up_timeout_s, m.tenants.c.reply_timeout_s
            ).where(m.tenants.c.id == tenant)
        )
    ).first()
    teams = await team_settings(conn, tenant)
    return {**dict(row._mapping), "teams": teams}


async def team_settings(conn: AsyncConnection, tenant: str) -> dict[str, dict]:
    rows = await conn.execute(select(m.teams).where(m.teams.c.tenant_id == tenant))
    return {row.name: {**TEAM_DEFAULTS, **dict(row._mapping)} for row in rows}


async def upsert_timers(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    statement = _insert(conn, m.timers)
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "key"],
        set_={
            name: statement.excluded[name]
            for name in ("kind", "conversation_id", "due_at", "event", "claimed_until")
        },
    )
    await conn.execute(statement, rows)


async def get_offer(conn: AsyncConnection, tenant: str, offer_id: str) -> dict | None:
    row = (
        await conn.execute(
            select(m.offers).where(m.offers.c.tenant_id == tenant, m.offers.c.offer_id == offer_id)
        )
    ).first()
    return dict(row._mapping) if row else None


async def offer_end(conn: AsyncConnection, tenant: str, conversation_id: str, offer_id: str):
    """How an offer ended: `accepted`, `rejected`, `expired`, or None (cancelled by
    something else, or not over)."""
    e = m.events
    rows = await conn.execute(
        select(e.c.type, e.c.data)
        .where(
            e.c.tenant_id == tenant,
            e.c.conversation_id == conversation_id,
            e.c.outcome == "applied",
            e.c.type.in_(("agent.accepted", "routing.offer_declined")),
        )
        .order_by(e.c.version.desc())
    )
    for row in rows:
        data = row.data or {}
        if data.get("offer_id") == offer_id:
            return "accepted" if row.type == "agent.accepted" else data.get("reason")
    return None


# --- agents ------------------------------------------------------------------------------


async def agents_of(conn: AsyncConnection, tenant: str) -> list[dict]:
    a = m.agents
    rows = await conn.execute(
        select(a.c.id, a.c.teams, a.c.chat_capacity, a.c.presence, a.c.presence_at).where(
            a.c.tenant_id == tenant
        )
    )
    return [dict(row._mapping) for row in rows]


async def agent_loads(conn: AsyncConnection, tenant: str) -> dict[str, dict[str, int]]:
    """Per agent, how many calls and chats it holds (offered to it, active, wrap-up)."""
    c = m.conversations
    loads: dict[str, dict[str, int]] = {}
    offered = (
        select(c.c.offer_agent_id, c.c.channel, func.count())
        .where(c.c.tenant_id == tenant, c.c.status == Status.OFFERED)
        .group_by(c.c.offer_agent_id, c.c.channel)
    )
    handled = (
        select(c.c.agent_id, c.c.channel, func.count())
        .where(c.c.tenant_id == tenant, c.c.status.in_(_values(HANDLING_STATUSES)))
        .group_by(c.c.agent_id, c.c.channel)
    )
    for statement in (offered, handled):
        for agent, channel, count in await conn.execute(statement):
            if agent is None:
                continue
            load = loads.setdefault(agent, {"call": 0, "chat": 0})
            load[load_kind(channel)] += count
    return loads


def load_kind(channel: str) -> str:
    return "call" if channel == "call" else "chat"


def held_by(status: str, offer_agent_id, agent_id, channel: str) -> tuple[str, str] | None:
    """(agent, call or chat) that a conversation in `status` keeps busy, if any: the
    agent offered it, or the one handling it."""
    if status == Status.OFFERED:
        agent = offer_agent_id
    elif status in HANDLING_STATUSES:
        agent = agent_id
    else:
        return None
    return (agent, load_kind(channel)) if agent else None


def holder(row: dict | None) -> tuple[str, str] | None:
    """held_by, for a row."""
    if row is None:
        return None
    return held_by(row["status"], row["offer_agent_id"], row["agent_id"], row["channel"])


def _values(statuses) -> list[str]:
    """A group's statuses as SQL values, in a fixed order (one cached statement)."""
    return sorted(status.value for status in statuses)


async def set_presence(conn: AsyncConnection, tenant: str, agent_id: str, presence: str, at):
    result = await conn.execute(
        update(m.agents)
        .where(m.agents.c.tenant_id == tenant, m.agents.c.id == agent_id)
        .values(presence=presence, presence_at=at)
    )
    return result.rowcount


# --- what the router reads ----------------------------------------------------------------


def _routable(c):
    """The rows the router keeps (router_state.keeps), as SQL."""
    return c.status.in_(_values(KEPT - {Status.NEW})) | (
        (c.status == Status.NEW) & (c.direction == "incoming")
    )


async def router_rows(conn: AsyncConnection, tenant: str, ids: Iterable[str] | None = None):
    """The tenant's conversations the router keeps (router_state.py), whole: the
    machine decides on them; or the named ones, whatever their status."""
    c = m.conversations
    where = c.c.tenant_id == tenant
    if ids is None:
        where &= _routable(c.c)
    else:
        where &= c.c.id.in_(list(ids))
    rows = await conn.execute(select(c).where(where))
    return [dict(row._mapping) for row in rows]


async def router_check(conn: AsyncConnection, tenant: str, since) -> tuple[list, list]:
    """What the router holds its memory to: the rows router_rows reads and the rows
    changed since `since` (id, version, status, direction, updated_at), and every
    agent's presence."""
    c, a = m.conversations, m.agents
    rows = await conn.execute(
        select(c.c.id, c.c.version, c.c.status, c.c.direction, c.c.updated_at).where(
            c.c.tenant_id == tenant, _routable(c.c) | (c.c.updated_at >= since)
        )
    )
    agents = await conn.execute(
        select(a.c.id, a.c.presence, a.c.presence_at).where(a.c.tenant_id == tenant)
    )
    return [dict(r._mapping) for r in rows], [dict(r._mapping) for r in agents]


async def tenants_waiting(conn: AsyncConnection) -> list[str]:
    """Tenants with built-in routing and something to route."""
    c, t = m.conversations, m.tenants
    rows = await conn.execute(
        select(t.c.id).where(
            t.c.routing == "builtin",
            select(c.c.id)
            .where(c.c.tenant_id == t.c.id, c.c.status.in_(_values(ROUTABLE_STATUSES)))
            .exists(),
        )
    )
    return [row.id for row in rows]


async def try_advisory_lock(conn: AsyncConnection, key: int) -> bool:
    """PostgreSQL: take a session-level advisory lock if free (held until unlocked or
    the session ends)."""
    return (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()


async def advisory_unlock_all(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT pg_advisory_unlock_all()"))


async def take_lease(conn: AsyncConnection, tenant: str, holder_id: str, now, until) -> bool:
    """SQLite: hold the tenant's routing lease (or renew it); False if another has it."""
    lease = m.routing_leases
    await conn.execute(
        _insert(conn, lease)
        .values(tenant_id=tenant, holder=holder_id, expires_at=until)
        .on_conflict_do_nothing()
    )
    result = await conn.execute(
        update(lease)
        .where(
            lease.c.tenant_id == tenant,
            (lease.c.holder == holder_id) | (lease.c.expires_at < now),
        )
        .values(holder=holder_id, expires_at=until)
    )
    return result.rowcount == 1


# --- agents' websocket connections, per process (presence across processes) -------------

SWEEP_BATCH = 1_000  # rows of dead processes deleted per heartbeat


async def upsert_connection(conn: AsyncConnection, tenant: str, agent_id: str, process_id, now):
    ac = m.agent_connections
    statement = _insert(conn, ac).values(
        tenant_id=tenant, agent_id=agent_id, process_id=process_id, seen_at=now
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "agent_id", "process_id"],
            set_={"seen_at": statement.excluded.seen_at},
        )
    )


async def delete_connection(conn: AsyncConnection, tenant: str, agent_id: str, process_id) -> bool:
    ac = m.agent_connections
    result = await conn.execute(
        delete(ac).where(
            ac.c.tenant_id == tenant, ac.c.agent_id == agent_id, ac.c.process_id == process_id
        )
    )
    return result.rowcount > 0


async def refresh_connections(conn: AsyncConnection, process_id: str, now) -> int:
    """The heartbeat: one UPDATE for all the process's rows; how many there were."""
    ac = m.agent_connections
    result = await conn.execute(update(ac).where(ac.c.process_id == process_id).values(seen_at=now))
    return result.rowcount


async def connections_of(conn: AsyncConnection, process_id: str) -> set[tuple[str, str]]:
    ac = m.agent_connections
    rows = await conn.execute(
        select(ac.c.tenant_id, ac.c.agent_id).where(ac.c.process_id == process_id)
    )
    return {(row.tenant_id, row.agent_id) for row in rows}


async def sweep_connections(conn: AsyncConnection, before) -> set[tuple[str, str]]:
    """Delete rows not seen since `before` (their process is dead); their agents.
    PostgreSQL skips rows another transaction holds (a heartbeat refreshing them, or
    another process sweeping them), so sweepers neither wait nor deadlock."""
    ac = m.agent_connections
    stale = (
        select(ac.c.tenant_id, ac.c.agent_id, ac.c.process_id)
        .where(ac.c.seen_at < before)
        .limit(SWEEP_BATCH)
    )
    if conn.dialect.name == "postgresql":
        stale = stale.with_for_update(skip_locked=True)
    key = tuple_(ac.c.tenant_id, ac.c.agent_id, ac.c.process_id)
    rows = await conn.execute(
        delete(ac).where(key.in_(stale)).returning(ac.c.tenant_id, ac.c.agent_id)
    )
    return {(row.tenant_id, row.agent_id) for row in rows}


async def drop_connections(conn: AsyncConnection, process_id: str) -> set[tuple[str, str]]:
    """A clean shutdown: delete the process's rows; their agents."""
    ac = m.agent_connections
    rows = await conn.execute(
        delete(ac).where(ac.c.process_id == process_id).returning(ac.c.tenant_id, ac.c.agent_id)
    )
    return {(row.tenant_id, row.agent_id) for row in rows}


async def connected_anywhere(conn: AsyncConnection, tenant: str, agent_id: str, live_since):
    """Whether some process seen since `live_since` holds a connection of the agent."""
    ac = m.agent_connections
    row = await conn.execute(
        select(ac.c.process_id)
        .where(ac.c.tenant_id == tenant, ac.c.agent_id == agent_id, ac.c.seen_at >= live_since)
        .limit(1)
    )
    return row.first() is not None


async def grace_due(conn: AsyncConnection, tenant: str, key: str):
    """The due time of an agent's presence grace, its row locked (PostgreSQL) until the
    transaction ends: a connect, which deletes that row first, waits for the decision
    or the decision sees the grace disarmed. None when disarmed."""
    t = m.timers
    statement = select(t.c.due_at).where(t.c.tenant_id == tenant, t.c.key == key)
    if conn.dialect.name == "postgresql":
        statement = statement.with_for_update()
    return (await conn.execute(statement)).scalar()


# --- popups ----------------------------------------------------------------------------------


async def history(conn: AsyncConnection, tenant: str, contact: str, but: str, limit: int = 5):
    c = m.conversations
    rows = await conn.execute(
        select(m.conversations)
        .where(c.c.tenant_id == tenant, c.c.contact == contact, c.c.id != but)
        .order_by(c.c.created_at.desc(), c.c.id.desc())
        .limit(limit)
    )
    return [dict(row._mapping) for row in rows]


async def tickets_of_contact(conn: AsyncConnection, tenant: str, ids: Iterable[str]) -> list[dict]:
    ids = list(ids)
    if not ids:
        return []
    t = m.tickets
    rows = await conn.execute(
        select(t)
        .where(t.c.tenant_id == tenant, t.c.conversation_id.in_(ids))
        .order_by(t.c.linked_at.desc())
        .limit(20)
    )
    return [dict(row._mapping) for row in rows]


async def offered_to(conn: AsyncConnection, tenant: str, agent_id: str) -> list[dict]:
    c = m.conversations
    rows = await conn.execute(
        select(m.conversations).where(
            c.c.tenant_id == tenant, c.c.status == Status.OFFERED, c.c.offer_agent_id == agent_id
        )
    )
    return [dict(row._mapping) for row in rows]
