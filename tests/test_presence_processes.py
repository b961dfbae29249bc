"""The presence grace counts an agent's websocket connections in every process
(server/routing/agent_connections.py): one process's last connection closing leaves the agent
available while another process holds one; a killed process's agents go offline after
the staleness bound plus the grace, fired by a surviving process; a reconnect within
the grace keeps the agent available; a heartbeat sweeps dead processes' rows and
mends its own."""

from __future__ import annotations

import contextlib
import os
import signal
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, insert, select

from server.core.settings import Settings
from server.storage import models as m
from server.storage.db import Database
from tests.app_support import prepare_database
from tests.routing_support import put_agent, set_presence
from tests.server_support import live_server, spawned_server
from tests.support import wait_for

GRACE_MS = 600
HEARTBEAT_MS = 200  # a row not refreshed for 600 ms is a dead process's
FAST = {
    "SWITCHBOARD_PRESENCE_GRACE_MS": str(GRACE_MS),
    "SWITCHBOARD_PRESENCE_HEARTBEAT_MS": str(HEARTBEAT_MS),
}


@contextlib.asynccontextmanager
async def database(backend):
    db = Database(backend.database_url, pool_size=2)
    try:
        yield db
    finally:
        await db.close()


async def presence(api, agent_id: str) -> str:
    response = await api.client.get("/api/v1/agents", headers=api.auth("admin"))
    [agent] = [a for a in response.json()["agents"] if a["id"] == agent_id]
    return agent["presence"]


async def connection_rows(db: Database, agent_id: str) -> list[str]:
    """The processes holding a connection of the agent, by their rows."""
    ac = m.agent_connections
    async with db.read() as conn:
        rows = await conn.execute(select(ac.c.process_id).where(ac.c.agent_id == agent_id))
        return sorted(row.process_id for row in rows)


async def grace_armed(db: Database, agent_id: str) -> bool:
    async with db.read() as conn:
        found = await conn.execute(
            select(m.timers.c.key).where(m.timers.c.key == f"presence:{agent_id}")
        )
        return found.first() is not None


async def test_an_agent_on_two_processes_stays_available_until_its_last_connection_closes(
    backend, tmp_path
):
    await prepare_database(backend.database_url)
    data = tmp_path / "data"
    async with (
        spawned_server(backend, data, env=FAST) as one,
        spawned_server(backend, data, env=FAST) as two,
        database(backend) as db,
    ):
        await put_agent(one.api, "t1", [])
        await set_presence(one.api, "t1", "available")
        async with one.ws("agent", "t1"):
            async with two.ws("agent", "t1"):
                rows = await wait_for(
                    lambda: _two(connection_rows(db, "t1")), 10, message="a row per process"
                )
                assert len(set(rows)) == 2
            # Process two's last connection closed: it arms the grace, which fires
            # (in either process) and finds process one's live row.
            await wait_for(lambda: grace_armed(db, "t1"), 10, message="the grace armed")
            await wait_for(lambda: _false(grace_armed(db, "t1")), 10, message="the grace fired")
            assert await presence(one.api, "t1") == "available"
            assert len(await connection_rows(db, "t1")) == 1
            # Heartbeats go on: the row stays live past the staleness bound.
            seen = await _seen_at(db, "t1")
            await wait_for(lambda: _seen_after(db, "t1", seen + timedelta(milliseconds=700)), 10)
            assert await presence(one.api, "t1") == "available"
        # The last connection anywhere closed: offline after the grace.
        await wait_for(lambda: _is(presence(one.api, "t1"), "offline"), 10)
        assert await connection_rows(db, "t1") == []


async def test_a_killed_process_s_agents_go_offline_after_the_staleness_bound_and_grace(
    backend, tmp_path
):
    await prepare_database(backend.database_url)
    data = tmp_path / "data"
    async with (
        spawned_server(backend, data, env=FAST) as survivor,
        spawned_server(backend, data, env=FAST) as doomed,
        database(backend) as db,
    ):
        for agent in ("k1", "k2"):
            await put_agent(survivor.api, agent, [])
            await set_presence(survivor.api, agent, "available")
        # k1 is connected only to the process that dies; k2 to both.
        async with survivor.ws("agent", "k2"), doomed.ws("agent", "k2"), doomed.ws("agent", "k1"):
            await wait_for(lambda: _two(connection_rows(db, "k2")), 10)
            await wait_for(lambda: connection_rows(db, "k1"), 10)
            killed_at = datetime.now(UTC)
            os.kill(doomed.pid, signal.SIGKILL)
            # Its sockets dropped with it, but it armed no grace: the survivor's
            # heartbeat finds its rows stale, sweeps them and arms the graces.
            await wait_for(lambda: _is(presence(survivor.api, "k1"), "offline"), 15)
            gone = datetime.now(UTC) - killed_at
            assert gone >= timedelta(milliseconds=GRACE_MS)  # not at once: after the grace
            assert await connection_rows(db, "k1") == []
            await wait_for(lambda: _false(grace_armed(db, "k2")), 10, message="k2's grace fired")
            assert await presence(survivor.api, "k2") == "available"
            assert len(await connection_rows(db, "k2")) == 1


