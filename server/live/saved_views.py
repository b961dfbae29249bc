"""Saved views in the database: the one read that checks who may see a view, and the
writes of the views API. Thin: nothing here commits (the caller's transaction does)."""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.core.errors import Refused
from server.core.text import storable
from server.storage import models as m


def may_see(visibility: str, owner: str, user: str, role: str) -> bool:
    """Who may read a saved view: anyone of the tenant when it is shared; its owner when
    private, unless an agent (agents read shared views only)."""
    if visibility == "tenant":
        return True
    return owner == user and role != "agent"


async def load_view(conn: AsyncConnection, principal, view_id: str) -> dict:
    """A view the caller may read, or 404 (another tenant's, or someone's private)."""
    if not storable(view_id):  # NUL or a lone surrogate: no database takes it as a value
        raise Refused("not_found", f"no view {view_id!r}")
    table = m.views
    row = (
        await conn.execute(
            select(table).where(table.c.tenant_id == principal.tenant, table.c.id == view_id)
        )
    ).first()
    if row is None:
        raise Refused("not_found", f"no view {view_id!r}")
    row = dict(row._mapping)
    if not may_see(row["visibility"], row["owner"], principal.user, principal.role):
        raise Refused("not_found", f"no view {view_id!r}")
    return row


async def visible_views(conn: AsyncConnection, principal) -> list[dict]:
    """The views the caller may read, by name: the tenant's shared views, and for a
    supervisor or admin its own private ones."""
    table = m.views
    visible = table.c.visibility == "tenant"
    if principal.role != "agent":
        visible = or_(visible, table.c.owner == principal.user)
    rows = await conn.execute(
        select(table)
        .where(and_(table.c.tenant_id == principal.tenant, visible))
        .order_by(table.c.name, table.c.id)
    )
    return [dict(row._mapping) for row in rows]


async def insert_view(conn: AsyncConnection, row: dict) -> None:
    await conn.execute(m.views.insert().values(row))


async def update_view(conn: AsyncConnection, tenant: str, view_id: str, values: dict) -> None:
    await conn.execute(
        m.views.update()
        .where(m.views.c.tenant_id == tenant, m.views.c.id == view_id)
        .values(values)
    )


async def delete_view(conn: AsyncConnection, tenant: str, view_id: str) -> None:
    await conn.execute(
        m.views.delete().where(m.views.c.tenant_id == tenant, m.views.c.id == view_id)
    )
