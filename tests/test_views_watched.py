"""Saved views under their watchers (server/live/watched.py, docs/security.md): a
subscriber by a saved view's id gets `resync` (view_changed) when the view's definition
is changed, `unsubscribed` (view_deleted) when it is deleted and `unsubscribed`
(forbidden) when it turns private under a user who is not its owner; across processes
too, and even when the bus did not carry the news. `columns` with a saved view's id adds
the page's extra columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.storage import models as m
from tests.app_support import prepare_database
from tests.live_model import ClientModel
from tests.server_support import WsClient, live_server, spawned_server
from tests.support import wait_for

BASE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CHATS = [{"field": "channel", "op": "in", "value": ["chat"]}]
SMS = [{"field": "channel", "op": "in", "value": ["sms"]}]


def created(api, cid: str, seconds: float, channel: str) -> dict:
    occurred = (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    contact = f"{cid}@example.com" if channel == "chat" else f"+34911{seconds:06.0f}"
    return api.event(
        "conversation.created",
        cid,
        occurred,
        channel=channel,
        contact=contact,
        customer={"name": f"Customer {cid}"},
    )


async def traffic(api, prefix: str, start: int, count: int = 4) -> None:
    channels = ("chat", "sms")
    events = [created(api, f"{prefix}{n}", start + n, channels[n % 2]) for n in range(count)]
    results = await api.post_events(events)
    assert all(r["outcome"] == "applied" for r in results), results


async def shared_view(api, filters: list, user: str = "sup1") -> dict:
    body = {
        "name": "Chats",
        "visibility": "tenant",
        "filters": filters,
        "columns": ["customer_name", "channel"],
    }
    response = await api.client.post(
        "/api/v1/views", json=body, headers=api.auth("supervisor", user)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def patch(api, view_id: str, body: dict, user: str = "sup1") -> dict:
    response = await api.client.patch(
        f"/api/v1/views/{view_id}", json=body, headers=api.auth("supervisor", user)
    )
    assert response.status_code == 200, response.text
    return response.json()


async def delete(api, view_id: str, user: str = "sup1") -> None:
    response = await api.client.delete(
        f"/api/v1/views/{view_id}", headers=api.auth("supervisor", user)
    )
    assert response.status_code == 200, response.text


def frames_of(ws: WsClient, sub: str, kind: str | None = None) -> list[dict]:
    return [f for f in ws.frames if f.get("sub") == sub and (kind is None or f["type"] == kind)]


async def follows_fresh(ws: WsClient, fresh: WsClient, snapshot: dict, view_id: str) -> None:
    """The subscription's snapshot and deltas come to what a fresh snapshot says."""

    async def same() -> bool:
        model = ClientModel(snapshot, [{"field": "created_at", "dir": "desc"}])
        model.feed(ws.frames)
        assert not model.errors, model.errors
        answer = await fresh.request({"type": "subscribe", "view": view_id})
        await fresh.send({"type": "unsubscribe", "sub": answer["sub"]})
        return model.ordered() == answer["rows"] and model.total == answer["total"]

    await wait_for(same, 10, message="snapshot and deltas equal a fresh snapshot")


