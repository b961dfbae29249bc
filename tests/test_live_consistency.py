"""The invariant of docs/api.md's guarantees: applying a subscription's snapshot, then its
pages and deltas in order, gives exactly the rows a fresh query with limit W gives
(same membership, order, column values and versions), with contiguous `seq`.

Seeded random clients, views, fetches, unsubscribes and event streams; checked after
quiescence (waited for, never slept for). Run in one process, and in two server
processes behind Redis with the clients and the posts split between them.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from server.core.clock import SYSTEM_CLOCK
from server.storage.db import Database
from tests.app_support import TENANT, prepare_database
from tests.live_model import ClientModel, Traffic, comparable, fresh_rows, random_view
from tests.server_support import LiveServer, WsClient, live_server, spawned_server
from tests.support import wait_for

TZ = ZoneInfo("Europe/Madrid")


@dataclass
class Watched:
    client: WsClient
    view: dict
    window: int
    snapshot: dict
    frames_from: int  # index in client.frames where this subscription's snapshot is

    def model(self) -> ClientModel:
        model = ClientModel(self.snapshot, self.view.get("sort"))
        model.feed(self.client.frames[self.frames_from + 1 :])
        return model


@dataclass
class Run:
    rng: random.Random
    servers: list[LiveServer]
    clients: list[WsClient] = field(default_factory=list)
    watched: list[Watched] = field(default_factory=list)
    shared_views: list[tuple[dict, int]] = field(default_factory=list)

    async def watch(self, client: WsClient) -> None:
        if self.shared_views:  # many subscribers on few views: windows are shared
            view, window = self.rng.choice(self.shared_views)
        else:
            view, window = random_view(self.rng), self.rng.randint(0, 6)
        snapshot = await client.request({"type": "subscribe", "view": view, "limit": window})
        assert snapshot["type"] == "snapshot", snapshot
        index = client.frames.index(snapshot)
        self.watched.append(Watched(client, view, window, snapshot, index))

    async def fetch(self) -> None:
        candidates = [w for w in self.watched if w.window > 0]
        if not candidates:
            return
        watched = self.rng.choice(candidates)
        limit = self.rng.randint(1, 4)
        page = await watched.client.request(
            {"type": "fetch", "sub": watched.snapshot["sub"], "limit": limit}
        )
        assert page["type"] == "page", page
        watched.window += limit

    async def resubscribe(self) -> None:
        watched = self.rng.choice(self.watched)
        self.watched.remove(watched)
        answer = await watched.client.request(
            {"type": "unsubscribe", "sub": watched.snapshot["sub"]}
        )
        assert answer["type"] == "ok", answer
        await self.watch(watched.client)

    async def post(self, events: list[dict]) -> None:
        server = self.rng.choice(self.servers)
        results = await server.api.post_events(events)
        assert all(r["outcome"] in ("applied", "stale", "rejected") for r in results), results


async def drive(run: Run, database_url: str, rounds: int, before_round=None) -> None:
    """`before_round(n)`: awaited before round n (a fault injected mid-run)."""
    rng = run.rng
    traffic = Traffic(rng, SYSTEM_CLOCK.now() - timedelta(hours=2))
    for index in range(len(run.clients) * 2):
        await run.watch(run.clients[index % len(run.clients)])
    for round_number in range(rounds):
        if before_round is not None:
            await before_round(round_number)
        roll = rng.random()
        if roll < 0.08:
            await run.fetch()
        elif roll < 0.13:
            await run.resubscribe()
        else:
            batch = [traffic.next() for _ in range(rng.randint(1, 8))]
            extra = traffic.csat()
            if extra is not None and rng.random() < 0.3:
                batch.append(extra)
            await run.post(batch)

    db = Database(database_url)
    try:

        async def mismatches() -> list[str]:
            now = SYSTEM_CLOCK.now()
            found = []
            for watched in run.watched:
                model = watched.model()
                if model.errors:
                    found.append(f"sub {model.sub}: protocol broken: {model.errors}")
                expected, total = await fresh_rows(
                    db, TENANT, watched.view, watched.window, TZ, now
                )
                held = comparable(model.ordered())
                if model.total != total or held != comparable(expected):
                    found.append(
                        f"sub {model.sub} view {watched.view} W={watched.window}: total "
                        f"{model.total} vs {total}; held {held} vs fresh {comparable(expected)}"
                    )
            return found

        async def consistent() -> bool:
            return not await mismatches()

        try:
            await wait_for(consistent, 20)
        except AssertionError:
            raise AssertionError("\n".join(await mismatches())) from None
    finally:
        await db.close()


@pytest.mark.parametrize("seed", [11, 22, 33])
async def test_one_process(backend, tmp_path, seed):
    rng = random.Random(seed)
    async with live_server(backend, tmp_path) as server:
        run = Run(rng, [server])
        async with server.ws() as a, server.ws(format="msgpack") as b, server.ws() as c:
            run.clients = [a, b, c]
            await drive(run, backend.database_url, rounds=120)


@pytest.mark.parametrize("seed", [66, 77])
async def test_many_subscribers_sharing_windows(backend, tmp_path, seed):
    """Eight clients on three views with the same window sizes: one window each,
    shared, while fetches move some subscribers to bigger windows."""
    rng = random.Random(seed)
    async with live_server(backend, tmp_path) as server:
        run = Run(rng, [server])
        run.shared_views = [(random_view(rng), rng.randint(1, 5)) for _ in range(3)]
        async with contextlib.AsyncExitStack() as stack:
            run.clients = [
                await stack.enter_async_context(server.ws(format=rng.choice(["json", "msgpack"])))
                for _ in range(8)
            ]
            await drive(run, backend.database_url, rounds=100)
            windows = server.services.live.windows
            assert len(windows) < len(run.watched), "subscribers did not share windows"


@pytest.mark.services
@pytest.mark.parametrize("seed", [44, 55])
async def test_two_processes_behind_redis(backend, tmp_path, seed):
    if backend.name != "postgresql-redis":
        pytest.skip("several processes share PostgreSQL and Redis")
    rng = random.Random(seed)
    await prepare_database(backend.database_url)
    async with (
        spawned_server(backend, tmp_path / "one") as one,
        spawned_server(backend, tmp_path / "two") as two,
    ):
        run = Run(rng, [one, two])
        async with one.ws() as a, two.ws(format="msgpack") as b, one.ws() as c, two.ws() as d:
            run.clients = [a, b, c, d]
            await drive(run, backend.database_url, rounds=120)
