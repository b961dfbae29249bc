"""R1 detail: database round trips and CPU per routing decision, in process.

`.venv/bin/python -m bench.r1_passes [--agents 500] [--queued 5000] [--cycles 200]`

One Switchboard in this process on a fresh PostgreSQL database (in-process bus),
`routing: builtin`, one team, N agents, Q conversations queued by the router. The
timer runner is stopped and nobody is connected, so that in the measured windows the
only statements are the ones the measured work sends. Counted per statement sent
(SQLAlchemy's `before_cursor_execute`; each is one round trip, as asyncpg runs them):

* burst: every agent turns available at once (the board hears it on the bus);
  statements and CPU from the first presence change to the last offer committed,
  per offer (the presence writes themselves excluded: counted apart);
* cycle: one agent at a time is freed (its call hung up and wrapped up, one ingest
  submission) and the router offers it the next queued call: statements and CPU from
  the freeing commit's answer to the offer's commit on the bus (the router's pass and
  the offer's ingest commit), and the freeing commit's own statements for scale.

Round trips are what a starved CPU turns into waits (R1 in RESULTS.md); this counts
them without the noise of a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime

import httpx
from sqlalchemy import event, update

from bench import common as c
from server.core.auth import mint_token
from server.storage import models as m

TENANT = "bench"
TEAM = "desk"


class Counter:
    """Statements sent: SQLAlchemy's (its cursor events) and those the ingest sends on
    the bare asyncpg connection (asyncpg's query logger, which sees those but not
    SQLAlchemy's prepared statements); transaction control is not counted."""

    def __init__(self, engine):
        self.statements = 0
        self._watched: set[int] = set()
        event.listen(engine.sync_engine, "before_cursor_execute", self._count)
        event.listen(engine.sync_engine, "checkout", self._watch)

    def _count(self, *_args) -> None:
        self.statements += 1

    def _watch(self, dbapi_connection, _record, _proxy) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in self._watched:
            self._watched.add(id(driver))
            driver.add_query_logger(self._logged)

    def _logged(self, record) -> None:
        if record.query.split(None, 1)[0].rstrip(";").upper() not in (
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
        ):
            self.statements += 1


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def wait_until(predicate, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def measure(url: str, agents: int, queued: int, cycles: int) -> dict:
    app = await c.started_in_process(url, "r1p", TENANT, "builtin")
    services = app.state.services
    await services.routing.timers.stop()  # nothing is due; its polls would blur the counts
    counter = Counter(services.db.engine)
    offered: dict[str, str] = {}  # agent -> conversation offered to it (from the bus)
    subscription = services.bus.subscribe()

    async def follow() -> None:
        while True:
            item = await subscription.get()
            for row_item in getattr(item, "payload", {}).get("rows") or ():
                row = row_item["row"]
                if row["status"] == "offered":
                    offered[row["offer_agent_id"]] = row["id"]

    follower = asyncio.create_task(follow())

    def auth(role, user):
        return {"Authorization": f"Bearer {mint_token(c.SECRET, TENANT, role, user, 3600)}"}

    transport = httpx.ASGITransport(app=app)
    ids = [f"ag{i:04d}" for i in range(agents)]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://sb") as client:
            admin = auth("admin", "admin")
            (
                await client.put(
                    f"/api/v1/teams/{TEAM}",
                    json={
                        "queue_capacity": 100_000,
                        "offer_timeout_s": 600,
                        "queue_timeout_s": 86400,
                    },
                    headers=admin,
                )
            ).raise_for_status()
            for agent in ids:
                (
                    await client.put(
                        f"/api/v1/agents/{agent}",
                        json={"name": agent, "teams": [TEAM]},
                        headers=admin,
                    )
                ).raise_for_status()
                await services.routing.presence.set(TENANT, agent, "away")
            for start in range(0, queued, 500):
                await services.ingest.submit(
                    TENANT,
                    [
                        {
                            "event_id": f"new-{i}",
                            "type": "conversation.created",
                            "conversation_id": f"c{i:05d}",
                            "occurred_at": now_iso(),
                            "data": {
                                "channel": "call",
                                "contact": f"+3460{i:07d}",
                                "customer": {"name": f"C{i}"},
                                "team": TEAM,
                            },
                        }
                        for i in range(start, min(queued, start + 500))
                    ],
                )
            wallboard = services.routing.wallboard

            async def waiting() -> int:
                return (await wallboard.metrics(TENANT))["total"]["waiting"]

            deadline = time.monotonic() + 300
            while await waiting() < queued:
                if time.monotonic() > deadline:
                    raise RuntimeError("not all queued")
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.5)  # let a sweep pass find nothing to do
            # --- burst: every agent available in one statement, then one bus message
            at = datetime.now(UTC)
            async with services.db.write() as conn:
                await conn.execute(
                    update(m.agents)
                    .where(m.agents.c.tenant_id == TENANT)
                    .values(presence="available", presence_at=at)
                )
            changes = [
                {"agent_id": agent, "presence": "available", "at": at.isoformat()} for agent in ids
            ]
            before = counter.statements
            cpu0, wall0 = time.process_time(), time.perf_counter()
            services.bus.post(TENANT, {"rows": [], "presence": changes})
            await wait_until(lambda: len(offered) >= agents, 120, "the burst's offers")
            burst = {
                "offers": len(offered),
                "statements_per_offer": (counter.statements - before) / agents,
                "cpu_ms_per_offer": (time.process_time() - cpu0) * 1000 / agents,
                "wall_s": time.perf_counter() - wall0,
            }
            await asyncio.sleep(2.5)
            # --- cycles: accept all, then free one agent at a time
            for agent, cid in list(offered.items()):
                await services.ingest.submit(
                    TENANT,
                    [
                        {
                            "event_id": f"acc-{cid}",
                            "type": "agent.accepted",
                            "conversation_id": cid,
                            "occurred_at": now_iso(),
                            "data": {
                                "agent_id": agent,
                                "offer_id": (await _offer_id(services, cid)),
                            },
                        }
                    ],
                )
            await asyncio.sleep(2.5)
            free_counts, pass_counts, pass_cpu, pass_wall = [], [], [], []
            for n in range(cycles):
                agent = ids[n % agents]
                cid = offered.pop(agent)
                s0 = counter.statements
                await services.ingest.submit(
                    TENANT,
                    [
                        {
                            "event_id": f"hang-{cid}",
                            "type": "media.hangup",
                            "conversation_id": cid,
                            "occurred_at": now_iso(),
                            "data": {"source": "agent"},
                        },
                        {
                            "event_id": f"wrap-{cid}",
                            "type": "wrapup.submitted",
                            "conversation_id": cid,
                            "occurred_at": now_iso(),
                            "data": {"disposition": "ok"},
                        },
                    ],
                )
                s1, cpu1, w1 = counter.statements, time.process_time(), time.perf_counter()
                free_counts.append(s1 - s0)
                await wait_until(lambda agent=agent: agent in offered, 30, "the next offer")
                pass_counts.append(counter.statements - s1)
                pass_cpu.append((time.process_time() - cpu1) * 1000)
                pass_wall.append((time.perf_counter() - w1) * 1000)
                next_cid = offered[agent]
                await services.ingest.submit(
                    TENANT,
                    [
                        {
                            "event_id": f"acc-{next_cid}",
                            "type": "agent.accepted",
                            "conversation_id": next_cid,
                            "occurred_at": now_iso(),
                            "data": {
                                "agent_id": agent,
                                "offer_id": await _offer_id(services, next_cid),
                            },
                        }
                    ],
                )
                await asyncio.sleep(0.01)
    finally:
        follower.cancel()
        subscription.close()
        await services.stop()
        await services.db.close()
    return {
        "agents": agents,
        "queued": queued,
        "burst": burst,
        "cycle": {
            "cycles": cycles,
            "statements_free_commit": statistics.median(free_counts),
            "statements_freed_to_offer_median": statistics.median(pass_counts),
            "statements_freed_to_offer_max": max(pass_counts),
            "cpu_ms_freed_to_offer_median": statistics.median(pass_cpu),
            "wall_ms_freed_to_offer_median": statistics.median(pass_wall),
            "wall_ms_freed_to_offer_p99": c.percentile(pass_wall, 99),
        },
    }


async def _offer_id(services, cid: str) -> str:
    async with services.db.read() as conn:
        row = (
            await conn.execute(
                m.conversations.select().where(
                    m.conversations.c.tenant_id == TENANT, m.conversations.c.id == cid
                )
            )
        ).first()
    return row.offer_id


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.r1_passes")
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--queued", type=int, default=5000)
    parser.add_argument("--cycles", type=int, default=200)
    args = parser.parse_args(argv)
    database = c.run_async(c.create_database(c.ADMIN_URL, "sb_bench_r1p"))
    try:
        result = c.run_async(
            measure(c.with_database(c.ADMIN_URL, database), args.agents, args.queued, args.cycles)
        )
    finally:
        c.run_async(c.drop_database(c.ADMIN_URL, database))
    result["others_cores_note"] = "CPU here is this process's only; see RESULTS for load"
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
