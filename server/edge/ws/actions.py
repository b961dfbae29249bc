"""Websocket frames for what the agent of a conversation does: `initiate`,
`send_message`, `hangup` (the same services as their HTTP calls)."""

from __future__ import annotations

from server.core.errors import Refused


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
        raise Refused("malformed", "idempotency_key must be a string")
    status, answer = await connection.services.initiator.initiate(connection.principal, body, key)
    _ws_answer(connection, ref, status, answer)


async def on_send_message(connection, frame: dict, ref) -> None:
    body = {k: val for k, val in frame.items() if k not in ("type", "ref", "conversation_id")}
    status, answer = await connection.services.conversation_actions.send_reply(
        connection.principal,
        frame.get("conversation_id"),
        body,
    )
    _ws_answer(connection, ref, status, answer)


async def on_hangup(connection, frame: dict, ref) -> None:
    status, answer = await connection.services.conversation_actions.hang_up(
        connection.principal, frame.get("conversation_id")
    )
    _ws_answer(connection, ref, status, answer)


HANDLERS = {"initiate": on_initiate, "send_message": on_send_message, "hangup": on_hangup}
