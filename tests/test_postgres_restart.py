"""PostgreSQL stopped for ten seconds under load, on a cluster of the test's own: while
it is down ingest answers 503 with `Retry-After` and `/readyz` says so; no request is
half-stored (a batch retried after its 503 comes back all applied, or all duplicates
when its commit had made it); once it is back everything resumes without a restart,
and a live view equals a fresh snapshot of the database."""

from __future__ import annotations

import asyncio
import contextlib
import time
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select

from server.core.clock import SYSTEM_CLOCK
from server.storage import models as m
from server.storage.db import Database
from tests.app_support import TENANT
from tests.fault_support import private_postgres
from tests.live_model import ClientModel, comparable, fresh_rows
from tests.server_support import live_server
from tests.support import Backend, random_suffix, wait_for

DOWN_S = 10.0  # how long the database stays stopped: the scenario, not a wait
BATCH = 5
VIEW = {"filters": [], "columns": ["customer_name", "status"]}
TZ = ZoneInfo("Europe/Madrid")


class Poster:
    """Posts batches of new conversations back to back, as an integration does: a
    batch answered 503 (or cut) is sent again, with the same event ids, until it is
    answered 200. Keeps every answer."""

    def __init__(self, api):
        self.api = api
        self.prefix = random_suffix()
        self.batches: list[list[dict]] = []
        self.answers: list[tuple[int, int, list[str], str | None]] = []  # batch, status, ...
        self.stopping = False

    def unavailable(self) -> list[tuple]:
        return [answer for answer in self.answers if answer[1] == 503]

    def applied_batches(self) -> int:
        return sum(1 for answer in self.answers if answer[1] == 200)

    def _batch(self, number: int) -> list[dict]:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return [
            {
                "event_id": f"{self.prefix}-{number}-{i}",
                "type": "conversation.created",
                "conversation_id": f"{self.prefix}-{number}-{i}",
                "occurred_at": at,
                "data": {"channel": "chat", "contact": f"c{number}-{i}@example.com",
                         "customer": {"name": f"n{number}-{i}"}},
            }
            for i in range(BATCH)
        ]  # fmt: skip

    async def run(self) -> None:
        headers = self.api.auth("service", "svc")
        number = 0
        while not self.stopping:
            batch = self._batch(number)
            self.batches.append(batch)
            while True:
                try:
                    response = await self.api.client.post(
                        "/api/v1/events", json={"events": batch}, headers=headers, timeout=10
                    )
                except httpx.TransportError:
                    await asyncio.sleep(0.2)  # the client's own back-off
                    continue
                outcomes = (
                    [r["outcome"] for r in response.json()["results"]]
                    if response.status_code == 200
                    else []
                )
                retry_after = response.headers.get("retry-after")
                self.answers.append((number, response.status_code, outcomes, retry_after))
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.2)  # the client's own back-off, shorter than Retry-After
            number += 1


async def test_postgresql_stopped_ten_seconds_under_load(tmp_path):
    async with private_postgres() as postgres:
        backend = Backend("private-postgresql", postgres.url, "memory://", "")
        async with live_server(backend, tmp_path) as server, server.ws() as client:
            snapshot = await client.request({"type": "subscribe", "view": VIEW, "limit": 1000})
            poster = Poster(server.api)
            posting = asyncio.create_task(poster.run())
            try:
                await wait_for(lambda: poster.applied_batches() >= 5, 30)
                await postgres.stop()
                stopped = time.monotonic()

                await wait_for(lambda: poster.unavailable(), 15)
                _, _, _, retry_after = poster.unavailable()[0]
                assert retry_after is not None and int(retry_after) > 0
                ready = await server.api.client.get("/readyz")
                assert ready.status_code == 503, ready.text
                assert ready.headers["retry-after"]
                assert ready.json()["database"].startswith("down")

                await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - stopped)))
                await postgres.start()

                async def ready_again() -> bool:
                    return (await server.api.client.get("/readyz")).status_code == 200

                await wait_for(ready_again, 30)
                before = poster.applied_batches()
                await wait_for(lambda: poster.applied_batches() >= before + 5, 30)
            finally:
                poster.stopping = True
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(posting, 30)

            # No request was half-stored: each batch's answer is all applied, or (a
            # retry of a batch whose commit had happened) all duplicates.
            for number, status, outcomes, _ in poster.answers:
                if status == 200:
                    assert set(outcomes) in ({"applied"}, {"duplicate"}), (number, outcomes)

            db = Database(postgres.url)
            try:
                async with db.read() as conn:
                    stored = (
                        await conn.execute(
                            select(func.count())
                            .select_from(m.conversations)
                            .where(m.conversations.c.id.like(f"{poster.prefix}-%"))
                        )
                    ).scalar_one()
                posted = sum(len(batch) for batch in poster.batches)
                assert stored == posted  # every batch stored once, none lost

                async def converged() -> bool:
                    model = ClientModel(snapshot, None)
                    model.feed(client.frames)
                    expected, total = await fresh_rows(
                        db, TENANT, VIEW, 1000, TZ, SYSTEM_CLOCK.now()
                    )
                    return (
                        not model.errors
                        and model.total == total
                        and comparable(model.ordered()) == comparable(expected)
                    )

                await wait_for(converged, 20)
            finally:
                await db.close()
