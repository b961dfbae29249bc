"""Web chat, the service behind `WS /webchat/{tenant}` (docs/api.md; the socket itself
is server/edge/ws/webchat.py): a website visitor's chat, opened by /widget.js.

What the visitor writes goes through server/providers/inbound.py like any provider's
report (stable event ids, one conversation per visitor at a time); what the agent
writes (ConversationActions.send_reply for `chat`) reaches the visitor's sockets in any
process: every process watches the bus for rows of the visitors connected to it and
reads the new messages from the database, so a lost bus message only delays them
until the next change or gap. A visitor's messages are rate limited over all its
sockets in this process (MESSAGE_RATE).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from channels.base import ChannelEvent, Inbound, Reference, rfc3339
from server.bus import Bus, BusMessage, Gap
from server.core.clock import Clock
from server.core.limits import KeyedBuckets, TokenBucket, client_address, networks
from server.core.tasks import cancel_and_wait
from server.ingest.pipeline import Ingest
from server.providers import repository as crepo
from server.providers.inbound import InboundDelivery
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database, DatabaseUnavailable
from state_machine import ENDED_STATUSES, Status

log = logging.getLogger("switchboard.webchat")

MAX_SOCKETS_PER_VISITOR = 5
MESSAGE_RATE = (10, 1.0)  # token bucket (burst, per second): messages of one visitor,
# over its connections in this process
VISITOR_BUCKETS = 100_000  # visitors whose message bucket this process remembers


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


@dataclass(eq=False)
class VisitorSocket:
    """One open chat as the service sees it: who the visitor is, which conversation it
    shows, what it was sent. `websocket` is the socket that carries it
    (server/edge/ws/webchat.py); a visitor without one (the demo's) overrides `send`."""

    websocket: Any
    tenant: str
    contact: str | None = None  # set by hello
    customer: dict[str, str] = field(default_factory=dict)
    team: str | None = None
    conversation_id: str | None = None
    seen: set[str] = field(default_factory=set)  # message ids sent to it
    shown: tuple | None = None  # the last status frame's content

    def send(self, frame: dict[str, Any]) -> None:
        self.websocket.reply(frame)


class TunedBuckets:
    """Token buckets by key whose size comes with each take (a tenant's own limit, or
    the server's): `per_period` at once, refilled at `per_period` per `period` seconds.
    A bucket whose limit changed keeps what was used of it: a limit raised lets more
    through at once, a limit lowered below what was used refuses until it refills. The least
    recently used beyond `keys` are forgotten (a forgotten key starts full again)."""

    def __init__(self, period: float, keys: int = VISITOR_BUCKETS):
        self.period, self.keys = period, keys
        self._buckets: OrderedDict[object, TokenBucket] = OrderedDict()

    def take(self, key: object, per_period: int) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(per_period, per_period / self.period)
            if len(self._buckets) > self.keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            if bucket.burst != per_period:
                bucket.take(0)  # refilled at the old rate until now
                used = bucket.burst - bucket.tokens
                bucket.burst, bucket.rate = float(per_period), per_period / self.period
                bucket.tokens = max(0.0, bucket.burst - used)
        return bucket.take()

    def give_back(self, key: object) -> None:
        """Returns the token `take` took (it was not due after all)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(bucket.burst, bucket.tokens + 1)


class WebChatLimits:
    """Abuse limits of /webchat, per client address and per tenant, in this process
    (docs/security.md): handshakes (429 beyond) and new visitors introduced, i.e.
    conversations a client may open (close 1013 beyond). A visitor id seen lately from
    an address (a reconnect, the next page of the shop) takes nothing: a client that
    makes up a new id per connection is what the limit stops.

    The arguments are the server's limits (its environment); a tenant may set its own
    (`webchat_limits` of its settings, server/tenants/settings.py), passed to each
    check as `own` (the tenant's stored object: a key left out or null is the server's).
    Limits per address count per tenant and address."""

    def __init__(
        self,
        handshakes_per_minute: int = 120,
        tenant_handshakes_per_minute: int = 6000,
        conversations_per_hour: int = 30,
        tenant_conversations_per_hour: int = 3000,
        trusted_proxies: tuple[str, ...] = (),
    ):
        self.trusted = networks(trusted_proxies)
        self.defaults = {
            "handshakes_per_minute": handshakes_per_minute,
            "tenant_handshakes_per_minute": tenant_handshakes_per_minute,
            "conversations_per_hour": conversations_per_hour,
            "tenant_conversations_per_hour": tenant_conversations_per_hour,
        }
        self.unknown = TunedBuckets(60)
        self.handshakes = TunedBuckets(60)
        self.tenant_handshakes = TunedBuckets(60)
        self.visitors = TunedBuckets(3600)
        self.tenant_visitors = TunedBuckets(3600)
        self.seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    @classmethod
    def from_settings(cls, settings) -> WebChatLimits:
        return cls(
            settings.webchat_handshakes_per_minute,
            settings.webchat_tenant_handshakes_per_minute,
            settings.webchat_conversations_per_hour,
            settings.webchat_tenant_conversations_per_hour,
            settings.trusted_proxies,
        )

    def limit(self, own: dict | None, name: str) -> int:
        """The limit `name` in force for a tenant that set `own`."""
        return (own or {}).get(name) or self.defaults[name]

    def address(self, peer: str | None, forwarded_for: list[str]) -> str:
        return client_address(peer, forwarded_for, self.trusted)

    def handshake(self, address: str) -> float:
        """Before the tenant is known to this process (its lookup reads the database,
        and a name that is no tenant is never remembered): 0 when a handshake from
        `address` may go on, at the server's limit per address, else the seconds to
        wait. `found` gives the token back once the tenant turns out to exist: what
        stays counted here is handshakes naming no tenant, each a database read."""
        return self.unknown.take(address, self.defaults["handshakes_per_minute"])

    def found(self, address: str) -> None:
        self.unknown.give_back(address)

    def address_handshake(self, tenant: str, address: str, own: dict | None) -> float:
        """0 when a handshake from `address` to the tenant may go on, else the seconds
        to wait."""
        return self.handshakes.take((tenant, address), self.limit(own, "handshakes_per_minute"))

    def tenant_handshake(self, tenant: str, own: dict | None = None) -> float:
        """0 when a handshake to the tenant may go on, else the seconds to wait."""
        return self.tenant_handshakes.take(tenant, self.limit(own, "tenant_handshakes_per_minute"))

    def new_visitor(
        self, tenant: str, address: str, contact: str, own: dict | None = None
    ) -> str | None:
        """None when the visitor may be introduced, else which limit it passed."""
        key = (tenant, address, contact)
        if key in self.seen:
            self.seen.move_to_end(key)
            return None
        if self.visitors.take((tenant, address), self.limit(own, "conversations_per_hour")):
            return "address"
        if self.tenant_visitors.take(tenant, self.limit(own, "tenant_conversations_per_hour")):
            return "tenant"
        self.seen[key] = None
        if len(self.seen) > VISITOR_BUCKETS:
            self.seen.popitem(last=False)
        return None


class WebChat:
    """The visitors connected to this process, and the bus watcher that brings them
    what changed in their conversations."""

    def __init__(
        self,
        db: Database,
        bus: Bus,
        ingest: Ingest,
        inbound: InboundDelivery,
        clock: Clock,
        limits: WebChatLimits | None = None,
    ):
        self.limits = limits or WebChatLimits()
        self.db = db
        self.bus = bus
        self.ingest = ingest
        self.inbound = inbound
        self.clock = clock
        self.sockets: dict[tuple[str, str], set[VisitorSocket]] = {}
        # a visitor's messages, by (tenant, contact)
        self.message_buckets = KeyedBuckets(*MESSAGE_RATE, keys=VISITOR_BUCKETS)
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
        await cancel_and_wait(self._tasks)
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
                if row["status"] == Status.CLOSED and socket.conversation_id is None:
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
        if agent and name == Status.ACTIVE:
            frame["agent"] = agent
        socket.send(frame)


# --- what a visitor does ------------------------------------------------------------------


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
    if conversation_id is None or socket.shown is None or socket.shown[0] in ENDED_STATUSES:
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
