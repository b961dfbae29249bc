"""The Redis bus (`redis://`): pub/sub, one channel per tenant, msgpack.

`post` never waits: an outbox drained by a publisher task, dropping news when Redis
is too slow or down (the reconciliation in server/live/catchup.py recovers it).

It watches itself (docs/faults.md): each process publishes a probe on a channel of
its own every PROBE_INTERVAL_S and reads it back through its subscription; when no
probe came back for PROBE_TIMEOUT_S (Redis down, or a half-open connection TCP still
calls open) it drops the connection, subscribes again and reports a Gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import msgpack
from prometheus_client import Counter

from server.bus.memory import Bus, BusMessage, Gap
from server.core.tasks import cancel_and_wait

log = logging.getLogger("switchboard.bus")

PUBLISH_TIMEOUT_S = 1.0
OUTBOX_SIZE = 10_000  # bus messages waiting to be published (one per committed group)
PUBLISH_BATCH = 200  # messages sent in one pipeline round trip at most
PROBE_INTERVAL_S = 0.5
PROBE_TIMEOUT_S = 2.0  # four probes missed: the subscription is dead
SUBSCRIBE_TIMEOUT_S = 2.0
RECONNECT_MAX_S = 0.5  # backoff cap: a restarted Redis is found again within this

DROPPED = Counter(
    "switchboard_bus_dropped_total",
    "Bus messages not published (outbox full, Redis down or slow); recovered from the "
    "database by reconciliation",
)
RECONNECTS = Counter(
    "switchboard_bus_reconnects_total", "Redis subscriptions dropped and made again", ["reason"]
)


class SilentConnection(ConnectionError):
    """No probe came back in time: the connection is dead, whatever TCP says."""


class RedisBus(Bus):
    distributed = True

    def __init__(self, url: str, prefix: str):
        super().__init__()
        import redis.asyncio as redis  # only needed for redis:// deployments

        self._redis = redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=None, health_check_interval=10
        )
        self._prefix = prefix
        self._probe_channel = f"{prefix}probe:{secrets.token_hex(8)}"
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(OUTBOX_SIZE)
        self._tasks: list[asyncio.Task] = []
        self._connected = False
        self._last_probe = 0.0  # loop time the last probe came back
        self._publish_failing = False

    @property
    def connected(self) -> bool:
        return self._connected

    def channel(self, tenant: str) -> str:
        return f"{self._prefix}tenant:{tenant}"

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read_forever(), name="redis-bus-reader"),
            asyncio.create_task(self._publish_forever(), name="redis-bus-publisher"),
            asyncio.create_task(self._probe_forever(), name="redis-bus-prober"),
        ]

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await self._redis.aclose()

    # --- publishing

    def post(self, tenant: str, payload: dict[str, Any]) -> None:
        data = msgpack.packb(payload, datetime=True)
        try:
            self._outbox.put_nowait((self.channel(tenant), data))
        except asyncio.QueueFull:
            DROPPED.inc()

    async def _publish_forever(self) -> None:
        """Drain the outbox, a pipeline of up to PUBLISH_BATCH messages per round trip,
        each round bounded by PUBLISH_TIMEOUT_S. What fails is dropped, not retried:
        retrying would only deliver late what catch-up delivers anyway."""
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < PUBLISH_BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                    pipe = self._redis.pipeline(transaction=False)
                    for channel, data in batch:
                        pipe.publish(channel, data)
                    await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                DROPPED.inc(len(batch))
                if not self._publish_failing:  # once per outage, not once per message
                    log.warning("publish failed", extra={"error": repr(exc)})
                self._publish_failing = True
            else:
                if self._publish_failing:
                    log.info("publishing again")
                self._publish_failing = False

    async def _probe_forever(self) -> None:
        """A probe to ourselves; the reader notices when they stop coming back."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                    await self._redis.publish(self._probe_channel, b"")

    # --- subscribing

    async def _read_forever(self) -> None:
        pattern = f"{self._prefix}tenant:*"
        prefix_len = len(self._prefix) + len("tenant:")
        probe_channel = self._probe_channel.encode()
        loop = asyncio.get_running_loop()
        backoff = 0.05
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                    await pubsub.psubscribe(pattern)
                    await pubsub.subscribe(self._probe_channel)
                self._last_probe = loop.time()
                self._connected = True
                # Whatever was published while we were away is news we did not get.
                self._fan_out(Gap("bus (re)connected"))
                backoff = 0.05
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=PROBE_INTERVAL_S
                    )
                    if message is not None:
                        if message["channel"] == probe_channel:
                            self._last_probe = loop.time()
                        elif message["type"] == "pmessage":
                            self._deliver(message, prefix_len)
                    if loop.time() - self._last_probe > PROBE_TIMEOUT_S:
                        raise SilentConnection(f"no probe came back for {PROBE_TIMEOUT_S} s")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._connected:  # once per outage, not once per attempt
                    log.warning("bus connection lost", extra={"error": repr(exc)})
                    RECONNECTS.labels(
                        "silent" if isinstance(exc, SilentConnection) else "error"
                    ).inc()
                    self._connected = False
                    self._fan_out(Gap("bus connection lost"))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_S)
            finally:
                # A half-open connection must not hold us: close it without waiting long.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await pubsub.aclose()

    def _deliver(self, message: dict, prefix_len: int) -> None:
        try:
            tenant = message["channel"].decode()[prefix_len:]
            payload = msgpack.unpackb(message["data"], timestamp=3)
        except ValueError as exc:  # not ours: skip it, the connection is fine
            log.warning("undecodable bus message", extra={"error": repr(exc)})
            return
        self._fan_out(BusMessage(tenant, payload))
