"""The demo's simulated people: agents who act through the services a real agent's
requests use (presence, popups, accept and reject, replies, hangups, wrap-up,
initiate), and web-chat visitors who talk through the web-chat service like a widget.

Every wait is on the server's clock (`pause`), so a fast clock runs the demo fast.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from channels.base import ProviderError, rfc3339
from server.core.auth import Principal
from server.core.errors import Refused
from server.providers.webchat import (
    FrameError,
    VisitorSocket,
    visitor_contact,
    visitor_ends,
    visitor_says,
)
from server.storage import models as m
from server.storage import repository as repo
from state_machine import ENDED_STATUSES, HANDLING_STATUSES, UNROUTED_STATUSES, Status

log = logging.getLogger("switchboard.demo")

TENANT = "demo"
FOREVER = datetime(9999, 1, 1, tzinfo=UTC)
DISPOSITIONS = ("resolved", "sale", "callback", "escalated", "information")
AGENT_LINES = (
    "Let me check that for you.",
    "I can see your order here: it left our warehouse yesterday.",
    "I have updated it. Anything else I can do?",
    "Sure, I will send you the details by email.",
)
# Whom agents call or text: the sandbox's fixed outcomes (channels/sandbox.py) by the last digits.
OUTBOUND = [
    ("Irene Castro", "+34655123401"),  # answers, hangs up after 3 s, a recording
    ("Hugo Moreno", "+34655123402"),  # busy
    ("Nora Vidal", "+34655123403"),  # never answers
    ("Óscar Gil", "+34655123404"),  # the provider fails
    ("Elena Ortiz", "+34655123405"),  # replies to every message
    ("Lucía Fernández", "+34655123411"),  # random, like a real customer
    ("Pablo Ruiz", "+34655123422"),
]
VISITOR_LINES = (
    ("Hi! Is the Commuter 3 available in blue?", "Great, and how long is delivery?", "Thanks!"),
    ("Hello, my order #4471 has not arrived.", "It was due on Monday.", "OK, thank you."),
    ("Do you repair e-bikes?", "It is a Cargo Long from 2023.", "Perfect, see you then."),
    ("Can I return a helmet I bought online?", "I have the receipt.", "Thanks a lot!"),
)


async def pause(clock, low: float, high: float, rng: random.Random | None = None) -> None:
    """Wait `low` to `high` seconds of the server's clock."""
    seconds = low if low == high else (rng or random).uniform(low, high)
    done = asyncio.get_running_loop().create_future()
    handle = clock.call_at(
        clock.now() + timedelta(seconds=seconds), lambda: done.done() or done.set_result(None)
    )
    try:
        await done
    finally:
        handle.cancel()


@dataclass
class Talk:
    """What an agent is doing with one of its conversations."""

    since: datetime
    talk_s: float  # a call: how long before the agent ends it (the caller may first)
    turns: int  # a text conversation: replies before the agent closes it
    wrap_s: float  # wrap-up work before submitting it
    submits: bool  # False: the wrap-up timeout closes it
    replies: int = 0
    wrap_since: datetime | None = None


