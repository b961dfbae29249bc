"""`/ws`: the websocket protocol of docs/api.md (subscribe, fetch, unsubscribe, ping, and the
routing and channel actions registered from server/edge/ws/agent.py and
server/edge/api/actions.py), on the connection core of server/edge/ws/session.py.

The handshake is judged before it is accepted: a missing, bad or expired token gets
HTTP 401, a foreign Origin 403. A token that expires while the socket is open closes
it with 4401. Malformed frames get an `error` frame and the socket stays open; a frame
over the server's limit closes it with 1009.

Inbound frames pass a token bucket weighed by what they ask for (`cost`), and the rows
a subscribe or fetch asks for also pass its user's bucket, shared by the user's
connections in this process (a reconnect does not refill it): beyond either, `error`
`rate_limited` and the frame is not handled; a connection that goes on being
refused (REFUSALS) is closed with 1008. A connection holds at most
`ws_max_subscriptions` subscriptions (`too_many_subscriptions`). docs/security.md has
the defaults and how they were measured.

A client that does not read loses its pending frames and its subscriptions end with
`resync`; if it falls behind again before it caught up, the socket is closed with
1013. No other client notices.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any
from urllib.parse import urlsplit

import msgpack
from starlette.requests import HTTPConnection

from server.core.auth import InvalidToken, Principal, verify_token
from server.core.errors import Refused
from server.core.limits import TokenBucket
from server.core.metrics import WS_RATE_LIMITED
from server.edge.errors import STATUS
from server.edge.ws import actions as ws_actions
from server.edge.ws import agent as ws_agent
from server.edge.ws.session import (
    Endpoint,
    HandshakeRefused,
    Malformed,
    Session,
    origin_in,
)
from server.live import saved_views
from server.live.definitions import (
    DEFINITION_FIELDS,
    agent_scope,
    definition_of,
    parse_definition,
    with_columns,
)
from server.live.filters import ViewQuery
from server.live.windows import Subscription
from server.wire.frames import JSON, decode_json, encode
from server.wire.protocol import (
    CLIENT_FRAMES,
    CLOSE_POLICY,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TRY_AGAIN_LATER,
    MAX_LIMIT,
    SUBPROTOCOLS,
)
from server.wire.rows import project

OUTBOX_BYTES = 1 << 20
ROWS_PER_COST = 50  # a subscribe or fetch costs 1 + limit / ROWS_PER_COST units
# Closes for flooding a user may earn before its handshakes are refused (429 with
# Retry-After): 3 at once, then one per 10 s. Who keeps on reconnecting for a fresh
# connection's bucket (the soak's flooders: a thousand reconnects in 30 s) is held back;
# an honest client is never closed for flooding.
FLOOD_CLOSES = (3, 0.1)
REFUSALS = (50, 5.0)  # refusals ignored (a frame sent before retry_after_s): 50 at once,
# or more than 5 a second for long, and the socket is closed with 1008
VIEW_ROLES = ("supervisor", "admin", "agent")


class Connection(Session):
    """One client's socket: its principal, format and subscriptions. An idle
    connection holds no task of its own and no queue: only the ASGI task that reads
    from it (server/edge/ws/session.py)."""

    __slots__ = (
        "_expiry",
        "_frames",
        "_refusals",
        "_retry_at",
        "principal",
        "queries",
        "services",
        "subscriptions",
    )

    outbox_bytes = OUTBOX_BYTES
    refusals = (Refused,)

    def __init__(self, principal: Principal, format: str, services):
        super().__init__(format)
        self.principal = principal
        self.services = services
        self.subscriptions: dict[str, Subscription] = {}
        self.queries: dict[str, tuple[str, ViewQuery, Any]] = {}
        self._expiry: asyncio.TimerHandle | None = None
        settings = services.settings
        self._frames = TokenBucket(settings.ws_frame_burst, settings.ws_frame_rate)
        self._refusals = TokenBucket(*REFUSALS)
        self._retry_at = 0.0  # monotonic: a frame before this ignores a refusal

    async def opened(self) -> None:
        await self.services.routing.opened(self)  # an agent's popups and presence
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, (self.principal.expires_at - self.services.clock.now()).total_seconds()),
            self.close,
            CLOSE_TOKEN_EXPIRED,
            "token expired",
        )

    async def ended(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self.end_all()
        await self.services.routing.closed(self)

    def overflow(self) -> None:
        """The client cannot keep up: what it has not read is dropped and its
        subscriptions end with `resync`. A second overflow before it catches up closes
        the socket."""
        if self._overflowed:
            self.close(CLOSE_TRY_AGAIN_LATER, "client cannot keep up")
            return
        self._overflowed = True
        for sub_id in list(self.subscriptions):
            self.end_subscription(sub_id)
            self.enqueue(
                encode(self.format, {"type": "resync", "sub": sub_id, "reason": "client_too_slow"})
            )

    # --- subscriptions

    def end_subscription(self, sub_id: str) -> None:
        sub = self.subscriptions.pop(sub_id, None)
        self.queries.pop(sub_id, None)
        if sub is not None:
            self.services.live.unsubscribe(sub)

    def subscription_over(self, sub_id: str, kind: str, reason: str) -> None:
        """The server ends a subscription (its saved view changed, went, or turned
        private; or its window failed): `resync` or `unsubscribed` with the reason
        (server/live/watched.py, server/live/windows.py)."""
        if sub_id in self.subscriptions:
            self.end_subscription(sub_id)
            self.reply({"type": kind, "sub": sub_id, "reason": reason})

    def end_all(self) -> None:
        for sub_id in list(self.subscriptions):
            self.end_subscription(sub_id)

    # --- inbound

    def admit(self, data: str | bytes, frame: Any) -> bool:
        wait = self._frames.take(cost(frame))
        rows = rows_asked(frame)
        if not wait and rows:
            user = (self.principal.tenant, self.principal.user)
            wait = self.services.ws_user_rows.take(user, rows)
        if not wait:
            return True
        WS_RATE_LIMITED.labels("/ws").inc()
        ref = self.ref_of(frame) if isinstance(frame, dict) else None
        retry = math.ceil(wait * 10) / 10
        self.error("rate_limited", f"too many frames; retry in {retry} s", ref, retry_after_s=retry)
        # Only a frame sent before the last refusal's retry_after_s counts against the
        # client: one that waits as told is never closed, one that keeps on is.
        now = time.monotonic()
        if now < self._retry_at and self._refusals.take() and self.closing is None:
            self.close(CLOSE_POLICY, "too many frames past the rate limit")
            self.services.ws_floods.take((self.principal.tenant, self.principal.user))
        self._retry_at = max(self._retry_at, now + retry)
        return False

    def decode(self, data: str | bytes) -> Any:
        try:
            frame = decode_json(data) if isinstance(data, str) else msgpack.unpackb(data)
        except Exception:  # msgpack raises several unrelated types for bad input
            raise Malformed("the frame is not valid JSON or msgpack") from None
        if isinstance(data, str) and "\\u" in data and not _is_unicode(frame):
            # A lone surrogate escape: no answer that echoes it (a ref, an inline
            # view) could be encoded, and the writer would fail on it.
            raise Malformed("the frame is not valid JSON or msgpack")
        return frame

    def ref_of(self, frame: dict) -> Any:
        ref = frame.get("ref")
        if not isinstance(ref, str | int | float | type(None)) or isinstance(ref, bool):
            return None
        if isinstance(ref, int) and not -(2**63) <= ref < 2**64:
            return None  # msgpack could not echo it
        if isinstance(ref, float) and not math.isfinite(ref):
            return None  # a msgpack NaN: JSON could not log or echo it
        return ref


def rows_asked(frame: Any) -> int:
    """The rows a subscribe or fetch asks for (its `limit`); 0 for any other frame, and
    for a `limit` the handler will refuse."""
    if not isinstance(frame, dict) or frame.get("type") not in ("subscribe", "fetch"):
        return 0
    limit = frame.get("limit", CLIENT_FRAMES[frame["type"]].fields["limit"].default)
    if not isinstance(limit, int) or isinstance(limit, bool):
        return 0
    return min(max(limit, 0), MAX_LIMIT)


def cost(frame: Any) -> float:
    """What a frame asks of the server, in bucket units: 1 for a ping, an unsubscribe,
    a count-only subscribe or anything malformed; 1 + limit / ROWS_PER_COST for a
    subscribe or fetch of `limit` rows (21 for 1,000)."""
    return 1.0 + rows_asked(frame) / ROWS_PER_COST


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


def _limit(frame: dict) -> int:
    """The frame's `limit`, as its declaration checks it (server/wire/protocol.py)."""
    field = CLIENT_FRAMES[frame["type"]].fields["limit"]
    return field.read(frame.get("limit", field.default), "limit")


