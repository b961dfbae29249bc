"""The sandbox provider running inside the server, one per tenant: the server's clock,
recordings written under the data directory, and what it posts delivered through the
same path as a webhook (server/providers/inbound.py), in order, by one worker per tenant.

Its calls live in this process's memory: a restart forgets them (it is a simulator),
and a hangup sent to another process finds no live call there.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

from channels.base import Inbound, Provider
from channels.sandbox import SandboxCredentials, SandboxProvider
from server.core.clock import Clock
from server.core.tasks import cancel_and_wait
from server.providers.recordings import safe_name

log = logging.getLogger("switchboard.sandbox")

QUEUE_LIMIT = 10_000  # items posted and not yet ingested, per tenant

# What a provider reports, delivered as a webhook's report is: (tenant, provider name,
# adapter, item) -> outcomes (server/providers/inbound.py Inbound.deliver).
Deliver = Callable[[str, str, Provider, Inbound], Awaitable[object]]


class SandboxRunner:
    def __init__(self, tenant: str, clock: Clock, data_dir: Path, deliver: Deliver):
        self.tenant = tenant
        self.deliver = deliver
        self.queue: asyncio.Queue[Inbound] = asyncio.Queue(QUEUE_LIMIT)
        self.provider = SandboxProvider(
            self._post, clock, random.Random(), data_dir / "sandbox" / safe_name(tenant)
        )
        self._worker: asyncio.Task | None = None
        self.stopped = False

    def _post(self, item: Inbound) -> None:
        if self.stopped:  # a simulated call's timer after the server stopped
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("sandbox queue full: an event dropped", extra={"tenant": self.tenant})
            return
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"sandbox-{self.tenant}"
            )

    async def _work(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                await self.deliver(self.tenant, "sandbox", self.provider, item)
            except Exception:
                log.exception("sandbox delivery failed", extra={"tenant": self.tenant})
            finally:
                self.queue.task_done()

    async def stop(self) -> None:
        self.stopped = True
        await cancel_and_wait([self._worker])


class Sandboxes:
    """One sandbox runner per tenant, made on first use."""

    def __init__(self, clock: Clock, data_dir: Path, deliver: Deliver):
        self.clock = clock
        self.data_dir = data_dir
        self.deliver = deliver
        self._runners: dict[str, SandboxRunner] = {}

    def runner(self, tenant: str) -> SandboxRunner:
        runner = self._runners.get(tenant)
        if runner is None:
            runner = SandboxRunner(tenant, self.clock, self.data_dir, self.deliver)
            self._runners[tenant] = runner
        return runner

    def provider(self, tenant: str, credentials: dict | None) -> SandboxProvider:
        provider = self.runner(tenant).provider
        provider.credentials = SandboxCredentials.from_dict(credentials or {})
        return provider

    async def stop(self) -> None:
        for runner in self._runners.values():
            await runner.stop()
