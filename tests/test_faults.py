"""Live views under faults (docs/faults.md): Redis restarted, its
connections made half-open, a process killed between commit and publish, news the
bus never carried. Every client must end with exactly the rows a fresh snapshot
gives, and never receive a version twice or out of order.

Redis is a private redis-server per test (stopped and started by its pid), reached
directly or through a TCP proxy the test controls; the shared Redis is never touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from server.bus import Bus, BusMessage, Gap, RedisBus
from server.core.clock import SYSTEM_CLOCK
from tests.app_support import TENANT, prepare_database
from tests.fault_support import private_redis, proxy_to
from tests.server_support import WsClient, live_server, spawned_server
from tests.support import random_suffix, wait_for
from tests.test_live_consistency import Run, drive

ALL = {"filters": [], "columns": ["customer_name", "status"]}


def delivery_errors(frames: list[dict]) -> list[str]:
    """A row's version delivered twice, or going down, within one subscription."""
    held: dict[str, dict[str, int]] = {}
    errors = []
    for frame in frames:
        kind, sub = frame.get("type"), frame.get("sub")
        if kind == "snapshot":
            held[sub] = {row["id"]: row["version"] for row in frame["rows"]}
        elif kind == "page":
            held[sub].update({row["id"]: row["version"] for row in frame["rows"]})
        elif kind == "delta":
            rows = held[sub]
            for row_id in frame["remove"]:
                rows.pop(row_id, None)
            for row in frame["upsert"]:
                before = rows.get(row["id"])
                if before is not None and row["version"] <= before:
                    errors.append(f"{sub}: {row['id']} v{before} then v{row['version']}")
                rows[row["id"]] = row["version"]
        elif kind == "resync":
            held.pop(sub, None)
    return errors


def created(cid: str, minutes_ago: int = 0) -> dict:
    at = (SYSTEM_CLOCK.now() - timedelta(minutes=minutes_ago)).isoformat()
    return {
        "event_id": f"ev-{cid}",
        "type": "conversation.created",
        "conversation_id": cid,
        "occurred_at": at,
        "data": {"channel": "chat", "contact": f"{cid}@example.com", "customer": {"name": cid}},
    }


async def held_ids(client: WsClient, snapshot: dict) -> set[str]:
    rows = {row["id"] for row in snapshot["rows"]}
    for frame in client.frames:
        if frame.get("type") == "delta" and frame["sub"] == snapshot["sub"]:
            rows -= set(frame["remove"])
            rows |= {row["id"] for row in frame["upsert"]}
    return rows


def needs_redis(backend) -> None:
    if backend.name != "postgresql-redis":
        pytest.skip("several processes share PostgreSQL and Redis")


# --------------------------------------------------------------------------- the bus


async def news_flows(bus: Bus, subscription, tenant: str) -> None:
    """Post news until some comes back through the subscription (Gaps are skipped)."""
    marker = random_suffix()

    async def came_back() -> bool:
        bus.post(tenant, {"marker": marker, "rows": []})
        while True:
            try:
                item = await asyncio.wait_for(subscription.get(), 0.2)
            except TimeoutError:
                return False
            if isinstance(item, BusMessage) and item.payload.get("marker") == marker:
                return True

    await wait_for(came_back, 15)


async def test_bus_notices_a_half_open_connection_and_reconnects():
    """Traffic silently dropped on open connections: no error ever reaches the client,
    only the missing probes tell. The bus reports a Gap, connects again, and news
    flows both ways (publishing and subscribing) on the new connections."""
    async with private_redis() as redis_server, proxy_to(redis_server.port) as proxy:
        bus = RedisBus(proxy.url, f"sbtest:{random_suffix()}:")
        subscription = bus.subscribe()
        await bus.start()
        try:
            await news_flows(bus, subscription, "t1")
            before = proxy.accepted
            proxy.blackhole()

            async def gap() -> Gap:
                while not isinstance(item := await subscription.get(), Gap):
                    pass
                return item

            assert "lost" in (await asyncio.wait_for(gap(), 15)).reason
            await news_flows(bus, subscription, "t1")
            assert proxy.accepted > before, "no new connection was made"
        finally:
            await bus.close()


