"""Websocket messages of routing (api.md): subscribe_popups, accept, reject, presence,
transfer, subscribe_wallboard. Registered into the handler table of /ws
(server/edge/ws/connection.py)."""

from __future__ import annotations

from server.core.errors import Refused
from server.edge.api.routing import wallboard_filter
from server.routing.wallboard import WallboardSubscription


def _require(connection, *roles: str) -> None:
    if connection.principal.role not in roles:
        raise Refused("forbidden", f"role {connection.principal.role!r} may not do this")


async def on_subscribe_popups(connection, frame: dict, ref) -> None:
    _require(connection, "agent")
    await connection.services.routing.opened(connection)  # idempotent: agents are in on connect
    connection.reply({"type": "ok", "ref": ref})


async def on_accept(connection, frame: dict, ref) -> None:
    _require(connection, "agent")
    await _answer(
        connection, ref, connection.services.routing.actions.accept, frame.get("offer_id")
    )


async def on_reject(connection, frame: dict, ref) -> None:
    _require(connection, "agent")
    await _answer(
        connection, ref, connection.services.routing.actions.reject, frame.get("offer_id")
    )


async def _answer(connection, ref, action, *args) -> None:
    try:
        row = await action(connection.principal, *args)
    except Refused as error:
        frame = {"type": "error", "ref": ref, "code": error.code, "message": error.message}
        if "conversation" in error.extra:
            frame["conversation"] = error.extra["conversation"]
        connection.reply(frame)
        return
    connection.reply({"type": "ok", "ref": ref, "conversation": row})


async def on_presence(connection, frame: dict, ref) -> None:
    _require(connection, "agent")
    principal = connection.principal
    result = await connection.services.routing.presence.set(
        principal.tenant, principal.user, frame.get("presence")
    )
    connection.reply({"type": "ok", "ref": ref, **result})


async def on_transfer(connection, frame: dict, ref) -> None:
    body = {key: frame[key] for key in ("team", "agent_id") if key in frame}
    await _answer(
        connection,
        ref,
        connection.services.routing.actions.transfer,
        frame.get("conversation_id"),
        body,
    )


async def on_subscribe_wallboard(connection, frame: dict, ref) -> None:
    _require(connection, "wallboard", "supervisor", "admin")
    sub = WallboardSubscription(
        connection,
        connection.principal.tenant,
        wallboard_filter(frame.get("teams"), "teams"),
        wallboard_filter(frame.get("channels"), "channels"),
    )
    wallboard = connection.services.routing.wallboard
    await wallboard.send(sub, ref)
    wallboard.subscribe(sub)


HANDLERS = {
    "subscribe_popups": on_subscribe_popups,
    "accept": on_accept,
    "reject": on_reject,
    "presence": on_presence,
    "transfer": on_transfer,
    "subscribe_wallboard": on_subscribe_wallboard,
}
