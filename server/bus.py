"""The bus: news of committed changes, from the process that committed them to every
process that serves clients. Chosen by URL: `memory://` (one process) or `redis://`
(pub/sub, one channel per tenant, msgpack). The database is the truth; the bus only
carries news, so a subscriber that lost messages is told so (`Gap`) and catches up
from the database.

Every subscriber's queue is bounded: when it overflows, its pending messages are
dropped and it receives a Gap instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import msgpack

log = logging.getLogger("switchboard.bus")

PUBLISH_TIMEOUT_S = 1.0
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

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    @property
    def connected(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def publish(self, tenant: str, payload: dict[str, Any]) -> bool:
        """Send news of a commit; returns False when it could not be sent in time (the
        change is stored all the same, and subscribers catch up)."""
        self._fan_out(BusMessage(tenant, payload))
        return True

    def subscribe(self, maxsize: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        subscription = Subscription(self, maxsize)
        self._subscriptions.add(subscription)
        return subscription

    def _fan_out(self, item: BusMessage | Gap) -> None:
        for subscription in list(self._subscriptions):
            subscription.deliver(item)


class RedisBus(Bus):
    def __init__(self, url: str, prefix: str):
        super().__init__()
        import redis.asyncio as redis  # only needed for redis:// deployments

        self._redis = redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=None, health_check_interval=10
        )
        self._prefix = prefix
        self._reader: asyncio.Task | None = None
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def channel(self, tenant: str) -> str:
        return f"{self._prefix}tenant:{tenant}"

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever(), name="redis-bus-reader")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._redis.aclose()

    async def publish(self, tenant: str, payload: dict[str, Any]) -> bool:
        data = msgpack.packb(payload, datetime=True)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self._redis.publish(self.channel(tenant), data)
            return True
        except (TimeoutError, OSError, Exception) as exc:
            log.warning("publish failed", extra={"tenant": tenant, "error": repr(exc)})
            return False

    async def _read_forever(self) -> None:
        pattern = f"{self._prefix}tenant:*"
        prefix_len = len(self._prefix) + len("tenant:")
        backoff = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                if not self._connected:
                    self._connected = True
                    self._fan_out(Gap("bus (re)connected"))
                backoff = 0.1
                async for message in pubsub.listen():
                    if message["type"] != "pmessage":
                        continue
                    channel = message["channel"].decode()
                    payload = msgpack.unpackb(message["data"], timestamp=3)
                    self._fan_out(BusMessage(channel[prefix_len:], payload))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._connected:
                    log.warning("bus connection lost", extra={"error": repr(exc)})
                self._connected = False
                self._fan_out(Gap("bus connection lost"))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


def bus_from_url(url: str, prefix: str = "switchboard:") -> Bus:
    if url.startswith("memory://"):
        return Bus()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisBus(url, prefix)
    raise ValueError(f"unsupported bus URL {url!r}: use memory:// or redis://")
