"""The built-in router: decides what happens to each inbound conversation of a tenant
with `routing: builtin`, and says so with `routing.*` events through ingest.

Owns: the routing policy (which decision, which agent, when to pass) and owning a
tenant's routing; what a decision does to a conversation is the machine's. Each
candidate event is applied with `state_machine.apply` to the conversation in memory:
what the machine returns is kept tentatively until the commit, an event it refuses is
not made, and the offers it starts (`OfferStarted`) are the ones popups read ahead.

One process routes a tenant at a time (PostgreSQL: a session-level advisory lock on
a connection the router keeps; SQLite: a lease row in its single-writer database).
That process keeps what it decides on in memory (router_state.py: the conversations
arrived and queued, agents' load; presence, teams and idle times from the
AgentBoard), built from the database when it takes the tenant and then kept by the
bus and its own applied decisions, so a pass reads nothing: it decides, and submits
its decisions to ingest in one request. A pass:

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
version (a pass repeated after a crash) are one event; the state machine refuses an
offer of a conversation that is no longer waiting, so memory that lags a commit
costs a refused decision (and a re-read of that row), never a double offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from datetime import datetime, time, timedelta
from time import monotonic
from zoneinfo import ZoneInfo

from server.core.clock import Clock
from server.core.tasks import cancel_and_wait
from server.ingest.pipeline import Ingest
from server.routing import repository as rr
from server.routing.presence import AgentBoard, AgentState
from server.routing.router_state import Entry, TenantState, kept
from server.storage import repository as repo
from server.storage.db import Database, DatabaseUnavailable
from server.storage.repository import get_tenant, lock_key
from server.wire.rows import instant
from state_machine import (
    ROUTABLE_STATUSES,
    WAITING_STATUSES,
    Applied,
    Conversation,
    InvalidEvent,
    OfferStarted,
    TransitionError,
    apply,
    parse_event,
)

log = logging.getLogger("switchboard.router")

SWEEP_S = 2.0  # every process looks for routable work this often, whatever the bus said
LEASE_S = 10.0
SETTLE_S = 1.0  # the memory check leaves out what changed this recently (news on the way)
CHECK_EVERY = 3  # sweeps between two checks of the memory (6 s: it reads the whole queue)
MAX_ARRIVALS = 1000  # conversations judged per pass; the next pass takes the rest
MAX_IN_FLIGHT = 4  # a tenant's submissions awaiting their commit; the next pass waits
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
    def __init__(
        self, db: Database, ingest: Ingest, clock: Clock, board: AgentBoard, on_offers=None
    ):
        self.db = db
        self.ingest = ingest
        self.clock = clock
        self.board = board
        self.holder = f"p-{secrets.token_hex(6)}"
        self._dirty: set[str] = set()
        self._running: dict[str, asyncio.Task] = {}
        self._sweeper: asyncio.Task | None = None
        self.decisions = 0  # events this process decided and got applied
        self.rebuilds = 0  # memory built from the database (tests, metrics)
        # tenant -> its row (routing mode, time zone), its teams' settings; forgotten
        # on settings news
        self._tenants: dict[str, dict | None] = {}
        self._teams: dict[str, dict[str, dict]] = {}
        # The tenants this process routes, and its memory of them.
        self._states: dict[str, TenantState] = {}
        self._stale: set[str] = set()  # rebuild before the next decision
        self._board_stale: set[str] = set()  # ... and reload the board's agents first
        self._loading: dict[str, list[tuple[list, int]]] = {}  # news during a rebuild
        self._refused_until: dict[str, float] = {}  # another process routes it: retry then
        self._lease_until: dict[str, datetime] = {}  # SQLite: our lease, as last taken
        self._owned: set[str] = set()  # PostgreSQL: advisory locks held on _lock_conn
        self._lock_conn = None
        self._lock_guard = asyncio.Lock()  # one statement at a time on _lock_conn
        self._in_flight: dict[str, set[asyncio.Task]] = {}  # tenant -> its submissions
        # Told of each pass's offers before they are submitted: (tenant, [(conversation,
        # contact, agent)]); popups read ahead for agents connected here.
        self.on_offers = on_offers

    def forget(self, tenant: str) -> None:
        """The tenant's settings changed: read them again."""
        self._tenants.pop(tenant, None)
        self._teams.pop(tenant, None)

    def invalidate_all(self) -> None:
        """The bus lost news: rebuild the memory of every tenant before deciding."""
        self._stale.update(self._states)

    async def _tenant(self, tenant: str) -> dict | None:
        if tenant not in self._tenants:
            async with self.db.read() as conn:
                row = await get_tenant(conn, tenant)
            self._tenants[tenant] = row
            return row
        return self._tenants[tenant]

    async def _team_settings(self, tenant: str) -> dict[str, dict]:
        if tenant not in self._teams:
            async with self.db.read() as conn:
                teams = await rr.team_settings(conn, tenant)
            self._teams[tenant] = teams
            return teams
        return self._teams[tenant]

    async def mode(self, tenant: str) -> str | None:
        row = await self._tenant(tenant)
        return row["routing"] if row else None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="router-sweep")

    async def stop(self) -> None:
        tasks = [*self._running.values(), *([self._sweeper] if self._sweeper else [])]
        tasks += [task for flight in self._in_flight.values() for task in flight]
        await cancel_and_wait(tasks)
        await self._release(broken=False)

    def trigger(self, tenant: str) -> None:
        """Route `tenant` soon; triggers during a pass make one more pass after it."""
        self._dirty.add(tenant)
        if tenant not in self._running:
            self._running[tenant] = asyncio.create_task(self._passes(tenant))

    def on_rows(self, tenant: str, items: list[dict], token: int) -> None:
        """Committed conversation rows (the bus): keep the memory of a routed tenant."""
        if tenant in self._loading:
            self._loading[tenant].append((items, token))
        elif tenant in self._states:
            state = self._states[tenant]
            for item in items:
                state.apply(item["row"])

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
                    self._stale.add(tenant)  # whatever went wrong, start again from the truth
                    more = False
                if more:
                    self._dirty.add(tenant)
        finally:
            self._running.pop(tenant, None)

    async def _sweep(self) -> None:
        sweeps = 0
        while True:
            await asyncio.sleep(SWEEP_S)
            sweeps += 1
            try:
                async with self.db.read() as conn:
                    tenants = await rr.tenants_waiting(conn)
            except Exception:
                log.warning("router sweep failed", exc_info=True)
                continue
            for tenant in tenants:
                self.trigger(tenant)
            for tenant in list(self._states) if sweeps % CHECK_EVERY == 0 else ():
                try:
                    await self._check(tenant)
                except Exception:
                    log.warning("router memory check failed", exc_info=True)

    # --- owning a tenant

    async def _own(self, tenant: str) -> bool:
        """Whether this process routes `tenant` (taking it if nobody does). Taking it
        marks the memory stale: another process may have routed it meanwhile."""
        if self.db.is_sqlite:
            return await self._lease(tenant)
        if tenant in self._owned:
            return True
        if monotonic() < self._refused_until.get(tenant, 0.0):
            return False
        async with self._lock_guard:
            try:
                if self._lock_conn is None:
                    conn = await self.db.engine.connect()
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                    self._lock_conn = conn
                got = await rr.try_advisory_lock(self._lock_conn, lock_key(tenant, "\x00router"))
            except Exception:
                await self._release_unguarded(broken=True)
                raise
        if not got:
            self._refused_until[tenant] = monotonic() + SWEEP_S
            return False
        self._owned.add(tenant)
        self._stale.add(tenant)
        return True

    async def _lease(self, tenant: str) -> bool:
        """SQLite: hold the tenant's lease, renewed once half of it has run."""
        now = self.clock.now()
        until = self._lease_until.get(tenant)
        if until is not None and now < until - timedelta(seconds=LEASE_S / 2):
            return True
        if until is None and monotonic() < self._refused_until.get(tenant, 0.0):
            return False
        async with self.db.write() as conn:
            held = await rr.take_lease(
                conn, tenant, self.holder, now, now + timedelta(seconds=LEASE_S)
            )
        if not held:
            self._lease_until.pop(tenant, None)
            self._drop(tenant)
            self._refused_until[tenant] = monotonic() + SWEEP_S
            return False
        if until is None or now >= until:  # not held throughout: start from the truth
            self._stale.add(tenant)
        self._lease_until[tenant] = now + timedelta(seconds=LEASE_S)
        return True

    def _drop(self, tenant: str) -> None:
        self._states.pop(tenant, None)
        self._stale.discard(tenant)

    async def _release(self, broken: bool) -> None:
        async with self._lock_guard:
            await self._release_unguarded(broken)

    async def _release_unguarded(self, broken: bool) -> None:
        """Give up every tenant this process routes (PostgreSQL: its lock connection
        failed, or the process stops)."""
        for tenant in list(self._owned):
            self._drop(tenant)
        self._owned.clear()
        conn, self._lock_conn = self._lock_conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            if broken:
                await conn.invalidate()  # the session, and its locks, end with it
            else:  # back to the pool without its locks
                await rr.advisory_unlock_all(conn)
        with contextlib.suppress(Exception):
            await conn.close()

    # --- the memory

    async def _rebuild(self, tenant: str) -> TenantState:
        """Read what the router decides on from one snapshot; the news that arrived
        meanwhile is applied after it unless the snapshot already saw its commit."""
        self._loading[tenant] = []
        try:
            if tenant in self._board_stale:  # (the board follows the bus in every process)
                self._board_stale.discard(tenant)
                await self.board.reload_tenant(tenant)
            async with self.db.snapshot() as conn:
                seen = await repo.snapshot_visibility(conn)
                rows = await rr.router_rows(conn, tenant)
        finally:
            news = self._loading.pop(tenant, [])
        state = TenantState()
        for row in rows:
            state.apply(row)
        for items, token in news:
            if not seen.saw(token):
                for item in items:
                    state.apply(item["row"])
        self._states[tenant] = state
        self._stale.discard(tenant)
        self._teams.pop(tenant, None)
        self.rebuilds += 1
        return state

    async def _check(self, tenant: str, confirm: bool = True) -> None:
        """Hold the memory to the database, leaving out what changed in the last
        SETTLE_S on either side (its news may still be on the way). A difference found
        twice in a row means news was lost (or never sent: several processes on the
        in-process bus): rebuild."""
        state = self._states.get(tenant)
        if state is None or tenant in self._loading or tenant in self._stale:
            return
        horizon = self.clock.now() - timedelta(seconds=SETTLE_S)
        async with self.db.read() as conn:
            rows, agents = await rr.router_check(conn, tenant, horizon)
        if self._states.get(tenant) is not state or tenant in self._stale:
            return
        board = self.board.tenants.get(tenant, {})
        same_agents = _same_agents(board, agents, horizon)
        if _same(state, rows, horizon) and same_agents:
            return
        if confirm:
            await asyncio.sleep(SETTLE_S / 2)
            return await self._check(tenant, confirm=False)
        log.info("router memory differed from the database; rebuilding", extra={"tenant": tenant})
        self._stale.add(tenant)
        if not same_agents:
            self._board_stale.add(tenant)
        self.trigger(tenant)

    # --- a pass

    async def route(self, tenant: str) -> bool:
        """One pass; True when there may be more to do at once. The pass's decisions go
        to ingest in one submission, which the pass does not wait for: its images are
        in memory at once (tentative), so the next pass can decide while it commits."""
        settings = await self._tenant(tenant)
        if settings is None or settings["routing"] != "builtin":
            self._drop(tenant)
            return False
        if not await self._own(tenant):
            return False
        flight = self._in_flight.setdefault(tenant, set())
        state = self._states.get(tenant)
        if state is None or tenant in self._stale:
            while flight:  # a rebuild must see every decision made
                await asyncio.wait(set(flight))
            state = await self._rebuild(tenant)
        teams = await self._team_settings(tenant)
        agents = await self.board.agents(tenant)
        while len(flight) >= MAX_IN_FLIGHT:
            await asyncio.wait(set(flight), return_when=asyncio.FIRST_COMPLETED)
        if self._states.get(tenant) is not state or tenant in self._stale:
            return True  # rebuilt or lost meanwhile: decide again
        now = self.clock.now()
        events, decided, arrivals = self._decide(tenant, settings, state, teams, agents, now)
        if not events:
            return False
        for applied in decided:
            state.decided(applied.conversation, now)
            state.tentative.add(applied.conversation.id)
        if self.on_offers is not None:
            offers = [
                (applied.conversation.id, applied.conversation.contact, effect.agent_id)
                for applied in decided
                for effect in applied.effects
                if isinstance(effect, OfferStarted)
            ]
            if offers:
                self.on_offers(tenant, offers)
        images = [applied.conversation for applied in decided]
        task = asyncio.create_task(self._submit(tenant, state, events, images))
        flight.add(task)
        task.add_done_callback(flight.discard)
        return arrivals == MAX_ARRIVALS

    async def _submit(
        self, tenant: str, state: TenantState, events: list[dict], images: list[Conversation]
    ) -> None:
        """Submit a pass's decisions; what ingest did not apply as the machine applied
        it in memory is read back from the database (the memory lagged a commit)."""
        try:
            outcomes = await self.ingest.submit(tenant, events)
        except Exception as error:
            if not isinstance(error, DatabaseUnavailable):
                log.error("routing submission failed", exc_info=True, extra={"tenant": tenant})
            state.tentative.difference_update(image.id for image in images)
            self._stale.add(tenant)  # the next pass starts again from the truth
            return
        wrong = {
            image.id
            for image, outcome in zip(images, outcomes, strict=True)
            if outcome.outcome != "applied" or outcome.version != image.version
        }
        self.decisions += sum(1 for outcome in outcomes if outcome.outcome == "applied")
        try:
            if wrong:
                async with self.db.read() as conn:
                    rows = await rr.router_rows(conn, tenant, wrong)
                for row in rows:
                    state.apply(row, force=True)
        except Exception:
            log.warning("could not read refused decisions back", exc_info=True)
            self._stale.add(tenant)
        finally:
            state.tentative.difference_update(image.id for image in images)
        if wrong or state.waited:  # decide again on what was refused or waited
            state.waited = False
            self.trigger(tenant)

    def _decide(self, tenant, settings, state, teams, agents, now):
        """The pass's events, each with what the machine makes of it applied to the
        conversation in memory (an event the machine refuses is not made). Reads
        nothing: the memory, the board and the settings say everything."""
        zone = ZoneInfo(settings["timezone"])
        at = instant(now)
        events: list[dict] = []
        decided: list[Applied] = []

        def decide(conversation: Conversation, type_: str, data: dict) -> Conversation | None:
            event = {
                "event_id": decision_id(conversation.id, conversation.version),
                "type": type_,
                "conversation_id": conversation.id,
                "occurred_at": at,
                "data": data,
            }
            try:
                applied = apply(conversation, parse_event(event))
            except (InvalidEvent, TransitionError) as refused:
                log.warning(
                    "the machine refused a routing decision: %s",
                    refused.message,
                    extra={"tenant": tenant, "conversation": conversation.id},
                )
                return None
            events.append(event)
            decided.append(applied)
            return applied.conversation

        fresh: dict[str, list[Entry]] = {}  # still routable after this pass, by team
        lengths = dict(state.lengths)
        arrivals = state.oldest_arrivals(MAX_ARRIVALS)
        if any(e.id in state.tentative for e in arrivals):
            state.waited = True
            arrivals = [e for e in arrivals if e.id not in state.tentative]
        if arrivals:
            logged_in = {t for a in agents.values() if a.presence != "offline" for t in a.teams}
        for entry in arrivals:
            team = entry.team
            if team is None:
                decision = ("routing.assignment_failed", {"reason": "no_team"})
            else:
                setting = teams.get(team) or rr.TEAM_DEFAULTS
                if not is_open(setting["business_hours"], now, zone):
                    decision = ("routing.out_of_hours", {"team": team})
                elif team not in logged_in:
                    decision = ("routing.assignment_failed", {"reason": "no_agent_logged_in"})
                elif lengths.get(team, 0) >= setting["queue_capacity"]:
                    decision = ("routing.enqueue_failed", {"team": team, "reason": "queue_full"})
                else:
                    decision = ("routing.enqueued", {"team": team})
            after = decide(entry.conversation, *decision)
            if after is not None and after.status in WAITING_STATUSES:
                lengths[after.team] = lengths.get(after.team, 0) + 1
            if after is not None and after.status in ROUTABLE_STATUSES:
                fresh.setdefault(after.team, []).append(Entry.of(after, now))
        # Agents with room, as copies: a pass's offers add to their load. (Passes come
        # one per presence change in a burst: the agents without room cost a test.)
        free = {}
        for agent in agents.values():
            if agent.presence != "available":
                continue
            load = state.loads.get(agent.id)
            if load is None:
                load = {"call": 0, "chat": 0}
            elif load["call"] or (load["chat"] and load["chat"] >= agent.chat_capacity):
                continue
            free[agent.id] = AgentState(
                agent.id,
                agent.teams,
                agent.chat_capacity,
                "available",
                agent.idle_since,
                dict(load),
            )
        if not free:
            return events, decided, len(arrivals)
        for team in sorted({t for a in free.values() for t in a.teams}):
            order = sorted(
                (a for a in free.values() if team in a.teams and _has_room(a)),
                key=lambda a: (a.idle_since, a.id),
            )
            if not order:
                continue
            setting = teams.get(team) or rr.TEAM_DEFAULTS
            expires = instant(now + timedelta(seconds=setting["offer_timeout_s"]))
            full: set[str] = set()  # kinds nobody left can take
            for entry in _waiting(state, team, fresh.get(team, ())):
                if entry.id in state.tentative:
                    state.waited = True  # decided on by a submission in flight
                    continue
                kind = rr.load_kind(entry.channel)
                if kind in full:
                    continue
                agent = _idle_longest(order, kind)
                if agent is None:
                    full.add(kind)
                    if len(full) == 2:
                        break
                    continue
                offer_id = offer_id_for(tenant, entry.id, entry.version)
                data = {"agent_id": agent.id, "offer_id": offer_id, "expires_at": expires}
                if decide(entry.conversation, "routing.offered", data) is None:
                    order.append(agent)  # not offered: still free, at the back
                    continue
                agent.load[kind] += 1
                agent.idle_since = now  # the next offer goes to the next agent
                if _has_room(agent):
                    order.append(agent)
                if not order:
                    break
        return events, decided, len(arrivals)


