"""`/ws` as docs/api.md describes it, over a real socket on both backends: the handshake
(token in the header or `?token=`, the Origin rule, subprotocols, no compression), a
token expiring while open (4401), malformed and oversized frames, subscribe to saved
and inline views, tenant and agent scope, roles, fetch/page, unsubscribe, count-only
subscriptions, deltas no larger than the change, and merged bursts.

Negative checks ("nothing arrives") are fenced: after the change that must not show,
a change that must show is posted and waited for; anything leaked would have come
before it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import msgpack
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server.core.auth import mint_token
from server.wire.protocol import MAX_FRAME_BYTES as WS_MAX_FRAME_BYTES
from tests.app_support import OTHER_TENANT, SECRET, TENANT
from tests.server_support import LiveServer, WsClient, live_server
from tests.support import wait_for

BASE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
JSON_PROTOCOL = "switchboard.v1.json"
MSGPACK_PROTOCOL = "switchboard.v1.msgpack"


def at(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def created(api, cid: str, seconds: float, channel: str = "chat") -> dict:
    return api.event(
        "conversation.created",
        cid,
        at(seconds),
        channel=channel,
        contact=f"+34911{abs(hash(cid)) % 1000000:06d}",
        customer={"name": f"Customer {cid}"},
    )


def offered(api, cid: str, seconds: float, agent: str, offer: str) -> dict:
    return api.event(
        "routing.offered", cid, at(seconds), agent_id=agent, offer_id=offer, expires_at=at(600)
    )


async def post(api, events: list[dict], tenant: str | None = None) -> list[dict]:
    results = await api.post_events(events, tenant=tenant)
    assert all(r["outcome"] == "applied" for r in results), results
    return results


def deltas(ws: WsClient, sub: str) -> list[dict]:
    return [f for f in ws.frames if f.get("type") == "delta" and f.get("sub") == sub]


async def delta_with(ws: WsClient, sub: str, cid: str) -> dict:
    """The first delta of `sub` that upserts `cid`."""
    return await ws.wait(
        lambda f: (
            f.get("type") == "delta"
            and f.get("sub") == sub
            and any(row["id"] == cid for row in f["upsert"])
        )
    )


def upserted(ws: WsClient, sub: str) -> list[str]:
    return [row["id"] for delta in deltas(ws, sub) for row in delta["upsert"]]


def contiguous(ws: WsClient, sub: str) -> bool:
    seqs = [delta["seq"] for delta in deltas(ws, sub)]
    return seqs == list(range(1, len(seqs) + 1))


async def subscribe(ws: WsClient, view, limit: int = 10) -> dict:
    snapshot = await ws.request({"type": "subscribe", "view": view, "limit": limit})
    assert snapshot["type"] == "snapshot", snapshot
    return snapshot


async def save_view(server: LiveServer, body: dict, user: str = "sup1") -> dict:
    api = server.api
    response = await api.client.post(
        "/api/v1/views", json=body, headers=api.auth("supervisor", user)
    )
    assert response.status_code == 201, response.text
    return response.json()


def ids(rows: list[dict]) -> list[str]:
    return [row["id"] for row in rows]


# --------------------------------------------------------------------------- handshake


async def refused(server: LiveServer, status: int, url: str | None = None, **kwargs) -> dict:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url or server.ws_url, subprotocols=[JSON_PROTOCOL], **kwargs):
            pass
    response = info.value.response
    assert response.status_code == status, (kwargs, response.status_code, response.body)
    return json.loads(response.body)["error"]


async def pong(socket, format: str = "json") -> dict:
    if format == "json":
        await socket.send(json.dumps({"type": "ping", "ref": "p"}))
        raw = await asyncio.wait_for(socket.recv(), 5)
        assert isinstance(raw, str)  # a text frame
        frame = json.loads(raw)
    else:
        await socket.send(msgpack.packb({"type": "ping", "ref": "p"}))
        raw = await asyncio.wait_for(socket.recv(), 5)
        assert isinstance(raw, bytes)  # a binary frame
        frame = msgpack.unpackb(raw)
    assert frame == {"type": "pong", "ref": "p"}
    return frame


async def test_handshake_tokens_origins_subprotocols_and_expiry(backend, tmp_path):
    allowed = "https://wall.example.com"
    async with live_server(
        backend, tmp_path, settings_changes={"allowed_origins": (allowed,)}
    ) as server:
        api = server.api

        def bearer(token: str) -> dict:
            return {"Authorization": f"Bearer {token}"}

        good = api.token("supervisor", "sup1")
        # A token that expires in 1-2 s (whole seconds), opened first, checked last.
        short = mint_token(SECRET, TENANT, "supervisor", "sup1", 2)
        expiring = await connect(
            server.ws_url, additional_headers=bearer(short), subprotocols=[JSON_PROTOCOL]
        )
        try:
            await pong(expiring)

            # Missing, bad, foreign-signed, expired: HTTP 401 before the upgrade.
            assert (await refused(server, 401))["code"] == "unauthorized"
            for headers in (
                bearer("garbage"),
                bearer(mint_token("another-secret-0123456789abcdef", TENANT, "admin", "x")),
                bearer(mint_token(SECRET, TENANT, "supervisor", "sup1", -30)),
                {"Authorization": f"Basic {good}"},
            ):
                await refused(server, 401, additional_headers=headers)
            await refused(server, 401, url=f"{server.ws_url}?token=garbage")

            # The token in the query string, as browsers send it.
            async with connect(
                f"{server.ws_url}?token={good}", subprotocols=[JSON_PROTOCOL]
            ) as socket:
                await pong(socket)

            # Origins: none (a program), the server's own, an allowed one; nothing else.
            port = server.url.rsplit(":", 1)[1]
            for origin in (f"http://127.0.0.1:{port}", allowed, f"{allowed}/"):
                async with connect(
                    server.ws_url,
                    additional_headers=bearer(good),
                    subprotocols=[JSON_PROTOCOL],
                    origin=origin,
                ) as socket:
                    await pong(socket)
            for origin in (
                "https://evil.example",
                f"http://127.0.0.1:{port}.evil.example",
                f"http://127.0.0.1:{int(port) + 1}",
                "https://wall.example.com.evil.example",
                "null",
            ):
                error = await refused(server, 403, additional_headers=bearer(good), origin=origin)
                assert error["code"] == "forbidden", origin

            # Both subprotocols; msgpack frames are binary, JSON frames text; no
            # per-message compression even though the client offers it.
            for protocol, format in ((JSON_PROTOCOL, "json"), (MSGPACK_PROTOCOL, "msgpack")):
                async with connect(
                    server.ws_url, additional_headers=bearer(good), subprotocols=[protocol]
                ) as socket:
                    assert socket.subprotocol == protocol
                    offered = socket.request.headers.get("Sec-WebSocket-Extensions", "")
                    assert "permessage-deflate" in offered
                    assert "Sec-WebSocket-Extensions" not in socket.response.headers
                    await pong(socket, format)

            # The short token runs out while the socket is open: closed with 4401.
            await asyncio.wait_for(expiring.wait_closed(), 5)
            assert expiring.close_code == 4401
        finally:
            await expiring.close()


# --------------------------------------------------------------------------- bad frames


async def test_malformed_frames_get_errors_and_oversized_ones_close_1009(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        async with server.ws() as ws:
            sent = [
                ("{not json", None, "malformed"),
                ("[1, 2]", None, "malformed"),
                ('"ping"', None, "malformed"),
                ('{"ref": "r-x"}', None, "malformed"),
                ('{"type": 5, "ref": "r-y"}', None, "malformed"),
                (b"\xc1\xc1", None, "malformed"),  # not msgpack either
                (msgpack.packb(["type", "ping"]), None, "malformed"),
                ('{"type": "bogus", "ref": "u1"}', "u1", "unknown_type"),
                ('{"type": "subscribe", "ref": "s1", "view": 5}', "s1", "invalid_field"),
                ('{"type": "subscribe", "ref": "s2", "view": {}, "limit": -1}', "s2",
                 "invalid_field"),
                ('{"type": "subscribe", "ref": "s3", "view": {}, "limit": "10"}', "s3",
                 "invalid_field"),
                ('{"type": "subscribe", "ref": "s4", "view": {"filters": [{"field": "colour",'
                 ' "op": "eq", "value": 1}]}}', "s4", "invalid_view"),
                ('{"type": "subscribe", "ref": "s5", "view": {"colour": 1}}', "s5",
                 "invalid_view"),
                ('{"type": "subscribe", "ref": "s6", "view": "v_nope"}', "s6", "not_found"),
                ('{"type": "subscribe", "ref": "s7", "view": "v\\u0000"}', "s7", "not_found"),
                ('{"type": "fetch", "ref": "f1", "sub": "s999"}', "f1", "unknown_subscription"),
                ('{"type": "fetch", "ref": "f2", "sub": ["s1"]}', "f2", "unknown_subscription"),
                ('{"type": "unsubscribe", "ref": "x1", "sub": {"a": 1}}', "x1",
                 "unknown_subscription"),
                # Lone surrogates no answer could echo: refused, and the socket lives on.
                ('{"type": "ping", "ref": "\\ud800"}', None, "malformed"),
                ('{"type": "subscribe", "ref": "s8", "view": {"name": "\\udfff"}}', None,
                 "malformed"),
            ]  # fmt: skip
            for raw, _, _ in sent:
                await ws.socket.send(raw)
            await ws.wait(
                lambda f: len([g for g in ws.frames if g["type"] == "error"]) >= len(sent)
            )
            errors = [f for f in ws.frames if f["type"] == "error"]
            assert [(f.get("ref"), f["code"]) for f in errors] == [
                (ref, code) for _, ref, code in sent
            ]
            assert all(isinstance(f["message"], str) and f["message"] for f in errors)
            # The socket is still open and answering; a surrogate pair is just text.
            assert (await ws.request({"type": "ping"}))["type"] == "pong"
            await ws.socket.send('{"type": "ping", "ref": "\\ud83d\\ude00"}')
            assert (await ws.wait(lambda f: f.get("ref") == "\U0001f600"))["type"] == "pong"
            # A frame just under the limit is read as usual.
            big = await ws.request({"type": "ping", "pad": "x" * (WS_MAX_FRAME_BYTES - 1000)})
            assert big["type"] == "pong"
            # One over it closes the socket with 1009.
            await ws.socket.send("x" * (WS_MAX_FRAME_BYTES + 1))
            await asyncio.wait_for(ws.socket.wait_closed(), 5)
            assert ws.socket.close_code == 1009

        async with server.ws(format="msgpack") as ws:
            await ws.socket.send(b"\xc1")
            await ws.socket.send(msgpack.packb({"ref": 1}))
            await ws.socket.send(msgpack.packb({"type": "nope", "ref": 2}))
            await ws.socket.send('{"type": "ping", "ref": 100000000000000000000000}')
            await ws.socket.send(msgpack.packb({"type": "ping", "ref": 3}))
            await ws.wait(lambda f: f.get("ref") == 3)
            assert [(f["type"], f.get("ref"), f.get("code")) for f in ws.frames] == [
                ("error", None, "malformed"),
                ("error", None, "malformed"),
                ("error", 2, "unknown_type"),
                ("pong", None, None),  # a ref msgpack cannot carry is not echoed
                ("pong", 3, None),
            ]
            assert (await ws.request({"type": "ping"}))["type"] == "pong"


# --------------------------------------------------------------------------- subscribe


async def test_subscribe_to_a_saved_view_and_an_inline_one(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        api = server.api
        await post(
            api,
            [
                created(api, "c1", 1),
                created(api, "c2", 2, "sms"),
                created(api, "c3", 3),
                created(api, "c4", 4, "sms"),
                created(api, "c5", 5),
            ],
        )
        definition = {
            "filters": [{"field": "channel", "op": "in", "value": ["chat"]}],
            "columns": ["customer_name", "channel"],
        }
        saved = await save_view(server, {"name": "Chats", **definition})
        others = await save_view(server, {"name": "Sup2's", **definition}, user="sup2")

        async with server.ws(format="msgpack") as ws:
            by_id = await subscribe(ws, saved["id"])
            inline = await subscribe(ws, definition)
            for snapshot, view in ((by_id, saved["id"]), (inline, definition)):
                assert snapshot["view"] == view
                assert snapshot["seq"] == 0 and snapshot["total"] == 3
                assert snapshot["columns"] == ["id", "customer_name", "channel"]
                assert ids(snapshot["rows"]) == ["c5", "c3", "c1"]
                for row in snapshot["rows"]:
                    assert set(row) == {"id", "version", "customer_name", "channel", "created_at"}
                    assert row["customer_name"] == f"Customer {row['id']}" and row["version"] == 1
            assert by_id["sub"] != inline["sub"]

            # Someone else's private view, or no view at all: not found.
            for view_id in (others["id"], "v_missing"):
                error = await ws.request({"type": "subscribe", "view": view_id})
                assert (error["type"], error["code"]) == ("error", "not_found")

            # A new chat enters both with all its columns; an SMS enters neither (fenced
            # by the next chat).
            await post(api, [created(api, "c6", 6), created(api, "c7", 7, "sms")])
            for snapshot in (by_id, inline):
                entered = await delta_with(ws, snapshot["sub"], "c6")
                assert entered["seq"] == 1
                assert entered["upsert"] == [
                    {
                        "id": "c6",
                        "version": 1,
                        "customer_name": "Customer c6",
                        "channel": "chat",
                        "created_at": at(6).replace("Z", ".000Z"),
                    }
                ]
                assert entered["remove"] == [] and entered["total"] == 4
            await post(api, [created(api, "c8", 8)])
            for snapshot in (by_id, inline):
                entered = await delta_with(ws, snapshot["sub"], "c8")
                assert (entered["seq"], entered["total"]) == (2, 5)
                assert upserted(ws, snapshot["sub"]) == ["c6", "c8"]

        # Roles without views: forbidden, by id and inline.
        for role in ("wallboard", "service"):
            async with server.ws(role=role, user="wb") as ws:
                for view in (saved["id"], definition):
                    error = await ws.request({"type": "subscribe", "view": view})
                    assert (error["type"], error["code"]) == ("error", "forbidden"), role
                assert not [f for f in ws.frames if f["type"] in ("snapshot", "delta")]


async def test_another_tenants_view_and_rows_stay_out_of_reach(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        api = server.api
        await post(api, [created(api, "acme-1", 1), created(api, "acme-2", 2)])
        shared = await save_view(server, {"name": "Acme all", "visibility": "tenant"})
        async with (
            server.ws() as acme,
            server.ws(tenant=OTHER_TENANT) as globex,
            server.ws(role="admin", user="adm", tenant=OTHER_TENANT) as globex_admin,
        ):
            watching = await subscribe(acme, shared["id"])
            assert ids(watching["rows"]) == ["acme-2", "acme-1"]
            for client in (globex, globex_admin):
                error = await client.request({"type": "subscribe", "view": shared["id"]})
                assert (error["type"], error["code"]) == ("error", "not_found")
            everything = await subscribe(globex, {})
            assert everything["rows"] == [] and everything["total"] == 0
            by_id = await subscribe(
                globex, {"filters": [{"field": "id", "op": "eq", "value": "acme-1"}]}
            )
            assert by_id["rows"] == [] and by_id["total"] == 0
            # acme's subscription is not globex's to fetch or end.
            for frame in (
                {"type": "fetch", "sub": watching["sub"], "limit": 5},
                {"type": "unsubscribe", "sub": watching["sub"]},
            ):
                error = await globex.request(frame)
                assert (error["type"], error["code"]) == ("error", "unknown_subscription")

            # acme changes reach acme only; the globex change that follows reaches globex.
            await post(
                api,
                [
                    created(api, "acme-3", 3),
                    api.event("ticket.linked", "acme-1", at(4), ticket_id="T-1"),
                ],
            )
            await delta_with(acme, watching["sub"], "acme-3")
            await post(api, [created(api, "globex-1", 5)], tenant=OTHER_TENANT)
            arrived = await delta_with(globex, everything["sub"], "globex-1")
            assert arrived["seq"] == 1 and arrived["total"] == 1
            assert upserted(globex, everything["sub"]) == ["globex-1"]
            assert deltas(globex, by_id["sub"]) == []
            seen = [
                row if isinstance(row, str) else row["id"]
                for frame in globex.frames + globex_admin.frames
                for key in ("rows", "upsert", "remove")
                for row in frame.get(key, ())
            ]
            assert seen == ["globex-1"]


async def test_an_agent_sees_only_what_it_handles_or_is_offered(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        api = server.api
        await post(
            api,
            [
                created(api, "mine", 1),
                created(api, "theirs", 2),
                created(api, "waiting", 3),
                api.event("routing.enqueued", "mine", at(10), team="sales"),
                api.event("routing.enqueued", "theirs", at(10), team="sales"),
                api.event("routing.enqueued", "waiting", at(10), team="sales"),
                offered(api, "mine", 11, "a1", "o1"),
                api.event("agent.accepted", "mine", at(12), agent_id="a1", offer_id="o1"),
                offered(api, "theirs", 13, "a2", "o2"),
            ],
        )
        shared = await save_view(server, {"name": "Everything", "visibility": "tenant"})
        async with server.ws(role="agent", user="a1") as agent, server.ws() as supervisor:
            everything = await subscribe(supervisor, {})
            assert ids(everything["rows"]) == ["waiting", "theirs", "mine"]
            inline = await subscribe(agent, {})
            saved = await subscribe(agent, shared["id"])
            for snapshot in (inline, saved):
                assert ids(snapshot["rows"]) == ["mine"] and snapshot["total"] == 1

            # Offered to a1: enters its view; declined: leaves it.
            await post(api, [offered(api, "waiting", 20, "a1", "o3")])
            for snapshot in (inline, saved):
                entered = await delta_with(agent, snapshot["sub"], "waiting")
                assert entered["total"] == 2 and entered["remove"] == []
                assert entered["upsert"][0]["status"] == "offered"
            await post(
                api,
                [
                    api.event("routing.offer_declined", "waiting", at(21), agent_id="a1",
                              offer_id="o3", reason="rejected"),
                ],
            )  # fmt: skip
            for snapshot in (inline, saved):
                sub = snapshot["sub"]
                left = await agent.wait(
                    lambda f, sub=sub: f.get("sub") == sub and "waiting" in f.get("remove", ())
                )
                assert left["upsert"] == [] and left["total"] == 1

            # Offered to a2 and a2's own changes: nothing for a1 (fenced by a new
            # conversation offered to a1).
            await post(
                api,
                [
                    offered(api, "waiting", 30, "a2", "o4"),
                    api.event("ticket.linked", "theirs", at(31), ticket_id="T-9"),
                    created(api, "fence", 40),
                    offered(api, "fence", 41, "a1", "o5"),
                ],
            )
            for snapshot in (inline, saved):
                await delta_with(agent, snapshot["sub"], "fence")
                assert upserted(agent, snapshot["sub"]) == ["waiting", "fence"]
                assert contiguous(agent, snapshot["sub"])
            assert "theirs" not in json.dumps(agent.frames)
            # The supervisor saw all of it.
            await delta_with(supervisor, everything["sub"], "fence")
            assert "theirs" in upserted(supervisor, everything["sub"])


# --------------------------------------------------------------------------- window


async def test_fetch_unsubscribe_and_count_only_subscriptions(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        api = server.api
        await post(api, [created(api, f"c{n:02d}", n) for n in range(10)])
        async with server.ws() as ws:
            first = await subscribe(ws, {"columns": ["customer_name"]}, limit=3)
            sub = first["sub"]
            assert ids(first["rows"]) == ["c09", "c08", "c07"] and first["total"] == 10

            page = await ws.request({"type": "fetch", "sub": sub, "limit": 4})
            assert (page["type"], page["sub"], page["seq"]) == ("page", sub, 0)
            assert ids(page["rows"]) == ["c06", "c05", "c04", "c03"]
            assert set(page["rows"][0]) == {"id", "version", "customer_name", "created_at"}

            # The window is now 7 rows: a new first row pushes c03 out.
            await post(api, [created(api, "c10", 10)])
            delta = await delta_with(ws, sub, "c10")
            assert (delta["seq"], delta["remove"], delta["total"]) == (1, ["c03"], 11)

            page = await ws.request({"type": "fetch", "sub": sub, "limit": 2})
            assert (page["type"], page["seq"]) == ("page", 1)  # a page is not a delta
            assert ids(page["rows"]) == ["c03", "c02"]
            await post(api, [created(api, "c11", 11)])
            delta = await delta_with(ws, sub, "c11")
            assert (delta["seq"], delta["remove"], delta["total"]) == (2, ["c02"], 12)

            # Unsubscribe: an `ok`, and no more deltas (fenced by another subscription).
            control = await subscribe(ws, {}, limit=2)
            answer = await ws.request({"type": "unsubscribe", "sub": sub})
            assert answer["type"] == "ok"
            await post(api, [created(api, "c12", 12)])
            await delta_with(ws, control["sub"], "c12")
            await post(api, [created(api, "c13", 13)])
            await delta_with(ws, control["sub"], "c13")
            assert [d["seq"] for d in deltas(ws, sub)] == [1, 2]
            error = await ws.request({"type": "fetch", "sub": sub, "limit": 1})
            assert (error["type"], error["code"]) == ("error", "unknown_subscription")
            error = await ws.request({"type": "unsubscribe", "sub": sub})
            assert (error["type"], error["code"]) == ("error", "unknown_subscription")

            # limit 0: the count alone. Deltas carry `total` only, and only when it moves.
            new_ones = {"filters": [{"field": "status", "op": "eq", "value": "new"}]}
            count = await subscribe(ws, new_ones, limit=0)
            assert count["rows"] == [] and count["total"] == 14
            error = await ws.request({"type": "fetch", "sub": count["sub"], "limit": 0})
            assert (error["type"], error["code"]) == ("error", "invalid_field")

            def counted() -> list[tuple]:
                return [
                    (d["seq"], d["total"], d["upsert"], d["remove"])
                    for d in deltas(ws, count["sub"])
                ]

            await post(api, [created(api, "c14", 14)])
            await wait_for(lambda: counted() == [(1, 15, [], [])], 10)
            # A change that keeps the count sends nothing (fenced by the next change);
            # one that leaves the view moves it down.
            await post(api, [api.event("ticket.linked", "c01", at(20), ticket_id="T-1")])
            await post(api, [api.event("routing.enqueued", "c02", at(21), team="sales")])
            await wait_for(lambda: len(counted()) >= 2, 10)
            assert counted() == [(1, 15, [], []), (2, 14, [], [])]


# --------------------------------------------------------------------------- deltas


async def test_deltas_carry_only_what_changed_and_bursts_merge(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        api = server.api
        await post(api, [created(api, "c1", 1), created(api, "c2", 2)])
        view = {"columns": ["customer_name", "status", "team", "ticket_id", "agent_name"]}
        async with server.ws(format="msgpack") as ws:
            snapshot = await subscribe(ws, view)
            sub = snapshot["sub"]
            created_at = snapshot["rows"][1]["created_at"]
            assert snapshot["rows"][1]["id"] == "c1"

            await post(api, [api.event("ticket.linked", "c1", at(10), ticket_id="T-1")])
            delta = await delta_with(ws, sub, "c1")
            assert delta["upsert"] == [
                {"id": "c1", "version": 2, "created_at": created_at, "ticket_id": "T-1"}
            ]
            assert (delta["remove"], delta["total"]) == ([], 2)

            await post(api, [api.event("routing.enqueued", "c1", at(11), team="sales")])
            delta = await ws.wait(
                lambda f: f.get("sub") == sub and f.get("seq") == 2 and f["type"] == "delta"
            )
            assert delta["upsert"] == [
                {"id": "c1", "version": 3, "created_at": created_at, "status": "queued",
                 "team": "sales"}
            ]  # fmt: skip

            await post(api, [created(api, "c3", 3)])
            delta = await delta_with(ws, sub, "c3")
            assert set(delta["upsert"][0]) == {"id", "version", "created_at", *view["columns"]}

            # 200 changes to c1 at once (20 concurrent posts of 10): merged upserts,
            # versions going up, the last one carrying the final version and its ticket.
            events = [
                api.event("ticket.linked", "c1", at(20 + n / 1000), ticket_id=f"B-{n}")
                for n in range(200)
            ]
            batches = [events[n : n + 10] for n in range(0, 200, 10)]
            results = await asyncio.gather(*(post(api, batch) for batch in batches))
            ticket_at = {
                result["version"]: event["data"]["ticket_id"]
                for result, event in zip(
                    [r for batch in results for r in batch], events, strict=True
                )
            }
            final = max(ticket_at)
            assert sorted(ticket_at) == list(range(4, 204))
            await ws.wait(
                lambda f: (
                    f.get("sub") == sub
                    and any(row["version"] == final for row in f.get("upsert", ()))
                )
            )
            await post(api, [created(api, "fence", 30)])
            await delta_with(ws, sub, "fence")
            burst = [
                row
                for delta in deltas(ws, sub)
                for row in delta["upsert"]
                if row["id"] == "c1" and row["version"] > 3
            ]
            versions = [row["version"] for row in burst]
            assert versions == sorted(set(versions)), versions  # never down, never twice
            assert versions[-1] == final
            assert len(burst) < 200, f"{len(burst)} upserts for 200 changes: not merged"
            assert all(row["ticket_id"] == ticket_at[row["version"]] for row in burst)
            assert all(set(row) == {"id", "version", "created_at", "ticket_id"} for row in burst)
            # Every change here touched one row: every delta is one upsert, no more.
            assert all(
                len(delta["upsert"]) == 1 and delta["remove"] == [] for delta in deltas(ws, sub)
            )
            assert contiguous(ws, sub)
