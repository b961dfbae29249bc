"""A client that never reads cannot grow the server's memory or hold anyone up: while
10,000 changes flow, the server's RSS stays flat, a reading client gets every change,
and the one that does not read is told `resync` (or closed with 1013) once it looks.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from server.core.clock import SYSTEM_CLOCK
from server.storage.db import Database
from tests.app_support import TENANT, prepare_database
from tests.live_model import ClientModel, comparable, fresh_rows
from tests.server_support import spawned_server
from tests.support import wait_for

CHANGES = 10_000
CONVERSATIONS = 100
VIEW = {"filters": [], "columns": ["id", "customer_name", "status", "ticket_id", "csat"]}
LONG_NAME = "N" * 2000  # so that every delta is a couple of kilobytes


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def traffic(base) -> list[list[dict]]:
    """Batches: create the conversations, then link tickets to them over and over."""

    def at(n: int) -> str:
        return (base + timedelta(milliseconds=n)).isoformat().replace("+00:00", "Z")

    created = [
        {
            "event_id": f"c{n}",
            "type": "conversation.created",
            "conversation_id": f"k{n}",
            "occurred_at": at(n),
            "data": {
                "channel": "chat",
                "contact": f"v{n}",
                "customer": {"name": f"{LONG_NAME}{n}"},
            },
        }
        for n in range(CONVERSATIONS)
    ]
    changes = [
        {
            "event_id": f"t{n}",
            "type": "ticket.linked",
            "conversation_id": f"k{n % CONVERSATIONS}",
            "occurred_at": at(1000 + n),
            "data": {"ticket_id": f"T{n}"},
        }
        for n in range(CHANGES)
    ]
    return [created] + [changes[i : i + 100] for i in range(0, CHANGES, 100)]


async def test_a_client_that_never_reads(backend, tmp_path):
    await prepare_database(backend.database_url)
    async with spawned_server(backend, tmp_path) as server:
        pid = server.pid
        headers = {"Authorization": f"Bearer {server.api.token('supervisor', 'sup1')}"}
        url = urlsplit(server.url)
        # The slow client: a tiny receive buffer, and a websockets client that stops
        # reading from it after one frame, so the server's writes back up at once.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect((url.hostname, url.port))
        async with (
            server.ws() as reader,
            connect(
                server.ws_url,
                sock=raw,
                additional_headers=headers,
                max_queue=1,
                subprotocols=["switchboard.v1.json"],
            ) as slow,
        ):
            snapshot = await reader.request({"type": "subscribe", "view": VIEW, "limit": 100})
            for n in range(20):  # the slow one watches twenty views: twenty times the deltas
                await slow.send(
                    f'{{"type":"subscribe","ref":"{n}","limit":100,'
                    f'"view":{{"filters":[],"columns":["id","customer_name"]}}}}'
                )
            batches = traffic(SYSTEM_CLOCK.now() - timedelta(hours=1))
            await server.api.post_events(batches[0])
            await reader.wait(lambda f: f.get("type") == "delta" and f["total"] == CONVERSATIONS)
            baseline = peak = rss_kib(pid)
            for batch in batches[1:]:
                await server.api.post_events(batch)
                peak = max(peak, rss_kib(pid))

            # The reading client holds exactly what a fresh query gives.
            db = Database(backend.database_url)
            try:

                async def caught_up() -> bool:
                    model = ClientModel(snapshot, None)
                    model.feed(reader.frames)
                    assert not model.errors, model.errors
                    expected, total = await fresh_rows(
                        db, TENANT, VIEW, 100, ZoneInfo("Europe/Madrid"), SYSTEM_CLOCK.now()
                    )
                    return model.total == total and comparable(model.ordered()) == comparable(
                        expected
                    )

                await wait_for(caught_up, 30)
            finally:
                await db.close()
            peak = max(peak, rss_kib(pid))
            assert peak - baseline < 40 * 1024, f"server RSS grew by {peak - baseline} KiB"

            # The slow client, reading at last, learns it lost continuity.
            told = None
            try:
                async with asyncio.timeout(30):
                    async for message in slow:
                        if '"type":"resync"' in message:
                            told = "resync"
                            break
            except ConnectionClosed as closed:
                told = f"closed {closed.rcvd.code if closed.rcvd else None}"
            assert told in ("resync", "closed 1013"), told
