"""The wallboard: the metrics of docs/api.md per team and channel and in total, for the tenant's
current day (conversations created since its midnight) and what is live now.

Owns: the metrics and keeping them; which statuses are live, waiting or handled and
which states are answered comes from the machine's groups (state_machine).

Kept incrementally: every conversation contributes additive counters to its (team,
channel) bucket, and each change on the bus subtracts what the old image contributed
and adds what the new one does. Additions commute, so news from several publishers in
any order gives the same numbers. A tenant is loaded by SQL aggregation (`recompute`):
on first use, after a gap in the bus, when a team's service-level threshold changes
and when its day turns. A test holds the incremental numbers to `recompute` after a
random event stream.

Subscribers (`subscribe_wallboard`) get a `wallboard` frame at most PUSH_S after a
change, and every TICK_S anyway (longest_wait_s grows with no event).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, literal, select

from server.core.clock import Clock
from server.core.tasks import cancel_and_wait
from server.routing import repository as rr
from server.routing.presence import AgentBoard
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database
from server.wire.rows import instant
from state_machine import (
    ANSWERED_STATES,
    HANDLING_STATUSES,
    UNANSWERED_STATES,
    WAITING_STATUSES,
    State,
    Status,
)

log = logging.getLogger("switchboard.wallboard")

PUSH_S = 0.1
TICK_S = 5.0
DEFAULT_SERVICE_LEVEL_S = 20
# The unanswered states, in the machine's order: the keys of `unanswered`.
UNANSWERED = tuple(state for state in State if state in UNANSWERED_STATES)
ABANDONED = f"u_{State.DROPPED}"  # abandon rate: dropped / (answered + dropped)
# What is live now: how many are in each of these statuses, under the status's name,
# except queued ones, counted as `waiting`.
LIVE = {
    status: "waiting" if status is Status.QUEUED else status.value
    for status in Status
    if status in WAITING_STATUSES | HANDLING_STATUSES
}
# The service level's denominator: the conversations that reached a queue and left it
# answered, dropped or timed out.
LEFT_A_QUEUE = ANSWERED_STATES | {State.DROPPED, State.QUEUE_TIMEOUT}
SUMS = (
    *LIVE.values(),
    "answered",
    "sl_hits",
    "sl_total",
    "wait_sum",
    "wait_n",
    "handle_sum",
    "handle_n",
    "csat_sum",
    "csat_n",
    *(f"u_{state}" for state in UNANSWERED),
)


@dataclass
class Tally:
    """Additive counters of one (team, channel) bucket."""

    sums: Counter = field(default_factory=Counter)
    waiting_since: Counter = field(default_factory=Counter)  # wait start -> how many

    def add(self, other: Tally, sign: int = 1) -> None:
        for name, value in other.sums.items():
            self.sums[name] += sign * value
        for moment, count in other.waiting_since.items():
            self.waiting_since[moment] += sign * count
            if self.waiting_since[moment] == 0:
                del self.waiting_since[moment]


def contribution(row: dict, day_start: datetime, threshold: float) -> Tally:
    """What one conversation adds to its bucket."""
    tally = Tally()
    status = row["status"]
    if status in LIVE:
        tally.sums[LIVE[status]] += 1
    if status in WAITING_STATUSES:
        tally.waiting_since[row["queued_at"] or row["created_at"]] += 1
    if row["created_at"] < day_start:
        return tally
    state = row["state"]
    s = tally.sums
    answered = state in ANSWERED_STATES
    if answered:
        s["answered"] += 1
    elif state in UNANSWERED_STATES:
        s[f"u_{state}"] += 1
    if row["queued_at"] is not None and state in LEFT_A_QUEUE:
        s["sl_total"] += 1
        if answered and row["wait_s"] is not None and row["wait_s"] <= threshold:
            s["sl_hits"] += 1
    if row["wait_s"] is not None:
        s["wait_sum"] += row["wait_s"]
        s["wait_n"] += 1
    if row["handle_s"] is not None:
        s["handle_sum"] += row["handle_s"]
        s["handle_n"] += 1
    if row["csat"] is not None:
        s["csat_sum"] += row["csat"]
        s["csat_n"] += 1
    return tally


def _values(group) -> list[str]:
    """A group of statuses or states as SQL values, in a fixed order."""
    return sorted(member.value for member in group)


@dataclass
class TenantBoard:
    day_start: datetime
    thresholds: dict[str, float]
    buckets: dict[tuple[str, str], Tally]


async def recompute(conn, tenant: str, day_start: datetime) -> dict[tuple[str, str], Tally]:
    """Every bucket from the stored conversations, by SQL aggregation."""
    c, t = m.conversations, m.teams
    team = func.coalesce(c.c.team, literal(""))
    threshold = func.coalesce(t.c.service_level_s, DEFAULT_SERVICE_LEVEL_S)
    answered = c.c.state.in_(_values(ANSWERED_STATES))
    from_queue = c.c.queued_at.is_not(None)

    def count(condition):
        return func.sum(case((condition, 1), else_=0))

    def total(value):
        return func.coalesce(func.sum(value), 0)

    buckets: dict[tuple[str, str], Tally] = {}
    live = (
        select(
            team,
            c.c.channel,
            c.c.status,
            func.coalesce(c.c.queued_at, c.c.created_at),
            func.count(),
        )
        .where(c.c.tenant_id == tenant, c.c.status.in_(_values(LIVE)))
        .group_by(team, c.c.channel, c.c.status, func.coalesce(c.c.queued_at, c.c.created_at))
    )
    for team_name, channel, status, since, n in await conn.execute(live):
        tally = buckets.setdefault((team_name, channel), Tally())
        tally.sums[LIVE[status]] += n
        if status in WAITING_STATUSES:
            tally.waiting_since[since] += n
    day = (
        select(
            team,
            c.c.channel,
            count(answered),
            count(and_(from_queue, c.c.state.in_(_values(LEFT_A_QUEUE)))),
            count(and_(from_queue, answered, c.c.wait_s <= threshold)),
            total(c.c.wait_s),
            func.count(c.c.wait_s),
            total(c.c.handle_s),
            func.count(c.c.handle_s),
            total(c.c.csat),
            func.count(c.c.csat),
            *(count(c.c.state == state) for state in UNANSWERED),
        )
        .select_from(c.outerjoin(t, and_(t.c.tenant_id == c.c.tenant_id, t.c.name == c.c.team)))
        .where(c.c.tenant_id == tenant, c.c.created_at >= day_start)
        .group_by(team, c.c.channel)
    )
    names = (
        "answered",
        "sl_total",
        "sl_hits",
        "wait_sum",
        "wait_n",
        "handle_sum",
        "handle_n",
        "csat_sum",
        "csat_n",
        *(f"u_{state}" for state in UNANSWERED),
    )
    for row in await conn.execute(day):
        tally = buckets.setdefault((row[0], row[1]), Tally())
        for name, value in zip(names, row[2:], strict=True):
            if value:
                tally.sums[name] += value
    return buckets


def render(tallies: list[Tally], agents: dict[str, int] | None, now: datetime) -> dict[str, Any]:
    total = Tally()
    for tally in tallies:
        total.add(tally)
    s = total.sums
    oldest = min(total.waiting_since) if total.waiting_since else None

    def ratio(a, b):
        return round(a / b, 4) if b else None

    metrics = {
        **{name: s[name] for name in LIVE.values()},  # waiting, offered, active, wrap_up
        "longest_wait_s": round(max(0.0, (now - oldest).total_seconds()), 3) if oldest else 0,
        "answered": s["answered"],
        "unanswered": {state: s[f"u_{state}"] for state in UNANSWERED},
        "abandon_rate": ratio(s[ABANDONED], s["answered"] + s[ABANDONED]),
        "service_level": ratio(s["sl_hits"], s["sl_total"]),
        "avg_wait_s": ratio(s["wait_sum"], s["wait_n"]),
        "avg_handle_s": ratio(s["handle_sum"], s["handle_n"]),
        "csat_avg": ratio(s["csat_sum"], s["csat_n"]),
        "csat_count": s["csat_n"],
    }
    if agents is not None:
        metrics["agents"] = agents
    return metrics


@dataclass(eq=False)
class WallboardSubscription:
    connection: Any
    tenant: str
    teams: frozenset[str] | None
    channels: frozenset[str] | None
    seq: int = 0


class Wallboard:
    def __init__(self, db: Database, clock: Clock, zone_of, board: AgentBoard):
        self.db = db
        self.clock = clock
        self.zone_of = zone_of
        self.board = board
        self.tenants: dict[str, TenantBoard] = {}
        self._loading: dict[str, list[tuple]] = {}  # as AgentBoard's
        self._locks: dict[str, asyncio.Lock] = {}
        self.subscriptions: dict[str, set[WallboardSubscription]] = {}
        self._dirty: set[str] = set()
        self._push_scheduled = False
        self._tasks: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick(), name="wallboard-tick")

    async def stop(self) -> None:
        await cancel_and_wait([*self._tasks, self._ticker])

    async def day_start(self, tenant: str) -> datetime:
        zone = await self.zone_of(tenant)
        local = self.clock.now().astimezone(zone)
        return local.replace(hour=0, minute=0, second=0, microsecond=0)

    async def tenant(self, tenant: str) -> TenantBoard:
        day_start = await self.day_start(tenant)
        board = self.tenants.get(tenant)
        if board is None or board.day_start != day_start:
            async with self._locks.setdefault(tenant, asyncio.Lock()):
                board = self.tenants.get(tenant)
                if board is None or board.day_start != day_start:
                    board = await self._load_unlocked(tenant, day_start)
        return board

    async def _load(self, tenant: str, day_start: datetime) -> TenantBoard:
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            return await self._load_unlocked(tenant, day_start)

    async def _load_unlocked(self, tenant: str, day_start: datetime) -> TenantBoard:
        news = self._loading.setdefault(tenant, [])
        try:
            async with self.db.snapshot() as conn:
                seen = await repo.snapshot_visibility(conn)
                buckets = await recompute(conn, tenant, day_start)
                teams = await rr.team_settings(conn, tenant)
        except BaseException:
            self._loading.pop(tenant, None)
            raise
        thresholds = {name: row["service_level_s"] for name, row in teams.items()}
        board = self.tenants[tenant] = TenantBoard(day_start, thresholds, buckets)
        del self._loading[tenant]
        for items, token in news:
            if not seen.saw(token):
                self._apply(board, items)
        return board

    async def reload(self, tenant: str | None = None) -> None:
        for name in [tenant] if tenant else list(self.tenants):
            if name in self.tenants or name in self._loading:  # a load under way is stale
                await self._load(name, await self.day_start(name))
                self.changed(name)

    def on_rows(self, tenant: str, items: list[dict], token: int) -> None:
        if tenant in self._loading:
            self._loading[tenant].append((items, token))
        elif tenant in self.tenants:
            self._apply(self.tenants[tenant], items)
        self.changed(tenant)

    def _apply(self, board: TenantBoard, items: list[dict]) -> None:
        for item in items:
            new = item["row"]
            old = None if item["before"] is None else {**new, **item["before"]}
            if old is not None:
                self._count(board, old, -1)
            self._count(board, new, 1)

    def _count(self, board: TenantBoard, row: dict, sign: int) -> None:
        team = row["team"] or ""
        threshold = board.thresholds.get(team, DEFAULT_SERVICE_LEVEL_S)
        key = (team, row["channel"])
        tally = board.buckets.setdefault(key, Tally())
        tally.add(contribution(row, board.day_start, threshold), sign)

    async def metrics(
        self, tenant: str, teams: frozenset[str] | None = None, channels=None
    ) -> dict[str, Any]:
        board = await self.tenant(tenant)
        agents = await self.board.agents(tenant)
        now = self.clock.now()

        def chosen(key):
            return (teams is None or key[0] in teams) and (channels is None or key[1] in channels)

        def agent_counts(team: str | None) -> dict[str, int]:
            counts = dict.fromkeys(("available", "busy", "away", "offline"), 0)
            for agent in agents.values():
                if (team is None and (teams is None or teams & set(agent.teams))) or (
                    team is not None and team in agent.teams
                ):
                    counts[agent.status] += 1
            return counts

        keys = [key for key in board.buckets if chosen(key)]
        agent_teams = {t for a in agents.values() for t in a.teams}
        names = sorted({key[0] for key in keys} | (agent_teams & teams if teams else agent_teams))
        by_team = {}
        for name in names:
            team_keys = [key for key in keys if key[0] == name]
            by_team[name or "(none)"] = {
                **render(
                    [board.buckets[k] for k in team_keys], agent_counts(name) if name else None, now
                ),
                "channels": {
                    k[1]: render([board.buckets[k]], None, now) for k in sorted(team_keys)
                },
            }
        by_channel = {}
        for channel in sorted({key[1] for key in keys}):
            by_channel[channel] = render(
                [board.buckets[k] for k in keys if k[1] == channel], None, now
            )
        return {
            "total": render([board.buckets[k] for k in keys], agent_counts(None), now),
            "teams": by_team,
            "channels": by_channel,
        }

    # --- subscribers

    def subscribe(self, sub: WallboardSubscription) -> None:
        self.subscriptions.setdefault(sub.tenant, set()).add(sub)

    def unsubscribe_connection(self, connection) -> None:
        for tenant, subs in list(self.subscriptions.items()):
            subs -= {sub for sub in subs if sub.connection is connection}
            if not subs:
                del self.subscriptions[tenant]

    def changed(self, tenant: str) -> None:
        if tenant not in self.subscriptions:
            return
        self._dirty.add(tenant)
        if not self._push_scheduled:
            self._push_scheduled = True
            asyncio.get_running_loop().call_later(PUSH_S, self._start_push)

    def _start_push(self) -> None:
        self._push_scheduled = False
        tenants, self._dirty = self._dirty, set()
        task = asyncio.create_task(self._push(tenants))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push(self, tenants) -> None:
        for tenant in tenants:
            for sub in list(self.subscriptions.get(tenant, ())):
                try:
                    await self.send(sub)
                except Exception:
                    log.exception("wallboard push failed", extra={"tenant": tenant})

    async def send(self, sub: WallboardSubscription, ref=None) -> None:
        metrics = await self.metrics(sub.tenant, sub.teams, sub.channels)
        sub.seq += 1
        frame = {
            "type": "wallboard",
            "seq": sub.seq,
            "at": instant(self.clock.now()),
            "metrics": metrics,
        }
        if ref is not None:
            frame["ref"] = ref
        sub.connection.reply(frame)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for tenant in list(self.subscriptions):
                self.changed(tenant)
