"""The bus: news of committed changes, from the process that committed them to every
process that serves clients. Chosen by URL: `memory://` (one process, memory.py) or
`redis://` (pub/sub across processes, redis.py), behind one small interface (`Bus`).
The database is the truth; the bus only carries news, so a subscriber that lost
messages is told so (`Gap`) and catches up from the database (server/live/catchup.py).
Every queue is bounded. May import: `core`.
"""

from __future__ import annotations

from server.bus.memory import Bus, BusMessage, Gap, Subscription
from server.bus.redis import RedisBus

__all__ = ["Bus", "BusMessage", "Gap", "RedisBus", "Subscription", "bus_from_url"]


def bus_from_url(url: str, prefix: str = "switchboard:") -> Bus:
    if url.startswith("memory://"):
        return Bus()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisBus(url, prefix)
    raise ValueError(f"unsupported bus URL {url!r}: use memory:// or redis://")
