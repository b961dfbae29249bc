"""Issue 17's limits, measured (docs/security.md, "Limits and fairness"): a script, run
by hand, not a timed benchmark.

    .venv/bin/python -m bench.limits [--budget-mb 256]

On a `switchboard serve` process of its own (SQLite in a temporary directory, the
in-process bus) with 2,000 conversations:

1. memory: one socket subscribes 300 distinct inline views with `limit: 1000`; the
   server's RSS before, after, and after the socket closed (idle windows then evicted
   by 300 count-only subscribes on a new socket); how many were refused
   `over_capacity`; the accounted bytes (`/metrics`).
2. the F2 storm: 495 pipelined subscribes of `limit: 5` on one socket (the F2
   benchmark's extra set per connection), and 500 pipelined count-only subscribes (a
   views list with 500 saved views) on another: none may be refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from websockets.asyncio.client import connect

from server.live.windows import IDLE_WINDOW_S
from tests.app_support import prepare_database
from tests.server_support import spawned_server
from tests.support import Backend

CONVERSATIONS = 2000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


async def pipelined(url: str, token: str, frames: list[dict]) -> dict[str, int]:
    """Send every frame at once, then read an answer to each; counts by type/code."""
    counts: dict[str, int] = {}
    async with connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None
    ) as ws:
        for n, frame in enumerate(frames):
            await ws.send(json.dumps({**frame, "ref": n}))
        answered = 0
        async with asyncio.timeout(600):
            while answered < len(frames):
                frame = json.loads(await ws.recv())
                if "ref" in frame:
                    answered += 1
                    key = frame["type"] if frame["type"] != "error" else frame["code"]
                    counts[key] = counts.get(key, 0) + 1
    return counts


async def paced(url: str, token: str, frames: list[dict]) -> dict[str, int]:
    """One frame at a time, as a client that honours `rate_limited`: waits its
    `retry_after_s` and sends the frame again. Counts answers by type/code."""
    counts: dict[str, int] = {}
    async with connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None
    ) as ws:
        for n, frame in enumerate(frames):
            while True:
                await ws.send(json.dumps({**frame, "ref": n}))
                answer = json.loads(await ws.recv())
                while answer.get("ref") != n:
                    answer = json.loads(await ws.recv())
                key = answer["type"] if answer["type"] != "error" else answer["code"]
                counts[key] = counts.get(key, 0) + 1
                if key != "rate_limited":
                    break
                await asyncio.sleep(answer["retry_after_s"])
    return counts


async def pipelined_until_closed(url: str, token: str, frames: list[dict]) -> dict[str, int]:
    """Like `pipelined`, for a flooder: counts what it got before it was closed."""
    counts: dict[str, int] = {}
    async with connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None
    ) as ws:
        try:
            for n, frame in enumerate(frames):
                await ws.send(json.dumps({**frame, "ref": n}))
            async for raw in ws:
                frame = json.loads(raw)
                key = frame["type"] if frame["type"] != "error" else frame["code"]
                counts[key] = counts.get(key, 0) + 1
        except Exception:
            pass
        counts[f"closed {ws.close_code}"] = 1
    return counts


def inline(n: int, limit: int) -> dict:
    # distinct views over the same 2,000 rows: a filter every conversation passes
    since = (datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=n)).isoformat()
    view = {"filters": [{"field": "created_at", "op": "gt", "value": since}]}
    return {"type": "subscribe", "view": view, "limit": limit}


async def main(budget_mb: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backend = Backend("sqlite", f"sqlite+aiosqlite:///{tmp}/switchboard.db", "memory://", "b:")
        await prepare_database(backend.database_url)
        env = {"SWITCHBOARD_WINDOW_MEMORY_MB": str(budget_mb)}
        async with spawned_server(backend, Path(tmp) / "data", env=env) as server:
            api = server.api
            for start in range(0, CONVERSATIONS, 500):
                await api.post_events(
                    [
                        api.event(
                            "conversation.created",
                            f"k{n}",
                            f"2026-11-24T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z",
                            channel="chat",
                            contact=f"v{n}",
                            customer={"name": f"Customer {n} " + "x" * 40},
                        )
                        for n in range(start, start + 500)
                    ]
                )
            token = api.token("supervisor", "sup1")
            url = server.ws_url
            before = rss_mb(server.pid)
            flood = await pipelined_until_closed(url, token, [inline(n, 1000) for n in range(300)])
            counts = await paced(url, token, [inline(n, 1000) for n in range(300)])
            during = rss_mb(server.pid)  # sampled after the socket closed, windows idle
            text = (await api.client.get("/metrics")).text
            accounted = metric(text, "switchboard_live_window_bytes") / 2**20
            windows = metric(text, "switchboard_live_windows")
            evict = await pipelined(url, token, [inline(10_000 + n, 0) for n in range(300)])
            text = (await api.client.get("/metrics")).text
            after = rss_mb(server.pid)
            print(f"300 pipelined subscribes of limit 1000, at once: {flood}")
            print(f"budget {budget_mb} MB; 300 inline views, limit 1000, paced: {counts}")
            print(
                f"  RSS {before:.0f} MB before, {during:.0f} MB after (socket closed, "
                f"{windows:.0f} windows idle, {accounted:.0f} MB accounted), "
                f"{after:.0f} MB after 300 count-only subscribes evicted "
                f"{metric(text, 'switchboard_live_window_evictions_total'):.0f} of them "
                f"({metric(text, 'switchboard_live_window_bytes') / 2**20:.1f} MB accounted): "
                f"{evict}"
            )
            storm = await pipelined(url, token, [inline(20_000 + n, 5) for n in range(495)])
            await asyncio.sleep(IDLE_WINDOW_S + 1)  # the idle windows' time
            text = (await api.client.get("/metrics")).text
            print(
                f"  {rss_mb(server.pid):.0f} MB once idle windows expired "
                f"({metric(text, 'switchboard_live_window_bytes') / 2**20:.1f} MB accounted)"
            )
            print(f"F2 storm, 495 pipelined subscribes of limit 5: {storm}")
            views = await pipelined(url, token, [inline(30_000 + n, 0) for n in range(500)])
            print(f"views list, 500 pipelined count-only subscribes: {views}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-mb", type=int, default=256)
    asyncio.run(main(parser.parse_args().budget_mb))
