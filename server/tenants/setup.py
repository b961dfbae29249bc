"""Creating tenants (the command line's `tenant add`, and the demo)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from server.core.clock import SYSTEM_CLOCK
from server.core.fields import Object, Slug
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database
from server.tenants.settings import TENANT_BODY

NEW_TENANT = Object(
    name=Slug(),
    timezone=TENANT_BODY.fields["timezone"],
    routing=TENANT_BODY.fields["routing"],
    required=("name", "timezone", "routing"),
)


class TenantExists(Exception):
    pass


async def create_tenant(
    conn: AsyncConnection, name: str, timezone: str, routing: str = "builtin"
) -> dict:
    NEW_TENANT.read({"name": name, "timezone": timezone, "routing": routing})
    if await repo.get_tenant(conn, name) is not None:
        raise TenantExists(f"tenant {name!r} already exists")
    row = {
        "id": name,
        "timezone": timezone,
        "routing": routing,
        "wrap_up_timeout_s": 120,
        "reply_timeout_s": 86400,
        "merge_channels": False,
        "widget_origins": [],
        "created_at": SYSTEM_CLOCK.now(),
    }
    await conn.execute(m.tenants.insert().values(row))
    return row


async def add_tenant(database_url: str, name: str, timezone: str, routing: str) -> dict:
    db = Database(database_url)
    try:
        async with db.write() as conn:
            return await create_tenant(conn, name, timezone, routing)
    finally:
        await db.close()
