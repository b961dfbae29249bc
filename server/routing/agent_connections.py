"""Agents' websocket connections counted across processes, for the presence grace.

Each process keeps one `agent_connections` row per agent it holds at least one
connection of. The agent's first connection here writes the row and disarms the
grace; its last connection here deletes the row and arms the grace (always: the
grace decides when it fires, from the rows of live processes, so two processes
closing at once cannot each leave it to the other).

A heartbeat refreshes `seen_at` of all this process's rows in one UPDATE; a row not
seen for three heartbeats belongs to a dead process and no longer counts. The same
heartbeat sweeps such rows, whoever's they are, and arms the grace of their agents:
an agent connected only to a process that was killed goes offline after the
staleness bound plus the grace. It also mends what a failed write or a sweep of this
process's rows (the process was too slow to beat) left different from the sockets
it holds. A clean shutdown deletes this process's rows and arms their graces.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

from server.core.clock import Clock
from server.core.tasks import cancel_and_wait
from server.routing import repository as rr
from server.routing.presence import Presence, arm_grace, disarm_grace
from server.storage.db import Database, is_unavailable

log = logging.getLogger("switchboard.presence")

HEARTBEAT_S = 5.0  # each process refreshes its rows this often
STALE_BEATS = 3  # a row not refreshed for this many heartbeats is a dead process's

Key = tuple[str, str]  # (tenant, agent)


class AgentConnections:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        presence: Presence,
        agents_here: Callable[[], Collection[Key]],
        heartbeat_s: float = HEARTBEAT_S,
    ):
        self.db = db
        self.clock = clock
        self.presence = presence  # its grace_s is the grace
        self.agents_here = agents_here  # the agents this process holds sockets of
        self.heartbeat_s = heartbeat_s
        self.process_id = f"p-{secrets.token_hex(8)}"
        self.written: set[Key] = set()  # rows of this process, as last written
        # Writes of one agent's row, one at a time; [lock, users], dropped when unused.
        self._locks: dict[Key, list] = {}
        self._task: asyncio.Task | None = None

    @property
    def stale_s(self) -> float:
        return self.heartbeat_s * STALE_BEATS

    def live_since(self) -> datetime:
        """Rows seen since this moment are live processes'."""
        return self.clock.now() - timedelta(seconds=self.stale_s)

    async def grace_over(self, tenant: str, agent_id: str) -> None:
        """The presence grace timer fired: the agent goes offline unless it is connected
        here (live, even if its row is still being written) or in a live process."""
        if (tenant, agent_id) not in self.agents_here():
            await self.presence.grace_over(tenant, agent_id, self.live_since())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="agent-connections")

    async def stop(self) -> None:
        """Delete this process's rows and arm their agents' graces (they reconnect to
        another process within the grace, or go offline)."""
        await cancel_and_wait([self._task])
        try:
            due = self.clock.now() + timedelta(seconds=self.presence.grace_s)
            async with self.db.write() as conn:
                await arm_grace(conn, await rr.drop_connections(conn, self.process_id), due)
            self.written.clear()
        except Exception:  # our rows go stale and another process sweeps them
            log.warning("could not delete this process's agent connections", exc_info=True)

    async def changed(self, tenant: str, agent_id: str) -> None:
        """The agent's first connection here opened, or its last one closed."""
        await self._sync((tenant, agent_id), force=False)

    async def _sync(self, key: Key, force: bool) -> None:
        """Make the agent's row say what this process's sockets say now. A first
        connection writes the row and disarms the grace; a last one deletes the row
        and arms the grace (even without a row: its write may have failed). `force`:
        a heartbeat mending a row it found apart from the sockets, which arms the
        grace only for a row it deletes."""
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                connected = key in self.agents_here()
                if connected and key in self.written and not force:
                    return  # written already (a popups subscription opens again)
                now = self.clock.now()
                async with self.db.write() as conn:
                    if connected:
                        await disarm_grace(conn, *key)  # first: see rr.grace_due
                        await rr.upsert_connection(conn, *key, self.process_id, now)
                    elif await rr.delete_connection(conn, *key, self.process_id) or not force:
                        due = now + timedelta(seconds=self.presence.grace_s)
                        await arm_grace(conn, [key], due)
                if connected:
                    self.written.add(key)
                else:
                    self.written.discard(key)
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._locks[key]

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_unavailable(exc):  # the next beat tries again
                    log.warning("agent connections heartbeat: database unavailable")
                else:
                    log.exception("agent connections heartbeat failed")

    async def beat(self) -> None:
        """Refresh this process's rows, sweep dead processes' rows, mend ours."""
        now = self.clock.now()
        before = now - timedelta(seconds=self.stale_s)
        async with self.db.write() as conn:
            refreshed = await rr.refresh_connections(conn, self.process_id, now)
            dead = await rr.sweep_connections(conn, before)
            if dead:  # the grace decides, so agents also connected elsewhere stay
                await arm_grace(conn, dead, now + timedelta(seconds=self.presence.grace_s))
        if dead:
            log.info("swept %d agent connections of dead processes", len(dead))
        here = set(self.agents_here())
        apart = here ^ self.written  # a write that failed (the next try is now)
        if refreshed != len(self.written):  # a row swept, or one written we missed
            async with self.db.read() as conn:
                rows = await rr.connections_of(conn, self.process_id)
            apart |= rows ^ self.written
        for key in apart:  # one at a time: a long outage mends in order, not all at once
            await self._sync(key, force=True)
