"""Admin set-up over HTTP, on both backends: PUT /api/v1/tenant, /teams/{name} and
/agents/{id} store what they are given and answer it; an invalid body is a 422 that
names the field and changes nothing."""

from __future__ import annotations

WEEK = {
    "mon": ["09:00-13:00", "14:00-18:00"],
    "tue": ["09:00-18:00"],
    "sat": [],
    "holidays": ["2026-12-25", "2027-01-01"],
}


# The web chat limits in force where a tenant sets none: the server's (its environment).
WEBCHAT_DEFAULTS = {
    "handshakes_per_minute": 120,
    "tenant_handshakes_per_minute": 6000,
    "conversations_per_hour": 30,
    "tenant_conversations_per_hour": 3000,
}


async def put(api, path: str, body, role: str = "admin"):
    return await api.client.put(path, json=body, headers=api.auth(role, "adm"))


async def read(api) -> dict:
    """Everything the admin endpoints keep for the tenant."""
    state = {}
    for path in ("/api/v1/tenant", "/api/v1/teams", "/api/v1/agents"):
        response = await api.client.get(path, headers=api.auth("admin", "adm"))
        assert response.status_code == 200, response.text
        state[path] = response.json()
    return state


async def test_puts_store_and_return_values(api):
    tenant = {
        "timezone": "America/Bogota",
        "routing": "external",
        "wrap_up_timeout_s": 45,
        "reply_timeout_s": 3600,
        "merge_channels": True,
        "widget_origins": ["https://shop.example.com"],
    }
    response = await put(api, "/api/v1/tenant", tenant)
    assert response.status_code == 200, response.text
    tenant["webchat_limits"] = WEBCHAT_DEFAULTS  # none set: the server's are read back
    assert response.json() == {"id": "acme", **tenant}
    # A partial body changes only what it names.
    response = await put(api, "/api/v1/tenant", {"wrap_up_timeout_s": 90})
    assert response.json() == {"id": "acme", **tenant, "wrap_up_timeout_s": 90}

    team = {
        "business_hours": WEEK,
        "queue_capacity": 12,
        "queue_timeout_s": 240,
        "offer_timeout_s": 15,
        "service_level_s": 30,
        "wrap_up_timeout_s": 60,
    }
    response = await put(api, "/api/v1/teams/sales", team)
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "sales", **team}
    # A new team named without a body gets the defaults.
    response = await put(api, "/api/v1/teams/support", {})
    assert response.status_code == 200, response.text
    support = response.json()
    assert support["business_hours"] == "always"
    assert support["wrap_up_timeout_s"] is None
    response = await put(api, "/api/v1/teams/sales", {"queue_capacity": 3})
    assert response.json() == {"name": "sales", **team, "queue_capacity": 3}
    response = await put(api, "/api/v1/teams/sales", {"wrap_up_timeout_s": None})
    assert response.json()["wrap_up_timeout_s"] is None

    agent = {"name": "Zoë Ångström ✓", "teams": ["sales", "support"], "chat_capacity": 5,
             "phone": "+34910000777"}  # fmt: skip
    response = await put(api, "/api/v1/agents/a1", agent)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": "a1", "presence": "offline", **agent}
    response = await put(api, "/api/v1/agents/a1", {"chat_capacity": 2, "phone": None})
    assert response.json() == {
        "id": "a1", "presence": "offline", **agent, "chat_capacity": 2, "phone": None
    }  # fmt: skip

    # What was answered is what is stored.
    state = await read(api)
    assert state["/api/v1/tenant"] == {"id": "acme", **tenant, "wrap_up_timeout_s": 90}
    assert state["/api/v1/teams"] == {
        "teams": [{"name": "sales", **team, "queue_capacity": 3, "wrap_up_timeout_s": None},
                  support]
    }  # fmt: skip
    assert state["/api/v1/agents"] == {
        "agents": [{"id": "a1", "presence": "offline", **agent, "chat_capacity": 2,
                    "phone": None}]
    }  # fmt: skip


