"""POST /api/v1/events: one event, or {"events": [...]}."""

from __future__ import annotations

from starlette.requests import Request

from server.core.errors import Refused
from server.edge.http import principal_of, read_body, respond
from server.ingest.pipeline import MAX_EVENTS_PER_REQUEST


async def post_events(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    principal.require("service", "admin")
    body = await read_body(request, services.settings.max_body_bytes)
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        envelopes = body["events"]
    elif isinstance(body, dict) and "type" in body:
        envelopes = [body]
    else:
        raise Refused(
            "malformed",
            'the body must be an event (an object with "type") or {"events": [...]}',
        )
    if len(envelopes) > MAX_EVENTS_PER_REQUEST:
        raise Refused("too_large", f"at most {MAX_EVENTS_PER_REQUEST} events per request")
    outcomes = await services.ingest.submit(principal.tenant, envelopes)
    return respond(request, {"results": [outcome.to_wire() for outcome in outcomes]})
