"""Rate limits kept in this process (docs/security.md, "Limits and fairness"): a token
bucket, buckets by key with a bound on how many keys are remembered, and the client
address of a request behind trusted proxies. In-process by design for now: each process
counts what reaches it (issue 19 moves the shared limits to Redis)."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence


class TokenBucket:
    """`burst` units at once, refilled at `rate` units per second."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, burst: float, rate: float):
        self.burst, self.rate = float(burst), float(rate)
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self, cost: float = 1.0) -> float:
        """0 when `cost` units were taken, else the seconds until they are there."""
        wait = self.wait(cost)
        if not wait:
            self.tokens -= cost
        return wait

    def wait(self, cost: float = 1.0) -> float:
        """The seconds until `cost` units are there (0: now), taking nothing."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return 0.0 if self.tokens >= cost else (cost - self.tokens) / self.rate


class KeyedBuckets:
    """One bucket per key (a client address, a tenant), the least recently used
    forgotten beyond `keys` (a forgotten key starts full again: a bound on memory, at
    the price of forgiving the oldest)."""

    def __init__(self, burst: float, rate: float, keys: int = 100_000):
        self.burst, self.rate, self.keys = burst, rate, keys
        self._buckets: OrderedDict[object, TokenBucket] = OrderedDict()

    def take(self, key: object, cost: float = 1.0) -> float:
        return self._bucket(key).take(cost)

    def wait(self, key: object, cost: float = 1.0) -> float:
        """The seconds until `key` may spend `cost` (0: now), taking nothing."""
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.wait(cost)

    def _bucket(self, key: object) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.burst, self.rate)
            if len(self._buckets) > self.keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str:
    """The client's address: the socket's peer, unless the peer is a trusted proxy; then
    the X-Forwarded-For entries are read from the right (each added by the proxy before
    it), skipping trusted proxies, and the first untrusted one is the client. Entries a
    client wrote itself sit further left and are never reached past an untrusted one."""
    address = peer or "unknown"
    if not trusted or not _trusted(address, trusted):
        return address
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # garbage from a proxy: the last sure address
        address = hop
        if not _trusted(hop, trusted):
            return hop
    return address


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
