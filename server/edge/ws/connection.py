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
import sys
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import msgpack
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket
from websockets.protocol import Protocol as WebsocketsProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol

from server.core.auth import InvalidToken, Principal, verify_token
from server.core.errors import Refused
from server.edge.ws import actions as ws_actions
from server.edge.ws import agent as ws_agent
from server.live import saved_views
from server.live.definitions import DEFINITION_FIELDS, agent_scope, definition_of, parse_definition
from server.live.filters import ViewQuery
from server.live.windows import Subscription
from server.wire.frames import JSON, MSGPACK, encode
from server.wire.rows import project

log = logging.getLogger("switchboard.ws")

SUBPROTOCOLS = {"switchboard.v1.json": JSON, "switchboard.v1.msgpack": MSGPACK}
QUEUE_LIMIT_BYTES = 1 << 20
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_TRY_AGAIN_LATER = 1013


class DirectRoute:
    """ASGI middleware, the outermost of ours: a websocket to `/ws` goes straight to the
    endpoint with the server's own `send`. Skipping Starlette's router and exception
    middlewares saves their coroutine frames and closures, which live as long as the
    socket (about 5 KB per connection, docs/websocket-server.md), and leaves `send`
    unwrapped, so its owner (uvicorn's protocol) can be found for RawSocket."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and scope["path"] == WS_PATH:
            await endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


WS_PATH = "/ws"
VIEW_ROLES = ("supervisor", "admin", "agent")


class RawSocket:
    """Writes websocket frames straight to the connection's transport, the way
    `websockets.broadcast()` does: no ASGI message, no await, one write. uvicorn's
    websockets sans-I/O protocol owns the connection (handshake, pings, close); its
    `writable` event follows the transport's flow control. docs/websocket-server.md
    says why and what was measured."""

    __slots__ = ("opcode", "protocol", "transport", "writable")

    def __init__(self, protocol, text: bool):
        self.protocol = protocol
        self.transport = protocol.transport
        self.writable: asyncio.Event = protocol.writable
        self.opcode = 0x81 if text else 0x82

    @classmethod
    def of(cls, send, text: bool) -> RawSocket | None:
        """The raw socket behind an ASGI `send`, when it is uvicorn's sans-I/O protocol."""
        protocol = getattr(send, "__self__", None)
        if (
            protocol is None
            or not hasattr(protocol, "writable")
            or not hasattr(protocol, "transport")
        ):
            return None
        return cls(protocol, text)

    def release_handshake(self, scope) -> None:
        """Drop what only the handshake needed, about 8 KB per open connection
        (docs/websocket-server.md): the request and response with their headers, the
        scope's header list, the websockets parser that still holds the request in its
        frame, and uvicorn's asyncio.Queue of inbound messages (for an Inbox). Each
        only when it is in the state expected; if not, it is left as it is."""
        protocol = self.protocol
        for name in ("request", "response"):
            if hasattr(protocol, name):
                setattr(protocol, name, None)
        scope["headers"] = []
        parser = getattr(protocol, "conn", None)
        if (
            isinstance(parser, ServerProtocol)
            and parser.state is State.OPEN
            and not parser.reader.buffer  # nothing read of the next frame yet
        ):
            parser.parser = WebsocketsProtocol.parse(parser)  # frames only, no request
            next(parser.parser)
        queue = getattr(protocol, "queue", None)
        if type(queue) is asyncio.Queue and queue.empty():
            protocol.queue = Inbox()

    def ready(self) -> bool:
        """The transport takes data now, and no close frame went out before it."""
        return (
            self.writable.is_set()
            and not self.transport.is_closing()
            and not getattr(self.protocol, "close_sent", False)
        )

    def write(self, parts: tuple[bytes, ...]) -> None:
        size = sum(map(len, parts))
        if size < 126:
            header = bytes((self.opcode, size))
        elif size < 65536:
            header = struct.pack("!BBH", self.opcode, 126, size)
        else:
            header = struct.pack("!BBQ", self.opcode, 127, size)
        if len(parts) == 1:
            self.transport.write(header + parts[0])
        else:  # one writev: the shared body is not copied
            self.transport.writelines((header + parts[0], *parts[1:]))


class Inbox:
    """What uvicorn's protocol uses of its inbound asyncio.Queue (`put_nowait`, `get`,
    `empty`) in a list and one waiting reader: 0.2 KB instead of 2.6 KB. Unbounded
    like the queue it replaces; uvicorn stops reading after each inbound message
    until the app takes it, so it holds one message and a disconnect at most."""

    __slots__ = ("items", "waiter")

    def __init__(self):
        self.items: list = []
        self.waiter: asyncio.Future | None = None

    def put_nowait(self, item) -> None:
        self.items.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def empty(self) -> bool:
        return not self.items

    async def get(self):
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.pop(0)


