"""A tenant's settings, teams and agents: read from a request body declared here
(TENANT_BODY, TEAM_BODY, AGENT_BODY: 422 naming the field; the OpenAPI document
describes the same objects), stored, and announced on the bus so that every process
reloads what depends on them (`settings` news: an empty `rows` list, which live views
pass over)."""

from __future__ import annotations

from server.bus import Bus
from server.core.errors import invalid
from server.core.fields import (
    NAME,
    Boolean,
    BusinessHours,
    Choice,
    Integer,
    List,
    Object,
    Origin,
    Text,
    TextList,
    TimeZone,
)
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database
from server.tenants.zones import TenantZones

DAY_S = 86400
ROUTING = ("builtin", "external")
WEBCHAT_LIMITS = Object(
    handshakes_per_minute=Integer(
        1,
        1_000_000,
        nullable=True,
        description="/webchat handshakes per client address per minute (429 beyond).",
    ),
    tenant_handshakes_per_minute=Integer(
        1,
        10_000_000,
        nullable=True,
        description="/webchat handshakes per minute over every address (429 beyond).",
    ),
    conversations_per_hour=Integer(
        1,
        1_000_000,
        nullable=True,
        description="New visitors (chats) per client address per hour (close 1013 beyond).",
    ),
    tenant_conversations_per_hour=Integer(
        1,
        10_000_000,
        nullable=True,
        description="New visitors (chats) per hour over every address (close 1013 beyond).",
    ),
    nullable=True,
    description="The web chat's abuse limits for this tenant (docs/security.md). A key given "
    "changes, null sets it back to the server's default, a key left out stays; null for "
    "the whole object sets all four back. Read back: the values in force.",
)

TENANT_BODY = Object(
    timezone=TimeZone(),
    routing=Choice(
        ROUTING,
        description="builtin: the server's own router; external: routing events come from "
        "an integration.",
    ),
    wrap_up_timeout_s=Integer(
        1,
        DAY_S,
        description="Seconds of wrap-up before a conversation closes, unless its "
        "team sets its own.",
    ),
    reply_timeout_s=Integer(
        1,
        30 * DAY_S,
        description="Seconds an outgoing message waits for the customer's reply before the "
        "conversation ends (customer_did_not_respond).",
    ),
    merge_channels=Boolean(
        description="A contact's message or call on another channel joins its open conversation."
    ),
    widget_origins=List(
        Origin(),
        max_items=100,
        description="The sites allowed to embed the chat widget: origins, `http(s)://host[:port]`.",
    ),
    webchat_limits=WEBCHAT_LIMITS,
    description="Only the fields given change.",
)
TEAM_BODY = Object(
    business_hours=BusinessHours(
        description="Outside them a conversation ends out_of_business_hours."
    ),
    queue_capacity=Integer(0, 100_000, description="Conversations waiting at most."),
    queue_timeout_s=Integer(1, DAY_S, description="Seconds a conversation waits at most."),
    offer_timeout_s=Integer(1, 3600, description="Seconds an agent has to answer an offer."),
    service_level_s=Integer(
        1, DAY_S, description="Answered within this many seconds counts toward service_level."
    ),
    wrap_up_timeout_s=Integer(1, DAY_S, nullable=True, description="null: the tenant's."),
    description="Creates the team, or changes only the fields given.",
)
AGENT_BODY = Object(
    name=NAME,
    teams=TextList(description="The teams whose conversations it is offered."),
    chat_capacity=Integer(1, 50, description="Chats at once."),
    phone=Text(64, nullable=True, description="Where the provider rings the agent for calls."),
    description="Creates the agent (`name` is then required), or changes the fields given.",
)
TENANT_FIELDS = set(TENANT_BODY.fields)
TEAM_FIELDS = set(TEAM_BODY.fields)
AGENT_FIELDS = set(AGENT_BODY.fields)
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


def tenant_wire(row: dict, webchat_defaults: dict[str, int]) -> dict:
    """The tenant as an admin reads it: its web chat limits are the values in force
    (the tenant's own, else `webchat_defaults`, the server's)."""
    wire = {name: row[name] for name in ("id", *sorted(TENANT_FIELDS))}
    wire["webchat_limits"] = webchat_limits(row["webchat_limits"], webchat_defaults)
    return wire


def webchat_limits(own: dict | None, defaults: dict[str, int]) -> dict[str, int]:
    """The web chat limits in force: the tenant's `own` (a key left out or null: the
    server's default)."""
    own = own or {}
    return {name: own.get(name) or defaults[name] for name in WEBCHAT_LIMITS.fields}


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
    def __init__(
        self, db: Database, bus: Bus, zones: TenantZones, webchat_defaults: dict[str, int]
    ):
        """`webchat_defaults`: the server's web chat limits (WEBCHAT_LIMITS' names), in
        force where a tenant sets none."""
        self.db = db
        self.bus = bus
        self.zones = zones
        self.webchat_defaults = webchat_defaults

    def wire(self, row: dict) -> dict:
        return tenant_wire(row, self.webchat_defaults)

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
        values = TENANT_BODY.read(body)
        async with self.db.write() as conn:
            if values.get("webchat_limits") is not None:  # merged into what was set before
                current = await repo.get_tenant(conn, tenant)
                merged = {
                    **((current or {}).get("webchat_limits") or {}),
                    **values["webchat_limits"],
                }
                merged = {name: value for name, value in merged.items() if value is not None}
                values["webchat_limits"] = merged or None
            if values:
                await conn.execute(
                    m.tenants.update().where(m.tenants.c.id == tenant).values(values)
                )
            row = await repo.get_tenant(conn, tenant)
        self.zones.forget(tenant)
        self.bus.post(tenant, settings_news())
        return row

    async def put_team(self, tenant: str, name: str, body: dict) -> dict:
        values = TEAM_BODY.read(body)
        async with self.db.write() as conn:
            current = await repo.get_row(conn, m.teams, tenant, "name", name)
            row = {**TEAM_DEFAULTS, **(current or {}), **values, "tenant_id": tenant, "name": name}
            await repo.upsert(conn, m.teams, row, ["tenant_id", "name"])
        self.bus.post(tenant, settings_news())
        return row

    async def put_agent(self, tenant: str, agent_id: str, body: dict) -> dict:
        values = AGENT_BODY.read(body)
        async with self.db.write() as conn:
            current = await repo.get_row(conn, m.agents, tenant, "id", agent_id)
            if current is None and "name" not in values:
                raise invalid("name", "is required for a new agent")
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
