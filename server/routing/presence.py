"""Agents' presence and load, as this process knows them, and presence changes.

Presence (`available`, `away`, `offline`) is stored on the agents row and announced on
the bus, so every process's `AgentBoard` follows it. Load (the calls and chats an
agent holds: offered to it, active, or in wrap-up) follows the conversation rows on
the bus: each change moves one unit from the old holder to the new, which commutes,
so the order in which several publishers' news arrives does not matter. A gap in the
bus reloads everything from the database.

An agent is `busy` while it holds anything, whatever its presence but `offline`. The
time an agent became idle (available with nothing held) orders the router's choice:
the agent idle longest gets the next offer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete

from server.bus import Bus
from server.core.clock import Clock
from server.core.errors import Refused
from server.core.fields import Choice, Object
from server.routing import repository as rr
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database
from server.wire.rows import instant

PRESENCES = ("available", "away", "offline")
PRESENCE = Choice(PRESENCES)
PRESENCE_BODY = Object(presence=PRESENCE, required=("presence",))
GRACE_S = 15.0  # an agent whose last connection dropped goes offline after this
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class AgentState:
    id: str
    teams: tuple[str, ...]
    chat_capacity: int
    presence: str
    idle_since: datetime
    load: dict[str, int] = field(default_factory=lambda: {"call": 0, "chat": 0})

    @property
    def busy(self) -> bool:
        return self.load["call"] > 0 or self.load["chat"] > 0

    @property
    def status(self) -> str:
        """What a wallboard counts: available, busy, away or offline."""
        if self.presence == "offline":
            return "offline"
        return "busy" if self.busy else self.presence

    def can_take(self, kind: str) -> bool:
        """One call and nothing else, or up to chat_capacity chats."""
        if self.presence != "available" or self.load["call"]:
            return False
        if kind == "call":
            return self.load["chat"] == 0
        return self.load["chat"] < self.chat_capacity


class AgentBoard:
    def __init__(self, db: Database, clock: Clock):
        self.db = db
        self.clock = clock
        self.tenants: dict[str, dict[str, AgentState]] = {}
        # Tenants being loaded: the news that came meanwhile, applied after the load
        # unless its commit is in the load's snapshot (live.py does the same).
        self._loading: dict[str, list[tuple]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def agents(self, tenant: str) -> dict[str, AgentState]:
        agents = self.tenants.get(tenant)
        if agents is None or tenant in self._loading:  # a reload under way: its result
            async with self._locks.setdefault(tenant, asyncio.Lock()):
                agents = self.tenants.get(tenant) or await self._load_unlocked(tenant)
        return agents

    async def _load(self, tenant: str) -> dict[str, AgentState]:
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            return await self._load_unlocked(tenant)

    async def _load_unlocked(self, tenant: str) -> dict[str, AgentState]:
        news = self._loading.setdefault(tenant, [])
        try:
            async with self.db.snapshot() as conn:
                seen = await repo.snapshot_visibility(conn)
                rows = await rr.agents_of(conn, tenant)
                loads = await rr.agent_loads(conn, tenant)
        except BaseException:
            self._loading.pop(tenant, None)
            raise
        known = self.tenants.get(tenant, {})
        agents = {}
        for row in rows:
            before = known.get(row["id"])
            agents[row["id"]] = AgentState(
                row["id"],
                tuple(row["teams"] or ()),
                row["chat_capacity"],
                row["presence"],
                max(before.idle_since if before else EPOCH, row["presence_at"] or EPOCH),
                dict(loads.get(row["id"], {"call": 0, "chat": 0})),
            )
        self.tenants[tenant] = agents
        del self._loading[tenant]
        for kind, *args in news:
            if kind == "rows" and not seen.saw(args[1]):
                self._apply_rows(agents, args[0])
            elif kind == "presence":
                self._apply_presence(agents, *args)
        return agents

    async def reload(self) -> None:
        for tenant in list(self.tenants):
            await self._load(tenant)

    async def reload_tenant(self, tenant: str) -> None:
        if tenant in self.tenants or tenant in self._loading:  # a load under way is stale
            await self._load(tenant)

    def on_rows(self, tenant: str, items: list[dict], token: int) -> bool:
        """Follow load; True when some agent was freed (the router has work)."""
        if tenant in self._loading:
            self._loading[tenant].append(("rows", items, token))
        elif tenant in self.tenants:
            self._apply_rows(self.tenants[tenant], items)
        return any(rr.holder(_old(item)) not in (None, rr.holder(item["row"])) for item in items)

    def _apply_rows(self, agents: dict[str, AgentState], items: list[dict]) -> None:
        for item in items:
            was, held = rr.holder(_old(item)), rr.holder(item["row"])
            if was == held:
                continue
            if was is not None and was[0] in agents:
                agent = agents[was[0]]
                agent.load[was[1]] -= 1
                if not agent.busy:  # idle from the commit that freed it
                    agent.idle_since = max(agent.idle_since, item["row"]["updated_at"])
            if held is not None and held[0] in agents:
                agents[held[0]].load[held[1]] += 1

    def on_presence(self, tenant: str, agent_id: str, presence: str, at: datetime) -> None:
        if tenant in self._loading:
            self._loading[tenant].append(("presence", agent_id, presence, at))
        elif tenant in self.tenants:
            self._apply_presence(self.tenants[tenant], agent_id, presence, at)

    def _apply_presence(self, agents, agent_id: str, presence: str, at: datetime) -> None:
        agent = agents.get(agent_id)
        if agent is None:
            return
        if presence == "available" and agent.presence != "available":
            agent.idle_since = max(agent.idle_since, at)  # back of the line
        agent.presence = presence


def _old(item: dict) -> dict | None:
    return None if item["before"] is None else {**item["row"], **item["before"]}


class Presence:
    """Sets an agent's presence (HTTP, websocket, the grace timer) and announces it."""

    def __init__(self, db: Database, bus: Bus, clock: Clock, grace_s: float = GRACE_S):
        self.db = db
        self.bus = bus
        self.clock = clock
        self.grace_s = grace_s  # armed by agent_connections.py, decided by grace_over

    async def set(self, tenant: str, agent_id: str, presence) -> dict:
        PRESENCE.read(presence, "presence")
        now = self.clock.now()
        async with self.db.write() as conn:
            if not await rr.set_presence(conn, tenant, agent_id, presence, now):
                raise Refused("not_found", f"no agent {agent_id!r} in this tenant")
            if presence != "offline":
                await disarm_grace(conn, tenant, agent_id)
        change = {"agent_id": agent_id, "presence": presence, "at": instant(now)}
        self.bus.post(tenant, {"rows": [], "presence": [change]})
        return {"agent_id": agent_id, "presence": presence, "at": instant(now)}

    async def grace_over(self, tenant: str, agent_id: str, live_since: datetime) -> None:
        """The agent's grace timer fired: `offline` unless the grace was disarmed or
        armed again meanwhile, or a process seen since `live_since` holds a connection
        of the agent. Decided in one transaction, under the timer row's lock."""
        now = self.clock.now()
        async with self.db.write() as conn:
            due = await rr.grace_due(conn, tenant, grace_key(agent_id))
            if due is None or due > now:
                return
            if await rr.connected_anywhere(conn, tenant, agent_id, live_since):
                return
            if not await rr.set_presence(conn, tenant, agent_id, "offline", now):
                return  # the agent was deleted meanwhile
        change = {"agent_id": agent_id, "presence": "offline", "at": instant(now)}
        self.bus.post(tenant, {"rows": [], "presence": [change]})


def grace_key(agent_id: str) -> str:
    return f"presence:{agent_id}"


async def arm_grace(conn, agents: Iterable[tuple[str, str]], due: datetime) -> None:
    """(tenant, agent) pairs go offline at `due` unless connected somewhere by then."""
    rows = [
        {
            "tenant_id": tenant,
            "key": grace_key(agent_id),
            "kind": "presence_grace",
            "conversation_id": None,
            "due_at": due,
            "event": {"agent_id": agent_id},
            "claimed_until": None,
        }
        for tenant, agent_id in set(agents)  # one row per key (one upsert statement)
    ]
    if rows:
        await rr.upsert_timers(conn, rows)


async def disarm_grace(conn, tenant: str, agent_id: str) -> None:
    await conn.execute(
        delete(m.timers).where(
            m.timers.c.tenant_id == tenant, m.timers.c.key == grace_key(agent_id)
        )
    )
