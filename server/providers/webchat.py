"""`WS /webchat/{tenant}`: a website visitor's chat (api.md), opened by /widget.js.

The visitor sends `hello` (`visitor`, optional `name`, `email`, `team`), then
`message` frames (`text`, optional `id`); the server sends `message` and `status`
frames. What the visitor writes goes through server/inbound.py like any provider's
report (stable event ids, one conversation per visitor at a time); what the agent
writes (api_actions' send path for `chat`) reaches the visitor's sockets in any
process: every process watches the bus for rows of the visitors connected to it and
reads the new messages from the database, so a lost bus message only delays them
until the next change or gap.

The handshake is refused unless its Origin is one of the tenant's `widget_origins`.
Frames are bounded (the server's 64 KiB limit, 4,096 characters of text), rate
limited per connection and per visitor, and a bad one gets an `error` frame. Each
socket's outbound queue is bounded: a visitor that does not read is closed (1013)
and catches up when it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from channels.base import ChannelEvent, Inbound, Reference, rfc3339
from server.bus import Bus, BusMessage, Gap
from server.core.clock import Clock
from server.ingest.pipeline import Ingest
from server.providers import repository as crepo
from server.providers.contacts import EMAIL
from server.providers.inbound import InboundDelivery
from server.routing import repository as routing_repo
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database, DatabaseUnavailable

log = logging.getLogger("switchboard.webchat")

VISITOR = re.compile(r"[A-Za-z0-9_-]{16,128}")  # the widget's random id: a bearer secret
CLIENT_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TEXT = 4096
MAX_NAME = 200
MAX_TEAM = 100
OUTBOX_LIMIT = 256  # frames waiting for a visitor that does not read
MAX_SOCKETS_PER_VISITOR = 5
# Token buckets: (burst, per second).
FRAME_RATE = (30, 5.0)  # every frame of one connection
MESSAGE_RATE = (10, 1.0)  # messages of one visitor, over its connections in this process
VISITOR_BUCKETS = 100_000  # visitors whose message bucket this process remembers
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN_LATER = 1013
ENDED = ("wrap_up", "closed")


def visitor_contact(tenant: str, visitor: str) -> str:
    """The conversation's `contact`: derived from the visitor's id, never the id itself,
    since whoever knows that id can read the visitor's chat."""
    digest = hashlib.sha256(f"{tenant}\x00{visitor}".encode()).hexdigest()
    return f"visitor-{digest[:20]}"


