"""Accepting a call connects the held caller to the agent's phone (the accept path's
hook into the channels): a sandbox caller accepted over HTTP or over the websocket is
bridged, so the agent's hangup leaves a recording of the talk (an unbridged caller
leaves none)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.providers.repository import latest_conversation_of_contact
from tests.app_support import Api, running_api
from tests.routing_support import (
    builtin_routing,
    current_offer,
    put_agent,
    put_team,
    set_presence,
    wait_row,
)
from tests.server_support import live_server
from tests.support import ManualClock, wait_for

NUMBER = "+34910000002"


async def set_up(api: Api) -> None:
    await builtin_routing(api)
    await put_team(api, "desk")
    await put_agent(api, "p1", ["desk"], phone="+34600100009")
    response = await api.client.put(
        "/api/v1/providers/sandbox",
        json={"channels": ["call"], "numbers": [{"number": NUMBER, "team": "desk"}]},
        headers=api.auth("admin"),
    )
    assert response.status_code == 200, response.text
    await set_presence(api, "p1", "available")


async def offered_call(api: Api, contact: str) -> tuple[str, str]:
    """A sandbox caller on the desk's number, offered to p1: (conversation, offer)."""
    api.services.sandboxes.runner("acme").provider.start_inbound_call(contact, NUMBER, "Caller")

    async def conversation():
        async with api.services.db.read() as conn:
            return await latest_conversation_of_contact(conn, "acme", contact)

    cid = (await wait_for(conversation, 10))["id"]
    await wait_row(api, cid, status="offered")
    return cid, (await current_offer(api, cid))["offer_id"]


async def hang_up_and_find_recordings(api: Api, clock: ManualClock, cid: str) -> list:
    clock.advance(timedelta(seconds=5))  # the agent's phone picks up within 3 s
    hangup = await api.client.post(
        f"/api/v1/conversations/{cid}/hangup", headers=api.auth("agent", "p1")
    )
    assert hangup.status_code == 200, hangup.text

    async def recorded():
        return (await api.conversation(cid))["recordings"]

    return await wait_for(recorded, 10, message="the bridged call's recording")


async def test_a_call_accepted_over_http_is_bridged_to_the_agent(backend, tmp_path):
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1))
    async with running_api(backend, tmp_path / "data", clock) as api:
        await set_up(api)
        cid, offer = await offered_call(api, "+34655000111")
        accepted = await api.client.post(
            f"/api/v1/offers/{offer}/accept", headers=api.auth("agent", "p1")
        )
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["conversation"]["status"] == "active"
        [recording] = await hang_up_and_find_recordings(api, clock, cid)
        assert recording["content_type"] == "audio/wav"


async def test_a_call_accepted_over_the_websocket_is_bridged_too(backend, tmp_path):
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1))
    async with live_server(backend, tmp_path / "data", clock) as server:
        api = server.api
        await set_up(api)
        async with server.ws("agent", "p1") as agent:
            cid, offer = await offered_call(api, "+34655000222")
            answer = await agent.request({"type": "accept", "offer_id": offer})
            assert answer["type"] == "ok", answer
        assert await hang_up_and_find_recordings(api, clock, cid)