# --------------------------------------------------------------------------- one process


async def test_a_change_the_bus_never_carried_reaches_clients(backend, tmp_path):
    """Reconciliation: news lost on the way (here ingest's news goes to a bus nobody
    listens to) still reaches a subscribed client, from the database, within seconds."""
    async with live_server(backend, tmp_path) as server, server.ws() as client:
        snapshot = await client.request({"type": "subscribe", "view": ALL, "limit": 10})
        server.services.ingest.bus = Bus()  # a real bus, with no subscriber: the news is lost
        results = await server.api.post_events([created("lost-1")])
        assert results[0]["outcome"] == "applied"
        await wait_for(lambda: held_ids(client, snapshot), 10)
        assert await held_ids(client, snapshot) == {"lost-1"}
        assert delivery_errors(client.frames) == []


async def test_ingest_answers_while_redis_is_frozen(backend, tmp_path):
    """Redis accepts connections and then says nothing: events are still applied,
    stored and answered (ingest never waits on the bus), and a client of the same
    process still sees them (catch-up from the database)."""
    needs_redis(backend)
    async with private_redis() as redis_server, proxy_to(redis_server.port) as proxy:
        frozen = dataclasses.replace(backend, bus_url=proxy.url)
        async with live_server(frozen, tmp_path) as server, server.ws() as client:
            snapshot = await client.request({"type": "subscribe", "view": ALL, "limit": 50})
            await wait_for(lambda: server.services.bus.connected, 10)
            proxy.freeze()
            ids = [f"frozen-{n}" for n in range(30)]

            async def post_all() -> None:
                for cid in ids:  # one at a time: each would wait out a stuck publish
                    results = await server.api.post_events([created(cid)])
                    assert results[0]["outcome"] == "applied", results

            # Waiting on Redis would cost a publish timeout (1 s) per request or two;
            # the bound is generous for a loaded machine and far below that.
            await asyncio.wait_for(post_all(), 12)

            async def all_held() -> bool:
                return await held_ids(client, snapshot) == set(ids)

            await wait_for(all_held, 10)
            proxy.thaw()
            await wait_for(lambda: server.services.bus.connected, 15)
            assert delivery_errors(client.frames) == []


# --------------------------------------------------------------------------- several processes


async def drive_two(backend, tmp_path, seed: int, fault) -> list:
    """The randomized consistency run (test_live_consistency) with two server
    processes on `backend`, `fault(round)` awaited before every round."""
    rng = random.Random(seed)
    async with (
        spawned_server(backend, tmp_path / "one") as one,
        spawned_server(backend, tmp_path / "two") as two,
    ):
        run = Run(rng, [one, two])
        async with one.ws() as a, two.ws(format="msgpack") as b, one.ws() as c, two.ws() as d:
            run.clients = [a, b, c, d]
            await drive(run, backend.database_url, rounds=120, before_round=fault)
            errors = [e for client in run.clients for e in delivery_errors(client.frames)]
            assert errors == [], errors
            return run.clients


@pytest.mark.parametrize("seed", [101, 202])
async def test_redis_restarted_mid_run(backend, tmp_path, seed):
    needs_redis(backend)
    await prepare_database(backend.database_url)
    async with private_redis() as redis_server:
        faulty = dataclasses.replace(backend, bus_url=redis_server.url)

        async def fault(round_number: int) -> None:
            if round_number == 40:
                await redis_server.stop()
            elif round_number == 70:
                await redis_server.start()

        await drive_two(faulty, tmp_path, seed, fault)


@pytest.mark.parametrize("seed", [303])
async def test_redis_connections_half_open_mid_run(backend, tmp_path, seed):
    needs_redis(backend)
    await prepare_database(backend.database_url)
    async with private_redis() as redis_server, proxy_to(redis_server.port) as proxy:
        faulty = dataclasses.replace(backend, bus_url=proxy.url)
        accepted_at_fault = []

        async def fault(round_number: int) -> None:
            if round_number == 40:
                accepted_at_fault.append(proxy.accepted)
                proxy.blackhole()

        await drive_two(faulty, tmp_path, seed, fault)
        # Both processes noticed (the probes), and each connected again at least once.
        assert proxy.accepted >= accepted_at_fault[0] + 2


