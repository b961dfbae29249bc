"""The demo of `switchboard serve --demo`: a tenant with teams, agents, customers and
numbers, and traffic played through the sandbox provider with the built-in router
on, so that every page is alive at once (docs/demo.md).

Calls, SMS and WhatsApp arrive through the sandbox (server/providers/sandbox.py, the
same path as a provider's webhook); web chats through the web-chat service
(server/providers/webchat.py); simulated agents (server/demo/people.py) act through the
services a real agent's requests use. One agent, a1, is left to a person on /agent.
Every wait goes through the server's clock, so a test can run the demo fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from server.core.auth import mint_token
from server.demo.people import OUTBOUND, SimulatedAgent, SimulatedVisitor, pause
from server.live.definitions import new_view_values
from server.providers import repository as crepo
from server.routing.wallboard import UNANSWERED
from server.storage import models as m
from server.storage import repository as repo
from server.tenants.settings import settings_news
from server.tenants.setup import TenantExists, create_tenant
from state_machine import WAITING_STATUSES, Status

log = logging.getLogger("switchboard.demo")

TENANT = "demo"
TIMEZONE = "Europe/Madrid"
HUMAN_AGENT = "a1"  # left to a person: the printed agent link signs in as a1
NUMBERS = {  # the contact center's numbers at the sandbox, each routed to a team
    "sales": "+34910000001",
    "support": "+34910000002",
    "billing": "+34910000003",
    "partners": "+34910000004",
    "retention": "+34910000005",
}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
TEAMS = {
    # queue_capacity, queue_timeout_s, offer_timeout_s, service_level_s, wrap_up_timeout_s
    "sales": (6, 120, 15, 20, 40),
    "support": (8, 150, 15, 30, 40),
    "billing": (5, 120, 15, 20, 40),  # office hours, and closed today (see seed)
    "partners": (3, 60, 15, 20, 40),  # one agent, often on a break: queues, times out
    "retention": (5, 120, 15, 20, 40),  # only a1: no one logged in unless a person is
}
AGENTS = {  # id: (name, teams, phone, chat capacity)
    "a1": ("Ana García", ["sales", "support", "retention"], "+34600100001", 3),
    "a2": ("Ben Okafor", ["sales"], "+34600100002", 2),
    "a3": ("Chloé Martin", ["sales", "support"], "+34600100003", 3),
    "a4": ("Dmitri Ivanov", ["support"], "+34600100004", 2),
    "a5": ("Emma Schmidt", ["support"], "+34600100005", 3),
    "a6": ("Farah Haddad", ["support", "sales"], "+34600100006", 2),
    "a7": ("Gustavo Pereira", ["partners"], "+34600100007", 2),
}
CUSTOMERS = [  # inbound callers and texters (their numbers' last digits decide nothing inbound)
    ("Lucía Fernández", "+34655123411"),
    ("Tom Baker", "+12025550143"),
    ("Yuki Tanaka", "+819012345678"),
    ("Amara Nwosu", "+2348012345678"),
    ("João Silva", "+5511912345678"),
    ("Sofia Rossi", "+390612345678"),
    ("Mia Müller", "+4915112345678"),
    ("Ravi Patel", "+919812345678"),
    ("Léa Dubois", "+33612345678"),
    ("Pablo Ruiz", "+34655123422"),
    ("Marta López", "+34655123433"),
    ("Jonas Berg", "+34655123444"),
]
VISITORS = ["Alex", "Sam Lee", "Priya", "Chen Wei", "Olga", "Kofi", "Inés", "Marco"]
MAX_OPEN = 40  # the traffic waits while this many conversations are open


# Shared views a supervisor finds on the first visit (fixed ids: re-seeded each start).
VIEWS = {
    "v_demo_today": {
        "name": "Today, newest first",
        "visibility": "tenant",
        "filters": [{"field": "created_at", "op": "within", "value": "today"}],
        "columns": [
            "id",
            "customer_name",
            "created_time",
            "channel",
            "status",
            "state",
            "team",
            "agent_name",
            "contact",
            "disposition",
            "csat",
        ],
    },
    "v_demo_queue": {
        "name": "Waiting now",
        "visibility": "tenant",
        "filters": [{"field": "status", "op": "in", "value": sorted(WAITING_STATUSES)}],
        "columns": ["id", "customer_name", "created_time", "channel", "team", "status", "contact"],
    },
    "v_demo_unanswered_whatsapp": {
        "name": "Unanswered WhatsApp today",
        "visibility": "tenant",
        "filters": [
            {"field": "channel", "op": "in", "value": ["whatsapp"]},
            {"field": "state", "op": "in", "value": list(UNANSWERED)},
            {"field": "created_at", "op": "within", "value": "today"},
        ],
        "columns": ["id", "customer_name", "created_time", "state", "team", "contact"],
    },
}


async def seed(services, origins: tuple[str, ...]) -> None:
    """The demo tenant, made or brought up to date on every start: its settings, teams
    (billing closed today), agents, the sandbox's numbers and the widget's origins."""
    today = services.clock.now().astimezone(ZoneInfo(TIMEZONE)).date()
    async with services.db.write() as conn:
        with contextlib.suppress(TenantExists):
            await create_tenant(conn, TENANT, TIMEZONE)
        await conn.execute(
            m.tenants.update()
            .where(m.tenants.c.id == TENANT)
            .values(
                timezone=TIMEZONE,
                routing="builtin",
                wrap_up_timeout_s=40,
                reply_timeout_s=90,
                widget_origins=list(origins),
            )
        )
        for name, (capacity, queue_s, offer_s, level_s, wrap_s) in TEAMS.items():
            hours: object = "always"
            if name == "billing":
                hours = {day: ["09:00-17:00"] for day in WEEKDAYS}
                hours["holidays"] = [today.isoformat()]
            await repo.upsert(
                conn,
                m.teams,
                {
                    "tenant_id": TENANT,
                    "name": name,
                    "business_hours": hours,
                    "queue_capacity": capacity,
                    "queue_timeout_s": queue_s,
                    "offer_timeout_s": offer_s,
                    "service_level_s": level_s,
                    "wrap_up_timeout_s": wrap_s,
                },
                ["tenant_id", "name"],
            )
        for agent_id, (name, teams, phone, capacity) in AGENTS.items():
            await repo.upsert(
                conn,
                m.agents,
                {
                    "tenant_id": TENANT,
                    "id": agent_id,
                    "name": name,
                    "teams": teams,
                    "phone": phone,
                    "chat_capacity": capacity,
                },
                ["tenant_id", "id"],
            )
        now = services.clock.now()
        for provider, channels, numbers in (
            ("sandbox", ["call", "sms", "whatsapp"], NUMBERS),
            ("webchat", ["chat"], {}),
        ):
            await crepo.put_provider(
                conn,
                {
                    "tenant_id": TENANT,
                    "provider": provider,
                    "channels": channels,
                    "numbers": [{"number": n, "team": t} for t, n in numbers.items()],
                    "credentials": None,
                    "updated_at": now,
                },
            )
        for view_id, body in VIEWS.items():
            row = {
                "tenant_id": TENANT,
                "id": view_id,
                "owner": "sup1",
                "created_at": now,
                "updated_at": now,
                **new_view_values(body, ZoneInfo(TIMEZONE)),
            }
            await repo.upsert(conn, m.views, row, ["tenant_id", "id"])
    services.tenants.forget(TENANT)
    services.bus.post(TENANT, settings_news())


def origins_for(host: str, port: int, public_url: str | None) -> tuple[str, ...]:
    """Where a browser reaches this server: the sites allowed to embed the demo's chat
    (its own /chat-demo page)."""
    hosts = {host}
    if host in ("0.0.0.0", "::", "127.0.0.1", "localhost"):
        hosts |= {"127.0.0.1", "localhost"}
    origins = {f"http://{name}:{port}" for name in hosts if name not in ("0.0.0.0", "::")}
    if public_url:
        origins.add(public_url.rstrip("/"))
    return tuple(sorted(origins))


def links(settings, base_url: str) -> list[str]:
    def token(role: str, user: str) -> str:
        return mint_token(settings.secret, TENANT, role, user)

    return [
        f"supervisor:  {base_url}/views?token={token('supervisor', 'sup1')}",
        f"agent (a1):  {base_url}/agent?token={token('agent', HUMAN_AGENT)}",
        f"wallboard:   {base_url}/wallboard?token={token('wallboard', 'wall1')}",
        f"web chat:    {base_url}/chat-demo",
    ]


class Demo:
    """Seeds the tenant, then runs the simulated agents and the traffic until stopped."""

    def __init__(self, services, origins: tuple[str, ...] = (), rng: random.Random | None = None):
        self.services = services
        self.origins = origins
        self.rng = rng or random.Random()
        self.tasks: set[asyncio.Task] = set()
        self.agents: list[SimulatedAgent] = []

    def spawn(self, coroutine, name: str | None = None) -> asyncio.Task:
        task = asyncio.create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def start(self) -> None:
        await seed(self.services, self.origins)
        for agent_id in AGENTS:
            if agent_id != HUMAN_AGENT:
                agent = SimulatedAgent(self, agent_id, AGENTS[agent_id][0])
                self.agents.append(agent)
                self.spawn(agent.run(), f"demo-agent-{agent_id}")
        self.spawn(self._traffic(), "demo-traffic")

    async def stop(self) -> None:
        for agent in self.agents:
            agent.disconnect()
        while self.tasks:
            tasks = list(self.tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- traffic

    @property
    def sandbox(self):
        return self.services.sandboxes.runner(TENANT).provider

    def call(self, team: str) -> None:
        name, phone = self.rng.choice(CUSTOMERS)
        self.sandbox.start_inbound_call(phone, NUMBERS[team], name)

    def text(self, team: str, channel: str) -> None:
        name, phone = self.rng.choice(CUSTOMERS)
        first = self.rng.choice(
            (
                "Hi, my parcel has not arrived yet.",
                "Can I change the delivery address?",
                "Hello! Do you have the Gravel X in size M?",
                "I was charged twice this month.",
                "¿Puedo pagar a plazos?",
            )
        )
        self.sandbox.start_inbound_message(phone, channel, first, NUMBERS[team], name)

    def chat(self, team: str, gives_up_after: float | None = None) -> None:
        visitor = SimulatedVisitor(self, self.rng.choice(VISITORS), team, gives_up_after)
        self.spawn(visitor.run(), "demo-visitor")

    async def _traffic(self) -> None:
        await self._opening()
        while True:
            await pause(self.services.clock, 6.0, 14.0, self.rng)
            if await self._open_conversations() >= MAX_OPEN:
                continue
            roll = self.rng.random()
            team = self.rng.choices(
                ("support", "sales", "billing", "partners", "retention"), (50, 30, 6, 8, 6)
            )[0]
            if roll < 0.45:
                self.call(team)
            elif roll < 0.60:
                self.text(team, "sms")
            elif roll < 0.72:
                self.text(team, "whatsapp")
            elif roll < 0.97:
                self.chat(self.rng.choice(("support", "sales", "partners")))
            else:  # a rush: more calls at once than sales can queue
                for _ in range(8):
                    self.call("sales")

    async def _open_conversations(self) -> int:
        table = m.conversations
        async with self.services.db.read() as conn:
            query = select(func.count()).where(
                table.c.tenant_id == TENANT, table.c.status != Status.CLOSED
            )
            return (await conn.execute(query)).scalar_one()

    async def _opening(self) -> None:
        """The first minute, scripted so that every status and the unanswered states
        show soon after start: then the random traffic takes over."""
        clock = self.services.clock
        self.call("support")
        self.chat("support")
        self.text("support", "whatsapp")
        await pause(clock, 1.0, 1.0)
        self.call("billing")  # closed today: out of business hours
        self.call("retention")  # only a1, offline unless a person signed in
        # Partners' only agent is on a break: two visitors wait in its queue (one gives
        # up: dropped; one waits: queue timeout), then calls fill it and are refused.
        self.chat("partners", gives_up_after=8.0)
        self.chat("partners")
        await pause(clock, 1.0, 1.0)
        for _ in range(4):
            self.call("partners")
        await pause(clock, 2.0, 2.0)
        self.call("sales")
        self.text("sales", "sms")
        for agent, contact in zip(self.agents[:3], OUTBOUND[:3], strict=True):
            agent.outbound_soon(contact)  # answered (a recording), busy, never answered
