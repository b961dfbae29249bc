"""`/ws`: the websocket protocol of api.md (subscribe, fetch, unsubscribe, ping).

The handshake is judged before it is accepted: a missing, bad or expired token gets
HTTP 401, a foreign Origin 403. A token that expires while the socket is open
closes it with 4401. Malformed frames get an `error` frame and the socket stays open;
a frame over the limit closes it with 1009 (the server's frame limit).

Outbound frames go through a queue bounded in bytes: a client that does not read
loses its pending frames, its subscriptions end with `resync`, and if it still falls
behind the socket is closed with 1013; no other client notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import msgpack
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import api_actions, views, ws_agent
from .auth import InvalidToken, Principal, verify_token
from .filters import ViewQuery
from .frames import JSON, MSGPACK, encode
from .live import Subscription
from .web import ApiError

log = logging.getLogger("switchboard.ws")

SUBPROTOCOLS = {"switchboard.v1.json": JSON, "switchboard.v1.msgpack": MSGPACK}
QUEUE_LIMIT_BYTES = 1 << 20
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_TRY_AGAIN_LATER = 1013
PROTOCOL_KEY = "switchboard.ws_protocol"  # scope key: the server's protocol object


class RecordProtocol:
    """ASGI middleware that keeps, for a websocket, the server's protocol object (the
    owner of `send`, before any middleware wraps it), for RawSocket."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            scope[PROTOCOL_KEY] = getattr(send, "__self__", None)
        await self.app(scope, receive, send)


VIEW_ROLES = ("supervisor", "admin", "agent")


class RawSocket:
    """Writes websocket frames straight to the connection's transport, the way
    `websockets.broadcast()` does: no ASGI message, no await, one write. uvicorn's
    websockets sans-I/O protocol owns the connection (handshake, pings, close); its
    `writable` event follows the transport's flow control. docs/websocket-server.md
    says why and what was measured."""

    def __init__(self, protocol):
        self.protocol = protocol
        self.transport = protocol.transport
        self.writable: asyncio.Event = protocol.writable

    @classmethod
    def of(cls, scope) -> RawSocket | None:
        protocol = scope.get(PROTOCOL_KEY)
        if (
            protocol is None
            or not hasattr(protocol, "writable")
            or not hasattr(protocol, "transport")
        ):
            return None
        return cls(protocol)

    def ready(self) -> bool:
        """The transport takes data now, and no close frame went out before it."""
        return (
            self.writable.is_set()
            and not self.transport.is_closing()
            and not getattr(self.protocol, "close_sent", False)
        )

    def write(self, frame: bytes | str) -> None:
        if isinstance(frame, str):
            payload, opcode = frame.encode(), 0x81
        else:
            payload, opcode = frame, 0x82
        size = len(payload)
        if size < 126:
            header = bytes((opcode, size))
        elif size < 65536:
            header = struct.pack("!BBH", opcode, 126, size)
        else:
            header = struct.pack("!BBQ", opcode, 127, size)
        self.transport.write(header + payload)


