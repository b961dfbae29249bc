"""`WS /webchat/{tenant}`: a website visitor's chat socket (api.md), opened by
/widget.js, on the connection core of server/edge/ws/session.py; the service behind it
(who is connected, what reaches them) is server/providers/webchat.py.

The visitor sends `hello` (`visitor`, optional `name`, `email`, `team`), then `message`
frames (`text`, optional `id`) and `end`; the server sends `message` and `status`
frames. The handshake is refused unless its Origin is one of the tenant's
`widget_origins`. Frames are bounded (the server's 64 KiB limit, 4,096 characters of
text), rate limited per connection (FRAME_RATE; a visitor that keeps on sending
before the refusal's `retry_after` is closed with 1008) and per visitor (the service's
MESSAGE_RATE), and a bad one gets an `error` frame. Handshakes are limited per client
address and per tenant (HTTP 429 with Retry-After beyond), and so are new visitors
introduced by `hello` (the socket is closed with 1013 beyond): the service's
WebChatLimits, at the tenant's own values (`webchat_limits` of PUT /api/v1/tenant)
where it set them, read with its widget origins from the process's cache of tenant
rows (server/tenants/zones.py), not from the database per handshake. The client
address is the socket's peer, or what a proxy in SWITCHBOARD_TRUSTED_PROXIES wrote in
X-Forwarded-For. A visitor that does not read is closed with 1013 once its outbox
passes OUTBOX_BYTES, and catches up when it reconnects.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time

from starlette.requests import HTTPConnection

from server.core.limits import TokenBucket
from server.core.metrics import WEBCHAT_LIMITED, WS_RATE_LIMITED
from server.edge.ws.session import Endpoint, HandshakeRefused, Session, origin_in
from server.providers.contacts import EMAIL
from server.providers.webchat import (
    FrameError,
    VisitorSocket,
    WebChat,
    visitor_contact,
    visitor_ends,
    visitor_says,
)
from server.routing import repository as routing_repo
from server.storage import models as m
from server.storage import repository as repo
from server.wire.frames import JSON
from server.wire.protocol import CLOSE_POLICY, CLOSE_TRY_AGAIN_LATER

log = logging.getLogger("switchboard.webchat")

VISITOR = re.compile(r"[A-Za-z0-9_-]{16,128}")  # the widget's random id: a bearer secret
CLIENT_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TEXT = 4096
MAX_NAME = 200
MAX_TEAM = 100
OUTBOX_BYTES = 256 * 1024  # frames waiting for a visitor that does not read
FRAME_RATE = (30, 5.0)  # token bucket (burst, per second): every frame of one connection
REFUSALS = (20, 2.0)  # refusals ignored (a frame before retry_after), then close 1008


class VisitorSession(Session):
    """One widget's socket: the visitor it carries, its frame bucket."""

    __slots__ = ("address", "chat", "frames", "ignored", "limits", "retry_at", "visitor")

    outbox_bytes = OUTBOX_BYTES
    refusals = (FrameError,)

    def __init__(
        self, chat: WebChat, tenant: str, address: str = "unknown", limits: dict | None = None
    ):
        super().__init__(JSON)
        self.address = address  # the client's, for the limits per address
        self.limits = limits  # the tenant's own web chat limits at the handshake, if any
        self.chat = chat
        self.frames = TokenBucket(*FRAME_RATE)
        self.ignored = TokenBucket(*REFUSALS)
        self.retry_at = 0.0  # monotonic: a frame before this ignores a refusal
        self.visitor = VisitorSocket(self, tenant)

    def admit(self, data: str | bytes, frame) -> bool:
        wait = self.frames.take()
        if not wait:
            return True
        WS_RATE_LIMITED.labels("/webchat").inc()
        retry = math.ceil(wait * 10) / 10
        self.error("rate_limited", "too many frames; slow down", retry_after=retry)
        # as on /ws: only frames sent before the last refusal's retry_after count
        now = time.monotonic()
        if now < self.retry_at and self.ignored.take():
            self.close(CLOSE_POLICY, "too many frames past the rate limit")
        self.retry_at = max(self.retry_at, now + retry)
        return False

    async def ended(self) -> None:
        if self.visitor.contact is not None:
            self.chat.leave(self.visitor)


# --- handlers ---------------------------------------------------------------------------------


