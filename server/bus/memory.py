"""The bus's interface and its in-process implementation (`memory://`): news posted
is handed to every subscription of this process at once. Each subscription's queue
is bounded: one that overflows loses its pending news and gets a `Gap` instead."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

DEFAULT_QUEUE_SIZE = 10_000


@dataclass(frozen=True)
class BusMessage:
    tenant: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Gap:
    """Messages may have been lost (overflow, reconnect): catch up from the database."""

    reason: str


class Subscription:
    def __init__(self, bus: Bus, maxsize: int):
        self._bus = bus
        self._queue: asyncio.Queue[BusMessage | Gap] = asyncio.Queue(maxsize)
        self._overflowed = False

    def deliver(self, item: BusMessage | Gap) -> None:
        if self._overflowed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._overflowed = True
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(Gap("subscriber queue overflowed"))

    async def get(self) -> BusMessage | Gap:
        item = await self._queue.get()
        if isinstance(item, Gap):
            self._overflowed = False
        return item

    def close(self) -> None:
        self._bus._subscriptions.discard(self)


class Bus:
    """The interface, and the in-process implementation (`memory://`)."""

    distributed = False  # whether other processes publish on it too

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    @property
    def connected(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def post(self, tenant: str, payload: dict[str, Any]) -> None:
        """Hand over news of a commit, without waiting: it is published soon, or dropped
        (and recovered from the database) when the bus cannot take it."""
        self._fan_out(BusMessage(tenant, payload))

    def subscribe(self, maxsize: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        subscription = Subscription(self, maxsize)
        self._subscriptions.add(subscription)
        return subscription

    def _fan_out(self, item: BusMessage | Gap) -> None:
        for subscription in list(self._subscriptions):
            subscription.deliver(item)
