"""The routing services of one process, fed by one bus subscription: agents' board,
presence, the router, popups, the wallboard, durable timers and agents' actions.

Owns: feeding them the bus, starting and stopping them, and telling them of agents'
sockets opening and closing.

Besides conversation rows, routing puts two kinds of news on the bus, both with an
empty `rows` list so that live views pass over them: `presence` (an agent's presence
changed) and `settings` (a tenant's teams or agents changed: reload what depends on
them).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from server.bus import Bus, BusMessage, Gap
from server.core.tasks import cancel_and_wait
from server.ingest.pipeline import Ingest
from server.routing.actions import AgentActions
from server.routing.agent_connections import AgentConnections
from server.routing.popups import Popups
from server.routing.presence import AgentBoard, Presence
from server.routing.router import Router
from server.routing.timers import TimerArming, TimerRunner
from server.routing.wallboard import Wallboard
from server.tenants.zones import TenantZones
from state_machine import ROUTABLE_STATUSES

log = logging.getLogger("switchboard.routing")


class Routing:
    """Routing's parts (built by the composition root, server/app.py), fed by one bus
    subscription, started and stopped together."""

    def __init__(
        self,
        *,
        bus: Bus,
        arming: TimerArming,
        decisions: Ingest,
        board: AgentBoard,
        presence: Presence,
        popups: Popups,
        router: Router,
        connections: AgentConnections,
        wallboard: Wallboard,
        timers: TimerRunner,
        actions: AgentActions,
        tenants: TenantZones,
    ):
        """`decisions`: the router's and the timers' own writer, recording with `arming`
        (settings news clears its cache): an offer never waits behind a group of
        requests' events being committed (on PostgreSQL the two transactions run side by
        side; the conversations' locks order them). `tenants`: the process's cache of
        tenant rows, which settings news clears too."""
        self.bus = bus
        self.arming = arming
        self.decisions = decisions
        self.board = board
        self.presence = presence
        self.popups = popups
        self.router = router
        self.connections = connections
        self.wallboard = wallboard
        self.timers = timers
        self.actions = actions
        self.tenants = tenants
        self._subscription = None
        self._task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._settings_due: set[str] = set()
        self._reloading: set[str] = set()

    async def start(self) -> None:
        self._subscription = self.bus.subscribe()
        self._task = asyncio.create_task(self._consume(), name="routing")
        self.popups.start()
        self.wallboard.start()
        self.timers.start()
        self.router.start()
        self.connections.start()

    async def stop(self) -> None:
        await cancel_and_wait([self._task, *self._tasks])
        if self._subscription is not None:
            self._subscription.close()
        await self.connections.stop()
        await self.router.stop()
        await self.timers.stop()
        await self.decisions.close()
        await self.wallboard.stop()
        await self.popups.stop()

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- websocket connections of agents

    async def opened(self, connection) -> None:
        principal = connection.principal
        if principal.role != "agent":
            return
        if self.popups.add(connection):
            await self._connections_changed(principal)

    async def closed(self, connection) -> None:
        self.wallboard.unsubscribe_connection(connection)
        principal = connection.principal
        if principal.role == "agent" and self.popups.remove(connection):
            await self._connections_changed(principal)

    async def _connections_changed(self, principal) -> None:
        try:
            await self.connections.changed(principal.tenant, principal.user)
        except Exception:  # the next heartbeat writes it (the grace decides meanwhile)
            log.warning("could not record the agent's connections", exc_info=True)

    # --- the bus

    async def _consume(self) -> None:
        while True:
            item = await self._subscription.get()
            try:
                if isinstance(item, Gap):
                    self._spawn(self._resync())
                else:
                    self._on_message(item)
            except Exception:
                log.exception("routing failed on a bus message")

    async def _resync(self) -> None:
        self.tenants.forget_all()
        for tenant in list(self.board.tenants):
            self.router.forget(tenant)
            self._forget_settings(tenant)
        self.router.invalidate_all()
        await self.board.reload()
        await self.wallboard.reload()
        for tenant in list(self.board.tenants):
            self.router.trigger(tenant)

    def _on_message(self, message: BusMessage) -> None:
        tenant, payload = message.tenant, message.payload
        items = payload.get("rows") or []
        if items:
            freed = self.board.on_rows(tenant, items, payload.get("token", 0))
            self.router.on_rows(tenant, items, payload.get("token", 0))
            self.popups.on_rows(tenant, items)
            self.wallboard.on_rows(tenant, items, payload.get("token", 0))
            if freed or any(_routable(item) for item in items):
                self.router.trigger(tenant)
        for change in payload.get("presence") or ():
            at = datetime.fromisoformat(change["at"])
            self.board.on_presence(tenant, change["agent_id"], change["presence"], at)
            self.wallboard.changed(tenant)
            if change["presence"] == "available":
                self.router.trigger(tenant)
        if payload.get("settings"):
            self.tenants.forget(tenant)  # at once: the next /webchat handshake reads anew
            # One reload at a time per tenant; changes during it make one more after it.
            self._settings_due.add(tenant)
            if tenant not in self._reloading:
                self._reloading.add(tenant)
                self._spawn(self._settings(tenant))

    async def _settings(self, tenant: str) -> None:
        try:
            while tenant in self._settings_due:
                self._settings_due.discard(tenant)
                await self._reload_settings(tenant)
        finally:
            self._reloading.discard(tenant)

    def _forget_settings(self, tenant: str) -> None:
        self.arming.forget(tenant)

    async def _reload_settings(self, tenant: str) -> None:
        self.router.forget(tenant)
        self._forget_settings(tenant)
        await self.board.reload_tenant(tenant)
        await self.wallboard.reload(tenant)
        self.router.trigger(tenant)


def _routable(item: dict) -> bool:
    row = item["row"]
    return row["status"] in ROUTABLE_STATUSES and row["direction"] == "incoming"
