"""Where the server reads the time and sets timers by it. Tests inject a clock of
their own (tests/support.py ManualClock) to cross midnight without waiting for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def call_at(self, moment: datetime, callback: Callable[[], None]) -> asyncio.Handle:
        """Run `callback` in the event loop once the clock reads `moment`."""
        delay = max(0.0, (moment - self.now()).total_seconds())
        return asyncio.get_running_loop().call_later(delay, callback)


SYSTEM_CLOCK = Clock()