class SimulatedAgent:
    """An agent with a popup "connection" (Popups sends it `popup` frames, as to a
    websocket) and a loop that works its conversations every few seconds."""

    def __init__(self, demo, agent_id: str, name: str):
        self.demo = demo
        self.services = demo.services
        self.rng: random.Random = demo.rng
        self.name = name
        self.principal = Principal(TENANT, agent_id, "agent", FOREVER)
        self.talks: dict[str, Talk] = {}
        self.connected = False
        self.on_break_until: datetime | None = None
        self.outbound: tuple[str, str] | None = None  # a call the script asks for

    # --- the popup connection (server/routing/popups.py AgentConnection)

    def reply(self, frame: dict) -> None:
        if frame.get("type") == "popup":
            self.demo.spawn(self._answer_offer(frame))

    def disconnect(self) -> None:
        if self.connected:
            self.services.routing.popups.remove(self)
            self.connected = False

    def outbound_soon(self, contact: tuple[str, str]) -> None:
        self.outbound = contact

    # --- the loop

    async def run(self) -> None:
        clock = self.services.clock
        if self.principal.user == "a7":  # partners' agent starts with a long break
            self.on_break_until = clock.now() + timedelta(seconds=150)
        await self._presence("away" if self.on_break_until else "available")
        await self.services.routing.opened(self)
        self.connected = True
        while True:
            await pause(clock, 2.0, 4.0, self.rng)
            try:
                await self._work()
                await self._breaks()
                if self.outbound or (not self.talks and self.rng.random() < 0.02):
                    await self._call_out()
            except Refused as error:  # the conversation moved on meanwhile
                log.debug("demo agent refused", extra={"code": error.code})
            except Exception:
                log.exception("demo agent failed", extra={"agent": self.principal.user})

    async def _presence(self, presence: str) -> None:
        await self.services.routing.presence.set(TENANT, self.principal.user, presence)

    async def _breaks(self) -> None:
        now = self.services.clock.now()
        if self.on_break_until is not None:
            if now >= self.on_break_until:
                self.on_break_until = None
                await self._presence("available")
            return
        chance = 0.04 if self.principal.user == "a7" else 0.006
        if not self.talks and self.rng.random() < chance:
            length = self.rng.uniform(90, 200) if self.principal.user == "a7" else 45
            self.on_break_until = now + timedelta(seconds=length)
            await self._presence("away")

    async def _answer_offer(self, popup: dict) -> None:
        offer_id = popup["offer_id"]
        conversation = popup["conversation"]
        roll = self.rng.random()
        if roll < 0.06:
            return  # looks away: the offer expires
        await pause(self.services.clock, 1.0, 4.0, self.rng)
        try:
            if roll < 0.14:
                await self.services.routing.actions.reject(self.principal, offer_id)
                return
            await self.services.routing.actions.accept(self.principal, offer_id)
        except Refused:
            return  # taken, expired or cancelled meanwhile
        if conversation["channel"] == "call":
            return  # the accept bridged the caller to the agent's phone
        try:
            first = self.name.split()[0]
            await self._say(conversation["id"], f"Hi, this is {first}. How can I help?")
        except (Refused, ProviderError) as error:
            log.info("demo agent could not start", extra={"error": str(error)})

    async def _say(self, cid: str, text: str) -> None:
        await self.services.conversation_actions.send_reply(self.principal, cid, {"text": text})

    async def _work(self) -> None:
        now = self.services.clock.now()
        table = m.conversations
        async with self.services.db.read() as conn:
            rows = (
                await conn.execute(
                    select(table.c.id, table.c.channel, table.c.status, table.c.version).where(
                        table.c.tenant_id == TENANT,
                        table.c.agent_id == self.principal.user,
                        table.c.status.in_(HANDLING_STATUSES),
                    )
                )
            ).all()
        current = {row.id for row in rows}
        for cid in list(self.talks):
            if cid not in current:
                del self.talks[cid]
        for row in rows:
            talk = self.talks.get(row.id)
            if talk is None:
                talk = self.talks[row.id] = Talk(
                    since=now,
                    talk_s=self.rng.uniform(20, 90),
                    turns=self.rng.randint(2, 4),
                    wrap_s=self.rng.uniform(3, 12),
                    submits=self.rng.random() < 0.9,
                )
            if row.status == Status.ACTIVE:
                if row.channel == "call":
                    if (now - talk.since).total_seconds() > talk.talk_s:
                        await self.services.conversation_actions.hang_up(self.principal, row.id)
                else:
                    await self._text(row.id, talk, now)
            elif talk.wrap_since is None:
                talk.wrap_since = now
            elif talk.submits and (now - talk.wrap_since).total_seconds() > talk.wrap_s:
                talk.submits = False
                await self._wrap_up(row.id)

    async def _text(self, cid: str, talk: Talk, now: datetime) -> None:
        async with self.services.db.read() as conn:
            transcript = await repo.rows_of(
                conn, m.messages, TENANT, cid, [m.messages.c.at, m.messages.c.message_id]
            )
        last = transcript[-1] if transcript else None
        if last is None:
            return
        if last["sender"] == "customer":
            if talk.replies >= talk.turns:
                await self._say(cid, "Glad I could help. Have a nice day!")
                await self.services.conversation_actions.hang_up(self.principal, cid)
                return
            talk.replies += 1
            await self._say(cid, AGENT_LINES[(talk.replies - 1) % len(AGENT_LINES)])
        elif (now - last["at"]).total_seconds() > 45:  # the customer went quiet
            await self.services.conversation_actions.hang_up(self.principal, cid)

    async def _wrap_up(self, cid: str) -> None:
        """The wrap-up form an agent submits, then what the survey and ticket tools
        report about some conversations."""
        note = self.rng.choice(
            (None, "Customer satisfied.", "Follow up next week.", "Sent a quote.")
        )
        form = {"disposition": self.rng.choice(DISPOSITIONS), "note": note}
        await self.services.conversation_actions.submit_wrapup(self.principal, cid, form)
        now = rfc3339(self.services.clock.now())
        events = []
        if self.rng.random() < 0.4:
            events.append(
                {
                    "event_id": f"survey:{cid}",
                    "type": "csat.received",
                    "conversation_id": cid,
                    "occurred_at": now,
                    "data": {"score": self.rng.choice((5, 5, 4, 4, 4, 3, 2, 1))},
                }
            )
        if self.rng.random() < 0.25:
            ticket = f"T-{self.rng.randrange(10**5):05d}"
            events.append(
                {
                    "event_id": f"ticket:{cid}:{ticket}",
                    "type": "ticket.linked",
                    "conversation_id": cid,
                    "occurred_at": now,
                    "data": {
                        "ticket_id": ticket,
                        "system": "helpdesk",
                        "url": f"https://helpdesk.example.com/tickets/{ticket}",
                    },
                }
            )
        if events:
            await self.services.ingest.submit(TENANT, events)

    async def _call_out(self) -> None:
        name, phone = self.outbound or self.rng.choice(OUTBOUND)
        channel = "call" if self.outbound else self.rng.choice(("call", "call", "sms", "whatsapp"))
        self.outbound = None
        body: dict = {"channel": channel, "contact": phone}
        if channel != "call":
            first = self.name.split()[0]
            body["text"] = (
                f"Hello {name.split()[0]}, this is {first} from Northwind Bikes: "
                "your bike is ready. When would you like to pick it up?"
            )
        key = f"demo-{secrets.token_hex(8)}"
        try:
            await self.services.initiator.initiate(self.principal, body, key)
        except Refused as error:  # a rate limit, or the contact refused
            log.info("demo initiate refused", extra={"code": error.code})