async def on_subscribe(connection: Connection, frame: dict, ref) -> None:
    _require(connection, *VIEW_ROLES)
    services, principal = connection.services, connection.principal
    cap = services.settings.ws_max_subscriptions
    if len(connection.subscriptions) >= cap:
        raise Refused(
            "too_many_subscriptions",
            f"at most {cap} subscriptions per connection; unsubscribe from one first",
        )
    tz = await services.tenants.zone(principal.tenant)
    view = frame.get("view")
    row = None
    if isinstance(view, str):
        async with services.db.read() as conn:
            row = await saved_views.load_view(conn, principal, view)
        definition = with_columns(definition_of(row), frame.get("columns"), tz)
    elif "columns" in frame:
        raise Refused(
            "invalid_field",
            "columns: only with a saved view's id (an inline definition has its own columns)",
            field="columns",
        )
    elif isinstance(view, dict):
        extra = sorted(set(view) - DEFINITION_FIELDS - {"name", "visibility", "id"})
        if extra:
            raise Refused("invalid_view", f"{extra[0]}: unknown field")
        definition = parse_definition(view, tz)
    else:
        raise Refused(
            "invalid_field", "view: must be a saved view's id or an inline definition object"
        )
    limit = _limit(frame)
    query = definition.compile(tz, agent_scope(principal))
    sub = services.live.new_subscription(connection, principal.tenant, definition.columns)
    rows, total = await services.live.subscribe(sub, definition.key, query, limit)
    if row is not None:  # it follows the saved view (server/live/watched.py)
        services.live.watched.watch(sub, row["id"], principal.user, principal.role, row)
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
    limit = _limit(frame)
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
    connection.end_subscription(sub_id)
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


