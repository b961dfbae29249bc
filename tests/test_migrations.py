"""Migrations upgrade a database in use, on both backends: 0011 (web chat limits per
tenant, issue 17) adds tenants.webchat_limits to a database at 0010 with its tenants
kept, each on the server's limits until it sets its own; and goes back down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from alembic import command

from server.bus import bus_from_url
from server.storage import models as m
from server.storage.db import Database
from server.storage.migrate import alembic_config
from server.tenants.settings import TenantSettings
from server.tenants.zones import TenantZones

DEFAULTS = {
    "handshakes_per_minute": 120,
    "tenant_handshakes_per_minute": 6000,
    "conversations_per_hour": 30,
    "tenant_conversations_per_hour": 3000,
}


async def alembic(database_url: str, action, revision: str) -> None:
    await asyncio.to_thread(action, alembic_config(database_url), revision)


async def test_0011_adds_webchat_limits_to_a_database_in_use(backend):
    url = backend.database_url
    await alembic(url, command.upgrade, "0010")
    db = Database(url)
    try:
        async with db.write() as conn:  # a tenant of a server before 0011
            await conn.execute(
                m.tenants.insert().values(
                    id="old",
                    timezone="Europe/Madrid",
                    widget_origins=["https://shop.example.com"],
                    created_at=datetime(2026, 1, 1, tzinfo=UTC),
                )
            )
        await db.close()
        await alembic(url, command.upgrade, "head")
        db = Database(url)
        tenants = TenantSettings(db, bus_from_url("memory://"), TenantZones(db), DEFAULTS)
        row = await tenants.tenant("old")
        assert row["webchat_limits"] is None
        assert row["widget_origins"] == ["https://shop.example.com"]
        assert tenants.wire(row)["webchat_limits"] == DEFAULTS
        row = await tenants.put_tenant("old", {"webchat_limits": {"conversations_per_hour": 2}})
        assert (await tenants.tenant("old"))["webchat_limits"] == {"conversations_per_hour": 2}
        await db.close()
        await alembic(url, command.downgrade, "0010")
        await alembic(url, command.upgrade, "head")
        db = Database(url)
        row = await TenantSettings(db, bus_from_url("memory://"), TenantZones(db), DEFAULTS).tenant(
            "old"
        )
        assert row["timezone"] == "Europe/Madrid" and row["webchat_limits"] is None
    finally:
        await db.close()