class SimulatedVisitor(VisitorSocket):
    """A web-chat visitor without a browser: the web-chat service sends it the frames
    it would send a widget; it answers the agent and leaves when the chat ends."""

    def __init__(self, demo, name: str, team: str, gives_up_after: float | None):
        super().__init__(websocket=None, tenant=TENANT)
        self.demo = demo
        self.rng: random.Random = demo.rng
        self.contact = visitor_contact(TENANT, secrets.token_hex(16))
        self.customer = {"name": name}
        self.team = team
        self.gives_up_after = gives_up_after
        self.inbox: deque[dict] = deque(maxlen=100)
        self.status = "ready"

    def send(self, frame: dict) -> None:
        self.inbox.append(frame)

    async def run(self) -> None:
        services, clock = self.demo.services, self.demo.services.clock
        lines = list(self.rng.choice(VISITOR_LINES))
        services.webchat.join(self)
        try:
            await visitor_says(services.webchat, self, secrets.token_hex(8), lines.pop(0))
            waited = 0.0
            heard = answered = 0
            for _ in range(900):  # at most a quarter of an hour
                await pause(clock, 1.0, 1.0)
                while self.inbox:
                    frame = self.inbox.popleft()
                    if frame["type"] == "status":
                        self.status = frame["status"]
                    elif frame["type"] == "message" and frame["sender"] == "agent":
                        heard += 1
                if self.status in ENDED_STATUSES:
                    return
                if self.status in UNROUTED_STATUSES:
                    waited += 1
                    if self.gives_up_after is not None and waited >= self.gives_up_after:
                        await visitor_ends(services.webchat, self)
                        return
                if heard > answered and lines:
                    await pause(clock, 2.0, 6.0, self.rng)
                    answered = heard
                    await visitor_says(services.webchat, self, secrets.token_hex(8), lines.pop(0))
        except FrameError as error:
            log.info("demo visitor stopped", extra={"code": error.code})
        finally:
            services.webchat.leave(self)
