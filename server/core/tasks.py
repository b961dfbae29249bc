"""Background tasks of the services: how they end when their service stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task | None]) -> None:
    """Cancel every task, then wait for each to end (a task that already ended, or
    None, is passed over). All are cancelled first, so none waits on another's end."""
    tasks = [task for task in tasks if task is not None]
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
