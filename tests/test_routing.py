"""The built-in router on both backends: each unanswered state reached by its real
cause, offers passed on by reject and by expiry, accept races, transfers, presence."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tests.routing_support import (
    applied,
    arrive,
    builtin_routing,
    current_offer,
    now_iso,
    put_agent,
    put_team,
    set_presence,
    wait_row,
)
from tests.support import wait_for


async def test_closed_team_full_queue_and_nobody_logged_in(api):
    await builtin_routing(api)
    today = datetime.now(UTC).astimezone().date().isoformat()
    await put_team(api, "closed", business_hours={"mon": ["00:00-24:00"], "holidays": [today]})
    await put_team(api, "full", queue_capacity=0)
    await put_team(api, "empty")
    await put_agent(api, "f1", ["full"])
    await set_presence(api, "f1", "away")  # logged in, so only the queue decides
    await put_agent(api, "e1", ["empty"])  # never logged in

    closed = await arrive(api, "closed")
    full = await arrive(api, "full")
    empty = await arrive(api, "empty")
    no_team = await arrive(api, None)

    assert (await wait_row(api, closed, status="closed"))["state"] == "out_of_business_hours"
    assert (await wait_row(api, full, status="closed"))["state"] == "enqueue_failed"
    assert (await wait_row(api, empty, status="closed"))["state"] == "agent_assignment_failed"
    assert (await wait_row(api, no_team, status="closed"))["state"] == "agent_assignment_failed"
    [failed] = await applied(api, full, "routing.enqueue_failed")
    assert failed["data"] == {"team": "full", "reason": "queue_full"}


async def test_queue_timeout_and_a_drop_while_queued(api):
    await builtin_routing(api)
    await put_team(api, "slow", queue_timeout_s=1)
    await put_agent(api, "s1", ["slow"])
    await set_presence(api, "s1", "away")  # logged in, never available: nobody accepts
    timed_out = await arrive(api, "slow")
    dropped = await arrive(api, "slow")
    await wait_row(api, dropped, status="queued")
    [result] = await api.post_events(
        [
            api.event(
                "media.customer_dropped",
                dropped,
                datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            )
        ]
    )
    assert result["outcome"] == "applied"
    assert (await wait_row(api, timed_out, status="closed"))["state"] == "queue_timeout"
    assert (await wait_row(api, dropped, status="closed"))["state"] == "dropped"
    assert len(await applied(api, timed_out, "routing.queue_timeout")) == 1
    assert await applied(api, dropped, "routing.queue_timeout") == []


async def test_offer_goes_to_the_idle_longest_then_the_next_on_reject_and_expiry(api):
    await builtin_routing(api)
    await put_team(api, "sales", offer_timeout_s=1, queue_timeout_s=600)
    for agent in ("a1", "a2", "a3"):
        await put_agent(api, agent, ["sales"])
    for agent in ("a1", "a2", "a3"):  # a1 has waited longest
        await set_presence(api, agent, "available")
    cid = await arrive(api, "sales")
    await wait_row(api, cid, status="offered")
    first = await current_offer(api, cid)
    assert first["agent_id"] == "a1"

    response = await api.client.post(
        f"/api/v1/offers/{first['offer_id']}/reject", headers=api.auth("agent", "a1")
    )
    assert response.status_code == 200, response.text

    async def offered_to_another():
        offer = await current_offer(api, cid)
        return offer if offer["offer_id"] != first["offer_id"] else None

    second = await wait_for(offered_to_another, 10)
    assert second["agent_id"] == "a2"  # a1 went to the back of the line
    # Nobody answers: it expires (once) and passes to the next.

    async def offered_to_a_third():
        offer = await current_offer(api, cid)
        return offer if offer["offer_id"] not in (first["offer_id"], second["offer_id"]) else None

    third = await wait_for(offered_to_a_third, 10)
    assert third["agent_id"] == "a3"
    declines = await applied(api, cid, "routing.offer_declined")
    assert [(d["data"]["agent_id"], d["data"]["reason"]) for d in declines[:2]] == [
        ("a1", "rejected"),
        ("a2", "expired"),
    ]
    # A late accept of the expired offer is told so, and changes nothing.
    late = await api.client.post(
        f"/api/v1/offers/{second['offer_id']}/accept", headers=api.auth("agent", "a2")
    )
    assert late.status_code == 409 and late.json()["error"]["code"] == "expired"
    # Another agent cannot answer a3's offer.
    stranger = await api.client.post(
        f"/api/v1/offers/{third['offer_id']}/accept", headers=api.auth("agent", "a1")
    )
    assert stranger.status_code == 404


async def test_two_accepts_racing_for_one_offer_have_one_outcome(api):
    await builtin_routing(api)
    await put_team(api, "race", offer_timeout_s=60)
    await put_agent(api, "r1", ["race"])
    await set_presence(api, "r1", "available")
    cid = await arrive(api, "race")
    await wait_row(api, cid, status="offered")
    offer = await current_offer(api, cid)

    async def accept():
        return await api.client.post(
            f"/api/v1/offers/{offer['offer_id']}/accept", headers=api.auth("agent", "r1")
        )

    answers = await asyncio.gather(*(accept() for _ in range(5)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 409, 409, 409, 409], [a.text for a in answers]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} == {"taken"}
    row = await wait_row(api, cid, status="active")
    assert row["agent_id"] == "r1" and row["state"] == "customer_answered"
    assert len(await applied(api, cid, "agent.accepted")) == 1


async def test_capacity_one_call_or_several_chats(api):
    await builtin_routing(api)
    await put_team(api, "mix", offer_timeout_s=60)
    await put_agent(api, "m1", ["mix"], chat_capacity=2)
    await set_presence(api, "m1", "available")
    chats = [await arrive(api, "mix", "chat") for _ in range(3)]
    for cid in chats[:2]:
        await wait_row(api, cid, status="offered")
    call = await arrive(api, "mix", "call")
    # The pass that queued the call would have offered it in the same request had m1
    # room: two chats held, so the call and the third chat wait.
    await wait_row(api, call, status="queued")
    assert (await wait_row(api, chats[2], status="queued"))["status"] == "queued"
    # One chat's customer leaves: the third chat gets the room, not the call (m1 still
    # holds a chat).
    [result] = await api.post_events([api.event("media.customer_dropped", chats[0], now_iso())])
    assert result["outcome"] == "applied"
    await wait_row(api, chats[2], status="offered")
    assert (await wait_row(api, call, status="queued"))["status"] == "queued"


async def test_transfer_to_a_team_and_to_an_agent(api):
    await builtin_routing(api)
    await put_team(api, "first", offer_timeout_s=60)
    await put_team(api, "second", offer_timeout_s=60)
    await put_agent(api, "t1", ["first"])
    await put_agent(api, "t2", ["second"])
    await put_agent(api, "t3", ["third"])
    for agent in ("t1", "t2", "t3"):
        await set_presence(api, agent, "available")
    cid = await arrive(api, "first")
    await wait_row(api, cid, status="offered")
    offer = await current_offer(api, cid)
    accepted = await api.client.post(
        f"/api/v1/offers/{offer['offer_id']}/accept", headers=api.auth("agent", "t1")
    )
    assert accepted.status_code == 200
    # To a team: queued there again, offered to its agent, the first state kept.
    moved = await api.client.post(
        f"/api/v1/conversations/{cid}/transfer",
        json={"team": "second"},
        headers=api.auth("agent", "t1"),
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["conversation"]["team"] == "second"
    await wait_row(api, cid, status="offered")
    offer = await current_offer(api, cid)
    assert offer["agent_id"] == "t2"
    await api.client.post(
        f"/api/v1/offers/{offer['offer_id']}/accept", headers=api.auth("agent", "t2")
    )
    await wait_row(api, cid, status="active", agent_id="t2")
    # To an agent: offered with its own offer id and expiry; a reject returns it to t2.
    to_agent = await api.client.post(
        f"/api/v1/conversations/{cid}/transfer",
        json={"agent_id": "t3"},
        headers=api.auth("supervisor", "sup1"),
    )
    assert to_agent.status_code == 200, to_agent.text
    [transfer] = [
        e for e in await applied(api, cid, "routing.transferred") if "agent_id" in e["data"]
    ]
    assert transfer["data"]["agent_id"] == "t3" and transfer["data"]["expires_at"]
    rejected = await api.client.post(
        f"/api/v1/offers/{transfer['data']['offer_id']}/reject", headers=api.auth("agent", "t3")
    )
    assert rejected.status_code == 200
    row = await wait_row(api, cid, status="active")
    assert row["agent_id"] == "t2" and row["state"] == "customer_answered"
    # Bad transfers change nothing.
    for body, field in (({}, "team"), ({"team": "nope"}, "team"), ({"agent_id": "zz"}, "agent_id")):
        bad = await api.client.post(
            f"/api/v1/conversations/{cid}/transfer", json=body, headers=api.auth("supervisor")
        )
        assert bad.status_code == 422, bad.text
        assert bad.json()["error"]["field"] == field
    stranger = await api.client.post(
        f"/api/v1/conversations/{cid}/transfer",
        json={"team": "first"},
        headers=api.auth("agent", "t1"),
    )
    assert stranger.status_code == 404


async def test_presence_is_validated_and_external_routing_stays_out(api):
    await put_team(api, "ext")
    await put_agent(api, "x1", ["ext"])
    bad = await api.client.put(
        "/api/v1/agents/me/presence", json={"presence": "sleeping"}, headers=api.auth("agent", "x1")
    )
    assert bad.status_code == 422 and "presence" in bad.json()["error"]["message"]
    unknown = await api.client.put(
        "/api/v1/agents/me/presence",
        json={"presence": "available"},
        headers=api.auth("agent", "nobody"),
    )
    assert unknown.status_code == 404
    forbidden = await api.client.put(
        "/api/v1/agents/me/presence", json={"presence": "away"}, headers=api.auth("supervisor")
    )
    assert forbidden.status_code == 403
    await set_presence(api, "x1", "available")
    # The tenant routes externally (the test default): the router leaves it alone.
    cid = await arrive(api, "ext")
    services = api.services
    assert await services.routing.router.mode(api.tenant) == "external"
    assert (await wait_row(api, cid, status="new"))["status"] == "new"
