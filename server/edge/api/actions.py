"""An agent's channel actions (api.md): initiate, reply, hang up, over HTTP and as
websocket frames; and `bridge_after_accept`, the accept path's hook that connects a
held caller to the accepting agent's phone.

Each action first records its event through ingest (the one path every change
takes), then asks the provider. A refused transition is 409 `invalid_transition`
with the current row, and the provider is not called.

Not here: the reply timeout (`reply_timeout_s`, ending an unanswered outgoing message
as `customer_did_not_respond`) belongs with the durable timers of server/timers.py.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from starlette.requests import Request

from channels.base import OutboundMessage, ProviderError, rfc3339
from server.core import validate as v
from server.core.auth import Principal
from server.edge.api.conversations import visible_to
from server.edge.http import ApiError, read_body, read_object, respond
from server.providers import repository as crepo
from server.providers.initiate import initiate, with_retries
from server.providers.registry import base_url
from server.storage import models as m
from server.storage import repository as repo
from server.wire.rows import wire_row

log = logging.getLogger("switchboard.actions")

TEXT_CHANNELS = ("sms", "whatsapp", "chat")
MAX_TEXT = 4096


# --- the actions ----------------------------------------------------------------------------


async def _own_conversation(sb, principal: Principal, conversation_id: str) -> dict:
    if not principal.has("agent"):
        raise ApiError(403, "forbidden", "only the conversation's agent may do this")
    if not isinstance(conversation_id, str) or "\x00" in conversation_id:
        raise ApiError(404, "not_found", "no such conversation")
    async with sb.db.read() as conn:
        row = await repo.get_conversation_row(conn, principal.tenant, conversation_id)
    if row is None or not visible_to(principal, row):
        raise ApiError(404, "not_found", f"no conversation {conversation_id[:200]!r}")
    if row["agent_id"] != principal.user:
        raise ApiError(403, "forbidden", "the conversation is not yours (accept it first)")
    return dict(row)


async def _row_wire(sb, tenant: str, conversation_id: str) -> dict:
    async with sb.db.read() as conn:
        row = await repo.get_conversation_row(conn, tenant, conversation_id)
    return wire_row(row, await sb.tenant_zone(tenant))


async def _refused(sb, tenant: str, conversation_id: str, message: str) -> ApiError:
    return ApiError(
        409,
        "invalid_transition",
        message,
        conversation=await _row_wire(sb, tenant, conversation_id),
    )


async def send_reply(sb, principal: Principal, conversation_id: Any, body: Any, base: str):
    """(status, answer): the agent's message, stored, then sent through the provider."""
    row = await _own_conversation(sb, principal, conversation_id)
    if not isinstance(body, dict):
        raise ApiError(400, "malformed", "the body must be an object")
    v.unknown_fields(body, {"text"})
    text = v.string(body, "text", MAX_TEXT)
    if text is v.MISSING:
        raise v.invalid("text", "is required")
    tenant = principal.tenant
    channels = repo.decode_channels(row["channels"])
    channel = next((c for c in reversed(channels) if c in TEXT_CHANNELS), None)
    if channel is None or row["status"] == "closed":
        raise await _refused(
            sb,
            tenant,
            conversation_id,
            f"a {row['channel']} conversation in {row['status']} takes no message",
        )
    message_id = f"m-{secrets.token_hex(10)}"
    (outcome,) = await sb.ingest.submit(
        tenant,
        [
            {
                "event_id": f"agent:{message_id}",
                "type": "media.message",
                "conversation_id": conversation_id,
                "occurred_at": rfc3339(sb.clock.now()),
                "data": {"message_id": message_id, "sender": "agent", "text": text},
            }
        ],
    )
    if outcome.outcome != "applied":
        raise await _refused(sb, tenant, conversation_id, outcome.message or "refused")
    if channel == "chat":  # web chat: the visitor's socket carries it, no provider
        return 202, {
            "message_id": message_id,
            "conversation": await _row_wire(sb, tenant, conversation_id),
        }
    config = await sb.providers.for_channel(tenant, channel)
    try:
        if config is None:
            raise ProviderError(f"the tenant has no provider for {channel}")
        number = row["contacto_number"] or config.default_number() or ""
        adapter = sb.providers.adapter(tenant, config, base)
        await with_retries(
            adapter.send_message,
            OutboundMessage(channel, row["contact"], number, text, message_id),
        )
    except ProviderError as error:
        await sb.ingest.submit(
            tenant,
            [
                {
                    "event_id": f"agent:{message_id}:failed",
                    "type": "media.message_status",
                    "conversation_id": conversation_id,
                    "occurred_at": rfc3339(sb.clock.now()),
                    "data": {"message_id": message_id, "status": "failed"},
                }
            ],
        )
        return 502, {
            "error": {
                "code": "provider_failed",
                "message": f"the message was not sent: {error.message}",
                "message_id": message_id,
                "conversation_id": conversation_id,
            }
        }
    return 202, {
        "message_id": message_id,
        "conversation": await _row_wire(sb, tenant, conversation_id),
    }


