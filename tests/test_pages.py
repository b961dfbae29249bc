"""Serving the pages (docs/api.md "Pages") and what they ask of the server: who the
caller is, what a view may hold, and the agent's wrap-up."""

from __future__ import annotations

import pytest

from server.wire.rows import COLUMNS
from tests.page_support import arrive, post

PAGES = {
    "/": "Switchboard",
    "/views": "view",
    "/views/v_anything": "view-page.js",
    "/conversations/c-1": "conversation-page.js",
    "/agent": "agent-page.js",
    "/wallboard": "wallboard-page.js",
}


@pytest.mark.parametrize("path", list(PAGES))
async def test_each_page_is_served_without_a_token(api, path):
    response = await api.client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert PAGES[path] in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


async def test_the_index_links_every_page(api):
    text = (await api.client.get("/")).text
    for path in ("/views", "/agent", "/wallboard", "/chat-demo"):
        assert f'href="{path}"' in text


async def test_static_assets_are_served_and_a_missing_one_is_404(api):
    script = await api.client.get("/static/js/live.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "export class Live" in script.text
    assert (await api.client.get("/static/js/nothing.js")).status_code == 404
    assert (await api.client.get("/static/../server/app.py")).status_code == 404


async def test_me_names_the_caller_and_its_tenants_zone(api):
    response = await api.client.get("/api/v1/me", headers=api.auth("agent", "a7"))
    assert response.status_code == 200
    me = response.json()
    assert (me["tenant"], me["user"], me["role"], me["timezone"]) == (
        "acme",
        "a7",
        "agent",
        "Europe/Madrid",
    )
    assert (await api.client.get("/api/v1/me")).status_code == 401


async def test_the_view_schema_offers_what_the_server_accepts(api):
    response = await api.client.get("/api/v1/view-schema", headers=api.auth("supervisor"))
    schema = response.json()
    assert [c["name"] for c in schema["columns"]] == list(COLUMNS)
    assert schema["columns"][0] == {"name": "id", "label": "Conversation ID"}
    assert schema["fields"]["state"]["values"][0] == "customer_answered"
    assert "within" in schema["fields"]["created_at"]["operators"]
    assert schema["within"][0] == "today"
    # As many sort keys as it says, and no more.
    keys = [{"field": f} for f in schema["sortable"][: schema["max_sort_keys"] + 1]]
    for count, status in ((schema["max_sort_keys"], 201), (schema["max_sort_keys"] + 1, 422)):
        body = {"name": f"sorted {count}", "sort": keys[:count]}
        answer = await api.client.post("/api/v1/views", json=body, headers=api.auth("supervisor"))
        assert answer.status_code == status, answer.text
    # Every field and operator it offers makes a view the server takes.
    for field, spec in schema["fields"].items():
        op = spec["operators"][0]
        value = {"text": "x", "enum": spec.get("values", [""])[0], "number": 1}.get(spec["kind"])
        if spec["kind"] == "channels":
            value = ["call"]
        if spec["kind"] in ("instant", "date"):
            op, value = "within", "today"
        if spec["kind"] == "boolean":
            value = True
        body = {"name": field, "filters": [{"field": field, "op": op, "value": value}]}
        created = await api.client.post("/api/v1/views", json=body, headers=api.auth("supervisor"))
        assert created.status_code == 201, (field, created.text)
    denied = await api.client.get("/api/v1/view-schema", headers=api.auth("wallboard"))
    assert denied.status_code == 403


async def in_wrap_up(api, agent: str = "a1") -> str:
    cid = await arrive(api, "chat")
    await post(api, cid, "routing.enqueued", team="sales")
    await post(
        api,
        cid,
        "routing.offered",
        agent_id=agent,
        offer_id=f"o-{cid}",
        expires_at="2099-01-01T00:00:00Z",
    )
    await post(api, cid, "agent.accepted", agent_id=agent, offer_id=f"o-{cid}")
    await post(api, cid, "media.hangup", source="customer")
    return cid


async def test_the_agent_submits_its_wrap_up_and_it_closes_the_conversation(api):
    cid = await in_wrap_up(api)
    response = await api.client.post(
        f"/api/v1/conversations/{cid}/wrapup",
        json={"disposition": "resolved", "note": "refund sent"},
        headers=api.auth("agent", "a1"),
    )
    assert response.status_code == 200, response.text
    row = response.json()["conversation"]
    assert (row["status"], row["disposition"], row["wrap_up_note"]) == (
        "closed",
        "resolved",
        "refund sent",
    )
    again = await api.client.post(
        f"/api/v1/conversations/{cid}/wrapup",
        json={"disposition": "sale"},
        headers=api.auth("agent", "a1"),
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_transition"
    assert again.json()["error"]["conversation"]["disposition"] == "resolved"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "disposition"),
        ({"disposition": ""}, "disposition"),
        ({"disposition": 3}, "disposition"),
        ({"disposition": "ok", "note": 5}, "note"),
        ({"disposition": "ok", "colour": "red"}, "colour"),
        ({"disposition": "x" * 201}, "disposition"),
    ],
)
async def test_a_bad_wrap_up_is_refused_by_name_and_changes_nothing(api, body, field):
    cid = await in_wrap_up(api)
    before = (await api.conversation(cid))["conversation"]
    response = await api.client.post(
        f"/api/v1/conversations/{cid}/wrapup", json=body, headers=api.auth("agent", "a1")
    )
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"]
    assert (await api.conversation(cid))["conversation"] == before


async def test_only_the_conversations_agent_wraps_it_up(api):
    cid = await in_wrap_up(api)
    other = await api.client.post(
        f"/api/v1/conversations/{cid}/wrapup",
        json={"disposition": "ok"},
        headers=api.auth("agent", "a2"),
    )
    assert other.status_code == 404
    supervisor = await api.client.post(
        f"/api/v1/conversations/{cid}/wrapup",
        json={"disposition": "ok"},
        headers=api.auth("supervisor"),
    )
    assert supervisor.status_code == 403
    assert (await api.conversation(cid))["conversation"]["status"] == "wrap_up"