class Connection:
    """One client's socket: its principal, format, subscriptions and outbound queue.

    A frame is written at once while the transport takes it; once the client stops
    reading (the transport's buffer is past its high-water mark), frames wait in a
    queue bounded in bytes, and a queue that overflows ends the subscriptions with
    `resync` (and, the second time running, the socket with 1013)."""

    def __init__(self, websocket: WebSocket, principal: Principal, format: str, sb):
        self.websocket = websocket
        self.principal = principal
        self.format = format
        self.sb = sb
        self.subscriptions: dict[str, Subscription] = {}
        self.queries: dict[str, tuple[str, ViewQuery, Any]] = {}
        self._raw = RawSocket.of(websocket.scope)
        self._queue: deque[bytes | str] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._overflowed = False
        self.closing: tuple[int, str] | None = None

    # --- outbound

    def send(self, frame: bytes | str) -> None:
        if self.closing:
            return
        if not self._queue and self._raw is not None and self._raw.ready():
            self._raw.write(frame)
            return
        size = len(frame)
        if self._queued_bytes + size > QUEUE_LIMIT_BYTES:
            self._overflow()
            return
        self._queue.append(frame)
        self._queued_bytes += size
        self._wake.set()

    def reply(self, frame: dict[str, Any]) -> None:
        self.send(encode(self.format, frame))

    def _overflow(self) -> None:
        """The client cannot keep up: drop what it has not read; its subscriptions end
        with `resync`. A second overflow before it catches up closes the socket."""
        self._queue.clear()
        self._queued_bytes = 0
        if self._overflowed:
            self.close(CLOSE_TRY_AGAIN_LATER, "client cannot keep up")
            return
        self._overflowed = True
        for sub_id in list(self.subscriptions):
            self._end_subscription(sub_id)
            frame = encode(
                self.format, {"type": "resync", "sub": sub_id, "reason": "client_too_slow"}
            )
            self._queue.append(frame)
            self._queued_bytes += len(frame)
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        if self.closing is None:
            self.closing = (code, reason)
            if code == CLOSE_TRY_AGAIN_LATER:
                self._queue.clear()  # it would never be read
                self._queued_bytes = 0
            self._wake.set()

    async def write_forever(self) -> None:
        websocket, raw = self.websocket, self._raw
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                if raw is not None:
                    if raw.transport.is_closing():
                        self._queue.clear()
                        self._queued_bytes = 0
                        break
                    await raw.writable.wait()
                frame = self._queue.popleft()
                self._queued_bytes -= len(frame)
                if raw is not None:
                    raw.write(frame)
                elif isinstance(frame, str):
                    await websocket.send_text(frame)
                else:
                    await websocket.send_bytes(frame)
            if not self._queue:
                self._overflowed = False
            if self.closing:
                await websocket.close(*self.closing)
                return

    # --- subscriptions

    def _end_subscription(self, sub_id: str) -> None:
        sub = self.subscriptions.pop(sub_id, None)
        self.queries.pop(sub_id, None)
        if sub is not None:
            self.sb.live.unsubscribe(sub)

    def end_all(self) -> None:
        for sub_id in list(self.subscriptions):
            self._end_subscription(sub_id)

    # --- inbound

    async def handle(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw) if isinstance(raw, str) else msgpack.unpackb(raw)
            if isinstance(raw, str) and "\\u" in raw and not _is_unicode(frame):
                # A lone surrogate escape: no answer that echoes it (a ref, an inline
                # view) could be encoded, and the writer would fail on it.
                raise ValueError("a lone surrogate escape")
        except Exception:  # msgpack raises several unrelated types for bad input
            self.reply(
                {
                    "type": "error",
                    "code": "malformed",
                    "message": "the frame is not valid JSON or msgpack",
                }
            )
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            self.reply(
                {
                    "type": "error",
                    "code": "malformed",
                    "message": 'a frame must be an object with a string "type"',
                }
            )
            return
        ref = frame.get("ref")
        if not isinstance(ref, str | int | float | type(None)) or isinstance(ref, bool):
            ref = None
        elif isinstance(ref, int) and not -(2**63) <= ref < 2**64:
            ref = None  # msgpack could not echo it
        handler = HANDLERS.get(frame["type"])
        if handler is None:
            self.reply(
                {
                    "type": "error",
                    "ref": ref,
                    "code": "unknown_type",
                    "message": f"unknown frame type {frame['type'][:100]!r}",
                }
            )
            return
        try:
            await handler(self, frame, ref)
        except ApiError as error:
            self.reply({"type": "error", "ref": ref, "code": error.code, "message": error.message})