async def test_process_killed_between_commit_and_publish(backend, tmp_path):
    """The process that commits exits before publishing (SWITCHBOARD_FAULT); the
    other process's client gets the change anyway, from reconciliation."""
    needs_redis(backend)
    await prepare_database(backend.database_url)
    async with (
        spawned_server(
            backend, tmp_path / "dying", env={"SWITCHBOARD_FAULT": "exit_after_commit"}
        ) as dying,
        spawned_server(backend, tmp_path / "two") as two,
        two.ws() as client,
    ):
        snapshot = await client.request({"type": "subscribe", "view": ALL, "limit": 10})
        with pytest.raises(httpx.TransportError):  # it died before it could answer
            await dying.api.client.post(
                "/api/v1/events",
                json={"events": [created("orphan")]},
                headers=dying.api.auth("service", "svc"),
            )
        detail = await two.api.conversation("orphan")
        assert detail["conversation"]["version"] == 1  # committed, never published

        async def arrived() -> bool:
            return "orphan" in await held_ids(client, snapshot)

        await wait_for(arrived, 10)
        assert delivery_errors(client.frames) == []
        assert TENANT == two.api.tenant


async def test_a_late_commit_below_the_newest_sequence_number_is_caught(backend, tmp_path):
    """Sequence numbers commit out of order: a transaction takes its number, then
    commits after later numbers were read back. Catch-up must not have moved its
    watermark past it (the pitfall in spec README), so its change still arrives."""
    needs_redis(backend)
    async with live_server(backend, tmp_path) as server, server.ws() as client:
        snapshot = await client.request({"type": "subscribe", "view": ALL, "limit": 10})
        await server.api.post_events([created("slow")])
        server.services.ingest.bus = Bus()  # from here on the news is lost: only catch-up tells
        engine = server.services.db.engine
        async with engine.connect() as slow:
            transaction = await slow.begin()
            await slow.execute(
                text(
                    "UPDATE conversations SET version = 2, customer_name = 'late', "
                    "change_seq = nextval('conversation_change_seq') WHERE id = 'slow'"
                )
            )
            for n in range(3):  # later numbers commit, and catch-up reads past them
                await server.api.post_events([created(f"fast-{n}")])

                async def seen(cid=f"fast-{n}") -> bool:
                    return cid in await held_ids(client, snapshot)

                await wait_for(seen, 10)
            await transaction.commit()

        def late_arrived() -> bool:
            return any(
                row["id"] == "slow" and row.get("customer_name") == "late"
                for frame in client.frames
                if frame.get("type") == "delta"
                for row in frame["upsert"]
            )

        await wait_for(late_arrived, 10)
        assert delivery_errors(client.frames) == []


async def test_a_lost_change_followed_by_one_that_arrives_is_caught(backend, tmp_path):
    """The news of a row's creation is lost, the news of its next change arrives: the
    row is known at its newest version, yet windows never counted its entry. The
    change starting from a version never heard of marks a hole that catch-up fills."""
    async with live_server(backend, tmp_path) as server, server.ws() as client:
        snapshot = await client.request({"type": "subscribe", "view": ALL, "limit": 10})
        await server.services.catchup.stop()  # passes run by hand below, not on a timer
        bus = server.services.ingest.bus
        server.services.ingest.bus = Bus()  # the creation's news is lost
        await server.api.post_events([created("holed")])
        server.services.ingest.bus = bus
        at = SYSTEM_CLOCK.now().isoformat()
        enqueued = {
            "event_id": "ev-holed-2",
            "type": "routing.enqueued",
            "conversation_id": "holed",
            "occurred_at": at,
            "data": {"team": "sales"},
        }
        assert (await server.api.post_events([enqueued]))[0]["version"] == 2

        async def arrived() -> bool:
            return "holed" in await held_ids(client, snapshot)

        await wait_for(arrived, 10)
        assert await server.services.catchup.pass_once() == 1

        def total() -> int:
            deltas = [f for f in client.frames if f.get("type") == "delta"]
            return deltas[-1]["total"] if deltas else snapshot["total"]

        await wait_for(lambda: total() == 1, 10)
        assert delivery_errors(client.frames) == []
