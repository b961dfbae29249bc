"""The router's memory on both backends: passes decide from it without rebuilding it,
and a change the router never heard of (another process on its own in-process bus)
is found by holding the memory to the database, then routed. Popups read ahead of
an offer drop what they read when the contact's conversations change meanwhile."""

from __future__ import annotations

from server.app import build_services
from server.core.settings import Settings
from server.storage.repository import conversation_from_row, get_conversation_row
from tests.app_support import SECRET
from tests.routing_support import (
    arrive,
    builtin_routing,
    current_offer,
    now_iso,
    put_agent,
    put_team,
    set_presence,
    wait_row,
)
from tests.server_support import live_server
from tests.support import wait_for


async def test_passes_use_memory_and_a_change_never_announced_is_found(api, tmp_path):
    await builtin_routing(api)
    await put_team(api, "mem", offer_timeout_s=120, queue_timeout_s=600)
    for agent in ("m1", "m2", "m3"):
        await put_agent(api, agent, ["mem"])
    await set_presence(api, "m1", "available")
    await set_presence(api, "m2", "available")
    router = api.services.routing.router
    first = await arrive(api, "mem")
    await wait_row(api, first, status="offered")
    rebuilds = router.rebuilds
    second = await arrive(api, "mem")
    await wait_row(api, second, status="offered")
    assert {(await current_offer(api, c))["agent_id"] for c in (first, second)} == {"m1", "m2"}
    assert router.rebuilds == rebuilds  # decided from memory, not from a fresh read
    # What the router kept of its decisions is what the machine made of them in ingest:
    # the stored conversation, column for column.
    memory = router._states[api.tenant]
    async with api.services.db.read() as conn:
        for cid in (first, second):
            stored = conversation_from_row(await get_conversation_row(conn, api.tenant, cid))
            assert memory.entries[cid].conversation == stored
    # Another process on its own in-process bus: nothing it commits is announced here.
    other = build_services(
        Settings(
            data_dir=tmp_path / "other",
            database_url=api.backend.database_url,
            bus_url="memory://",
            bus_prefix="",
            secret=SECRET,
        )
    )
    try:
        await other.routing.presence.set(api.tenant, "m3", "available")
        unheard = "unheard-1"
        event = {
            "event_id": f"new-{unheard}",
            "type": "conversation.created",
            "conversation_id": unheard,
            "occurred_at": now_iso(),
            "data": {
                "channel": "call",
                "contact": "+34911000999",
                "customer": {"name": "Unheard"},
                "team": "mem",
            },
        }
        [outcome] = await other.ingest.submit(api.tenant, [event])
        assert outcome.outcome == "applied", outcome
        row = await wait_row(api, unheard, status="offered", timeout=20)
        assert row["status"] == "offered"
        assert (await current_offer(api, unheard))["agent_id"] == "m3"
    finally:
        await other.ingest.close()
        await other.db.close()


async def test_a_popup_read_ahead_is_dropped_when_the_contact_changes(backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        api = server.api  # external routing: the test makes the offers
        popups = server.services.routing.popups
        contact = "+34911777001"
        earlier, offered = "pre-earlier", "pre-offered"
        created = [
            api.event(
                "conversation.created",
                cid,
                now_iso(),
                channel="call",
                contact=contact,
                customer={"name": "Eva"},
                team="desk",
            )
            for cid in (earlier, offered)
        ]
        results = await api.post_events(
            [*created, api.event("routing.enqueued", offered, now_iso(), team="desk")]
        )
        assert all(r["outcome"] == "applied" for r in results), results
        async with server.ws("agent", "q1") as agent:
            await wait_for(lambda: popups.connected(api.tenant, "q1"))
            popups.prefetch(api.tenant, [(offered, contact, "q1")])
            read = popups._prefetched[(api.tenant, offered)][2]
            await wait_for(read.done)  # read before the ticket below exists
            [linked] = await api.post_events(
                [api.event("ticket.linked", earlier, now_iso(), ticket_id="T-late")]
            )
            assert linked["outcome"] == "applied"
            await wait_for(lambda: (api.tenant, offered) not in popups._prefetched)
            [made] = await api.post_events(
                [
                    api.event(
                        "routing.offered",
                        offered,
                        now_iso(),
                        agent_id="q1",
                        offer_id="of-pre-1",
                        expires_at="2099-01-01T00:00:00Z",
                    )
                ]
            )
            assert made["outcome"] == "applied"
            popup = await agent.wait(lambda f: f["type"] == "popup")
            assert popup["offer_id"] == "of-pre-1"
            assert [t["ticket_id"] for t in popup["tickets"]] == ["T-late"]
            assert [h["id"] for h in popup["history"]] == [earlier]
