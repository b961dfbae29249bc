"""The demo (`serve --demo`): played on a fast clock it reaches every status and the
unanswered states within minutes of demo time, fills every column, leaves the person's
agent alone, and stops cleanly; `serve --demo` prints working links and stops on
SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select

from server.app import build_services
from server.core.clock import Clock
from server.demo.traffic import HUMAN_AGENT, TENANT, VIEWS, Demo
from server.storage import models as m
from tests import app_support
from tests.app_support import SECRET, prepare_database
from tests.support import Backend, free_port, wait_for, wait_until

STATUSES = {"new", "queued", "offered", "active", "wrap_up", "closed", "dialing", "ringing"}
UNANSWERED = {
    "dropped",
    "agent_assignment_failed",
    "customer_did_not_respond",
    "enqueue_failed",
    "out_of_business_hours",
    "queue_timeout",
}
FILLED = (  # columns some demo conversation fills
    "customer_name",
    "agent_name",
    "team",
    "disposition",
    "wrap_up_note",
    "contacto_number",
    "ticket_id",
    "csat",
    "hangup_source",
    "wait_s",
    "handle_s",
)


class FastClock(Clock):
    """The server's time running `speed` times faster than the wall clock."""

    def __init__(self, speed: float):
        self.speed = speed
        self.started = time.monotonic()
        self.origin = datetime.now(UTC)

    def now(self) -> datetime:
        return self.origin + timedelta(seconds=(time.monotonic() - self.started) * self.speed)

    def call_at(self, moment, callback):
        delay = max(0.0, (moment - self.now()).total_seconds() / self.speed)
        return asyncio.get_running_loop().call_later(delay, callback)


async def test_the_demo_reaches_every_status_and_unanswered_state(backend: Backend, tmp_path):
    await prepare_database(backend.database_url)
    clock = FastClock(8)
    services = build_services(app_support.test_settings(backend, tmp_path / "data"), clock)
    await services.start()
    statuses: set[str] = set()
    states: set[str] = set()
    news = services.bus.subscribe()

    async def collect() -> None:
        while True:
            item = await news.get()
            if getattr(item, "tenant", None) == TENANT:
                for change in item.payload.get("rows") or ():
                    statuses.add(change["row"]["status"])
                    states.add(change["row"]["state"])

    collector = asyncio.create_task(collect())
    demo = Demo(services, ("http://127.0.0.1:9",), random.Random(20261126))
    try:
        await demo.start()
        await wait_for(
            lambda: STATUSES <= statuses and UNANSWERED | {"customer_answered"} <= states,
            120,
            interval=0.2,
            message="every status and unanswered state",
        )
        await wait_for(
            lambda: _filled(services), 120, interval=0.5, message="every column filled somewhere"
        )
        async with services.db.read() as conn:
            tenant = (await conn.execute(select(m.tenants).where(m.tenants.c.id == TENANT))).one()
            assert tenant.routing == "builtin"
            shared = (
                await conn.execute(
                    select(m.views.c.name).where(
                        m.views.c.tenant_id == TENANT, m.views.c.visibility == "tenant"
                    )
                )
            ).scalars()
            assert set(shared) == {view["name"] for view in VIEWS.values()}  # a first look
            assert tenant.widget_origins == ["http://127.0.0.1:9"]
            presence = dict(
                (
                    await conn.execute(
                        select(m.agents.c.id, m.agents.c.presence).where(
                            m.agents.c.tenant_id == TENANT
                        )
                    )
                ).all()
            )
            assert presence.pop(HUMAN_AGENT) == "offline"  # left to a person
            assert set(presence.values()) <= {"available", "away"}
            chats = (
                await conn.execute(
                    select(m.messages.c.sender).where(
                        m.messages.c.tenant_id == TENANT,
                        m.messages.c.conversation_id.in_(
                            select(m.conversations.c.id).where(m.conversations.c.channel == "chat")
                        ),
                    )
                )
            ).scalars()
            assert {"agent", "customer"} <= set(chats)
            recordings = (
                await conn.execute(select(func.count()).where(m.recordings.c.tenant_id == TENANT))
            ).scalar_one()
            assert recordings >= 1
    finally:
        await demo.stop()
        assert not demo.tasks
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("demo")]
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        news.close()
        await services.stop()


async def _filled(services) -> bool:
    table = m.conversations
    async with services.db.read() as conn:
        counts = (
            await conn.execute(
                select(*(func.count(table.c[name]) for name in FILLED)).where(
                    table.c.tenant_id == TENANT
                )
            )
        ).one()
        recorded = (
            await conn.execute(
                select(func.count()).where(table.c.tenant_id == TENANT, table.c.has_recording)
            )
        ).scalar_one()
    return all(counts) and recorded > 0


def test_serve_demo_prints_links_that_work_and_stops_cleanly_when_terminated(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "SWITCHBOARD_SECRET": SECRET,
        "SWITCHBOARD_DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/switchboard.db",
    }
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "-m", "server", "migrate"], env=env, check=True, timeout=60)
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--demo", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )  # fmt: skip
    try:
        lines: list[str] = []
        while len(lines) < 6:
            line = server.stdout.readline()
            assert line, f"serve exited early: {lines}"
            lines.append(line)
        links = {
            line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
            for line in lines
            if line.startswith("  ") and "http" in line
        }
        assert set(links) >= {"supervisor", "agent (a1)", "wallboard", "web chat"}
        base = f"http://127.0.0.1:{port}"
        token = links["supervisor"].split("token=", 1)[1]

        def rows() -> int:
            try:
                answer = httpx.get(
                    f"{base}/api/v1/wallboard",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=2,
                )
            except httpx.TransportError:
                return 0
            assert answer.status_code == 200, answer.text
            total = answer.json()["metrics"]["total"]
            return total["waiting"] + total["active"] + total["offered"] + total["answered"]

        wait_until(rows, 60, interval=0.2, message="demo traffic through the sandbox")
        page = httpx.get(links["web chat"], timeout=5)
        assert page.status_code == 200 and "/widget.js" in page.text
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        records = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()]
        assert any(r["message"] == "Application shutdown complete." for r in records)
        assert [r for r in records if r["level"] in ("error", "critical")] == []
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
        server.stdout.close()
        log.close()
