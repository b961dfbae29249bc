"""Credentials, roles, tenant isolation and body caps, over HTTP on both backends.

Every HTTP route of server.edge.routes.ROUTES is listed in ACCESS with the roles docs/api.md lets
in; a route added without an entry fails test_every_http_route_is_in_the_access_table,
so that the role matrix and the token checks below always try every endpoint."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
from starlette.routing import Route

from server.app import create_app
from server.edge.routes import ROUTES
from tests import app_support
from tests.app_support import SECRET

ROLES = ("admin", "supervisor", "agent", "wallboard", "service")
PUBLIC = frozenset(ROLES) | {None}
READERS = frozenset({"admin", "supervisor", "agent"})
WRITERS = frozenset({"admin", "supervisor"})
ACTORS = READERS  # the roles a conversation's agent may have (docs/api.md)
SIGNED = frozenset({"provider"})  # no role: a provider's signed callback

# (method, route path) -> the roles docs/api.md lets in (an agent only to its own things).
ACCESS: dict[tuple[str, str], frozenset] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/widget.js"): PUBLIC,  # the chat widget: WS /webchat checks the site instead
    ("GET", "/chat-demo"): PUBLIC,
    ("POST", "/api/v1/events"): frozenset({"service", "admin"}),
    ("GET", "/api/v1/conversations/{conversation_id}"): READERS,
    # Reading the set-up is not in docs/api.md; the server lets supervisors read it.
    ("GET", "/api/v1/tenant"): WRITERS,
    ("PUT", "/api/v1/tenant"): frozenset({"admin"}),
    ("GET", "/api/v1/teams"): WRITERS,
    ("PUT", "/api/v1/teams/{name}"): frozenset({"admin"}),
    ("GET", "/api/v1/agents"): WRITERS,
    ("PUT", "/api/v1/agents/{agent_id}"): frozenset({"admin"}),
    ("GET", "/api/v1/views"): READERS,
    ("POST", "/api/v1/views"): WRITERS,
    ("GET", "/api/v1/views/{view_id}"): READERS,
    ("PATCH", "/api/v1/views/{view_id}"): WRITERS,
    ("DELETE", "/api/v1/views/{view_id}"): WRITERS,
    ("GET", "/api/v1/views/{view_id}/rows"): READERS,
    ("POST", "/api/v1/conversations/initiate"): READERS,
    ("POST", "/api/v1/conversations/{conversation_id}/messages"): ACTORS,
    ("POST", "/api/v1/conversations/{conversation_id}/hangup"): ACTORS,
    ("GET", "/api/v1/conversations/{conversation_id}/recordings/{recording_id}"): READERS,
    ("POST", "/api/v1/conversations/{conversation_id}/recordings/{recording_id}/link"): READERS,
    ("GET", "/api/v1/providers"): frozenset({"admin"}),
    ("PUT", "/api/v1/providers/{provider}"): frozenset({"admin"}),
    # The provider's signature, no token: tests/test_webhooks.py.
    ("GET", "/webhooks/{provider}/{tenant}"): SIGNED,
    ("POST", "/webhooks/{provider}/{tenant}"): SIGNED,
    ("PUT", "/api/v1/agents/me/presence"): frozenset({"agent"}),
    ("POST", "/api/v1/offers/{offer_id}/accept"): frozenset({"agent"}),
    ("POST", "/api/v1/offers/{offer_id}/reject"): frozenset({"agent"}),
    ("POST", "/api/v1/conversations/{conversation_id}/transfer"): READERS,
    ("GET", "/api/v1/wallboard"): frozenset({"wallboard", "supervisor", "admin"}),
    # The pages: the HTML needs no token; what they ask of the server does.
    **{
        ("GET", page): PUBLIC
        for page in (
            "/",
            "/views",
            "/views/{view_id}",
            "/conversations/{conversation_id}",
            "/agent",
            "/wallboard",
        )
    },
    ("GET", "/api/v1/me"): frozenset(ROLES),
    ("POST", "/api/v1/ws-tickets"): frozenset(ROLES),
    ("GET", "/api/v1/view-schema"): READERS,
    ("POST", "/api/v1/conversations/{conversation_id}/wrapup"): ACTORS,
}
# Let in, but answered by what the request names: agent u1 is not configured, offer
# o-1 was never made, and conversation c-acme is `new` (not transferable yet).
LET_IN_STATUS = {
    ("PUT", "/api/v1/agents/me/presence"): {404},
    ("POST", "/api/v1/offers/{offer_id}/accept"): {404},
    ("POST", "/api/v1/offers/{offer_id}/reject"): {404},
    ("POST", "/api/v1/conversations/{conversation_id}/transfer"): {409},
    # Whoever is the conversation's agent may act, whatever its role; c-acme has none.
    ("POST", "/api/v1/conversations/{conversation_id}/messages"): {403},
    ("POST", "/api/v1/conversations/{conversation_id}/hangup"): {403},
    ("POST", "/api/v1/conversations/{conversation_id}/wrapup"): {403},
}
PROTECTED = [key for key, roles in ACCESS.items() if roles not in (PUBLIC, SIGNED)]
AT = "2026-11-24T10:00:00Z"


def test_every_http_route_is_in_the_access_table():
    served = {
        (method, route.path)
        for route in ROUTES
        if isinstance(route, Route)
        for method in route.methods
        if method != "HEAD"
    }
    assert served == set(ACCESS)


def created(event_id: str, conversation_id: str, channel: str = "call", **data) -> dict:
    return {
        "event_id": event_id,
        "type": "conversation.created",
        "conversation_id": conversation_id,
        "occurred_at": AT,
        "data": {"channel": channel, "contact": "+34911000200", "customer": {"name": "Ann"},
                 **data},
    }  # fmt: skip


def view_body(name: str) -> dict:
    return {"name": name, "visibility": "tenant", "columns": ["id", "status"], "filters": []}


async def call(api, method: str, path: str, headers: dict | None = None, body=None):
    return await api.client.request(method, path, json=body, headers=headers or {})


async def make_view(api, name: str, user: str = "u1", tenant: str | None = None) -> str:
    response = await call(
        api, "POST", "/api/v1/views", api.auth("supervisor", user, tenant), view_body(name)
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def request_for(key: tuple[str, str], role: str, view_id: str) -> tuple[str, dict | None]:
    """A concrete, valid request to the route for `role` (which names what it changes)."""
    path = key[1]
    bodies = {
        ("POST", "/api/v1/events"): created(f"ev-{role}", f"role-{role}"),
        ("PUT", "/api/v1/tenant"): {"wrap_up_timeout_s": 60 + ROLES.index(role)},
        ("PUT", "/api/v1/teams/{name}"): {"queue_capacity": 5},
        ("PUT", "/api/v1/agents/{agent_id}"): {"name": f"Agent of {role}"},
        ("POST", "/api/v1/views"): view_body(f"v-{role}"),
        ("PATCH", "/api/v1/views/{view_id}"): {"name": f"renamed by {role}"},
        ("POST", "/api/v1/conversations/initiate"): {"channel": "call", "contact": "+34911000103"},
        ("POST", "/api/v1/conversations/{conversation_id}/messages"): {"text": "hi"},
        ("PUT", "/api/v1/providers/{provider}"): {"channels": ["call", "sms", "whatsapp"]},
        ("PUT", "/api/v1/agents/me/presence"): {"presence": "away"},
        ("POST", "/api/v1/conversations/{conversation_id}/transfer"): {"team": "t-admin"},
        ("POST", "/api/v1/conversations/{conversation_id}/wrapup"): {"disposition": "ok"},
    }
    concrete = path.format(
        conversation_id="c-acme",
        name=f"t-{role}",
        agent_id=f"x-{role}",
        view_id=view_id,
        recording_id="r-1",
        provider="sandbox",
        offer_id="o-1",
    )
    return concrete, bodies.get(key)


async def test_each_role_gets_403_where_api_md_says_it_may_not(api):
    assert {r["outcome"] for r in await api.post_events([created("ev-0", "c-acme")])} == {"applied"}
    shared_view = await make_view(api, "shared")
    for key in ACCESS:
        if ACCESS[key] is SIGNED:
            continue
        for role in ROLES:
            # PATCH and DELETE each get a view of their own, owned by the caller's user.
            view_id = shared_view
            if key[0] in ("PATCH", "DELETE"):
                view_id = await make_view(api, f"{key[0]}-{role}")
            path, body = request_for(key, role, view_id)
            response = await call(api, key[0], path, api.auth(role, "u1"), body)
            where = (key, role, response.status_code, response.text[:200])
            if role in ACCESS[key]:
                expected = {201} if key == ("POST", "/api/v1/views") else {200}
                if key == ("POST", "/api/v1/conversations/initiate"):
                    expected = {202}
                if role == "agent" and key[1].startswith("/api/v1/conversations/{"):
                    expected = {404}  # not its conversation: it does not exist for it
                if "{recording_id}" in key[1]:
                    expected = {404}  # let in, but c-acme has no recording
                expected = LET_IN_STATUS.get(key, expected) if expected == {200} else expected
                assert response.status_code in expected, where
            else:
                assert response.status_code == 403, where
                assert response.json()["error"]["code"] == "forbidden", where

    # What the refused requests would have changed is unchanged.
    admin = api.auth("admin", "adm")
    for role in ROLES:
        response = await call(api, "GET", f"/api/v1/conversations/role-{role}", admin)
        assert response.status_code == (200 if role in ("admin", "service") else 404), role
    tenant = (await call(api, "GET", "/api/v1/tenant", admin)).json()
    assert tenant["wrap_up_timeout_s"] == 60 + ROLES.index("admin")
    teams = (await call(api, "GET", "/api/v1/teams", admin)).json()["teams"]
    assert [team["name"] for team in teams] == ["t-admin"]
    agents = (await call(api, "GET", "/api/v1/agents", admin)).json()["agents"]
    assert [agent["id"] for agent in agents] == ["x-admin"]
    views = (await call(api, "GET", "/api/v1/views", api.auth("supervisor", "u1"))).json()
    names = sorted(view["name"] for view in views["views"])
    assert names == sorted(
        ["shared", "v-admin", "v-supervisor", "renamed by admin", "renamed by supervisor"]
        + [f"PATCH-{role}" for role in ("agent", "wallboard", "service")]
        + [f"DELETE-{role}" for role in ("agent", "wallboard", "service")]
    )


def unsigned(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def bad_tokens(api) -> dict[str, str | None]:
    now = datetime.now(UTC)
    claims = {
        "tenant": "acme",
        "sub": "u1",
        "role": "admin",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    no_exp = {name: value for name, value in claims.items() if name != "exp"}
    good = api.token("supervisor")
    header, payload, signature = good.split(".")
    raised = base64.urlsafe_b64encode(
        json.dumps({**jwt.decode(good, options={"verify_signature": False}), "role": "admin"})
        .encode()
    ).rstrip(b"=").decode()  # fmt: skip
    return {
        "missing": None,
        "empty bearer": "Bearer ",
        "basic": "Basic dXNlcjpwYXNz",
        "no scheme": good,
        "garbage": "Bearer not-a-token",
        "expired": f"Bearer {api.token('admin', ttl=-60)}",
        "tampered payload": f"Bearer {header}.{raised}.{signature}",
        "tampered signature": f"Bearer {header}.{payload}.{signature[::-1]}",
        "alg none": f"Bearer {unsigned(claims)}",
        "other secret": f"Bearer {jwt.encode(claims, 'another-secret-0123456789abcdef!')}",
        "HS512": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS512')}",
        "no exp": f"Bearer {jwt.encode(no_exp, SECRET)}",
        "unknown role": f"Bearer {jwt.encode({**claims, 'role': 'root'}, SECRET)}",
        "no tenant": f"Bearer {jwt.encode({**claims, 'tenant': ''}, SECRET)}",
    }


async def test_a_missing_or_bad_token_is_401_and_an_unknown_tenant_403_everywhere(api):
    for name, authorization in bad_tokens(api).items():
        headers = {} if authorization is None else {"Authorization": authorization}
        for key in PROTECTED:
            path, body = request_for(key, "admin", "v_whatever")
            response = await call(api, key[0], path, headers, body)
            where = (name, key, response.status_code, response.text[:200])
            assert response.status_code == 401, where
            error = response.json()["error"]
            assert error["code"] == "unauthorized" and error["message"], where
            assert response.headers["www-authenticate"].startswith("Bearer"), where
    # Nothing got through: no conversation, no team, no agent, no view.
    admin = api.auth("admin", "adm")
    assert (await call(api, "GET", "/api/v1/teams", admin)).json() == {"teams": []}
    assert (await call(api, "GET", "/api/v1/agents", admin)).json() == {"agents": []}
    assert (await call(api, "GET", "/api/v1/views", admin)).json()["views"] == []
    response = await call(api, "GET", "/api/v1/conversations/role-admin", admin)
    assert response.status_code == 404
    # The health endpoints and the document need no token.
    for key, roles in ACCESS.items():
        if roles is PUBLIC:
            response = await call(api, key[0], key[1])
            assert response.status_code == 200, (key, response.text[:200])

    # A good token of a tenant that does not exist is forbidden.
    for role in ROLES:
        headers = api.auth(role, "u1", tenant="initech")
        for key in PROTECTED:
            path, body = request_for(key, role, "v_whatever")
            response = await call(api, key[0], path, headers, body)
            where = (role, key, response.status_code, response.text[:200])
            assert response.status_code == 403, where
            assert response.json()["error"]["code"] == "forbidden", where


async def test_another_tenant_reads_writes_and_sees_nothing(api):
    acme_admin = api.auth("admin", "adm")
    acme_sup = api.auth("supervisor", "sup1")
    await call(api, "PUT", "/api/v1/tenant", acme_admin, {"wrap_up_timeout_s": 100})
    await call(api, "PUT", "/api/v1/teams/sales", acme_admin, {"queue_capacity": 7})
    await call(api, "PUT", "/api/v1/agents/a1", acme_admin, {"name": "Acme Alice"})
    acme_events = [
        created("e-1", "shared", "call", contact="+34911000201", team="sales"),
        created("e-2", "acme-only", "call", contact="+34911000202"),
        {"event_id": "e-3", "type": "routing.offered", "conversation_id": "shared",
         "occurred_at": "2026-11-24T10:00:01Z",
         "data": {"agent_id": "a1", "offer_id": "o1", "expires_at": "2026-11-24T10:01:00Z"}},
    ]  # fmt: skip
    assert {r["outcome"] for r in await api.post_events(acme_events)} == {"applied"}
    acme_view = await make_view(api, "acme view", "sup1")
    acme_before = {cid: await api.conversation(cid) for cid in ("shared", "acme-only")}

    g = "globex"
    g_admin = api.auth("admin", "gadm", tenant=g)
    g_sup = api.auth("supervisor", "sup1", tenant=g)  # the same user id as acme's
    g_agent = api.auth("agent", "a1", tenant=g)

    # Events: the same conversation id and event id make a separate globex conversation;
    # acme's other conversation does not exist for globex.
    results = await api.post_events(
        [
            created("e-1", "shared", "sms", contact="+12125550100"),
            {"event_id": "e-9", "type": "routing.enqueued", "conversation_id": "acme-only",
             "occurred_at": AT, "data": {"team": "sales"}},
            {"event_id": "e-3", "type": "routing.enqueued", "conversation_id": "shared",
             "occurred_at": "2026-11-24T10:00:02Z", "data": {"team": "sales"}},
        ],
        tenant=g,
    )  # fmt: skip
    assert [(r["outcome"], r["version"]) for r in results] == [
        ("applied", 1),
        ("rejected", None),
        ("applied", 2),
    ]
    assert results[1]["code"] == "unknown_conversation"

    # Reads: acme's conversations are not found; "shared" is globex's own.
    for headers in (g_admin, g_sup, g_agent):
        response = await call(api, "GET", "/api/v1/conversations/acme-only", headers)
        assert response.status_code == 404, response.text
    response = await call(api, "GET", "/api/v1/conversations/shared", g_sup)
    detail = response.json()
    assert (detail["conversation"]["channel"], detail["conversation"]["contact"]) == (
        "sms",
        "+12125550100",
    )
    assert [item["event_id"] for item in detail["timeline"]] == ["e-1", "e-3"]
    assert detail["conversation"]["created_time"] == "05:00:00"  # New York, not Madrid
    # acme's agent a1 is offered acme's "shared"; globex's a1 is a different agent.
    response = await call(api, "GET", "/api/v1/conversations/shared", g_agent)
    assert response.status_code == 404

    # Set-up: globex reads and writes its own only.
    tenant = (await call(api, "GET", "/api/v1/tenant", g_admin)).json()
    assert (tenant["id"], tenant["timezone"]) == (g, "America/New_York")
    assert (await call(api, "GET", "/api/v1/teams", g_sup)).json() == {"teams": []}
    assert (await call(api, "GET", "/api/v1/agents", g_sup)).json() == {"agents": []}
    for path, body in (
        ("/api/v1/tenant", {"wrap_up_timeout_s": 5, "timezone": "Asia/Tokyo"}),
        ("/api/v1/teams/sales", {"queue_capacity": 99}),
        ("/api/v1/agents/a1", {"name": "Globex Gary"}),
    ):
        response = await call(api, "PUT", path, g_admin, body)
        assert response.status_code == 200, response.text
    tenant = (await call(api, "GET", "/api/v1/tenant", acme_admin)).json()
    assert (tenant["timezone"], tenant["wrap_up_timeout_s"]) == ("Europe/Madrid", 100)
    teams = (await call(api, "GET", "/api/v1/teams", acme_admin)).json()["teams"]
    assert [(t["name"], t["queue_capacity"]) for t in teams] == [("sales", 7)]
    agents = (await call(api, "GET", "/api/v1/agents", acme_admin)).json()["agents"]
    assert [(a["id"], a["name"]) for a in agents] == [("a1", "Acme Alice")]

    # Views: acme's view does not exist for globex, whatever the method.
    listed = (await call(api, "GET", "/api/v1/views", g_sup)).json()["views"]
    assert acme_view not in [view["id"] for view in listed]
    for method, suffix, body in (
        ("GET", "", None),
        ("GET", "/rows", None),
        ("PATCH", "", {"name": "hijacked"}),
        ("DELETE", "", None),
    ):
        for headers in (g_sup, g_admin):
            response = await call(api, method, f"/api/v1/views/{acme_view}{suffix}", headers, body)
            assert response.status_code == 404, (method, suffix, response.text)
    g_view = await make_view(api, "globex view", "sup1", tenant=g)
    rows = (await call(api, "GET", f"/api/v1/views/{g_view}/rows", g_sup)).json()
    assert ([row["id"] for row in rows["rows"]], rows["total"]) == (["shared"], 1)
    rows = (await call(api, "GET", f"/api/v1/views/{acme_view}/rows", acme_sup)).json()
    assert sorted(row["id"] for row in rows["rows"]) == ["acme-only", "shared"]
    response = await call(api, "GET", f"/api/v1/views/{acme_view}", acme_sup)
    assert response.json()["name"] == "acme view"

    # acme's conversations are as they were, and acme's agent keeps acme's name.
    for cid, before in acme_before.items():
        assert await api.conversation(cid) == before
    accepted = {"event_id": "e-4", "type": "agent.accepted", "conversation_id": "shared",
                "occurred_at": "2026-11-24T10:00:05Z",
                "data": {"agent_id": "a1", "offer_id": "o1"}}  # fmt: skip
    assert (await api.post_events([accepted]))[0]["outcome"] == "applied"
    assert (await api.conversation("shared"))["conversation"]["agent_name"] == "Acme Alice"

    # Nothing of a tenant leaks through the public endpoints.
    for path in ("/metrics", "/readyz", "/healthz", "/openapi.json"):
        text = (await api.client.get(path)).text
        assert "acme-only" not in text and "Acme Alice" not in text, path


async def test_an_agent_sees_only_its_own_rows_in_a_shared_view(api):
    events = []
    for n, agent in enumerate(("a1", "a2", "a1")):
        cid = f"row-{n}"
        events += [
            created(f"{cid}-c", cid),
            {"event_id": f"{cid}-o", "type": "routing.offered", "conversation_id": cid,
             "occurred_at": "2026-11-24T10:00:01Z",
             "data": {"agent_id": agent, "offer_id": f"{cid}-o", "expires_at": AT}},
        ]  # fmt: skip
    assert {r["outcome"] for r in await api.post_events(events)} == {"applied"}
    view_id = await make_view(api, "everything")
    seen = {}
    for role, user in (("agent", "a1"), ("agent", "a2"), ("agent", "a3"), ("supervisor", "s")):
        response = await call(api, "GET", f"/api/v1/views/{view_id}/rows", api.auth(role, user))
        assert response.status_code == 200, response.text
        body = response.json()
        seen[user] = (sorted(row["id"] for row in body["rows"]), body["total"])
    assert seen == {
        "a1": (["row-0", "row-2"], 2),
        "a2": (["row-1"], 1),
        "a3": ([], 0),
        "s": (["row-0", "row-1", "row-2"], 3),
    }


# --------------------------------------------------------------------------- body caps


class CountingBody:
    """A request body that counts how much of it the server pulled."""

    def __init__(self, chunks: int, size: int = 100):
        self.chunks, self.size, self.sent = chunks, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.sent += 1
            yield b" " * self.size


async def test_bodies_over_the_cap_are_413_before_they_are_read(api, tmp_path):
    settings = dataclasses.replace(
        app_support.test_settings(api.backend, tmp_path / "small"), max_body_bytes=1000
    )
    app = create_app(settings)
    await app.state.services.start()
    try:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for method, path, role in (
                ("POST", "/api/v1/events", "service"),
                ("PUT", "/api/v1/tenant", "admin"),
                ("POST", "/api/v1/views", "supervisor"),
            ):
                headers = api.auth(role)
                # Declared too large: refused before a byte is read.
                body = CountingBody(100)
                response = await client.request(
                    method, path, content=body, headers={**headers, "Content-Length": "10000"}
                )
                assert response.status_code == 413, (path, response.text)
                assert response.json()["error"]["code"] == "too_large"
                assert body.sent == 0, (path, body.sent)
                # Not declared (chunked): refused once the cap is passed, not at the end.
                body = CountingBody(100)
                response = await client.request(method, path, content=body, headers=headers)
                assert response.status_code == 413, (path, response.text)
                assert body.sent <= 11, (path, body.sent)
            # Within the cap, all is well.
            event = created("small-1", "small-1")
            response = await client.post("/api/v1/events", json=event, headers=api.auth("service"))
            assert len(json.dumps(event)) < 1000
            assert response.status_code == 200, response.text
            assert response.json()["results"][0]["outcome"] == "applied"
    finally:
        await app.state.services.stop()

    # The default cap, 4 MiB, on the app under test; and at most 5000 events a request.
    body = CountingBody(5 * 1024, 1024)
    response = await api.client.post(
        "/api/v1/events",
        content=body,
        headers={**api.auth("service"), "Content-Length": str(5 * 1024 * 1024)},
    )
    assert (response.status_code, body.sent) == (413, 0)
    many = {"events": [{}] * 5001}
    response = await api.client.post("/api/v1/events", json=many, headers=api.auth("service"))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    response = await api.client.get("/api/v1/conversations/small-1", headers=api.auth("supervisor"))
    assert response.status_code == 200  # the small app wrote to the same database