class FrameError(Exception):
    """A frame refused: the visitor gets an `error` frame with `code`, `message` and
    any `extra` keys (e.g. `retry_after`); the socket stays open."""

    def __init__(self, code: str, message: str, **extra):
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class Bucket:
    """A token bucket: `burst` at once, refilled at `rate` per second."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, burst: int, rate: float):
        self.burst, self.rate = burst, rate
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass(eq=False)
class VisitorSocket:
    """One open widget: who it is, which conversation it shows, what it was sent."""

    websocket: WebSocket
    tenant: str
    outbox: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(OUTBOX_LIMIT))
    frames: Bucket = field(default_factory=lambda: Bucket(*FRAME_RATE))
    contact: str | None = None  # set by hello
    customer: dict[str, str] = field(default_factory=dict)
    team: str | None = None
    conversation_id: str | None = None
    seen: set[str] = field(default_factory=set)  # message ids sent to it
    shown: tuple | None = None  # the last status frame's content
    closing: bool = False

    def send(self, frame: dict[str, Any]) -> None:
        if self.closing:
            return
        try:
            self.outbox.put_nowait(json.dumps(frame, ensure_ascii=False))
        except asyncio.QueueFull:
            self.close(CLOSE_TRY_AGAIN_LATER, "visitor not reading")

    def error(self, code: str, message: str, **extra) -> None:
        self.send({"type": "error", "code": code, "message": message, **extra})

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            with contextlib.suppress(asyncio.QueueFull):
                self.outbox.put_nowait((code, reason))

    async def write_forever(self) -> None:
        while True:
            item = await self.outbox.get()
            if isinstance(item, tuple):
                await self.websocket.close(*item)
                return
            await self.websocket.send_text(item)


class WebChat:
    """The visitors connected to this process, and the bus watcher that brings them
    what changed in their conversations."""

    def __init__(
        self, db: Database, bus: Bus, ingest: Ingest, inbound: InboundDelivery, clock: Clock
    ):
        self.db = db
        self.bus = bus
        self.ingest = ingest
        self.inbound = inbound
        self.clock = clock
        self.sockets: dict[tuple[str, str], set[VisitorSocket]] = {}
        self.message_buckets: OrderedDict[tuple[str, str], Bucket] = OrderedDict()
        self._due: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._subscription = None

    def _start(self) -> None:
        """On the first visitor: a process without any pays nothing."""
        if not self._tasks:
            self._subscription = self.bus.subscribe()
            self._tasks = [
                asyncio.create_task(self._watch(), name="webchat-bus"),
                asyncio.create_task(self._refresh_forever(), name="webchat-refresh"),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._subscription is not None:
            self._subscription.close()

    # --- who is connected

    def join(self, socket: VisitorSocket) -> None:
        key = (socket.tenant, socket.contact)
        sockets = self.sockets.setdefault(key, set())
        if len(sockets) >= MAX_SOCKETS_PER_VISITOR:
            raise FrameError(
                "too_many_connections",
                f"at most {MAX_SOCKETS_PER_VISITOR} open chats per visitor",
            )
        sockets.add(socket)
        self._start()
        self.due(key)

    def leave(self, socket: VisitorSocket) -> None:
        key = (socket.tenant, socket.contact)
        sockets = self.sockets.get(key)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self.sockets[key]

    def message_bucket(self, key: tuple[str, str]) -> Bucket:
        bucket = self.message_buckets.pop(key, None) or Bucket(*MESSAGE_RATE)
        self.message_buckets[key] = bucket
        if len(self.message_buckets) > VISITOR_BUCKETS:
            self.message_buckets.popitem(last=False)
        return bucket

    # --- the bus: which visitors have news

    def due(self, key: tuple[str, str]) -> None:
        self._due.add(key)
        self._wake.set()

    async def _watch(self) -> None:
        while True:
            item = await self._subscription.get()
            if isinstance(item, Gap):  # news may be lost: look at every visitor again
                for key in self.sockets:
                    self.due(key)
            elif isinstance(item, BusMessage):
                for change in item.payload.get("rows") or ():
                    key = (item.tenant, change["row"].get("contact"))
                    if key in self.sockets:
                        self.due(key)

    async def _refresh_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            keys, self._due = self._due, set()
            for key in keys:
                if key in self.sockets:
                    try:
                        await self.refresh(key)
                    except Exception:  # the next change or gap tries again
                        log.warning("webchat refresh failed", exc_info=True)

    async def refresh(self, key: tuple[str, str]) -> None:
        """Bring every socket of one visitor up to date: the conversation to follow,
        messages it has not been sent, its status; then mark agent messages delivered."""
        tenant, contact = key
        async with self.db.read() as conn:
            latest = await crepo.latest_conversation_of_contact(
                conn, tenant, contact, "chat", open_only=False
            )
            row = transcript = None
            if latest is not None:
                row = await repo.get_conversation_row(conn, tenant, latest["id"])
                transcript = await repo.rows_of(
                    conn,
                    m.messages,
                    tenant,
                    latest["id"],
                    [m.messages.c.at, m.messages.c.message_id],
                )
        delivered = set()
        for socket in list(self.sockets.get(key, ())):
            if row is not None and socket.conversation_id != row["id"]:
                if row["status"] == "closed" and socket.conversation_id is None:
                    row_for_socket = None  # a past chat: the visitor starts afresh
                else:
                    socket.conversation_id = row["id"]
                    row_for_socket = row
            else:
                row_for_socket = row
            if row_for_socket is None:
                _show(socket, ("ready", None, None))
                continue
            for item in transcript:
                if item["message_id"] in socket.seen:
                    continue
                socket.seen.add(item["message_id"])
                socket.send(
                    {
                        "type": "message",
                        "id": item["message_id"],
                        "sender": item["sender"],
                        "text": item["text"],
                        "at": rfc3339(item["at"]),
                    }
                )
                if item["sender"] == "agent" and item["status"] not in ("delivered", "read"):
                    delivered.add(item["message_id"])
            _show(socket, (row["status"], row["state"], row["agent_name"]))
        if delivered and row is not None:
            now = rfc3339(self.clock.now())
            await self.ingest.submit(
                tenant,
                [
                    {
                        "event_id": f"webchat:{row['id']}:{message_id}:delivered",
                        "type": "media.message_status",
                        "conversation_id": row["id"],
                        "occurred_at": now,
                        "data": {"message_id": message_id, "status": "delivered"},
                    }
                    for message_id in sorted(delivered)
                ],
            )


def _show(socket: VisitorSocket, status: tuple) -> None:
    if socket.shown != status:
        socket.shown = status
        name, state, agent = status
        frame: dict[str, Any] = {"type": "status", "status": name, "state": state}
        if agent and name == "active":
            frame["agent"] = agent
        socket.send(frame)


# --- frames ---------------------------------------------------------------------------------


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


async def on_hello(chat: WebChat, socket: VisitorSocket, frame: dict) -> None:
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
    socket.contact = visitor_contact(socket.tenant, visitor)
    socket.customer = {"name": name.strip() if name else "Web visitor"}
    if email:
        socket.customer["email"] = email
    socket.team = team
    try:
        chat.join(socket)
    except FrameError:
        socket.contact = None
        raise


async def _teams(chat: WebChat, tenant: str) -> set[str]:
    """Teams with settings, and teams named by an agent (those route with defaults)."""
    async with chat.db.read() as conn:
        teams = set(await routing_repo.team_settings(conn, tenant))
        for agent in await repo.list_rows(conn, m.agents, tenant, m.agents.c.id):
            teams.update(agent["teams"] or ())
    return teams


async def visitor_says(chat: WebChat, socket: VisitorSocket, client_id: str, text: str) -> None:
    """The visitor's message into ingest, as a provider's inbound message: to its open
    chat, or opening one. Ids come from the visitor's own message id, so a resent
    message is a duplicate. Raises FrameError when it is not taken."""
    now = chat.clock.now()
    message_id = f"w-{client_id}"  # the widget knows its own message in the echo
    base = f"webchat:{socket.contact}:{client_id}"
    opening_data: dict[str, Any] = {
        "channel": "chat",
        "contact": socket.contact,
        "customer": socket.customer,
    }
    if socket.team:
        opening_data["team"] = socket.team
    item = Inbound(
        Reference("message", "chat", contact=socket.contact),
        events=(
            ChannelEvent(
                base,
                "media.message",
                now,
                {"message_id": message_id, "sender": "customer", "text": text},
            ),
        ),
        opening=ChannelEvent(f"{base}:created", "conversation.created", now, opening_data),
    )
    try:
        outcomes = await chat.inbound.deliver(socket.tenant, "webchat", None, item)
    except DatabaseUnavailable:
        raise FrameError("unavailable", "the chat is unavailable for a moment; retry") from None
    last = outcomes[-1] if outcomes else None
    if last is None or last.outcome == "rejected":
        message = last.message if last is not None else "no conversation"
        raise FrameError("not_sent", f"the message was not taken: {message}")
    chat.due((socket.tenant, socket.contact))  # the echo is the visitor's receipt


async def visitor_ends(chat: WebChat, socket: VisitorSocket) -> None:
    """The visitor closes the chat: a hangup by the customer (`dropped` while it waits
    for an agent, the end of the talk when active)."""
    conversation_id = socket.conversation_id
    if conversation_id is None or socket.shown is None or socket.shown[0] in ENDED:
        raise FrameError("nothing_to_end", "there is no open chat to end")
    (outcome,) = await chat.ingest.submit(
        socket.tenant,
        [
            {
                "event_id": f"webchat:{conversation_id}:ended",
                "type": "media.hangup",
                "conversation_id": conversation_id,
                "occurred_at": rfc3339(chat.clock.now()),
                "data": {"source": "customer"},
            }
        ],
    )
    if outcome.outcome == "rejected":
        raise FrameError("nothing_to_end", outcome.message or "the chat cannot end now")
    chat.due((socket.tenant, socket.contact))


async def on_message(chat: WebChat, socket: VisitorSocket, frame: dict) -> None:
    if socket.contact is None:
        raise FrameError("hello_first", "send hello before messages")
    _only(frame, {"type", "text", "id"})
    text = _text_field(frame, "text", MAX_TEXT, required=True)
    client_id = frame.get("id")
    if client_id is None:
        client_id = secrets.token_hex(8)
    elif not isinstance(client_id, str) or not CLIENT_MESSAGE_ID.fullmatch(client_id):
        raise FrameError("invalid_field", "id: must be 1 to 64 letters, digits, '-' or '_'")
    wait = chat.message_bucket((socket.tenant, socket.contact)).take()
    if wait:
        raise FrameError(
            "rate_limited", f"too many messages; retry in {wait:.1f} s", retry_after=round(wait, 1)
        )
    await visitor_says(chat, socket, client_id, text)


async def on_end(chat: WebChat, socket: VisitorSocket, frame: dict) -> None:
    if socket.contact is None:
        raise FrameError("hello_first", "send hello first")
    _only(frame, {"type"})
    await visitor_ends(chat, socket)


HANDLERS = {"hello": on_hello, "message": on_message, "end": on_end}


async def handle(chat: WebChat, socket: VisitorSocket, data: Any) -> None:
    """One inbound frame; every problem becomes an `error` frame."""
    if socket.frames.take():
        socket.error("rate_limited", "too many frames; slow down")
        return
    if not isinstance(data, str):
        socket.error("malformed", "frames are JSON text")
        return
    try:
        frame = json.loads(data)
    except ValueError:
        socket.error("malformed", "the frame is not valid JSON")
        return
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        socket.error("malformed", 'a frame must be an object with a string "type"')
        return
    handler = HANDLERS.get(frame["type"])
    if handler is None:
        socket.error("unknown_type", f"unknown frame type {frame['type'][:100]!r}")
        return
    try:
        await handler(chat, socket, frame)
    except FrameError as error:
        socket.error(error.code, error.message, **error.extra)
    except Exception:  # ours, not the visitor's: say so and keep the socket
        log.exception("webchat frame failed", extra={"tenant": socket.tenant})
        socket.error("internal", "the server could not handle this frame; retry")


# --- the endpoint ----------------------------------------------------------------------------


def _origin(text: str) -> str:
    """An origin as compared: scheme and host are case-insensitive; a trailing slash
    is not part of it."""
    return text.strip().rstrip("/").lower()


async def _refuse(websocket: WebSocket, status: int, code: str, message: str) -> None:
    await websocket.send_denial_response(
        JSONResponse({"error": {"code": code, "message": message}}, status)
    )


async def endpoint(websocket: WebSocket) -> None:
    chat: WebChat = websocket.app.state.services.webchat
    tenant = websocket.path_params["tenant"]
    row = None
    if len(tenant) <= 64 and "\x00" not in tenant:  # no tenant id has one
        try:
            async with chat.db.read() as conn:
                row = await repo.get_tenant(conn, tenant)
        except Exception:
            log.warning("webchat handshake: the database is unavailable", exc_info=True)
            await _refuse(websocket, 503, "unavailable", "the chat is unavailable; retry")
            return
    if row is None:
        await _refuse(websocket, 404, "not_found", "no such tenant")
        return
    origin = _origin(websocket.headers.get("origin") or "")
    allowed = {_origin(entry) for entry in row["widget_origins"] or ()}
    if not origin or origin not in allowed:
        await _refuse(websocket, 403, "forbidden", "this site may not open the tenant's chat")
        return
    await websocket.accept()
    socket = VisitorSocket(websocket, tenant)
    writer = asyncio.create_task(socket.write_forever())
    try:
        while not writer.done():
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text")
            await handle(chat, socket, data if data is not None else message.get("bytes"))
    except Exception:
        log.warning("webchat connection failed", exc_info=True)
    finally:
        if socket.contact is not None:
            chat.leave(socket)
        writer.cancel()
        with contextlib.suppress(BaseException):
            await writer