def _text_field(frame: dict, name: str, limit: int, required: bool = False) -> str | None:
    value = frame.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise FrameError("invalid_field", f"{name}: must be a non-empty string")
    if len(value) > limit:
        raise FrameError("invalid_field", f"{name}: must be at most {limit} characters")
    if "\x00" in value:
        raise FrameError("invalid_field", f"{name}: must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise FrameError("invalid_field", f"{name}: is not valid Unicode text") from None
    return value


def _only(frame: dict, allowed: set[str]) -> None:
    extra = sorted(str(key) for key in set(frame) - allowed)
    if extra:
        raise FrameError(
            "invalid_field",
            f"{extra[0][:100]}: unknown field (allowed: {', '.join(sorted(allowed))})",
        )


async def on_hello(session: VisitorSession, frame: dict, ref) -> None:
    socket, chat = session.visitor, session.chat
    if socket.contact is not None:
        raise FrameError("already_introduced", "hello was sent already on this connection")
    _only(frame, {"type", "visitor", "name", "email", "team"})
    visitor = frame.get("visitor")
    if not isinstance(visitor, str) or not VISITOR.fullmatch(visitor):
        raise FrameError(
            "invalid_field", "visitor: must be 16 to 128 letters, digits, '-' or '_' (random)"
        )
    name = _text_field(frame, "name", MAX_NAME)
    email = _text_field(frame, "email", MAX_NAME)
    if email is not None and not EMAIL.match(email):
        raise FrameError("invalid_field", "email: is not an email address")
    team = _text_field(frame, "team", MAX_TEAM)
    if team is not None and team not in await _teams(chat, socket.tenant):
        raise FrameError("invalid_field", f"team: the tenant has no team {team!r}")
    contact = visitor_contact(socket.tenant, visitor)
    passed = chat.limits.new_visitor(socket.tenant, session.address, contact, session.limits)
    if passed is not None:
        WEBCHAT_LIMITED.labels(f"conversations per {passed}").inc()
        where = "this address" if passed == "address" else "this site"
        session.close(CLOSE_TRY_AGAIN_LATER, f"too many new chats from {where}; try later")
        return
    socket.contact = contact
    socket.customer = {"name": name.strip() if name else "Web visitor"}
    if email:
        socket.customer["email"] = email
    socket.team = team
    try:
        chat.join(socket)
    except FrameError:
        socket.contact = None
        raise


async def _teams(chat, tenant: str) -> set[str]:
    """Teams with settings, and teams named by an agent (those route with defaults)."""
    async with chat.db.read() as conn:
        teams = set(await routing_repo.team_settings(conn, tenant))
        for agent in await repo.list_rows(conn, m.agents, tenant, m.agents.c.id):
            teams.update(agent["teams"] or ())
    return teams


async def on_message(session: VisitorSession, frame: dict, ref) -> None:
    socket, chat = session.visitor, session.chat
    if socket.contact is None:
        raise FrameError("hello_first", "send hello before messages")
    _only(frame, {"type", "text", "id"})
    text = _text_field(frame, "text", MAX_TEXT, required=True)
    client_id = frame.get("id")
    if client_id is None:
        client_id = secrets.token_hex(8)
    elif not isinstance(client_id, str) or not CLIENT_MESSAGE_ID.fullmatch(client_id):
        raise FrameError("invalid_field", "id: must be 1 to 64 letters, digits, '-' or '_'")
    wait = chat.message_buckets.take((socket.tenant, socket.contact))
    if wait:
        raise FrameError(
            "rate_limited", f"too many messages; retry in {wait:.1f} s", retry_after=round(wait, 1)
        )
    await visitor_says(chat, socket, client_id, text)


async def on_end(session: VisitorSession, frame: dict, ref) -> None:
    if session.visitor.contact is None:
        raise FrameError("hello_first", "send hello first")
    _only(frame, {"type"})
    await visitor_ends(session.chat, session.visitor)


VisitorSession.handlers = {"hello": on_hello, "message": on_message, "end": on_end}


# --- the endpoint -----------------------------------------------------------------------------


class WebChatEndpoint(Endpoint):
    """`/webchat/{tenant}`: a tenant that exists, and one of its widget origins."""

    async def judge(self, connection: HTTPConnection) -> tuple[VisitorSession, None]:
        services = connection.app.state.services
        tenant = connection.path_params["tenant"]
        limits = services.webchat.limits
        peer = connection.client.host if connection.client else None
        address = limits.address(peer, connection.headers.getlist("x-forwarded-for"))
        row = services.tenants.cached(tenant)  # no database read while the tenant is known
        if row is None:
            _limit("address", limits.handshake(address))  # before the database is asked
            if len(tenant) <= 64 and "\x00" not in tenant:  # no tenant id has one
                try:
                    row = await services.tenants.row(tenant)
                except Exception:
                    log.warning("webchat handshake: the database is unavailable", exc_info=True)
                    unavailable = "the chat is unavailable; retry"
                    raise HandshakeRefused(503, "unavailable", unavailable) from None
                if row is not None:
                    limits.found(address)  # counted below, by the tenant's own limit
        if row is None:
            raise HandshakeRefused(404, "not_found", "no such tenant")
        own = row["webchat_limits"]  # the tenant's own limits, if it set any
        _limit("address", limits.address_handshake(tenant, address, own))
        origin = connection.headers.get("origin")
        if origin is None or not origin_in(origin, row["widget_origins"] or ()):
            raise HandshakeRefused(403, "forbidden", "this site may not open the tenant's chat")
        _limit("tenant", limits.tenant_handshake(tenant, own))
        return VisitorSession(services.webchat, tenant, address, own), None


def _limit(which: str, wait: float) -> None:
    if wait:
        WEBCHAT_LIMITED.labels(f"handshakes per {which}").inc()
        where = "this address" if which == "address" else "this site"
        raise HandshakeRefused(
            429, "rate_limited", f"too many chat connections from {where}; retry later", wait
        )


ENDPOINT = WebChatEndpoint()
