"""HTTP for what the agent of a conversation does: initiate, reply, hang up, wrap-up
(server/providers/initiate.py and actions.py do them)."""

from __future__ import annotations

from starlette.requests import Request

from server.edge.http import principal_of, read_body, read_object, respond


async def post_initiate(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    body = await read_body(request, services.settings.max_body_bytes)
    key = request.headers.get("idempotency-key")
    status, answer = await services.initiator.initiate(principal, body, key)
    return respond(request, answer, status)


async def post_message(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    body = await read_object(request, services.settings.max_body_bytes)
    status, answer = await services.conversation_actions.send_reply(
        principal, request.path_params["conversation_id"], body
    )
    return respond(request, answer, status)


async def post_hangup(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    status, answer = await services.conversation_actions.hang_up(
        principal, request.path_params["conversation_id"]
    )
    return respond(request, answer, status)


async def post_wrapup(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    body = await read_object(request, services.settings.max_body_bytes)
    row = await services.conversation_actions.submit_wrapup(
        principal, request.path_params["conversation_id"], body
    )
    return respond(request, {"conversation": row})
