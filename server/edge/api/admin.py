"""Admin set-up over HTTP: the tenant's settings, teams and agents
(server/tenants/settings.py validates and stores them)."""

from __future__ import annotations

from starlette.requests import Request

from server.core.auth import Principal
from server.core.fields import NAME
from server.edge.http import principal_of, read_object, respond
from server.tenants.settings import agent_wire, team_wire


async def _caller(request: Request, *roles: str) -> Principal:
    principal = await principal_of(request)
    principal.require(*roles)
    return principal


async def get_tenant(request: Request):
    principal = await _caller(request, "admin", "supervisor")
    tenant_settings = request.app.state.services.tenant_settings
    row = await tenant_settings.tenant(principal.tenant)
    return respond(request, tenant_settings.wire(row))


async def put_tenant(request: Request):
    services = request.app.state.services
    principal = await _caller(request, "admin")
    body = await read_object(request, services.settings.max_body_bytes)
    row = await services.tenant_settings.put_tenant(principal.tenant, body)
    return respond(request, services.tenant_settings.wire(row))


async def list_teams(request: Request):
    principal = await _caller(request, "admin", "supervisor")
    rows = await request.app.state.services.tenant_settings.teams(principal.tenant)
    return respond(request, {"teams": [team_wire(row) for row in rows]})


async def put_team(request: Request):
    services = request.app.state.services
    principal = await _caller(request, "admin")
    name = _path_name(request, "name")
    body = await read_object(request, services.settings.max_body_bytes)
    row = await services.tenant_settings.put_team(principal.tenant, name, body)
    return respond(request, team_wire(row))


async def list_agents(request: Request):
    principal = await _caller(request, "admin", "supervisor")
    rows = await request.app.state.services.tenant_settings.agents(principal.tenant)
    return respond(request, {"agents": [agent_wire(row) for row in rows]})


async def put_agent(request: Request):
    services = request.app.state.services
    principal = await _caller(request, "admin")
    agent_id = _path_name(request, "agent_id")
    body = await read_object(request, services.settings.max_body_bytes)
    row = await services.tenant_settings.put_agent(principal.tenant, agent_id, body)
    return respond(request, agent_wire(row))


def _path_name(request: Request, key: str) -> str:
    return NAME.read(request.path_params[key], key)
