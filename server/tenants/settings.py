"""A tenant's settings, teams and agents: validated from a request body (422 naming
the field), stored, and announced on the bus so that every process reloads what
depends on them (`settings` news: an empty `rows` list, which live views pass over)."""

from __future__ import annotations

from server.bus import Bus
from server.core import validate as v
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database
from server.tenants.zones import TenantZones

TENANT_FIELDS = {
    "timezone",
    "routing",
    "wrap_up_timeout_s",
    "reply_timeout_s",
    "merge_channels",
    "widget_origins",
}
TEAM_FIELDS = {
    "business_hours",
    "queue_capacity",
    "queue_timeout_s",
    "offer_timeout_s",
    "service_level_s",
    "wrap_up_timeout_s",
}
AGENT_FIELDS = {"name", "teams", "chat_capacity", "phone"}
TEAM_DEFAULTS = {
    "business_hours": "always",
    "queue_capacity": 50,
    "queue_timeout_s": 300,
    "offer_timeout_s": 20,
    "service_level_s": 20,
    "wrap_up_timeout_s": None,
}
AGENT_DEFAULTS = {
    "teams": [],
    "chat_capacity": 3,
    "phone": None,
    "presence": "offline",
    "presence_at": None,
}


def tenant_wire(row: dict) -> dict:
    return {name: row[name] for name in ("id", *sorted(TENANT_FIELDS))}


def team_wire(row: dict) -> dict:
    return {"name": row["name"], **{name: row[name] for name in sorted(TEAM_FIELDS)}}


def agent_wire(row: dict) -> dict:
    return {
        "id": row["id"],
        "presence": row["presence"],
        **{name: row[name] for name in sorted(AGENT_FIELDS)},
    }


def settings_news() -> dict:
    """The bus message that tells every process a tenant's settings changed."""
    return {"rows": [], "settings": True}


class TenantSettings:
    def __init__(self, db: Database, bus: Bus, zones: TenantZones):
        self.db = db
        self.bus = bus
        self.zones = zones

    async def tenant(self, tenant: str) -> dict:
        async with self.db.read() as conn:
            return await repo.get_tenant(conn, tenant)

    async def teams(self, tenant: str) -> list[dict]:
        async with self.db.read() as conn:
            return await repo.list_rows(conn, m.teams, tenant, m.teams.c.name)

    async def agents(self, tenant: str) -> list[dict]:
        async with self.db.read() as conn:
            return await repo.list_rows(conn, m.agents, tenant, m.agents.c.id)

    async def put_tenant(self, tenant: str, body: dict) -> dict:
        v.unknown_fields(body, TENANT_FIELDS)
        values = v.present(
            {
                "timezone": v.timezone_name(body, "timezone"),
                "routing": v.choice(body, "routing", ("builtin", "external")),
                "wrap_up_timeout_s": v.integer(body, "wrap_up_timeout_s", 1, 86400),
                "reply_timeout_s": v.integer(body, "reply_timeout_s", 1, 30 * 86400),
                "merge_channels": v.boolean(body, "merge_channels"),
                "widget_origins": v.string_list(body, "widget_origins"),
            }
        )
        async with self.db.write() as conn:
            if values:
                await conn.execute(
                    m.tenants.update().where(m.tenants.c.id == tenant).values(values)
                )
            row = await repo.get_tenant(conn, tenant)
        self.zones.forget(tenant)
        self.bus.post(tenant, settings_news())
        return row

    async def put_team(self, tenant: str, name: str, body: dict) -> dict:
        v.unknown_fields(body, TEAM_FIELDS)
        values = v.present(
            {
                "business_hours": v.business_hours(body),
                "queue_capacity": v.integer(body, "queue_capacity", 0, 100_000),
                "queue_timeout_s": v.integer(body, "queue_timeout_s", 1, 86400),
                "offer_timeout_s": v.integer(body, "offer_timeout_s", 1, 3600),
                "service_level_s": v.integer(body, "service_level_s", 1, 86400),
                "wrap_up_timeout_s": v.optional_integer(body, "wrap_up_timeout_s", 1, 86400),
            }
        )
        async with self.db.write() as conn:
            current = await repo.get_row(conn, m.teams, tenant, "name", name)
            row = {**TEAM_DEFAULTS, **(current or {}), **values, "tenant_id": tenant, "name": name}
            await repo.upsert(conn, m.teams, row, ["tenant_id", "name"])
        self.bus.post(tenant, settings_news())
        return row

    async def put_agent(self, tenant: str, agent_id: str, body: dict) -> dict:
        v.unknown_fields(body, AGENT_FIELDS)
        values = v.present(
            {
                "name": v.string(body, "name", 200),
                "teams": v.string_list(body, "teams"),
                "chat_capacity": v.integer(body, "chat_capacity", 1, 50),
                "phone": v.string(body, "phone", 64, optional=True),
            }
        )
        async with self.db.write() as conn:
            current = await repo.get_row(conn, m.agents, tenant, "id", agent_id)
            if current is None and "name" not in values:
                raise v.invalid("name", "is required for a new agent")
            row = {
                **AGENT_DEFAULTS,
                **(current or {}),
                **values,
                "tenant_id": tenant,
                "id": agent_id,
            }
            await repo.upsert(conn, m.agents, row, ["tenant_id", "id"])
        self.bus.post(tenant, settings_news())
        return row
