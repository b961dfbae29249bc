"""Demo traffic for `switchboard serve --demo`: a tenant with teams, agents and
customers, and conversations that arrive, queue, get answered or dropped, exchange
messages and wrap up, posted through ingest as an integration would post them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from datetime import timedelta

from . import models as m
from . import repository as repo
from .auth import mint_token
from .tenants import TenantExists, create_tenant

log = logging.getLogger("switchboard.demo")

TENANT = "demo"
TIMEZONE = "Europe/Madrid"
TEAMS = ("sales", "support")
AGENTS = {
    "a1": ("Ana García", ["sales"]),
    "a2": ("Ben Okafor", ["sales"]),
    "a3": ("Chloé Martin", ["support"]),
    "a4": ("Dmitri Ivanov", ["support"]),
    "a5": ("Emma Schmidt", ["sales", "support"]),
    "a6": ("Farah Haddad", ["support"]),
}
CUSTOMERS = [
    ("Lucía Fernández", "+34911000101"),
    ("Tom Baker", "+442070000102"),
    ("Yuki Tanaka", "+81300000103"),
    ("Amara Nwosu", "+2341000104"),
    ("João Silva", "+5511900000105"),
    ("Sofia Rossi", "+390600000106"),
    ("Noah Cohen", "+97230000107"),
    ("Mia Müller", "+493000000108"),
    ("Ravi Patel", "+912200000109"),
    ("Léa Dubois", "+33100000110"),
]
CONTACT_CENTER_NUMBERS = {"sales": "+34910000001", "support": "+34910000002"}
DISPOSITIONS = ("resolved", "sale", "callback", "escalated", "information")
MAX_LIVE = 25


async def seed(sb) -> None:
    async with sb.db.write() as conn:
        try:
            await create_tenant(conn, TENANT, TIMEZONE, routing="external")  # Traffic routes
        except TenantExists:
            return
        for team in TEAMS:
            await repo.upsert(
                conn,
                m.teams,
                {"tenant_id": TENANT, "name": team, "business_hours": "always"},
                ["tenant_id", "name"],
            )
        for agent_id, (name, teams) in AGENTS.items():
            await repo.upsert(
                conn,
                m.agents,
                {"tenant_id": TENANT, "id": agent_id, "name": name, "teams": teams},
                ["tenant_id", "id"],
            )


def links(settings, base_url: str) -> list[str]:
    def token(role: str, user: str) -> str:
        return mint_token(settings.secret, TENANT, role, user)

    return [
        f"supervisor token: {token('supervisor', 'sup1')}",
        f"agent a1 token:   {token('agent', 'a1')}",
        f"service token:    {token('service', 'demo-traffic')}",
        f"try: curl -H 'Authorization: Bearer <token>' {base_url}/api/v1/conversations/<id>",
    ]


class Traffic:
    """Plays conversations forever; each one a small task with realistic pauses."""

    def __init__(self, sb, rng: random.Random | None = None):
        self.sb = sb
        self.rng = rng or random.Random()
        self.ids = itertools.count(1)
        self.live = 0

    async def run(self) -> None:
        run_tag = self.rng.randrange(16**6)
        tasks: set[asyncio.Task] = set()
        while True:
            if self.live < MAX_LIVE:
                task = asyncio.create_task(self._one(f"demo-{run_tag:06x}-{next(self.ids)}"))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))

    async def _post(self, conversation_id: str, event_type: str, **data) -> None:
        now = self.sb.clock.now()
        await self.sb.ingest.submit(
            TENANT,
            [
                {
                    "event_id": f"{conversation_id}:{event_type}:{now.timestamp()}",
                    "type": event_type,
                    "conversation_id": conversation_id,
                    "occurred_at": now.isoformat(),
                    "data": data,
                }
            ],
        )

    async def _pause(self, low: float, high: float) -> None:
        await asyncio.sleep(self.rng.uniform(low, high))

    async def _one(self, cid: str) -> None:
        self.live += 1
        try:
            if self.rng.random() < 0.25:
                await self._outgoing(cid)
            else:
                await self._incoming(cid)
        except Exception:
            log.exception("demo conversation failed", extra={"conversation_id": cid})
        finally:
            self.live -= 1

    async def _incoming(self, cid: str) -> None:
        rng = self.rng
        name, phone = rng.choice(CUSTOMERS)
        team = rng.choice(TEAMS)
        channel = rng.choice(("call", "call", "chat", "sms", "whatsapp"))
        contact = f"visitor-{rng.randrange(10**6)}" if channel == "chat" else phone
        await self._post(
            cid,
            "conversation.created",
            channel=channel,
            contact=contact,
            customer={"name": name, "phone": phone},
            contacto_number=None if channel == "chat" else CONTACT_CENTER_NUMBERS[team],
        )
        await self._pause(0.2, 1.0)
        roll = rng.random()
        if roll < 0.05:
            await self._post(cid, "routing.out_of_hours", team=team)
            return
        if roll < 0.08:
            await self._post(cid, "routing.enqueue_failed", team=team, reason="queue_full")
            return
        await self._post(cid, "routing.enqueued", team=team)
        await self._pause(1, 8)
        roll = rng.random()
        if roll < 0.12:
            await self._post(cid, "media.customer_dropped")
            return
        if roll < 0.17:
            await self._post(cid, "routing.queue_timeout")
            return
        agent = rng.choice([a for a, (_, teams) in AGENTS.items() if team in teams])
        offer = f"{cid}-offer"
        expires = self.sb.clock.now() + timedelta(seconds=20)
        await self._post(
            cid, "routing.offered", agent_id=agent, offer_id=offer, expires_at=expires.isoformat()
        )
        await self._pause(0.5, 3)
        await self._post(cid, "agent.accepted", agent_id=agent, offer_id=offer)
        await self._talk(cid, channel)
        await self._post(cid, "media.hangup", source=rng.choice(("customer", "agent")))
        await self._wrap_up(cid)

    async def _outgoing(self, cid: str) -> None:
        rng = self.rng
        name, phone = rng.choice(CUSTOMERS)
        agent = rng.choice(list(AGENTS))
        channel = rng.choice(("call", "call", "sms", "whatsapp"))
        await self._post(
            cid,
            "conversation.initiated",
            channel=channel,
            contact=phone,
            agent_id=agent,
            customer={"name": name, "phone": phone},
            contacto_number=CONTACT_CENTER_NUMBERS["sales"],
            text=None if channel == "call" else "Hello, this is Switchboard demo.",
        )
        await self._pause(0.5, 2)
        if channel == "call":
            await self._post(cid, "media.ringing")
            await self._pause(1, 5)
            if rng.random() < 0.3:
                await self._post(cid, "media.no_answer", reason=rng.choice(("no_answer", "busy")))
                await self._wrap_up(cid)
                return
            await self._post(cid, "media.answered")
        else:
            await self._post(
                cid,
                "media.message",
                message_id=f"{cid}-r1",
                sender="customer",
                text="Hi! Thanks for reaching out.",
            )
        await self._talk(cid, channel)
        await self._post(cid, "media.hangup", source="agent")
        await self._wrap_up(cid)

    async def _talk(self, cid: str, channel: str) -> None:
        if channel == "call":
            await self._pause(3, 15)
            return
        for turn in range(self.rng.randint(1, 4)):
            await self._pause(1, 4)
            sender = "agent" if turn % 2 == 0 else "customer"
            await self._post(
                cid,
                "media.message",
                message_id=f"{cid}-m{turn}",
                sender=sender,
                text=self.rng.choice(
                    (
                        "How can I help?",
                        "My order is late.",
                        "Let me check that for you.",
                        "Thank you!",
                    )
                ),
            )

    async def _wrap_up(self, cid: str) -> None:
        await self._pause(1, 5)
        if self.rng.random() < 0.15:
            await self._post(cid, "wrapup.timeout")
        else:
            await self._post(
                cid,
                "wrapup.submitted",
                disposition=self.rng.choice(DISPOSITIONS),
                note=self.rng.choice((None, "Customer satisfied.", "Follow up")),
            )
        if self.rng.random() < 0.4:
            await self._pause(0.5, 2)
            await self._post(cid, "csat.received", score=self.rng.randint(1, 5))
        if self.rng.random() < 0.3:
            await self._post(
                cid, "ticket.linked", ticket_id=f"T-{self.rng.randrange(10**5)}", system="helpdesk"
            )
