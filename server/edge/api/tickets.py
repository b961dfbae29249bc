"""`POST /api/v1/ws-tickets`: a single-use ticket to open `/ws` with (any role), so that
a page never puts its token in a URL (server/tenants/tickets.py)."""

from __future__ import annotations

from starlette.requests import Request

from server.edge.http import NO_STORE, principal_of, respond
from server.tenants.tickets import TICKET_TTL_S


async def post_ws_ticket(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    ticket = await services.tickets.issue(principal)
    return respond(request, {"ticket": ticket, "expires_in": TICKET_TTL_S}, 200, NO_STORE)
