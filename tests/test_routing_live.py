"""Routing over real sockets and processes: popups and their closing reasons, presence
over the websocket with its grace, the wallboard pushed and held to a SQL
recomputation, an offer expiring once after a killed process restarts, two processes
routing one tenant."""

from __future__ import annotations

import os
import random
import signal
from datetime import UTC, datetime, timedelta

from server.routing.wallboard import recompute
from tests.app_support import prepare_database
from tests.routing_support import (
    applied,
    arrive,
    builtin_routing,
    current_offer,
    now_iso,
    put_agent,
    put_team,
    row,
    set_presence,
    wait_row,
)
from tests.server_support import live_server, spawned_server
from tests.support import wait_for


async def test_popups_accept_reject_expire_and_presence_grace(backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        api = server.api
        await builtin_routing(api)
        await put_team(api, "desk", offer_timeout_s=2, queue_timeout_s=600)
        await put_agent(api, "p1", ["desk"])
        server.services.routing.presence.grace_s = 0.3
        async with server.ws("agent", "p1") as agent:
            answer = await agent.request({"type": "presence", "presence": "available"})
            assert answer["type"] == "ok" and answer["presence"] == "available"
            # A ticket on the contact's earlier conversation shows in the popup.
            earlier = "earlier-1"
            await api.post_events(
                [
                    api.event(
                        "conversation.created",
                        earlier,
                        now_iso(),
                        channel="call",
                        contact="+34911999001",
                        customer={"name": "Ana"},
                    ),
                    api.event("ticket.linked", earlier, now_iso(), ticket_id="T-9"),
                    api.event("media.customer_dropped", earlier, now_iso()),
                ]
            )
            cid = await arrive(api, "desk", contact="+34911999001")
            popup = await agent.wait(lambda f: f["type"] == "popup")
            assert popup["conversation"]["id"] == cid
            assert popup["expires_at"] and popup["offer_id"]
            assert popup["customer"]["contact"] == "+34911999001"
            assert [h["id"] for h in popup["history"]] == [earlier]
            assert [t["ticket_id"] for t in popup["tickets"]] == ["T-9"]
            ok = await agent.request({"type": "accept", "offer_id": popup["offer_id"]})
            assert ok["type"] == "ok" and ok["conversation"]["status"] == "active"
            closed = await agent.wait(
                lambda f: f["type"] == "popup_closed" and f["offer_id"] == popup["offer_id"]
            )
            assert closed["reason"] == "accepted"
            again = await agent.request({"type": "accept", "offer_id": popup["offer_id"]})
            assert again["type"] == "error" and again["code"] == "taken"
            # Hang up and wrap up: the agent is free for the next one, which it rejects.
            await api.post_events([api.event("media.hangup", cid, now_iso(), source="customer")])
            await api.post_events(
                [api.event("wrapup.submitted", cid, now_iso(), disposition="done")]
            )
            second = await arrive(api, "desk")
            popup2 = await agent.wait(
                lambda f: f["type"] == "popup" and f["conversation"]["id"] == second
            )
            rejected = await agent.request({"type": "reject", "offer_id": popup2["offer_id"]})
            assert rejected["type"] == "ok"
            closed2 = await agent.wait(
                lambda f: f["type"] == "popup_closed" and f["offer_id"] == popup2["offer_id"]
            )
            assert closed2["reason"] == "rejected"
            # Offered again (the only agent), left to expire.
            popup3 = await agent.wait(
                lambda f: (
                    f["type"] == "popup"
                    and f["conversation"]["id"] == second
                    and f["offer_id"] != popup2["offer_id"]
                )
            )
            closed3 = await agent.wait(
                lambda f: f["type"] == "popup_closed" and f["offer_id"] == popup3["offer_id"],
                timeout=15,
            )
            assert closed3["reason"] == "expired"
        # The last connection dropped: offline after the grace.

        async def offline():
            response = await api.client.get("/api/v1/agents", headers=api.auth("admin"))
            [agent_row] = [a for a in response.json()["agents"] if a["id"] == "p1"]
            return agent_row["presence"] == "offline"

        await wait_for(offline, 10)


async def test_popups_follow_the_offers_the_machine_started_and_ended(backend, tmp_path):
    """External routing, the test makes the offers: an offer made and accepted in one
    request shows the agent nothing; a popup_closed gives the machine's reason."""
    async with live_server(backend, tmp_path / "data") as server:
        api = server.api
        popups = server.services.routing.popups
        async with server.ws("agent", "q1") as agent:
            await wait_for(lambda: popups.connected(api.tenant, "q1"))
            expires = "2099-01-01T00:00:00Z"
            queued = []
            for cid, contact in (("both-1", "+34911770001"), ("later-1", "+34911770002")):
                queued += [
                    api.event(
                        "conversation.created",
                        cid,
                        now_iso(),
                        channel="call",
                        contact=contact,
                        customer={"name": cid},
                    ),
                    api.event("routing.enqueued", cid, now_iso(), team="desk"),
                ]
            results = await api.post_events(queued)
            assert {r["outcome"] for r in results} == {"applied"}, results
            results = await api.post_events(
                [
                    api.event(
                        "routing.offered",
                        "both-1",
                        now_iso(),
                        agent_id="q1",
                        offer_id="of-both",
                        expires_at=expires,
                    ),
                    api.event("agent.accepted", "both-1", now_iso(), agent_id="q1",
                              offer_id="of-both"),
                ]
            )  # fmt: skip
            assert {r["outcome"] for r in results} == {"applied"}, results
            for step in (
                api.event(
                    "routing.offered",
                    "later-1",
                    now_iso(),
                    agent_id="q1",
                    offer_id="of-later",
                    expires_at=expires,
                ),
                api.event(
                    "routing.offer_declined",
                    "later-1",
                    now_iso(),
                    agent_id="q1",
                    offer_id="of-later",
                    reason="rejected",
                ),
            ):
                [result] = await api.post_events([step])
                assert result["outcome"] == "applied", result
            await agent.wait(lambda f: f["type"] == "popup_closed")
            # One lane per agent: anything of the first offer would have come first.
            assert [
                (f["type"], f["offer_id"], f.get("reason"))
                for f in agent.frames
                if f["type"] in ("popup", "popup_closed")
            ] == [("popup", "of-later", None), ("popup_closed", "of-later", "rejected")]


async def test_wallboard_is_pushed_and_served(backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        api = server.api
        await builtin_routing(api)
        await put_team(api, "wall", offer_timeout_s=60, service_level_s=30)
        await put_agent(api, "w1", ["wall"])
        await set_presence(api, "w1", "away")
        async with server.ws("wallboard", "board1") as board:
            first = await board.request({"type": "subscribe_wallboard", "teams": ["wall"]})
            assert first["type"] == "wallboard" and first["seq"] == 1
            assert first["metrics"]["total"]["agents"]["away"] == 1
            cid = await arrive(api, "wall", "chat")
            await wait_row(api, cid, status="queued")
            pushed = await board.wait(
                lambda f: f["type"] == "wallboard" and f["metrics"]["total"]["waiting"] == 1
            )
            assert pushed["metrics"]["teams"]["wall"]["channels"]["chat"]["waiting"] == 1
            await set_presence(api, "w1", "available")
            await wait_row(api, cid, status="offered")
            offered = await board.wait(
                lambda f: (
                    f["type"] == "wallboard"
                    and f["metrics"]["total"]["offered"] == 1
                    and f["metrics"]["total"]["agents"]["busy"] == 1
                )
            )
            assert offered["seq"] > pushed["seq"]
        forbidden = await api.client.get("/api/v1/wallboard", headers=api.auth("agent", "w1"))
        assert forbidden.status_code == 403
        served = await api.client.get("/api/v1/wallboard", headers=api.auth("supervisor"))
        assert served.status_code == 200
        assert served.json()["metrics"]["total"]["offered"] == 1


def _random_stream(api, rng: random.Random, count: int) -> list[dict]:
    """Valid walks of `count` conversations, interleaved: every outcome a wallboard counts."""
    base = datetime.now(UTC) - timedelta(minutes=30)
    walks = []
    for n in range(count):
        cid = f"wb-{n}"
        t = base + timedelta(seconds=rng.randint(0, 600))

        def at(seconds, t=t):
            return (t + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

        team = rng.choice(["red", "blue", None])
        channel = rng.choice(["call", "chat", "sms"])
        walk = [
            api.event(
                "conversation.created",
                cid,
                at(0),
                channel=channel,
                contact=f"+3460000{n:04d}",
                customer={"name": f"C{n}"},
                **({"team": team} if team else {}),
            )
        ]
        if team is None:
            walk.append(api.event("routing.assignment_failed", cid, at(1), reason="no_team"))
        else:
            fate = rng.choice(["hours", "full", "queued", "drop", "timeout", "answer", "answer"])
            if fate == "hours":
                walk.append(api.event("routing.out_of_hours", cid, at(1), team=team))
            elif fate == "full":
                walk.append(
                    api.event("routing.enqueue_failed", cid, at(1), team=team, reason="queue_full")
                )
            else:
                walk.append(api.event("routing.enqueued", cid, at(1), team=team))
                if fate == "drop":
                    walk.append(api.event("media.customer_dropped", cid, at(rng.randint(2, 90))))
                elif fate == "timeout":
                    walk.append(api.event("routing.queue_timeout", cid, at(300)))
                elif fate == "answer":
                    wait = rng.randint(2, 60)
                    offer = f"o-{n}"
                    walk += [
                        api.event(
                            "routing.offered",
                            cid,
                            at(wait - 1),
                            agent_id="x",
                            offer_id=offer,
                            expires_at=at(wait + 20),
                        ),
                        api.event("agent.accepted", cid, at(wait), agent_id="x", offer_id=offer),
                    ]
                    if rng.random() < 0.7:
                        walk.append(api.event("media.hangup", cid, at(wait + 50), source="agent"))
                        if rng.random() < 0.7:
                            walk.append(
                                api.event("wrapup.submitted", cid, at(wait + 80), disposition="ok")
                            )
                            if rng.random() < 0.5:
                                walk.append(api.event("csat.received", cid, at(wait + 90), score=3))
        walks.append(walk)
    stream = []
    while any(walks):
        walk = rng.choice([w for w in walks if w])
        stream.append(walk.pop(0))
    return stream


def _numbers(buckets) -> dict:
    return {
        key: (
            {k: round(v, 6) for k, v in tally.sums.items() if v},
            {k: v for k, v in tally.waiting_since.items() if v},
        )
        for key, tally in buckets.items()
        if any(tally.sums.values()) or tally.waiting_since
    }


async def test_wallboard_equals_sql_recomputation_after_a_random_stream(api):
    services = api.services
    await put_team(api, "red", service_level_s=15)
    wallboard = services.routing.wallboard
    await wallboard.tenant(api.tenant)  # loaded now: what follows is incremental
    rng = random.Random(7)
    stream = _random_stream(api, rng, 60)
    for start in range(0, len(stream), 7):
        results = await api.post_events(stream[start : start + 7])
        assert all(r["outcome"] == "applied" for r in results), results

    async def same():
        day_start = await wallboard.day_start(api.tenant)
        async with services.db.snapshot() as conn:
            expected = _numbers(await recompute(conn, api.tenant, day_start))
        assert _numbers(wallboard.tenants[api.tenant].buckets) == expected
        return True

    await wait_for(same, 10)
    metrics = await wallboard.metrics(api.tenant)
    assert metrics["total"]["answered"] > 0 and metrics["total"]["unanswered"]["dropped"] >= 0


async def test_an_offer_pending_when_the_process_dies_expires_once_after_restart(backend, tmp_path):
    await prepare_database(backend.database_url)
    data = tmp_path / "data"
    async with spawned_server(backend, data) as first:
        api = first.api
        await builtin_routing(api)
        await put_team(api, "night", offer_timeout_s=2, queue_timeout_s=600)
        await put_agent(api, "n1", ["night"])
        await set_presence(api, "n1", "available")
        cid = await arrive(api, "night")
        await wait_row(api, cid, status="offered")
        offer = await current_offer(api, cid)
        os.kill(first.pid, signal.SIGKILL)
    expires = datetime.fromisoformat(offer["expires_at"])
    await wait_for(lambda: datetime.now(UTC) > expires, 10)  # due while nobody runs
    async with spawned_server(backend, data) as second:
        api = second.api

        async def expired_once():
            declines = [
                d
                for d in await applied(api, cid, "routing.offer_declined")
                if d["data"]["offer_id"] == offer["offer_id"]
            ]
            return declines

        [decline] = await wait_for(expired_once, 15)
        assert decline["data"]["reason"] == "expired"
        assert (await row(api, cid))["status"] in ("queued", "offered")


async def test_two_processes_never_double_offer(backend, tmp_path):
    await prepare_database(backend.database_url)
    data = tmp_path / "data"
    async with spawned_server(backend, data) as one, spawned_server(backend, data) as two:
        await builtin_routing(one.api)
        await put_team(one.api, "pair", offer_timeout_s=120, queue_timeout_s=600)
        agents = [f"d{n}" for n in range(4)]
        for agent in agents:
            await put_agent(one.api, agent, ["pair"])
        for n, agent in enumerate(agents):
            await set_presence((one, two)[n % 2].api, agent, "available")
        ids = [await arrive((one, two)[n % 2].api, "pair") for n in range(16)]

        async def settled():
            rows = [await row(one.api, cid) for cid in ids]
            statuses = [r["status"] for r in rows]
            if statuses.count("new") or statuses.count("offered") < len(agents):
                return None
            return rows

        await wait_for(settled, 30)
        offered_to = []
        for cid in ids:
            offers = await applied(one.api, cid, "routing.offered")
            assert len(offers) <= 1, offers
            offered_to += [o["data"]["agent_id"] for o in offers]
        assert sorted(offered_to) == agents  # one call each, nobody twice
