"""Durable timers on both backends: the wrap-up and reply timeouts fire by themselves,
and timers due at once are fired exactly once by two processes sharing the database."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from server.app import build_services
from server.storage import models as m
from tests.app_support import test_settings as settings_of  # (not a test)
from tests.routing_support import applied, now_iso, put_team, wait_row
from tests.support import wait_for


async def set_tenant(api, **settings) -> None:
    response = await api.client.put("/api/v1/tenant", json=settings, headers=api.auth("admin"))
    assert response.status_code == 200, response.text


async def in_wrap_up(api, cid: str, team: str | None = "ops") -> None:
    """An answered inbound call, hung up: in wrap_up (external routing: we route)."""
    results = await api.post_events(
        [
            api.event(
                "conversation.created",
                cid,
                now_iso(),
                channel="call",
                contact="+34911222333",
                customer={"name": "W"},
                **({"team": team} if team else {}),
            ),
            api.event("routing.enqueued", cid, now_iso(), team=team or "none"),
            api.event(
                "routing.offered",
                cid,
                now_iso(),
                agent_id="a1",
                offer_id=f"o-{cid}",
                expires_at=datetime.now(UTC).isoformat(),
            ),
            api.event("agent.accepted", cid, now_iso(), agent_id="a1", offer_id=f"o-{cid}"),
            api.event("media.hangup", cid, now_iso(), source="customer"),
        ]
    )
    assert all(r["outcome"] == "applied" for r in results), results


async def test_wrap_up_and_reply_timeouts_fire(api):
    await set_tenant(api, wrap_up_timeout_s=1, reply_timeout_s=1)
    await put_team(api, "ops", wrap_up_timeout_s=2)
    await in_wrap_up(api, "wrap-1")
    row = await wait_row(api, "wrap-1", status="closed")
    assert row["state"] == "customer_answered" and row["disposition"] is None
    assert len(await applied(api, "wrap-1", "wrapup.timeout")) == 1
    # An outgoing SMS nobody answers: no_reply, then the tenant's wrap-up timeout.
    [result] = await api.post_events(
        [
            api.event(
                "conversation.initiated",
                "out-1",
                now_iso(),
                channel="sms",
                contact="+34600111222",
                agent_id="a1",
                text="hello",
            )
        ]
    )
    assert result["outcome"] == "applied"
    row = await wait_row(api, "out-1", status="closed")
    assert row["state"] == "customer_did_not_respond"
    [no_reply] = await applied(api, "out-1", "media.no_answer")
    assert no_reply["data"] == {"reason": "no_reply"}
    # Wrapped up in time: the timer is disarmed and never fires.
    await set_tenant(api, wrap_up_timeout_s=600)
    await in_wrap_up(api, "wrap-2", team=None)
    await api.post_events([api.event("wrapup.submitted", "wrap-2", now_iso(), disposition="ok")])
    async with api.services.db.read() as conn:
        keys = (await conn.execute(select(m.timers.c.key))).scalars().all()
    assert "wrapup:wrap-2" not in keys


async def test_timers_due_together_fire_once_across_two_processes(api, tmp_path):
    await set_tenant(api, wrap_up_timeout_s=1)
    other = build_services(settings_of(api.backend, tmp_path / "other"))  # a second process
    await other.start()
    try:
        ids = [f"pair-{n}" for n in range(20)]
        for cid in ids:
            await in_wrap_up(api, cid, team=None)

        async def all_closed():
            for cid in ids:
                await wait_row(api, cid, status="closed")
            return True

        await wait_for(all_closed, 20)
        for cid in ids:
            assert len(await applied(api, cid, "wrapup.timeout")) == 1
        # Each timer was claimed by exactly one of the two processes.
        assert api.services.routing.timers.fired + other.routing.timers.fired == len(ids)
    finally:
        await other.stop()