async def test_a_reconnect_within_the_grace_keeps_the_agent_available(backend, tmp_path):
    async with live_server(
        backend, tmp_path / "data", settings_changes={"presence_grace_s": 1.0}
    ) as server:
        api, services = server.api, server.services
        await put_agent(api, "r1", [])
        await set_presence(api, "r1", "available")
        async with server.ws("agent", "r1"):
            await wait_for(lambda: ("acme", "r1") in services.routing.connections.written, 10)
        closed_at = datetime.now(UTC)
        await wait_for(lambda: ("acme", "r1") not in services.routing.connections.written, 10)
        assert await grace_armed(services.db, "r1")
        async with server.ws("agent", "r1"):
            await wait_for(lambda: ("acme", "r1") in services.routing.connections.written, 10)
            assert datetime.now(UTC) < closed_at + timedelta(seconds=1), "too slow to test"
            assert not await grace_armed(services.db, "r1")  # disarmed with the row's write
            # Past the grace, whatever is due fires: nothing, the reconnect disarmed it.
            await wait_for(lambda: datetime.now(UTC) > closed_at + timedelta(seconds=1.2), 5)
            await services.routing.timers.fire_due()
            assert await presence(api, "r1") == "available"
        # Gone for good: offline after the grace.
        await wait_for(lambda: _is(presence(api, "r1"), "offline"), 10)


async def test_the_heartbeat_sweeps_dead_processes_and_mends_its_own_rows(backend, tmp_path):
    async with live_server(
        backend,
        tmp_path / "data",
        settings_changes={"presence_grace_s": 0.3, "presence_heartbeat_s": 60.0},
    ) as server:
        api, services = server.api, server.services
        connections = services.routing.connections
        for agent in ("h1", "h2"):
            await put_agent(api, agent, [])
            await set_presence(api, agent, "available")
        ac = m.agent_connections
        long_ago = datetime.now(UTC) - timedelta(minutes=5)
        async with server.ws("agent", "h1"):
            await wait_for(lambda: ("acme", "h1") in connections.written, 10)
            async with services.db.write() as conn:
                # A dead process held h1 and h2; ours lost its row of h1 (swept while
                # it was too slow to beat).
                dead = {"tenant_id": "acme", "process_id": "p-dead", "seen_at": long_ago}
                await conn.execute(
                    insert(ac), [{**dead, "agent_id": "h1"}, {**dead, "agent_id": "h2"}]
                )
                await conn.execute(delete(ac).where(ac.c.process_id == connections.process_id))
            await connections.beat()
            async with services.db.read() as conn:
                rows = {
                    (row.agent_id, row.process_id)
                    for row in await conn.execute(select(ac.c.agent_id, ac.c.process_id))
                }
            assert rows == {("h1", connections.process_id)}
            # The sweep armed both graces; only h2, connected nowhere, goes offline.
            await wait_for(lambda: _is(presence(api, "h2"), "offline"), 10)
            await wait_for(lambda: _false(grace_armed(services.db, "h1")), 10)
            assert await presence(api, "h1") == "available"


async def _two(rows) -> list | None:
    found = await rows
    return found if len(found) == 2 else None


async def _false(value) -> bool:
    return not await value


async def _is(value, expected) -> bool:
    return await value == expected


async def _seen_at(db: Database, agent_id: str) -> datetime:
    ac = m.agent_connections
    async with db.read() as conn:
        found = await conn.execute(select(ac.c.seen_at).where(ac.c.agent_id == agent_id))
        return found.scalar_one()


async def _seen_after(db: Database, agent_id: str, moment: datetime) -> bool:
    return await _seen_at(db, agent_id) > moment


def test_the_grace_and_heartbeat_are_read_in_milliseconds(tmp_path):
    env = {"SWITCHBOARD_DATA_DIR": str(tmp_path), **FAST}
    settings = Settings.from_env(env)
    assert (settings.presence_grace_s, settings.presence_heartbeat_s) == (0.6, 0.2)
    default = Settings.from_env({"SWITCHBOARD_DATA_DIR": str(tmp_path)})
    assert (default.presence_grace_s, default.presence_heartbeat_s) == (15.0, 5.0)


@pytest.mark.parametrize(
    "name, value",
    [
        ("SWITCHBOARD_PRESENCE_HEARTBEAT_MS", "0"),  # a beat without pause
        ("SWITCHBOARD_PRESENCE_HEARTBEAT_MS", "soon"),
        ("SWITCHBOARD_PRESENCE_GRACE_MS", "-5"),
        ("SWITCHBOARD_PRESENCE_GRACE_MS", "60001"),
    ],
)
def test_a_bad_grace_or_heartbeat_is_refused_by_name(name, value, tmp_path):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({"SWITCHBOARD_DATA_DIR": str(tmp_path), name: value})
