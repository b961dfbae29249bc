"""HTTP for routing: presence, answering offers, transfers, the wallboard
(docs/api.md)."""

from __future__ import annotations

from starlette.requests import Request

from server.core.errors import Refused
from server.edge.http import principal_of, read_object, respond
from server.routing.presence import PRESENCE_BODY
from server.wire.rows import instant


async def _caller(request: Request, *roles: str):
    services = request.app.state.services
    principal = await principal_of(request)
    principal.require(*roles)
    return services, principal


async def put_presence(request: Request):
    services, principal = await _caller(request, "agent")
    body = PRESENCE_BODY.read(await read_object(request, services.settings.max_body_bytes))
    result = await services.routing.presence.set(principal.tenant, principal.user, body["presence"])
    return respond(request, result)


async def accept_offer(request: Request):
    services, principal = await _caller(request, "agent")
    row = await services.routing.actions.accept(principal, request.path_params["offer_id"])
    return respond(request, {"conversation": row})


async def reject_offer(request: Request):
    services, principal = await _caller(request, "agent")
    row = await services.routing.actions.reject(principal, request.path_params["offer_id"])
    return respond(request, {"conversation": row})


async def transfer(request: Request):
    services, principal = await _caller(request, "agent", "supervisor", "admin")
    body = await read_object(request, services.settings.max_body_bytes)
    row = await services.routing.actions.transfer(
        principal, request.path_params["conversation_id"], body
    )
    return respond(request, {"conversation": row})


def wallboard_filter(values, name: str) -> frozenset[str] | None:
    if values is None:
        return None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise Refused("invalid_field", f"{name}: must be a list of strings", field=name)
    return frozenset(values)


async def get_wallboard(request: Request):
    services, principal = await _caller(request, "wallboard", "supervisor", "admin")
    teams = request.query_params.getlist("team") or None
    channels = request.query_params.getlist("channel") or None
    metrics = await services.routing.wallboard.metrics(
        principal.tenant,
        frozenset(teams) if teams else None,
        frozenset(channels) if channels else None,
    )
    return respond(request, {"at": instant(services.clock.now()), "metrics": metrics})
