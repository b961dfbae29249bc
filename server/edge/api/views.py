"""The views API: saved views (`GET/POST /api/v1/views`, `GET/PATCH/DELETE
/api/v1/views/{id}`) and a page of a view's rows (`GET /api/v1/views/{id}/rows`),
the same rows and order as a websocket snapshot."""

from __future__ import annotations

import secrets

from starlette.requests import Request

from server.edge.http import principal_of, read_object, respond
from server.live import saved_views
from server.live.definitions import (
    agent_scope,
    definition_of,
    edited_view_values,
    new_view_values,
    require_owner,
    view_wire,
)
from server.live.queries import view_page
from server.live.watched import view_news
from server.wire.protocol import PAGE_LIMIT

READERS = ("supervisor", "admin", "agent")
WRITERS = ("supervisor", "admin")


async def list_views(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    principal.require(*READERS)
    async with services.db.read() as conn:
        rows = await saved_views.visible_views(conn, principal)
    return respond(request, {"views": [view_wire(row) for row in rows]})


async def create_view(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    principal.require(*WRITERS)
    body = await read_object(request, services.settings.max_body_bytes)
    values = new_view_values(body, await services.tenants.zone(principal.tenant))
    now = services.clock.now()
    row = {
        "tenant_id": principal.tenant,
        "id": "v_" + secrets.token_urlsafe(9),
        "owner": principal.user,
        "created_at": now,
        "updated_at": now,
        **values,
    }
    async with services.db.write() as conn:
        await saved_views.insert_view(conn, row)
    return respond(request, view_wire(row), 201)


async def get_view(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    principal.require(*READERS)
    async with services.db.read() as conn:
        row = await saved_views.load_view(conn, principal, request.path_params["view_id"])
    return respond(request, view_wire(row))


async def update_view(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    principal.require(*WRITERS)
    body = await read_object(request, services.settings.max_body_bytes)
    tz = await services.tenants.zone(principal.tenant)
    async with services.db.write() as conn:
        row = await saved_views.load_view(conn, principal, request.path_params["view_id"])
        require_owner(principal, row)
        values = edited_view_values(row, body, tz)
        values["updated_at"] = services.clock.now()
        await saved_views.update_view(conn, principal.tenant, row["id"], values)
        row.update(values)
    # After the commit: those watching it, in every process, follow (server/live/watched.py).
    services.bus.post(principal.tenant, {"rows": [], "views": [view_news(row)]})
    return respond(request, view_wire(row))


async def delete_view(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    principal.require(*WRITERS)
    async with services.db.write() as conn:
        row = await saved_views.load_view(conn, principal, request.path_params["view_id"])
        require_owner(principal, row)
        await saved_views.delete_view(conn, principal.tenant, row["id"])
    services.bus.post(principal.tenant, {"rows": [], "views": [view_news(row, deleted=True)]})
    return respond(request, {"deleted": row["id"]})


async def view_rows(request: Request):
    """One page of a view, in the same rows and order as a websocket snapshot."""
    services = request.app.state.services
    principal = await principal_of(request)
    principal.require(*READERS)
    limit = PAGE_LIMIT.parse(request.query_params.get("limit"), "limit")
    tz = await services.tenants.zone(principal.tenant)
    async with services.db.read() as conn:
        row = await saved_views.load_view(conn, principal, request.path_params["view_id"])
    definition = definition_of(row)
    query = definition.compile(tz, agent_scope(principal))
    answer = await view_page(
        services.db,
        services.live,
        principal.tenant,
        definition,
        query,
        tz,
        limit,
        request.query_params.get("cursor"),
        services.clock.now(),
    )
    return respond(request, answer)
