"""POST /api/v1/events: one event, or {"events": [...]}."""

from __future__ import annotations

from starlette.requests import Request

from server.edge.http import ApiError, read_body, require_role, respond

MAX_EVENTS_PER_REQUEST = 5000


async def post_events(request: Request):
    sb = request.app.state.sb
    principal = await sb.principal(request)
    require_role(principal, "service", "admin")
    body = await read_body(request, sb.settings.max_body_bytes)
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        envelopes = body["events"]
    elif isinstance(body, dict) and "type" in body:
        envelopes = [body]
    else:
        raise ApiError(
            400,
            "malformed",
            'the body must be an event (an object with "type") or {"events": [...]}',
        )
    if len(envelopes) > MAX_EVENTS_PER_REQUEST:
        raise ApiError(413, "too_large", f"at most {MAX_EVENTS_PER_REQUEST} events per request")
    outcomes = await sb.ingest.submit(principal.tenant, envelopes)
    return respond(request, {"results": [outcome.to_wire() for outcome in outcomes]})