def _is_unicode(value: Any) -> bool:
    """Whether every string in a decoded JSON frame encodes as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


# --- handlers -------------------------------------------------------------------------------


def _require(connection: Connection, *roles: str) -> None:
    if connection.principal.role not in roles:
        raise ApiError(403, "forbidden", f"role {connection.principal.role!r} may not do this")


def _limit(frame: dict, default: int, minimum: int) -> int:
    limit = frame.get("limit", default)
    if isinstance(limit, bool) or not isinstance(limit, int) or not minimum <= limit <= MAX_LIMIT:
        raise ApiError(
            422, "invalid_field", f"limit: must be an integer from {minimum} to {MAX_LIMIT}"
        )
    return limit


async def on_subscribe(connection: Connection, frame: dict, ref) -> None:
    _require(connection, *VIEW_ROLES)
    sb, principal = connection.sb, connection.principal
    tz = await sb.tenant_zone(principal.tenant)
    view = frame.get("view")
    if isinstance(view, str):
        async with sb.db.read() as conn:
            row = await views.load_view(conn, principal, view)
        definition = views.definition_of(row)
    elif isinstance(view, dict):
        extra = sorted(set(view) - views.DEFINITION_FIELDS - {"name", "visibility", "id"})
        if extra:
            raise ApiError(422, "invalid_view", f"{extra[0]}: unknown field")
        definition = views.parse_definition(view, tz)
    else:
        raise ApiError(
            422, "invalid_field", "view: must be a saved view's id or an inline definition object"
        )
    limit = _limit(frame, DEFAULT_LIMIT, 0)
    query = definition.compile(tz, views.agent_scope(principal))
    sub = sb.live.new_subscription(connection, principal.tenant, definition.columns)
    rows, total = await sb.live.subscribe(sub, definition.key, query, limit)
    connection.subscriptions[sub.id] = sub
    connection.queries[sub.id] = (definition.key, query, tz)
    connection.reply(
        {
            "type": "snapshot",
            "ref": ref,
            "sub": sub.id,
            "view": view,
            "columns": list(definition.columns),
            "rows": [views.project(row, definition.columns, query, tz) for row in rows],
            "total": total,
            "seq": 0,
        }
    )


def _subscription_id(frame: dict):
    """The frame's `sub`, if it could name one (a string): a list or a map in its place
    must get an error frame, not fail a dict lookup and end the socket."""
    sub_id = frame.get("sub")
    return sub_id if isinstance(sub_id, str) else None


async def on_fetch(connection: Connection, frame: dict, ref) -> None:
    sub = connection.subscriptions.get(_subscription_id(frame))
    if sub is None:
        raise ApiError(404, "unknown_subscription", f"no subscription {frame.get('sub')!r}")
    limit = _limit(frame, DEFAULT_LIMIT, 1)
    _, query, tz = connection.queries[sub.id]
    page, catch_up = await connection.sb.live.fetch(sub, limit)
    connection.reply(
        {
            "type": "page",
            "ref": ref,
            "sub": sub.id,
            "seq": sub.seq,
            "rows": [views.project(row, sub.columns, query, tz) for row in page],
        }
    )
    if catch_up is not None:
        connection.sb.live.send_delta(
            [sub], catch_up["upserts"], catch_up["removes"], catch_up["total"], query, tz
        )


async def on_unsubscribe(connection: Connection, frame: dict, ref) -> None:
    sub_id = _subscription_id(frame)
    if sub_id not in connection.subscriptions:
        raise ApiError(404, "unknown_subscription", f"no subscription {sub_id!r}")
    connection._end_subscription(sub_id)
    if ref is not None:
        connection.reply({"type": "ok", "ref": ref})


async def on_ping(connection: Connection, frame: dict, ref) -> None:
    connection.reply({"type": "pong", "ref": ref})


HANDLERS = {
    "subscribe": on_subscribe,
    "fetch": on_fetch,
    "unsubscribe": on_unsubscribe,
    "ping": on_ping,
    **ws_agent.HANDLERS,  # routing: popups, offers, presence, transfer, wallboard
}
HANDLERS.update(api_actions.WS_HANDLERS)  # channel actions: initiate, send_message, hangup


# --- the endpoint ------------------------------------------------------------------------------


def _origin_allowed(websocket: WebSocket, allowed: tuple[str, ...], public_url: str | None) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # a program, not a browser: judged by its token alone
    origin = origin.rstrip("/")
    host = websocket.headers.get("host", "")
    own = {f"http://{host}", f"https://{host}"}
    if public_url:
        parts = urlsplit(public_url)
        own.add(f"{parts.scheme}://{parts.netloc}")
    return origin in own or origin in allowed


def _token(websocket: WebSocket) -> str | None:
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return websocket.query_params.get("token")


async def endpoint(websocket: WebSocket) -> None:
    sb = websocket.app.state.sb
    settings = sb.settings
    if not _origin_allowed(websocket, settings.allowed_origins, settings.public_url):
        await websocket.send_denial_response(
            JSONResponse({"error": {"code": "forbidden", "message": "origin not allowed"}}, 403)
        )
        return
    token = _token(websocket)
    try:
        if token is None:
            raise InvalidToken("a token is required (Authorization: Bearer, or ?token=)")
        principal = verify_token(settings.secret, token, sb.clock)
        await sb.tenant_zone(principal.tenant)
    except (InvalidToken, ApiError) as exc:
        status = exc.status if isinstance(exc, ApiError) else 401
        await websocket.send_denial_response(
            JSONResponse(
                {
                    "error": {
                        "code": "unauthorized" if status == 401 else "forbidden",
                        "message": str(exc),
                    }
                },
                status,
            )
        )
        return
    offered = websocket.scope.get("subprotocols") or []
    chosen = next((name for name in offered if name in SUBPROTOCOLS), None)
    await websocket.accept(subprotocol=chosen)
    connection = Connection(websocket, principal, SUBPROTOCOLS.get(chosen, JSON), sb)
    writer = asyncio.create_task(connection.write_forever())
    await sb.routing.opened(connection)  # an agent's popups and presence
    loop = asyncio.get_running_loop()
    expiry = loop.call_later(
        max(0.0, (principal.expires_at - sb.clock.now()).total_seconds()),
        connection.close,
        CLOSE_TOKEN_EXPIRED,
        "token expired",
    )
    try:
        while not writer.done():
            receive = asyncio.ensure_future(websocket.receive())
            done, _ = await asyncio.wait({receive, writer}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                break
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes")
            if raw is not None:
                await connection.handle(raw)
    except WebSocketDisconnect:
        pass
    finally:
        expiry.cancel()
        connection.end_all()
        with contextlib.suppress(Exception):
            await sb.routing.closed(connection)
        connection.close(1000, "")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, 1)
        writer.cancel()
