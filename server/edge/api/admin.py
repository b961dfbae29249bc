"""Admin set-up: the tenant's settings, teams and agents (api.md)."""

from __future__ import annotations

from starlette.requests import Request

from server.core import validate as v
from server.edge.http import ApiError, read_object, require_role, respond
from server.storage import models as m
from server.storage import repository as repo

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


async def _admin(request: Request, *roles: str):
    sb = request.app.state.sb
    principal = await sb.principal(request)
    require_role(principal, *roles)
    return sb, principal


async def get_tenant(request: Request):
    sb, principal = await _admin(request, "admin", "supervisor")
    async with sb.db.read() as conn:
        row = await repo.get_tenant(conn, principal.tenant)
    return respond(request, tenant_wire(row))


async def put_tenant(request: Request):
    sb, principal = await _admin(request, "admin")
    body = await read_object(request, sb.settings.max_body_bytes)
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
    async with sb.db.write() as conn:
        if values:
            await conn.execute(
                m.tenants.update().where(m.tenants.c.id == principal.tenant).values(values)
            )
        row = await repo.get_tenant(conn, principal.tenant)
    sb.forget_tenant(principal.tenant)
    await sb.routing.settings_changed(principal.tenant)
    return respond(request, tenant_wire(row))


async def list_teams(request: Request):
    sb, principal = await _admin(request, "admin", "supervisor")
    async with sb.db.read() as conn:
        rows = await repo.list_rows(conn, m.teams, principal.tenant, m.teams.c.name)
    return respond(request, {"teams": [team_wire(row) for row in rows]})


async def put_team(request: Request):
    sb, principal = await _admin(request, "admin")
    name = _path_name(request, "name")
    body = await read_object(request, sb.settings.max_body_bytes)
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
    async with sb.db.write() as conn:
        current = await repo.get_row(conn, m.teams, principal.tenant, "name", name)
        row = {
            **TEAM_DEFAULTS,
            **(current or {}),
            **values,
            "tenant_id": principal.tenant,
            "name": name,
        }
        await repo.upsert(conn, m.teams, row, ["tenant_id", "name"])
    await sb.routing.settings_changed(principal.tenant)
    return respond(request, team_wire(row))


async def list_agents(request: Request):
    sb, principal = await _admin(request, "admin", "supervisor")
    async with sb.db.read() as conn:
        rows = await repo.list_rows(conn, m.agents, principal.tenant, m.agents.c.id)
    return respond(request, {"agents": [agent_wire(row) for row in rows]})


async def put_agent(request: Request):
    sb, principal = await _admin(request, "admin")
    agent_id = _path_name(request, "agent_id")
    body = await read_object(request, sb.settings.max_body_bytes)
    v.unknown_fields(body, AGENT_FIELDS)
    values = v.present(
        {
            "name": v.string(body, "name", 200),
            "teams": v.string_list(body, "teams"),
            "chat_capacity": v.integer(body, "chat_capacity", 1, 50),
            "phone": v.string(body, "phone", 64, optional=True),
        }
    )
    async with sb.db.write() as conn:
        current = await repo.get_row(conn, m.agents, principal.tenant, "id", agent_id)
        if current is None and "name" not in values:
            raise v.invalid("name", "is required for a new agent")
        row = {
            "teams": [],
            "chat_capacity": 3,
            "phone": None,
            "presence": "offline",
            "presence_at": None,
            **(current or {}),
            **values,
            "tenant_id": principal.tenant,
            "id": agent_id,
        }
        await repo.upsert(conn, m.agents, row, ["tenant_id", "id"])
    await sb.routing.settings_changed(principal.tenant)
    return respond(request, agent_wire(row))


def _path_name(request: Request, key: str) -> str:
    value = request.path_params[key]
    if not value.strip() or len(value) > 200:
        raise ApiError(422, "invalid_field", f"{key}: must be 1-200 characters", field=key)
    if "\x00" in value:  # PostgreSQL text cannot hold it
        raise ApiError(422, "invalid_field", f"{key}: must not contain NUL characters", field=key)
    return value