INVALID = [
    # (path, body, the field the answer names)
    ("/api/v1/tenant", {"colour": "red"}, "colour"),
    ("/api/v1/tenant", {"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ("/api/v1/tenant", {"timezone": "Europe/../../etc/passwd"}, "timezone"),
    ("/api/v1/tenant", {"timezone": 1}, "timezone"),
    ("/api/v1/tenant", {"routing": "magic"}, "routing"),
    ("/api/v1/tenant", {"wrap_up_timeout_s": "60"}, "wrap_up_timeout_s"),
    ("/api/v1/tenant", {"wrap_up_timeout_s": True}, "wrap_up_timeout_s"),
    ("/api/v1/tenant", {"wrap_up_timeout_s": 0}, "wrap_up_timeout_s"),
    ("/api/v1/tenant", {"reply_timeout_s": 1.5}, "reply_timeout_s"),
    ("/api/v1/tenant", {"merge_channels": "yes"}, "merge_channels"),
    ("/api/v1/tenant", {"widget_origins": "https://x.example"}, "widget_origins"),
    ("/api/v1/tenant", {"widget_origins": [1]}, "widget_origins[0]"),
    # One bad field spoils the whole body: the good one is not stored either.
    ("/api/v1/tenant", {"routing": "external", "reply_timeout_s": -1}, "reply_timeout_s"),
    ("/api/v1/tenant", {"webchat_limits": 5}, "webchat_limits"),
    ("/api/v1/tenant", {"webchat_limits": {"handshakes_per_minute": 0}},
     "webchat_limits.handshakes_per_minute"),
    ("/api/v1/tenant", {"webchat_limits": {"conversations_per_hour": -3}},
     "webchat_limits.conversations_per_hour"),
    ("/api/v1/tenant", {"webchat_limits": {"tenant_handshakes_per_minute": "600"}},
     "webchat_limits.tenant_handshakes_per_minute"),
    ("/api/v1/tenant", {"webchat_limits": {"tenant_conversations_per_hour": 10**8}},
     "webchat_limits.tenant_conversations_per_hour"),
    ("/api/v1/tenant", {"webchat_limits": {"conversations_per_hour": 2.5}},
     "webchat_limits.conversations_per_hour"),
    ("/api/v1/tenant", {"webchat_limits": {"conversations_per_hour": 2, "burst": 9}}, "burst"),
    ("/api/v1/teams/sales", {"colour": "red"}, "colour"),
    ("/api/v1/teams/sales", {"business_hours": "sometimes"}, "business_hours"),
    ("/api/v1/teams/sales", {"business_hours": {"mon": "09:00-17:00"}}, "business_hours.mon"),
    ("/api/v1/teams/sales", {"business_hours": {"mon": ["9-5"]}}, "business_hours.mon"),
    ("/api/v1/teams/sales", {"business_hours": {"tue": ["18:00-09:00"]}}, "business_hours.tue"),
    ("/api/v1/teams/sales", {"business_hours": {"wed": ["09:00-25:00"]}}, "business_hours.wed"),
    ("/api/v1/teams/sales", {"business_hours": {"funday": []}}, "funday"),
    ("/api/v1/teams/sales", {"business_hours": {"holidays": ["2026-13-01"]}},
     "business_hours.holidays"),
    ("/api/v1/teams/sales", {"business_hours": {"holidays": "2026-12-25"}},
     "business_hours.holidays"),
    ("/api/v1/teams/sales", {"queue_capacity": -1}, "queue_capacity"),
    ("/api/v1/teams/sales", {"queue_capacity": "10"}, "queue_capacity"),
    ("/api/v1/teams/sales", {"queue_timeout_s": None}, "queue_timeout_s"),
    ("/api/v1/teams/sales", {"business_hours": "always", "offer_timeout_s": 0},
     "offer_timeout_s"),
    ("/api/v1/teams/new-team", {"service_level_s": "fast"}, "service_level_s"),
    ("/api/v1/teams/a%00b", {}, "name"),
    ("/api/v1/teams/%20", {}, "name"),
    ("/api/v1/agents/a1", {"nickname": "x"}, "nickname"),
    ("/api/v1/agents/a1", {"name": ""}, "name"),
    ("/api/v1/agents/a1", {"name": 5}, "name"),
    ("/api/v1/agents/a1", {"name": "Nul\u0000Name"}, "name"),
    ("/api/v1/agents/a1", {"teams": "sales"}, "teams"),
    ("/api/v1/agents/a1", {"teams": [""]}, "teams"),
    ("/api/v1/agents/a1", {"chat_capacity": 0}, "chat_capacity"),
    ("/api/v1/agents/a1", {"phone": 34910000000}, "phone"),
    ("/api/v1/agents/a1", {"name": "New Name", "phone": "x" * 65}, "phone"),
    ("/api/v1/agents/a2", {"teams": ["sales"]}, "name"),  # a new agent needs a name
    ("/api/v1/agents/a%00b", {"name": "Nul"}, "agent_id"),
]  # fmt: skip


async def test_a_tenant_sets_its_own_webchat_limits_and_reads_those_in_force(api):
    async def limits(body) -> dict:
        response = await put(api, "/api/v1/tenant", {"webchat_limits": body})
        assert response.status_code == 200, response.text
        got = await api.client.get("/api/v1/tenant", headers=api.auth("supervisor", "sup"))
        assert got.json()["webchat_limits"] == response.json()["webchat_limits"]
        return got.json()["webchat_limits"]

    assert await limits({"conversations_per_hour": 2}) == {
        **WEBCHAT_DEFAULTS,
        "conversations_per_hour": 2,
    }
    # a key left out stays, a key given changes, null is the server's again
    assert await limits({"handshakes_per_minute": 500}) == {
        **WEBCHAT_DEFAULTS,
        "conversations_per_hour": 2,
        "handshakes_per_minute": 500,
    }
    assert await limits({"conversations_per_hour": None, "tenant_handshakes_per_minute": 9}) == {
        **WEBCHAT_DEFAULTS,
        "handshakes_per_minute": 500,
        "tenant_handshakes_per_minute": 9,
    }
    assert await limits({}) == {
        **WEBCHAT_DEFAULTS,
        "handshakes_per_minute": 500,
        "tenant_handshakes_per_minute": 9,
    }
    assert await limits(None) == WEBCHAT_DEFAULTS  # all four back


async def test_invalid_bodies_are_422_naming_the_field_and_change_nothing(api):
    await put(api, "/api/v1/teams/sales", {"business_hours": WEEK, "queue_capacity": 12})
    await put(api, "/api/v1/tenant", {"webchat_limits": {"conversations_per_hour": 7}})
    await put(api, "/api/v1/agents/a1", {"name": "Alice", "teams": ["sales"]})
    before = await read(api)
    for path, body, field in INVALID:
        response = await put(api, path, body)
        assert response.status_code == 422, (path, body, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_field", (path, body, error)
        assert error["field"] == field, (path, body, error)
        assert field in error["message"], (path, body, error)
    for path in ("/api/v1/tenant", "/api/v1/teams/sales", "/api/v1/agents/a1"):
        for body in (b"{nope", b"[1]", b"7"):
            response = await api.client.put(
                path,
                content=body,
                headers={**api.auth("admin"), "Content-Type": "application/json"},
            )
            assert response.status_code == 400, (path, body, response.text)
            assert response.json()["error"]["code"] == "malformed"
    assert await read(api) == before