def _waiting(state: TenantState, team: str, fresh: list[Entry]):
    """A team's queue, oldest first, then the conversations enqueued in this pass."""
    for _, cid in state.queues.get(team, ()):
        yield state.entries[cid]
    yield from fresh


def _has_room(agent: AgentState) -> bool:
    return agent.can_take("chat") or agent.can_take("call")


def _idle_longest(order: list[AgentState], kind: str) -> AgentState | None:
    """The first agent of `order` (idle longest first) that can take `kind`, taken out."""
    for at, agent in enumerate(order):
        if agent.can_take(kind):
            return order.pop(at)
    return None


def _same(state: TenantState, rows: list[dict], horizon: datetime) -> bool:
    recent = {r["id"] for r in rows if r["updated_at"] >= horizon}
    recent.update(e.id for e in state.entries.values() if e.updated_at >= horizon)
    theirs = {r["id"]: r["version"] for r in rows if kept(r) and r["id"] not in recent}
    mine = {e.id: e.version for e in state.entries.values() if e.id not in recent}
    return theirs == mine


def _same_agents(board: dict[str, AgentState], rows: list[dict], horizon: datetime) -> bool:
    if set(board) != {r["id"] for r in rows}:
        return False
    return all(
        board[r["id"]].presence == r["presence"]
        for r in rows
        if r["presence_at"] is None or r["presence_at"] < horizon
    )
