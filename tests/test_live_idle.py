"""A window nobody watches stays exact a while (a reload or the next page of the same
view costs no query), then goes."""

from server.live import windows as live
from tests.server_support import live_server
from tests.support import wait_for

VIEW = {"filters": [{"field": "channel", "op": "in", "value": ["chat"]}]}


def chat(api, conversation_id: str, second: int) -> dict:
    return api.event(
        "conversation.created",
        conversation_id,
        f"2026-11-24T10:00:{second:02d}Z",
        channel="chat",
        contact=f"v-{conversation_id}",
        customer={"name": "N"},
    )


async def test_an_idle_window_stays_exact_then_goes(backend, tmp_path, monkeypatch):
    monkeypatch.setattr(live, "IDLE_WINDOW_S", 1.0)
    async with live_server(backend, tmp_path) as server, server.ws() as client:
        api, views = server.api, server.services.live
        first = await client.request({"type": "subscribe", "view": VIEW, "limit": 5})
        window = next(iter(views.windows.values()))
        await client.request({"type": "unsubscribe", "sub": first["sub"]})
        await api.post_events([chat(api, "c1", 1), chat(api, "c2", 2)])
        await wait_for(lambda: window.total == 2)  # nobody watches, it is kept exact

        again = await client.request({"type": "subscribe", "view": VIEW, "limit": 5})
        assert [row["id"] for row in again["rows"]] == ["c2", "c1"] and again["total"] == 2
        assert list(views.windows.values()) == [window], "the idle window was not reused"
        supervisor = api.auth("supervisor", "sup1")
        saved = await api.client.post(
            "/api/v1/views", json={"name": "chats", **VIEW}, headers=supervisor
        )
        rows = await api.client.get(f"/api/v1/views/{saved.json()['id']}/rows", headers=supervisor)
        assert rows.json()["total"] == 2

        await client.request({"type": "unsubscribe", "sub": again["sub"]})
        await wait_for(lambda: not views.windows, timeout=5)
