"""The built-in router: decides what happens to each inbound conversation of a tenant
with `routing: builtin`, and says so with `routing.*` events through ingest.

One *pass* per tenant at a time, across every process (PostgreSQL: a transaction-
scoped advisory lock held until the pass's events are committed; SQLite: a lease row
in its single-writer database). A pass reads from the database what it decides on:

1. each conversation that arrived (`new`): its team closed now (business hours in the
   tenant's time zone, holidays) -> `out_of_hours`; nobody of the team logged in (not
   `offline`) -> `assignment_failed`; the team's queue (queued and offered) at its
   capacity -> `enqueue_failed`; else `enqueued`;
2. each team's queue, oldest `queued_at` first: offered to the team's agent that is
   available, has room for the channel (one call and nothing else, or up to its chat
   capacity) and has been idle longest.

Passes run when the bus brings news that may give the router work (an arrival, a
conversation back in a queue, an agent freed or available) and every few seconds.
Event ids are fixed by conversation and version, so two decisions about the same
version (a pass repeated after a crash) are one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from . import routing_repo as rr
from .clock import Clock
from .db import Database
from .ingest import DatabaseUnavailable, Ingest
from .presence import EPOCH, AgentBoard, AgentState
from .repository import get_tenant, lock_key
from .rows import instant

log = logging.getLogger("switchboard.router")

SWEEP_S = 2.0  # every process looks for routable work this often, whatever the bus said
LEASE_S = 10.0
MAX_ARRIVALS = 1000  # conversations judged per pass; the next pass takes the rest
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def is_open(business_hours, moment: datetime, zone: ZoneInfo) -> bool:
    """Whether a team with these hours is open at `moment` (tenant's local time)."""
    if business_hours in (None, "always"):
        return True
    local = moment.astimezone(zone)
    if local.date().isoformat() in business_hours.get("holidays", []):
        return False
    now = local.time()
    for span in business_hours.get(DAYS[local.weekday()], []):
        start, end = span.split("-")
        if _clock(start) <= now < _clock(end):
            return True
    return False


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    if hours == "24":
        return time.max
    return time(int(hours), int(minutes))


def offer_id_for(tenant: str, conversation_id: str, version: int) -> str:
    digest = hashlib.blake2b(f"{tenant}\x00{conversation_id}\x00{version}".encode(), digest_size=12)
    return f"of_{digest.hexdigest()}"


def decision_id(conversation_id: str, version: int) -> str:
    digest = hashlib.blake2b(f"{conversation_id}\x00{version}".encode(), digest_size=12)
    return f"router:{digest.hexdigest()}"


class Router:
    def __init__(self, db: Database, ingest: Ingest, clock: Clock, board: AgentBoard):
        self.db = db
        self.ingest = ingest
        self.clock = clock
        self.board = board
        self.holder = f"p-{secrets.token_hex(6)}"
        self._dirty: set[str] = set()
        self._running: dict[str, asyncio.Task] = {}
        self._sweeper: asyncio.Task | None = None
        self.decisions = 0  # events this process decided and got applied
        # tenant -> its row (routing mode, time zone); forgotten on settings news
        self._tenants: dict[str, dict | None] = {}

    def forget(self, tenant: str) -> None:
        """The tenant's settings changed: read them again."""
        self._tenants.pop(tenant, None)

    async def _tenant(self, tenant: str) -> dict | None:
        if tenant not in self._tenants:
            async with self.db.read() as conn:
                self._tenants[tenant] = await get_tenant(conn, tenant)
        return self._tenants[tenant]

    async def mode(self, tenant: str) -> str | None:
        row = await self._tenant(tenant)
        return row["routing"] if row else None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="router-sweep")

    async def stop(self) -> None:
        tasks = [*self._running.values(), *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def trigger(self, tenant: str) -> None:
        """Route `tenant` soon; triggers during a pass make one more pass after it."""
        self._dirty.add(tenant)
        if tenant not in self._running:
            self._running[tenant] = asyncio.create_task(self._passes(tenant))

    async def _passes(self, tenant: str) -> None:
        try:
            while tenant in self._dirty:
                self._dirty.discard(tenant)
                try:
                    more = await self.route(tenant)
                except DatabaseUnavailable:
                    more = False
                except Exception:
                    log.exception("routing pass failed", extra={"tenant": tenant})
                    more = False
                if more:
                    self._dirty.add(tenant)
        finally:
            self._running.pop(tenant, None)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                async with self.db.read() as conn:
                    tenants = await rr.tenants_waiting(conn)
            except Exception:
                log.warning("router sweep failed", exc_info=True)
                continue
            for tenant in tenants:
                self.trigger(tenant)

    async def route(self, tenant: str) -> bool:
        """One pass; True when there may be more to do at once."""
        settings = await self._tenant(tenant)
        if settings is None or settings["routing"] != "builtin":
            return False
        if self.db.is_sqlite:
            now = self.clock.now()
            async with self.db.write() as conn:
                held = await rr.take_lease(
                    conn, tenant, self.holder, now, now + timedelta(seconds=LEASE_S)
                )
            if not held:
                return False  # another process routes this tenant
            async with self.db.read() as conn:
                return await self._pass(conn, tenant, settings)
        async with self.db.engine.connect() as conn, conn.begin():
            await rr.advisory_lock(conn, lock_key(tenant, "\x00router"))
            return await self._pass(conn, tenant, settings)

    async def _pass(self, conn, tenant: str, settings: dict) -> bool:
        zone = ZoneInfo(settings["timezone"])
        now = self.clock.now()
        teams = await rr.team_settings(conn, tenant)
        agents = await self._agents(conn, tenant)
        arrivals = await rr.arrivals(conn, tenant, MAX_ARRIVALS)
        lengths = await rr.queue_lengths(conn, tenant)
        events: list[dict] = []
        fresh: dict[str, list[dict]] = {}  # enqueued in this pass, by team
        logged_in = {t for a in agents.values() if a.presence != "offline" for t in a.teams}
        for row in arrivals:
            team = row["team"]
            event = {"event_id": decision_id(row["id"], row["version"])}
            event.update(conversation_id=row["id"], occurred_at=instant(now))
            if team is None:
                event.update(type="routing.assignment_failed", data={"reason": "no_team"})
            else:
                setting = teams.get(team) or rr.TEAM_DEFAULTS
                if not is_open(setting["business_hours"], now, zone):
                    event.update(type="routing.out_of_hours", data={"team": team})
                elif team not in logged_in:
                    event.update(
                        type="routing.assignment_failed", data={"reason": "no_agent_logged_in"}
                    )
                elif lengths.get(team, 0) >= setting["queue_capacity"]:
                    event.update(
                        type="routing.enqueue_failed", data={"team": team, "reason": "queue_full"}
                    )
                else:
                    event.update(type="routing.enqueued", data={"team": team})
                    lengths[team] = lengths.get(team, 0) + 1
                    fresh.setdefault(team, []).append({**row, "version": row["version"] + 1})
            events.append(event)
        for team in sorted({t for a in agents.values() for t in a.teams}):
            free = [a for a in agents.values() if team in a.teams and a.presence == "available"]
            if not free:
                continue
            setting = teams.get(team) or rr.TEAM_DEFAULTS
            slots = sum(1 if a.load["chat"] == 0 and not a.load["call"] else 0 for a in free)
            slots += sum(max(0, a.chat_capacity - a.load["chat"]) for a in free)
            if not slots:
                continue
            waiting = await rr.queue_head(conn, tenant, team, slots + 20)
            waiting += fresh.get(team, [])
            for row in waiting:
                agent = self._idle_longest(free, rr.load_kind(row["channel"]))
                if agent is None:
                    continue
                agent.load[rr.load_kind(row["channel"])] += 1
                agent.idle_since = now  # the next offer goes to the next agent
                expires = now + timedelta(seconds=setting["offer_timeout_s"])
                events.append(
                    {
                        "event_id": decision_id(row["id"], row["version"]),
                        "type": "routing.offered",
                        "conversation_id": row["id"],
                        "occurred_at": instant(now),
                        "data": {
                            "agent_id": agent.id,
                            "offer_id": offer_id_for(tenant, row["id"], row["version"]),
                            "expires_at": instant(expires),
                        },
                    }
                )
        if not events:
            return False
        outcomes = await self.ingest.submit(tenant, events)
        self.decisions += sum(1 for o in outcomes if o.outcome == "applied")
        return len(arrivals) == MAX_ARRIVALS

    async def _agents(self, conn, tenant: str) -> dict[str, AgentState]:
        """The tenant's agents with their load as the database has it now (the board's
        copy may lag another process's commit), idle times from the board."""
        known = await self.board.agents(tenant)
        rows = await rr.agents_of(conn, tenant)
        loads = await rr.agent_loads(conn, tenant)
        agents = {}
        for row in rows:
            board = known.get(row["id"])
            agents[row["id"]] = AgentState(
                row["id"],
                tuple(row["teams"] or ()),
                row["chat_capacity"],
                row["presence"],
                max(board.idle_since if board else EPOCH, row["presence_at"] or EPOCH),
                dict(loads.get(row["id"], {"call": 0, "chat": 0})),
            )
        return agents

    @staticmethod
    def _idle_longest(free: list[AgentState], kind: str) -> AgentState | None:
        best = None
        for agent in free:
            if agent.can_take(kind) and (
                best is None or (agent.idle_since, agent.id) < (best.idle_since, best.id)
            ):
                best = agent
        return best
