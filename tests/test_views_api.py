"""Saved views over HTTP (/api/v1/views, docs/api.md), on both
backends: create, list, get, patch and delete with private and tenant visibility and
ownership; validation that names the field; `id` always a column; roles; tenant
isolation; and GET /api/v1/views/{id}/rows paged with a keyset cursor, in the same
rows and order as a websocket snapshot, an agent seeing only its own conversations."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

from server.live.definitions import DEFAULT_COLUMNS
from server.wire.rows import COLUMNS
from tests.app_support import OTHER_TENANT
from tests.server_support import live_server

BASE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CHANNELS = ("chat", "whatsapp", "sms")


def at(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def created(api, cid: str, seconds: float, channel: str = "chat", name: str = "") -> dict:
    return api.event(
        "conversation.created",
        cid,
        at(seconds),
        channel=channel,
        contact=f"+3491100{len(cid):02d}{abs(hash(cid)) % 1000:03d}",
        customer={"name": name or f"Customer {cid}"},
    )


async def create_view(api, body: dict, role: str = "supervisor", user: str = "sup1"):
    return await api.client.post("/api/v1/views", json=body, headers=api.auth(role, user))


async def created_view(api, body: dict, role: str = "supervisor", user: str = "sup1") -> dict:
    response = await create_view(api, body, role, user)
    assert response.status_code == 201, response.text
    return response.json()


async def listed(api, role: str = "supervisor", user: str = "sup1", tenant=None) -> set[str]:
    response = await api.client.get("/api/v1/views", headers=api.auth(role, user, tenant))
    assert response.status_code == 200, response.text
    return {view["id"] for view in response.json()["views"]}


def error_of(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()["error"]


# --------------------------------------------------------------------------- CRUD


async def test_create_list_get_patch_delete_with_visibility_and_ownership(api):
    mine = {
        "name": "Unanswered WhatsApp today",
        "filters": [
            {"field": "channel", "op": "in", "value": ["whatsapp"]},
            {"field": "state", "op": "in", "value": ["dropped", "queue_timeout"]},
            {"field": "created_at", "op": "within", "value": "today"},
        ],
        "columns": ["id", "customer_name", "created_time", "state", "agent_name"],
        "sort": [{"field": "created_at", "dir": "desc"}],
        "visibility": "private",
    }
    response = await create_view(api, mine)
    assert response.status_code == 201, response.text
    private = response.json()
    assert private["id"].startswith("v_")
    assert {k: private[k] for k in mine} == mine
    assert private["owner"] == "sup1"
    shared = await created_view(api, {"name": "Everything", "visibility": "tenant"})
    assert shared["visibility"] == "tenant" and shared["id"] != private["id"]
    assert shared["filters"] == [] and shared["columns"] == list(DEFAULT_COLUMNS)
    other = await created_view(api, {"name": "Sup2's own"}, user="sup2")
    assert other["visibility"] == "private"  # the default

    # Lists: one's own private views and the shared ones; an agent only shared ones.
    assert await listed(api, user="sup1") == {private["id"], shared["id"]}
    assert await listed(api, user="sup2") == {shared["id"], other["id"]}
    assert await listed(api, role="admin", user="adm") == {shared["id"]}
    assert await listed(api, role="agent", user="sup1") == {shared["id"]}

    # Get.
    got = await api.client.get(
        f"/api/v1/views/{private['id']}", headers=api.auth("supervisor", "sup1")
    )
    assert got.status_code == 200 and got.json() == private
    for role, user, view, status in [
        ("supervisor", "sup2", private, 404),
        ("supervisor", "sup2", shared, 200),
        ("agent", "a1", shared, 200),
        ("agent", "a1", private, 404),
        ("agent", "sup1", private, 404),  # an agent never reads private views
        ("admin", "adm", private, 404),
    ]:
        response = await api.client.get(f"/api/v1/views/{view['id']}", headers=api.auth(role, user))
        assert response.status_code == status, (role, user, view["name"], response.text)
    for path in ("/api/v1/views/v_nope", "/api/v1/views/v%00", "/api/v1/views/%00/rows"):
        missing = await api.client.get(path, headers=api.auth("supervisor", "sup1"))
        assert error_of(missing, 404)["code"] == "not_found", path
    for method in ("PATCH", "DELETE"):
        missing = await api.client.request(
            method, "/api/v1/views/v%00", json={"name": "x"}, headers=api.auth("admin", "adm")
        )
        assert error_of(missing, 404)["code"] == "not_found", method

    # Patch: the owner or an admin; another supervisor 403 on a shared view, 404 on a
    # private one (it cannot know it exists); an agent never.
    async def patch(view, body, role="supervisor", user="sup1"):
        return await api.client.patch(
            f"/api/v1/views/{view['id']}", json=body, headers=api.auth(role, user)
        )

    assert error_of(await patch(shared, {"name": "Hijacked"}, user="sup2"), 403)["code"] == (
        "forbidden"
    )
    assert error_of(await patch(private, {"name": "Hijacked"}, user="sup2"), 404)["code"] == (
        "not_found"
    )
    assert (await patch(shared, {"name": "Hijacked"}, role="agent", user="a1")).status_code == 403
    renamed = await patch(private, {"name": "Renamed", "columns": ["state"]})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Renamed"
    assert renamed.json()["columns"] == ["id", "state"]
    assert renamed.json()["filters"] == mine["filters"]  # untouched by the patch
    by_admin = await patch(
        shared, {"visibility": "tenant", "name": "Admin renamed"}, "admin", "adm"
    )
    assert by_admin.status_code == 200, by_admin.text
    # A refused patch changes nothing.
    refused = await patch(private, {"filters": [{"field": "colour", "op": "eq", "value": "x"}]})
    assert error_of(refused, 422)["field"] == "filters[0].field"
    stored = await api.client.get(
        f"/api/v1/views/{private['id']}", headers=api.auth("supervisor", "sup1")
    )
    assert stored.json()["name"] == "Renamed" and stored.json()["filters"] == mine["filters"]
    stored = await api.client.get(
        f"/api/v1/views/{shared['id']}", headers=api.auth("supervisor", "sup2")
    )
    assert stored.json()["name"] == "Admin renamed"

    # Delete: the same rules.
    async def delete(view, role="supervisor", user="sup1"):
        return await api.client.delete(f"/api/v1/views/{view['id']}", headers=api.auth(role, user))

    assert (await delete(shared, user="sup2")).status_code == 403
    assert (await delete(private, user="sup2")).status_code == 404
    assert (await delete(shared, role="agent", user="a1")).status_code == 403
    assert (await delete(private)).status_code == 200
    assert (await delete(private)).status_code == 404
    assert (await delete(shared, role="admin", user="adm")).status_code == 200
    assert await listed(api, user="sup1") == set()
    assert await listed(api, user="sup2") == {other["id"]}


# --------------------------------------------------------------------------- validation


async def test_an_invalid_view_is_422_naming_the_field_and_id_is_always_a_column(api):
    def view(**changes) -> dict:
        return {"name": "v", "filters": [], **changes}

    cases = [
        # (body, the field named, a word the message must carry)
        (view(filters=[{"field": "colour", "op": "eq", "value": "red"}]), "filters[0].field",
         "colour"),
        (view(filters=[{"field": "channel", "op": "in", "value": ["chat"]},
                       {"field": "channel", "op": "gt", "value": "chat"}]), "filters[1].op", "gt"),
        (view(filters=[{"field": "customer_name", "op": "within", "value": "today"}]),
         "filters[0].op", "within"),
        (view(filters=[{"field": "csat", "op": "contains", "value": "5"}]), "filters[0].op",
         "contains"),
        (view(filters=[{"field": "channel", "op": "in", "value": ["fax"]}]), "filters[0].value",
         "call"),
        (view(filters=[{"field": "csat", "op": "gte", "value": "five"}]), "filters[0].value",
         "number"),
        (view(filters=[{"field": "created_at", "op": "within", "value": "last_century"}]),
         "filters[0].value", "today"),
        (view(filters=[{"field": "created_date", "op": "eq", "value": "2026-02-30"}]),
         "filters[0].value", "date"),
        (view(filters=[{"field": "state", "op": "eq", "value": "x", "extra": 1}]),
         "filters[0].extra", "unknown"),
        (view(filters={"field": "state"}), "filters", "list"),
        (view(columns=["id", "colour"]), "columns", "colour"),
        (view(columns="id"), "columns", "list"),
        (view(sort=[{"field": "customer_name"}]), "sort[0].field", "created_at"),
        (view(sort=[{"field": "created_at", "dir": "up"}]), "sort[0].dir", "desc"),
        (view(colour="red"), "colour", "unknown"),
        (view(visibility="public"), "visibility", "tenant"),
        ({"filters": []}, "name", "name"),
        (view(name="a\x00b"), "name", "NUL"),
    ]  # fmt: skip
    for body, field, word in cases:
        response = await create_view(api, body)
        error = error_of(response, 422)
        assert error["field"] == field, (body, error)
        assert field in error["message"] and word in error["message"], (body, error)
    assert await listed(api) == set()
    # A valid view over the same fields is accepted (the refusals above are the values).
    ok = await create_view(
        api,
        view(
            filters=[
                {"field": "channel", "op": "in", "value": ["chat"]},
                {"field": "csat", "op": "gte", "value": 4},
                {"field": "created_date", "op": "eq", "value": "2026-02-28"},
                {"field": "customer_name", "op": "contains", "value": "ann"},
            ],
            sort=[{"field": "channel"}, {"field": "created_at", "dir": "desc"}],
        ),
    )
    assert ok.status_code == 201, ok.text

    # `id` is always a column, and the first.
    for columns, expected in [
        (["state", "customer_name"], ["id", "state", "customer_name"]),
        (["state", "id", "team"], ["id", "state", "team"]),
        (["id"], ["id"]),
        ([], ["id"]),
    ]:
        view = await created_view(api, {"name": "c", "columns": columns})
        assert view["columns"] == expected, columns
        stored = await api.client.get(
            f"/api/v1/views/{view['id']}", headers=api.auth("supervisor", "sup1")
        )
        assert stored.json()["columns"] == expected
    default = await created_view(api, {"name": "d"})
    assert default["columns"][0] == "id"


# --------------------------------------------------------------------------- roles, tenants


async def test_roles_and_tenants(api):
    shared = await created_view(api, {"name": "Acme shared", "visibility": "tenant"})
    private = await created_view(api, {"name": "Acme private"})
    vid = shared["id"]
    calls = [
        ("GET", "/api/v1/views", None),
        ("POST", "/api/v1/views", {"name": "x"}),
        ("GET", f"/api/v1/views/{vid}", None),
        ("PATCH", f"/api/v1/views/{vid}", {"name": "x"}),
        ("DELETE", f"/api/v1/views/{vid}", None),
        ("GET", f"/api/v1/views/{vid}/rows", None),
    ]
    for role in ("wallboard", "service"):
        for method, path, body in calls:
            response = await api.client.request(method, path, json=body, headers=api.auth(role))
            assert error_of(response, 403)["code"] == "forbidden", (role, method, path)
    for method, path, body in calls:
        response = await api.client.request(method, path, json=body)
        assert response.status_code == 401, (method, path)
    response = await create_view(api, {"name": "x"}, role="agent", user="a1")
    assert error_of(response, 403)["code"] == "forbidden"

    # Another tenant: acme's views are not there at all (404), whatever the role.
    for role, user in (("supervisor", "sup1"), ("admin", "adm"), ("agent", "a1")):
        assert await listed(api, role, user, tenant=OTHER_TENANT) == set()
        headers = api.auth(role, user, OTHER_TENANT)
        for view in (shared, private):
            for method, suffix, body in [
                ("GET", "", None),
                ("GET", "/rows", None),
                ("PATCH", "", {"name": "taken over"}),
                ("DELETE", "", None),
            ]:
                response = await api.client.request(
                    method, f"/api/v1/views/{view['id']}{suffix}", json=body, headers=headers
                )
                expected = 403 if role == "agent" and method != "GET" else 404
                assert response.status_code == expected, (role, method, suffix, response.text)
    # globex's own view with acme's id-space does not collide, and acme's are intact.
    theirs = await created_view(
        api, {"name": "Globex", "visibility": "tenant"}, role="admin", user="adm"
    )
    assert theirs["id"] not in (shared["id"], private["id"])
    assert await listed(api, user="sup1") == {shared["id"], private["id"], theirs["id"]}
    for view in (shared, private):
        stored = await api.client.get(
            f"/api/v1/views/{view['id']}", headers=api.auth("supervisor", "sup1")
        )
        assert stored.status_code == 200 and stored.json() == view


# --------------------------------------------------------------------------- rows


async def test_rows_page_with_a_keyset_cursor_like_the_websocket_snapshot(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        api = server.api
        # 25 conversations over 3 channels; several share a created_at, so that the
        # order leans on the `id` tie-break.
        spec = [(f"c{n:02d}", (n // 3) * 60, CHANNELS[n % 3]) for n in range(25)]
        results = await api.post_events([created(api, cid, s, ch) for cid, s, ch in spec])
        assert all(r["outcome"] == "applied" for r in results), results
        # 3 globex conversations that must never show up.
        await api.post_events([created(api, f"g{n}", n) for n in range(3)], tenant=OTHER_TENANT)
        sort = [{"field": "channel", "dir": "asc"}, {"field": "created_at", "dir": "desc"}]
        view = await created_view(
            api,
            {
                "name": "All by channel",
                "visibility": "tenant",
                "columns": ["customer_name", "state"],
                "sort": sort,
            },
        )
        # channel asc, created_at desc, then id asc (the first key's direction).
        expected = [
            cid for cid, _, _ in sorted(spec, key=lambda item: (item[2], -item[1], item[0]))
        ]
        headers = api.auth("supervisor", "sup1")
        path = f"/api/v1/views/{view['id']}/rows"

        whole = await api.client.get(path, params={"limit": 100}, headers=headers)
        assert whole.status_code == 200, whole.text
        whole = whole.json()
        assert [row["id"] for row in whole["rows"]] == expected
        assert whole["total"] == 25 and whole["cursor"] is None
        first = whole["rows"][0]
        assert set(first) == {"id", "version", "customer_name", "state", "channel", "created_at"}
        assert first["customer_name"] == f"Customer {first['id']}" and first["version"] == 1

        pages, cursor, cursors = [], None, []
        while True:
            params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            response = await api.client.get(path, params=params, headers=headers)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["total"] == 25
            pages.append(body["rows"])
            cursor = body["cursor"]
            if cursor is None:
                break
            cursors.append(cursor)
        assert [len(p) for p in pages] == [7, 7, 7, 4]
        assert [row for p in pages for row in p] == whole["rows"]

        # The same view over the websocket, with the same limit: the same rows in order.
        async with server.ws() as ws:
            for limit, rows in ((7, pages[0]), (100, whole["rows"])):
                snapshot = await ws.request(
                    {"type": "subscribe", "view": view["id"], "limit": limit}
                )
                assert snapshot["type"] == "snapshot", snapshot
                assert snapshot["rows"] == rows and snapshot["total"] == 25
            inline = await ws.request(
                {
                    "type": "subscribe",
                    "limit": 7,
                    "view": {"sort": sort, "columns": view["columns"]},
                }
            )
            assert inline["rows"] == pages[0]
            # /rows reads only the columns it shows and converts them itself: every
            # column must come out as the websocket (wire_row) makes it.
            every = await created_view(
                api, {"name": "Every column", "visibility": "tenant", "columns": list(COLUMNS)}
            )
            response = await api.client.get(
                f"/api/v1/views/{every['id']}/rows", params={"limit": 10}, headers=headers
            )
            assert response.status_code == 200, response.text
            snapshot = await ws.request({"type": "subscribe", "view": every["id"], "limit": 10})
            assert set(snapshot["rows"][0]) == {"version", *COLUMNS}
            assert response.json()["rows"] == snapshot["rows"]

        # Cursors are checked: tampered, truncated, or one of another view's order.
        other = await created_view(api, {"name": "Default order", "visibility": "tenant"})
        other_cursor = (
            await api.client.get(f"/api/v1/views/{other['id']}/rows", params={"limit": 1},
                                 headers=headers)
        ).json()["cursor"]  # fmt: skip
        decoded = json.loads(base64.urlsafe_b64decode(cursors[0] + "=" * (-len(cursors[0]) % 4)))
        tampered = dict(decoded, created_at="yesterday")
        forged = base64.urlsafe_b64encode(json.dumps(tampered).encode()).decode().rstrip("=")
        for bad in (forged, cursors[0][:-3], "not-a-cursor!", "e30", other_cursor, "%00"):
            response = await api.client.get(
                path, params={"limit": 7, "cursor": bad}, headers=headers
            )
            assert error_of(response, 400)["code"] == "invalid_cursor", bad
        for limit in ("0", "-1", "abc", "1001", "\u00b2", "9" * 5000):
            response = await api.client.get(path, params={"limit": limit}, headers=headers)
            assert error_of(response, 422)["field"] == "limit", limit

        await agent_scope_checks(api, others=25)


async def agent_scope_checks(api, others: int) -> None:
    """An agent sees only its own conversations (its own, or offered to it now) in a
    shared view; `others` conversations of other agents' or none's exist already."""
    names = ("mine", "offered", "theirs", "free")  # older than the others, newest first
    events = [created(api, cid, -10 - n) for n, cid in enumerate(names)]
    events += [
        api.event("routing.enqueued", cid, at(10), team="sales")
        for cid in ("mine", "offered", "theirs", "free")
    ]
    events += [
        api.event("routing.offered", "mine", at(20), agent_id="a1", offer_id="o1",
                  expires_at=at(60)),
        api.event("agent.accepted", "mine", at(21), agent_id="a1", offer_id="o1"),
        api.event("routing.offered", "offered", at(22), agent_id="a1", offer_id="o2",
                  expires_at=at(60)),
        api.event("routing.offered", "theirs", at(23), agent_id="a2", offer_id="o3",
                  expires_at=at(60)),
    ]  # fmt: skip
    results = await api.post_events(events)
    assert all(r["outcome"] == "applied" for r in results), results
    view = await created_view(api, {"name": "All", "visibility": "tenant"})
    path = f"/api/v1/views/{view['id']}/rows"

    async def ids(role: str, user: str, limit: int = 100) -> tuple[list[str], int]:
        response = await api.client.get(path, params={"limit": limit}, headers=api.auth(role, user))
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()["rows"]], response.json()["total"]

    everything, total = await ids("supervisor", "sup1")
    assert total == others + 4
    assert everything[-4:] == ["mine", "offered", "theirs", "free"]
    assert await ids("agent", "a1") == (["mine", "offered"], 2)
    assert await ids("agent", "a2") == (["theirs"], 1)
    assert await ids("agent", "a3") == ([], 0)
    # Paging keeps the scope.
    response = await api.client.get(path, params={"limit": 1}, headers=api.auth("agent", "a1"))
    cursor = response.json()["cursor"]
    response = await api.client.get(
        path, params={"limit": 1, "cursor": cursor}, headers=api.auth("agent", "a1")
    )
    assert [r["id"] for r in response.json()["rows"]] == ["offered"]
    # a1's cursor in a2's hands is a position only: a2's own rows after it.
    response = await api.client.get(
        path, params={"limit": 5, "cursor": cursor}, headers=api.auth("agent", "a2")
    )
    assert [r["id"] for r in response.json()["rows"]] == ["theirs"]

    # The offer declined: it leaves a1's view.
    [result] = await api.post_events(
        [api.event("routing.offer_declined", "offered", at(30), agent_id="a1", offer_id="o2",
                   reason="rejected")]
    )  # fmt: skip
    assert result["outcome"] == "applied", result
    assert await ids("agent", "a1") == (["mine"], 1)
