"""POST /api/v1/conversations/{id}/wrapup (api.md): the agent's after-conversation
work, disposition and note, recorded as a `wrapup.submitted` event through ingest."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from server.core import validate as v
from server.core.auth import Principal
from server.edge.api.actions import _own_conversation, _refused, _row_wire
from server.edge.http import ApiError, read_object, respond
from server.wire.rows import instant

MAX_DISPOSITION = 200
MAX_NOTE = 4096


async def submit_wrapup(sb, principal: Principal, conversation_id: Any, body: dict) -> dict:
    """The conversation's row after the wrap-up, or 409 with the current row when its
    status takes none (a wrap-up that already closed it, or one still active)."""
    row = await _own_conversation(sb, principal, conversation_id)
    v.unknown_fields(body, {"disposition", "note"})
    disposition = v.string(body, "disposition", MAX_DISPOSITION)
    if disposition is v.MISSING:
        raise v.invalid("disposition", "is required")
    note = v.string(body, "note", MAX_NOTE, optional=True)
    data = {"disposition": disposition.strip()}
    if note not in (v.MISSING, None):
        data["note"] = note
    tenant = principal.tenant
    # Fixed by the version it answers: a double submit of one form is one event.
    event = {
        "event_id": f"agent:wrapup:{conversation_id}:{row['version']}",
        "type": "wrapup.submitted",
        "conversation_id": conversation_id,
        "occurred_at": instant(sb.clock.now()),
        "data": data,
    }
    (outcome,) = await sb.ingest.submit(tenant, [event])
    if outcome.outcome not in ("applied", "duplicate"):
        raise await _refused(
            sb, tenant, conversation_id, outcome.message or f"no wrap-up in {row['status']}"
        )
    return await _row_wire(sb, tenant, conversation_id)


async def post_wrapup(request: Request):
    sb = request.app.state.sb
    principal = await sb.principal(request)
    if not principal.has("agent"):
        raise ApiError(403, "forbidden", "only the conversation's agent submits its wrap-up")
    body = await read_object(request, sb.settings.max_body_bytes)
    row = await submit_wrapup(sb, principal, request.path_params["conversation_id"], body)
    return respond(request, {"conversation": row})