async def test_a_patch_resyncs_watchers_to_the_new_definition(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        api = server.api
        await traffic(api, "a", 0)
        view = await shared_view(api, CHATS)
        async with server.ws("supervisor", "sup2") as ws, server.ws("supervisor", "sup3") as fresh:
            first = await ws.request({"type": "subscribe", "view": view["id"]})
            assert first["type"] == "snapshot", first
            assert {row["channel"] for row in first["rows"]} == {"chat"}
            inline = await ws.request({"type": "subscribe", "view": {"filters": CHATS}})
            # The owner narrows (here: moves) the filter and renames it.
            await patch(api, view["id"], {"filters": SMS, "name": "Texts"})
            resync = await ws.wait(lambda f: f.get("type") == "resync")
            assert resync == {"type": "resync", "sub": first["sub"], "reason": "view_changed"}
            # Subscribing again gives the new definition's snapshot, and it stays exact.
            second = await ws.request({"type": "subscribe", "view": view["id"]})
            assert {row["channel"] for row in second["rows"]} == {"sms"}
            assert second["total"] == 2
            await traffic(api, "b", 100)
            await follows_fresh(ws, fresh, second, view["id"])
            # The old subscription is over: nothing came to it after the resync.
            assert frames_of(ws, first["sub"], "delta") == []
            # A subscriber by inline definition is unaffected.
            assert frames_of(ws, inline["sub"], "resync") == []
            assert {
                r["id"] for f in frames_of(ws, inline["sub"], "delta") for r in f["upsert"]
            } == {
                "b0",
                "b2",
            }
            # A change that leaves the definition as it was (visibility to tenant
            # again, same filters) does not resync.
            await patch(api, view["id"], {"visibility": "tenant"})
            await traffic(api, "c", 200)
            await follows_fresh(ws, fresh, second, view["id"])
            assert frames_of(ws, second["sub"], "resync") == []


async def test_a_delete_ends_watchers_and_no_delta_follows(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        api = server.api
        await traffic(api, "a", 0)
        view = await shared_view(api, CHATS)
        async with server.ws("supervisor", "sup2") as ws:
            snapshot = await ws.request({"type": "subscribe", "view": view["id"]})
            await delete(api, view["id"])
            over = await ws.wait(lambda f: f.get("type") == "unsubscribed")
            assert over == {
                "type": "unsubscribed",
                "sub": snapshot["sub"],
                "reason": "view_deleted",
            }
            await traffic(api, "b", 100)
            # The socket goes on (a ping answers after the new rows' news) and the
            # ended subscription gets nothing.
            inline = await ws.request({"type": "subscribe", "view": {"filters": CHATS}})
            await traffic(api, "c", 200)
            await ws.wait(lambda f: f.get("sub") == inline["sub"] and f["type"] == "delta")
            assert frames_of(ws, snapshot["sub"], "delta") == []
            unknown = await ws.request({"type": "unsubscribe", "sub": snapshot["sub"]})
            assert unknown["code"] == "unknown_subscription"


async def test_a_view_turned_private_ends_other_watchers_not_its_owner(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        api = server.api
        await traffic(api, "a", 0)
        view = await shared_view(api, CHATS)
        async with (
            server.ws("supervisor", "sup1") as owner,
            server.ws("supervisor", "sup2") as other,
            server.ws("agent", "ag1") as agent,
        ):
            mine = await owner.request({"type": "subscribe", "view": view["id"]})
            theirs = await other.request({"type": "subscribe", "view": view["id"]})
            agents = await agent.request({"type": "subscribe", "view": view["id"]})
            await patch(api, view["id"], {"visibility": "private"})
            over = await other.wait(lambda f: f.get("type") == "unsubscribed")
            assert over == {"type": "unsubscribed", "sub": theirs["sub"], "reason": "forbidden"}
            over = await agent.wait(lambda f: f.get("type") == "unsubscribed")
            assert over == {"type": "unsubscribed", "sub": agents["sub"], "reason": "forbidden"}
            # The owner keeps it, and its deltas.
            await traffic(api, "b", 100)
            await owner.wait(lambda f: f.get("sub") == mine["sub"] and f["type"] == "delta")
            assert [f for f in owner.frames if f.get("type") in ("resync", "unsubscribed")] == []
            # The others cannot subscribe to it again.
            refused = await other.request({"type": "subscribe", "view": view["id"]})
            assert refused["code"] == "not_found"
            # Its owner's definition change resyncs the owner.
            await patch(api, view["id"], {"filters": SMS})
            resync = await owner.wait(lambda f: f.get("type") == "resync")
            assert resync == {"type": "resync", "sub": mine["sub"], "reason": "view_changed"}


async def test_subscribe_by_id_with_extra_columns(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        api = server.api
        await traffic(api, "a", 0)
        view = await shared_view(api, CHATS)
        async with server.ws("supervisor", "sup2") as ws:
            snapshot = await ws.request(
                {"type": "subscribe", "view": view["id"], "columns": ["has_recording", "channel"]}
            )
            assert snapshot["columns"] == ["id", "customer_name", "channel", "has_recording"]
            assert all(row["has_recording"] is False for row in snapshot["rows"])
            await traffic(api, "b", 100)
            delta = await ws.wait(lambda f: f.get("type") == "delta" and f["upsert"])
            assert all("has_recording" in row for row in delta["upsert"])
            for columns, wanted in (
                (["nope"], "unknown column 'nope'"),
                ("has_recording", "must be a list"),
                ([3], "must be a list of column names"),
            ):
                refused = await ws.request(
                    {"type": "subscribe", "view": view["id"], "columns": columns}
                )
                assert refused["type"] == "error" and refused["code"] == "invalid_view", refused
                assert wanted in refused["message"]
            refused = await ws.request(
                {"type": "subscribe", "view": {"filters": CHATS}, "columns": ["has_recording"]}
            )
            assert refused["code"] == "invalid_field" and "columns" in refused["message"]


async def test_watchers_on_another_process_follow(backend, tmp_path):
    """Two server processes: the PATCH on one reaches a watcher on the other over the
    bus (Redis); on SQLite with its memory bus no news crosses processes, and the
    watched views' check against the database still gets there."""
    await prepare_database(backend.database_url)
    data = tmp_path / "data"
    async with (
        spawned_server(backend, data) as one,
        spawned_server(backend, data) as two,
    ):
        await traffic(one.api, "a", 0)
        view = await shared_view(one.api, CHATS)
        gone = await shared_view(one.api, CHATS)
        async with two.ws("supervisor", "sup2") as ws, two.ws("supervisor", "sup3") as fresh:
            first = await ws.request({"type": "subscribe", "view": view["id"]})
            doomed = await ws.request({"type": "subscribe", "view": gone["id"]})
            await patch(one.api, view["id"], {"filters": SMS})
            resync = await ws.wait(lambda f: f.get("type") == "resync")
            assert resync == {"type": "resync", "sub": first["sub"], "reason": "view_changed"}
            second = await ws.request({"type": "subscribe", "view": view["id"]})
            assert {row["channel"] for row in second["rows"]} == {"sms"}
            await traffic(one.api, "b", 100)
            await follows_fresh(ws, fresh, second, view["id"])
            await delete(one.api, gone["id"])
            over = await ws.wait(lambda f: f.get("type") == "unsubscribed")
            assert over == {"type": "unsubscribed", "sub": doomed["sub"], "reason": "view_deleted"}


async def test_a_change_whose_news_never_came_is_found_in_the_database(backend, tmp_path):
    """The bus can lose news (an outage, a full outbox): the views watched in a process
    are read back from the database, so the watcher follows all the same."""
    async with live_server(backend, tmp_path) as server:
        api = server.api
        await traffic(api, "a", 0)
        view = await shared_view(api, CHATS)
        gone = await shared_view(api, CHATS)
        hidden = await shared_view(api, CHATS)
        async with server.ws("supervisor", "sup2") as ws:
            changed = await ws.request({"type": "subscribe", "view": view["id"]})
            deleted = await ws.request({"type": "subscribe", "view": gone["id"]})
            private = await ws.request({"type": "subscribe", "view": hidden["id"]})
            # Written straight to the database, as a PATCH whose news was lost.
            table = m.views
            async with server.services.db.write() as conn:
                await conn.execute(
                    table.update().where(table.c.id == view["id"]).values(filters=SMS)
                )
                await conn.execute(table.delete().where(table.c.id == gone["id"]))
                await conn.execute(
                    table.update().where(table.c.id == hidden["id"]).values(visibility="private")
                )
            ended = {}

            def all_ended() -> bool:
                for f in ws.frames:
                    if f.get("type") in ("resync", "unsubscribed"):
                        ended[f["sub"]] = (f["type"], f["reason"])
                return len(ended) == 3

            await wait_for(all_ended, 10, message="the watchers followed the database")
            assert ended == {
                changed["sub"]: ("resync", "view_changed"),
                deleted["sub"]: ("unsubscribed", "view_deleted"),
                private["sub"]: ("unsubscribed", "forbidden"),
            }
