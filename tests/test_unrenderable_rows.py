"""Defence in depth for issue 17 finding 2: a stored row that cannot be rendered (a
created_at whose date in the tenant's zone overflows, written straight into the database
as an older server let in) never takes down a view, a socket or another client. The
detail and /rows answer, a subscribe answers with a snapshot, and a client subscribed
before keeps matching a fresh snapshot. On both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, update

from server.storage import models as m
from tests.server_support import live_server

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
FAR = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)  # 10000-01-01 in Europe/Madrid
COLUMNS = ["customer_name", "created_date", "created_time", "created_at", "status"]


def at(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def created(api, cid: str, seconds: float) -> dict:
    return api.event(
        "conversation.created",
        cid,
        at(seconds),
        channel="chat",
        contact=f"visitor-{cid}",
        customer={"name": f"Customer {cid}"},
    )


async def test_a_row_that_cannot_be_rendered_takes_down_nothing(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        api = server.api
        results = await api.post_events([created(api, cid, n) for n, cid in enumerate("abc")])
        assert {r["outcome"] for r in results} == {"applied"}
        headers = api.auth("supervisor", "sup1")
        response = await api.client.post(
            "/api/v1/views",
            json={"name": "All", "visibility": "tenant", "columns": COLUMNS},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        view = response.json()["id"]
        async with server.ws() as before:
            watched = await before.request({"type": "subscribe", "view": view, "limit": 10})
            assert watched["type"] == "snapshot" and watched["total"] == 3

            # A row written as no ingest of this server would (a copy of "b" as "d"):
            # its created_at is far out.
            table = m.conversations
            async with server.services.db.write() as conn:
                stored = (
                    await conn.execute(
                        select(table).where(table.c.tenant_id == "acme", table.c.id == "b")
                    )
                ).one()
                await conn.execute(
                    insert(table).values({**stored._mapping, "id": "d", "created_at": FAR})
                )
            # An event on it publishes the row to every process's windows.
            [enqueued] = await api.post_events(
                [api.event("routing.enqueued", "d", at(10), team="sales")]
            )
            assert enqueued["outcome"] == "applied", enqueued

            detail = await api.client.get("/api/v1/conversations/d", headers=headers)
            assert detail.status_code == 200, detail.text
            row = detail.json()["conversation"]
            assert row["created_at"] == "9999-12-31T23:59:59.000Z"
            assert (row["created_date"], row["created_time"]) == (None, None)

            rows = await api.client.get(
                f"/api/v1/views/{view}/rows", params={"limit": 10}, headers=headers
            )
            assert rows.status_code == 200, rows.text
            fresh = rows.json()["rows"]
            assert [r["id"] for r in fresh] == ["d", "c", "b", "a"]  # created_at, newest first
            by_id = {r["id"]: r for r in fresh}
            assert by_id["d"]["created_date"] is None and by_id["d"]["status"] == "queued"
            assert by_id["a"]["created_date"] is not None

            async with server.ws() as after:
                snapshot = await after.request({"type": "subscribe", "view": view, "limit": 10})
                assert snapshot["type"] == "snapshot", snapshot
                assert snapshot["rows"] == fresh

            # The client subscribed before still matches a fresh snapshot: it got the
            # row in a delta (or a resync and subscribed again).
            def matches() -> bool:
                rows = {r["id"]: r for r in watched["rows"]}
                for frame in before.frames:
                    if frame.get("sub") != watched["sub"] or frame["type"] != "delta":
                        continue
                    for gone in frame.get("remove", []):
                        rows.pop(gone, None)
                    for upsert in frame.get("upsert", []):
                        rows[upsert["id"]] = {**rows.get(upsert["id"], {}), **upsert}
                return sorted(rows.values(), key=lambda r: r["id"]) == sorted(
                    fresh, key=lambda r: r["id"]
                )

            resynced = [f for f in before.frames if f["type"] == "resync"]
            if not resynced:
                await before.wait(lambda f: f.get("sub") == watched["sub"] and matches())
            # The socket is still open and answers.
            pong = await before.request({"type": "ping"})
            assert pong["type"] == "pong"


async def test_a_window_that_cannot_be_flushed_resyncs_its_subscribers_only(backend, tmp_path):
    """Anything else that fails making a delta (here the tenant's stored time zone turns
    unreadable under a live view) ends that window's subscriptions with `resync`; the
    socket stays open, another tenant's subscriber goes on, and once the cause is gone
    a new subscribe matches /rows."""
    async with live_server(backend, tmp_path) as server:
        api = server.api
        await api.post_events([created(api, cid, n) for n, cid in enumerate("ab")])
        await api.post_events([created(api, "g", 0)], tenant="globex")
        view = {"columns": COLUMNS}
        async with server.ws() as acme, server.ws(tenant="globex") as globex:
            watched = await acme.request({"type": "subscribe", "view": view, "limit": 10})
            other = await globex.request({"type": "subscribe", "view": view, "limit": 10})
            assert watched["total"] == 2 and other["total"] == 1

            tenants = m.tenants
            async with server.services.db.write() as conn:
                await conn.execute(
                    update(tenants).where(tenants.c.id == "acme").values(timezone="No/Where")
                )
            server.services.tenants.forget("acme")
            # Every HTTP request reads the zone too: the event goes straight to ingest.
            [outcome] = await server.services.ingest.submit(
                "acme", [api.event("routing.enqueued", "a", at(10), team="sales")]
            )
            assert outcome.outcome == "applied", outcome
            resync = await acme.wait(lambda f: f["type"] == "resync")
            assert resync == {"type": "resync", "sub": watched["sub"], "reason": "server_error"}
            assert (await acme.request({"type": "ping"}))["type"] == "pong"

            await api.post_events(
                [api.event("routing.enqueued", "g", at(10), team="sales")], tenant="globex"
            )
            delta = await globex.wait(lambda f: f["type"] == "delta")
            assert delta["sub"] == other["sub"] and delta["upsert"][0]["status"] == "queued"

            async with server.services.db.write() as conn:
                await conn.execute(
                    update(tenants).where(tenants.c.id == "acme").values(timezone="Europe/Madrid")
                )
            server.services.tenants.forget("acme")
            again = await acme.request({"type": "subscribe", "view": view, "limit": 10})
            assert again["type"] == "snapshot", again
            assert [(r["id"], r["status"]) for r in again["rows"]] == [
                ("b", "new"),
                ("a", "queued"),
            ]