class Connection:
    """One client's socket: its principal, format, subscriptions and outbound backlog.

    A frame is written at once while the transport takes it. Once the client stops
    reading (the transport's buffer is past its high-water mark), frames wait in a
    backlog bounded in bytes, drained by a task that lives only while there is one;
    a backlog that overflows ends the subscriptions with `resync` (and, the second
    time running, the socket with 1013). An idle connection holds no task of its own
    and no queue: only the ASGI task that reads from it."""

    __slots__ = (
        "_backlog",
        "_backlog_bytes",
        "_drain",
        "_overflowed",
        "_raw",
        "base_url",
        "closing",
        "format",
        "principal",
        "queries",
        "send_asgi",
        "services",
        "subscriptions",
    )

    def __init__(
        self,
        send_asgi,
        principal: Principal,
        format: str,
        services,
        raw: RawSocket | None,
        base_url: str,
    ):
        self.send_asgi = send_asgi  # the server's ASGI send, for what RawSocket cannot do
        self.base_url = base_url  # where the client reached us: callback URLs of initiate
        self.principal = principal
        self.format = format
        self.services = services
        self.subscriptions: dict[str, Subscription] = {}
        self.queries: dict[str, tuple[str, ViewQuery, Any]] = {}
        self._raw = raw
        self._backlog: deque[bytes] | None = None  # None: nothing waits
        self._backlog_bytes = 0
        self._drain: asyncio.Task | None = None
        self._overflowed = False
        self.closing: tuple[int, str] | None = None

    # --- outbound

    def send(self, *parts: bytes) -> None:
        """One frame, given as the parts of its payload."""
        if self.closing:
            return
        if self._backlog is None and self._raw is not None and self._raw.ready():
            self._raw.write(parts)
            return
        frame = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._backlog_bytes + len(frame) > QUEUE_LIMIT_BYTES:
            self._overflow()
            return
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append(frame)
        self._backlog_bytes += len(frame)
        self._start_drain()

    def reply(self, frame: dict[str, Any]) -> None:
        self.send(encode(self.format, frame))

    def _overflow(self) -> None:
        """The client cannot keep up: drop what it has not read; its subscriptions end
        with `resync`. A second overflow before it catches up closes the socket."""
        self._backlog = deque()
        self._backlog_bytes = 0
        if self._overflowed:
            self.close(CLOSE_TRY_AGAIN_LATER, "client cannot keep up")
            return
        self._overflowed = True
        for sub_id in list(self.subscriptions):
            self._end_subscription(sub_id)
            frame = encode(
                self.format, {"type": "resync", "sub": sub_id, "reason": "client_too_slow"}
            )
            self._backlog.append(frame)
            self._backlog_bytes += len(frame)
        self._start_drain()

    def close(self, code: int, reason: str) -> None:
        """Close the socket once what is queued went out (at once for 1013: a client
        that cannot keep up would never read it)."""
        if self.closing is None:
            self.closing = (code, reason)
            if code == CLOSE_TRY_AGAIN_LATER and self._backlog is not None:
                self._backlog.clear()
                self._backlog_bytes = 0
            self._start_drain()

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._drain_backlog())

    async def _drain_backlog(self) -> None:
        raw = self._raw
        try:
            while self._backlog:
                if raw is not None:
                    if raw.transport.is_closing():
                        break
                    await raw.writable.wait()
                    if not self._backlog:  # emptied meanwhile (1013)
                        break
                frame = self._backlog.popleft()
                self._backlog_bytes -= len(frame)
                if raw is not None:
                    raw.write((frame,))
                elif self.format == JSON:
                    await self.send_asgi({"type": "websocket.send", "text": frame.decode()})
                else:
                    await self.send_asgi({"type": "websocket.send", "bytes": frame})
            self._backlog = None
            self._backlog_bytes = 0
            self._overflowed = False
            if self.closing:
                code, reason = self.closing
                await self.send_asgi({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:  # the client went away meanwhile: nothing more to send
            log.debug("websocket write failed", exc_info=True)
        finally:
            self._drain = None

    async def finish(self) -> None:
        """The socket is ending: let a pending close go out (briefly), then stop."""
        drain = self._drain
        if drain is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(drain), 1)
            drain.cancel()

    # --- subscriptions

    def _end_subscription(self, sub_id: str) -> None:
        sub = self.subscriptions.pop(sub_id, None)
        self.queries.pop(sub_id, None)
        if sub is not None:
            self.services.live.unsubscribe(sub)

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
        except Refused as error:
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
        raise Refused("forbidden", f"role {connection.principal.role!r} may not do this")


def _limit(frame: dict, default: int, minimum: int) -> int:
    limit = frame.get("limit", default)
    if isinstance(limit, bool) or not isinstance(limit, int) or not minimum <= limit <= MAX_LIMIT:
        raise Refused("invalid_field", f"limit: must be an integer from {minimum} to {MAX_LIMIT}")
    return limit


async def on_subscribe(connection: Connection, frame: dict, ref) -> None:
    _require(connection, *VIEW_ROLES)
    services, principal = connection.services, connection.principal
    tz = await services.tenants.zone(principal.tenant)
    view = frame.get("view")
    if isinstance(view, str):
        async with services.db.read() as conn:
            row = await saved_views.load_view(conn, principal, view)
        definition = definition_of(row)
    elif isinstance(view, dict):
        extra = sorted(set(view) - DEFINITION_FIELDS - {"name", "visibility", "id"})
        if extra:
            raise Refused("invalid_view", f"{extra[0]}: unknown field")
        definition = parse_definition(view, tz)
    else:
        raise Refused(
            "invalid_field", "view: must be a saved view's id or an inline definition object"
        )
    limit = _limit(frame, DEFAULT_LIMIT, 0)
    query = definition.compile(tz, agent_scope(principal))
    sub = services.live.new_subscription(connection, principal.tenant, definition.columns)
    rows, total = await services.live.subscribe(sub, definition.key, query, limit)
    connection.subscriptions[sub.id] = sub
    connection.queries[sub.id] = (definition.key, query, tz)
    connection.reply(
        {
            "type": "snapshot",
            "ref": ref,
            "sub": sub.id,
            "view": view,
            "columns": list(definition.columns),
            "rows": [project(row, definition.columns, query.sort_fields, tz) for row in rows],
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
        raise Refused("unknown_subscription", f"no subscription {frame.get('sub')!r}")
    limit = _limit(frame, DEFAULT_LIMIT, 1)
    _, query, tz = connection.queries[sub.id]
    page, catch_up = await connection.services.live.fetch(sub, limit)
    connection.reply(
        {
            "type": "page",
            "ref": ref,
            "sub": sub.id,
            "seq": sub.seq,
            "rows": [project(row, sub.columns, query.sort_fields, tz) for row in page],
        }
    )
    if catch_up is not None:
        connection.services.live.send_delta(
            [sub], catch_up["upserts"], catch_up["removes"], catch_up["total"], query, tz
        )


async def on_unsubscribe(connection: Connection, frame: dict, ref) -> None:
    sub_id = _subscription_id(frame)
    if sub_id not in connection.subscriptions:
        raise Refused("unknown_subscription", f"no subscription {sub_id!r}")
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
HANDLERS.update(ws_actions.HANDLERS)  # a conversation's actions: initiate, send_message, hangup


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


async def _accept(websocket: WebSocket) -> tuple[Principal, str] | None:
    """Judge the handshake; accept it (principal and format) or refuse it (None)."""
    services = websocket.app.state.services
    settings = services.settings
    if not _origin_allowed(websocket, settings.allowed_origins, settings.public_url):
        await websocket.send_denial_response(
            JSONResponse({"error": {"code": "forbidden", "message": "origin not allowed"}}, 403)
        )
        return None
    token = _token(websocket)
    try:
        if token is None:
            raise InvalidToken("a token is required (Authorization: Bearer, or ?token=)")
        principal = verify_token(settings.secret, token, services.clock)
        await services.tenants.zone(principal.tenant)
    except (InvalidToken, Refused) as exc:
        status = exc.status if isinstance(exc, Refused) else 401
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
        return None
    offered = websocket.scope.get("subprotocols") or []
    chosen = next((name for name in offered if name in SUBPROTOCOLS), None)
    await websocket.accept(subprotocol=chosen)
    return principal, SUBPROTOCOLS.get(chosen, JSON)


async def endpoint(scope, receive, send) -> None:
    """`send` is the server's own ASGI send (DirectRoute), for RawSocket. Past the
    handshake only plain ASGI is used: nothing of the request is kept."""
    websocket = WebSocket(scope, receive, send)
    accepted = await _accept(websocket)
    if accepted is None:
        return
    principal, format = accepted
    services = scope["app"].state.services
    base_url = sys.intern(str(websocket.base_url))  # one string for all its connections
    del websocket
    raw = RawSocket.of(send, text=format == JSON)
    if raw is not None:
        raw.release_handshake(scope)
    connection = Connection(send, principal, format, services, raw, base_url)
    await services.routing.opened(connection)  # an agent's popups and presence
    expiry = asyncio.get_running_loop().call_later(
        max(0.0, (principal.expires_at - services.clock.now()).total_seconds()),
        connection.close,
        CLOSE_TOKEN_EXPIRED,
        "token expired",
    )
    try:
        # The one task of this connection. Closing from elsewhere (token expiry, a
        # client too slow) sends the close frame, after which the server hands this
        # loop a disconnect.
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is not None and connection.closing is None:
                await connection.handle(data)
    except Exception:
        if connection.closing is None:
            connection.close(1011, "internal error")
        raise
    finally:
        expiry.cancel()
        connection.end_all()
        with contextlib.suppress(Exception):
            await services.routing.closed(connection)
        await connection.finish()