async def hang_up(sb, principal: Principal, conversation_id: Any, base: str):
    """(status, answer): the agent ends the call or chat; the provider drops the call."""
    row = await _own_conversation(sb, principal, conversation_id)
    tenant = principal.tenant
    (outcome,) = await sb.ingest.submit(
        tenant,
        [
            {
                "event_id": f"agent:hangup:{conversation_id}:{row['version']}",
                "type": "media.hangup",
                "conversation_id": conversation_id,
                "occurred_at": rfc3339(sb.clock.now()),
                "data": {"source": "agent"},
            }
        ],
    )
    if outcome.outcome != "applied":
        raise await _refused(
            sb, tenant, conversation_id, outcome.message or f"nothing to hang up in {row['status']}"
        )
    answer: dict[str, Any] = {}
    if "call" in repo.decode_channels(row["channels"]):
        problem = await _drop_calls(sb, tenant, conversation_id, base)
        if problem:
            answer["warning"] = problem
    answer["conversation"] = await _row_wire(sb, tenant, conversation_id)
    return 200, answer


async def _drop_calls(sb, tenant: str, conversation_id: str, base: str) -> str | None:
    async with sb.db.read() as conn:
        calls = await crepo.calls_of(conn, tenant, conversation_id)
    problems = []
    for call in calls:
        if not call["provider_call_id"]:
            continue
        config = await sb.providers.config(tenant, call["provider"])
        if config is None:
            continue
        try:
            await sb.providers.adapter(tenant, config, base).hangup(call["provider_call_id"])
        except ProviderError as error:
            log.warning("provider hangup failed", extra={"tenant": tenant, "error": error.message})
            problems.append(f"{call['provider']} could not end the call: {error.message}")
    return "; ".join(problems) or None


async def bridge_after_accept(sb, principal: Principal, row: dict, base: str | None) -> None:
    """The accept path's hook (AgentActions.after_accept): an accepted call is bridged
    to the agent's phone. A provider that refuses is logged: the accept stands (the
    conversation is the agent's), as a hangup's provider failure does."""
    if row.get("channel") != "call":
        return
    base = base or sb.settings.public_url or "http://localhost"
    try:
        await bridge_call(sb, principal.tenant, row["id"], principal.user, base)
    except ProviderError as error:
        log.warning(
            "bridge on accept failed",
            extra={
                "tenant": principal.tenant,
                "conversation_id": row["id"],
                "error": error.message,
            },
        )


async def bridge_call(sb, tenant: str, conversation_id: str, agent_id: str, base: str) -> None:
    """Connect a held inbound caller to the accepting agent's phone. For the accept
    path (agent.accepted of a call) to call once the acceptance is applied; raises
    ProviderError when the provider refuses."""
    async with sb.db.read() as conn:
        calls = [
            call
            for call in await crepo.calls_of(conn, tenant, conversation_id)
            if call["provider_call_id"]
        ]
        if not calls:  # nothing to bridge (a call of no provider's): no more reads
            return
        agent = await repo.get_row(conn, m.agents, tenant, "id", agent_id)
        row = await repo.get_conversation_row(conn, tenant, conversation_id)
    for call in calls:
        config = await sb.providers.config(tenant, call["provider"])
        if config is None:
            continue
        number = (row or {}).get("contacto_number") or config.default_number() or ""
        adapter = sb.providers.adapter(tenant, config, base)
        await adapter.bridge(call["provider_call_id"], (agent or {}).get("phone") or "", number)


# --- HTTP ---------------------------------------------------------------------------------------


async def post_initiate(request: Request):
    sb = request.app.state.sb
    principal = await sb.principal(request)
    body = await read_body(request, sb.settings.max_body_bytes)
    key = request.headers.get("idempotency-key")
    status, answer = await initiate(sb, principal, body, key, base_url(request))
    return respond(request, answer, status)


async def post_message(request: Request):
    sb = request.app.state.sb
    principal = await sb.principal(request)
    body = await read_object(request, sb.settings.max_body_bytes)
    status, answer = await send_reply(
        sb, principal, request.path_params["conversation_id"], body, base_url(request)
    )
    return respond(request, answer, status)


async def post_hangup(request: Request):
    sb = request.app.state.sb
    principal = await sb.principal(request)
    status, answer = await hang_up(
        sb, principal, request.path_params["conversation_id"], base_url(request)
    )
    return respond(request, answer, status)


# --- websocket frames (registered in server/ws.py HANDLERS) --------------------------------------


def _ws_base(connection) -> str:
    base = connection.base_url.rstrip("/")
    return base.replace("wss://", "https://", 1).replace("ws://", "http://", 1)


def _ws_answer(connection, ref, status: int, answer: dict) -> None:
    if status >= 400:
        error = answer["error"]
        connection.reply({"type": "error", "ref": ref, **error})
    else:
        connection.reply({"type": "ok", "ref": ref, **answer})


async def on_initiate(connection, frame: dict, ref) -> None:
    body = {k: val for k, val in frame.items() if k not in ("type", "ref", "idempotency_key")}
    key = frame.get("idempotency_key")
    if key is not None and not isinstance(key, str):
        raise ApiError(400, "malformed", "idempotency_key must be a string")
    status, answer = await initiate(
        connection.sb, connection.principal, body, key, _ws_base(connection)
    )
    _ws_answer(connection, ref, status, answer)


async def on_send_message(connection, frame: dict, ref) -> None:
    body = {k: val for k, val in frame.items() if k not in ("type", "ref", "conversation_id")}
    status, answer = await send_reply(
        connection.sb,
        connection.principal,
        frame.get("conversation_id"),
        body,
        _ws_base(connection),
    )
    _ws_answer(connection, ref, status, answer)


async def on_hangup(connection, frame: dict, ref) -> None:
    status, answer = await hang_up(
        connection.sb, connection.principal, frame.get("conversation_id"), _ws_base(connection)
    )
    _ws_answer(connection, ref, status, answer)


WS_HANDLERS = {"initiate": on_initiate, "send_message": on_send_message, "hangup": on_hangup}