Connection.handlers = HANDLERS


# --- the endpoint ------------------------------------------------------------------------------


class WsEndpoint(Endpoint):
    """`/ws`: a token (header or `?token=`) or a ticket (`?ticket=`), and an allowed
    Origin, or no socket."""

    async def judge(self, connection: HTTPConnection) -> tuple[Connection, str | None]:
        services = connection.app.state.services
        settings = services.settings
        origin = connection.headers.get("origin")
        if origin is not None and not origin_in(
            origin, (*_own_origins(connection, settings.public_url), *settings.allowed_origins)
        ):
            raise HandshakeRefused(403, "forbidden", "origin not allowed")
        token = _token(connection)
        ticket = connection.query_params.get("ticket")
        try:
            if token is not None:
                principal = verify_token(settings.secret, token, services.clock)
            elif ticket is not None:
                principal = await services.tickets.redeem(ticket)
            else:
                raise InvalidToken(
                    "a token or ticket is required (Authorization: Bearer, ?ticket= from "
                    "POST /api/v1/ws-tickets, or ?token=)"
                )
            await services.tenants.zone(principal.tenant)
        except InvalidToken as exc:
            raise HandshakeRefused(401, "unauthorized", str(exc)) from None
        except Refused as exc:
            raise HandshakeRefused(STATUS[exc.code], exc.code, exc.message) from None
        wait = services.ws_floods.wait((principal.tenant, principal.user))
        if wait:
            raise HandshakeRefused(429, "rate_limited", "closed for flooding; retry later", wait)
        offered = connection.scope.get("subprotocols") or []
        chosen = next((name for name in offered if name in SUBPROTOCOLS), None)
        return Connection(principal, SUBPROTOCOLS.get(chosen, JSON), services), chosen


def _own_origins(connection: HTTPConnection, public_url: str | None) -> list[str]:
    """The server's own origins: where the handshake says it reached us, and the
    public URL."""
    host = connection.headers.get("host", "")
    own = [f"http://{host}", f"https://{host}"]
    if public_url:
        parts = urlsplit(public_url)
        own.append(f"{parts.scheme}://{parts.netloc}")
    return own


def _token(connection: HTTPConnection) -> str | None:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return connection.query_params.get("token")


ENDPOINT = WsEndpoint()
