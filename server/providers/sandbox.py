"""The sandbox provider running inside the server, one per tenant: the server's clock,
recordings written under the data directory, and what it posts delivered through the
same path as a webhook (server/inbound.py), in order, by one worker per tenant.

Its calls live in this process's memory: a restart forgets them (it is a simulator),
and a hangup sent to another process finds no live call there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from channels.base import Inbound
from channels.sandbox import SandboxCredentials, SandboxProvider
from server.providers.inbound import deliver
from server.providers.recordings import safe_name

log = logging.getLogger("switchboard.sandbox")

QUEUE_LIMIT = 10_000  # items posted and not yet ingested, per tenant


class SandboxRunner:
    def __init__(self, sb, tenant: str):
        self.sb = sb
        self.tenant = tenant
        self.queue: asyncio.Queue[Inbound] = asyncio.Queue(QUEUE_LIMIT)
        self.provider = SandboxProvider(
            self._post,
            sb.clock,
            random.Random(),
            sb.settings.data_dir / "sandbox" / safe_name(tenant),
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
                await deliver(self.sb, self.tenant, "sandbox", self.provider, item)
            except Exception:
                log.exception("sandbox delivery failed", extra={"tenant": self.tenant})
            finally:
                self.queue.task_done()

    async def stop(self) -> None:
        self.stopped = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker


class Sandboxes:
    def __init__(self, sb):
        self.sb = sb
        self._runners: dict[str, SandboxRunner] = {}

    def runner(self, tenant: str) -> SandboxRunner:
        runner = self._runners.get(tenant)
        if runner is None:
            runner = self._runners[tenant] = SandboxRunner(self.sb, tenant)
        return runner

    def provider(self, tenant: str, credentials: dict | None) -> SandboxProvider:
        provider = self.runner(tenant).provider
        provider.credentials = SandboxCredentials.from_dict(credentials or {})
        return provider

    async def stop(self) -> None:
        for runner in self._runners.values():
            await runner.stop()
