"""Durable timers on both backends: the wrap-up and reply timeouts fire by themselves,
and timers due at once are fired exactly once by two processes sharing the database.
Then, with no database, what arms and disarms them: the machine's offer effects and
the statuses before and after each applied event of a batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from server.app import build_services
from server.ingest.pipeline import Change
from server.routing.repository import TEAM_DEFAULTS
from server.routing.timers import arm_timers
from server.storage import models as m
from server.storage.repository import IngestRows
from state_machine import apply
from tests.app_support import test_settings as settings_of  # (not a test)
from tests.machine_helpers import CID, at
from tests.machine_helpers import event as machine_event
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


# --- what arms and disarms them: the machine's effects and statuses, batch by batch ---

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SETTINGS = {
    "routing": "builtin",
    "wrap_up_timeout_s": 30,
    "reply_timeout_s": 60,
    "teams": {"sales": {**TEAM_DEFAULTS, "queue_timeout_s": 600, "wrap_up_timeout_s": None}},
}


class Batches:
    """One conversation's events applied through the bare machine, a batch at a time,
    and what arm_timers records for each batch."""

    def __init__(self, settings=SETTINGS):
        self.settings = settings
        self.conversation = None

    def batch(self, *steps: tuple[str, float, dict]) -> IngestRows:
        changes = []
        for type_, t, data in steps:
            event = machine_event(type_, t, **data)
            applied = apply(self.conversation, event)
            changes.append(Change(event, self.conversation, applied))
            self.conversation = applied.conversation
        rows = IngestRows()
        arm_timers("acme", changes, NOW, self.settings, rows)
        return rows


def armed(rows: IngestRows) -> dict[str, tuple[str, datetime]]:
    return {row["key"]: (row["kind"], row["due_at"]) for row in rows.timers}


def disarmed(rows: IngestRows) -> set[str]:
    return {row["key"] for row in rows.disarmed_timers}


def test_an_offer_is_timed_from_its_start_to_its_end():
    life = Batches()
    rows = life.batch(("conversation.created", 0, {"team": "sales"}), ("routing.enqueued", 1, {}))
    assert armed(rows) == {f"queue:{CID}": ("queue_expiry", at(601))}
    assert (disarmed(rows), rows.offers) == (set(), [])
    # OfferStarted: the offer is recorded and its expiry armed; the queue runs on.
    rows = life.batch(("routing.offered", 2, {"offer_id": "o1", "expires_at": at(32)}))
    assert armed(rows) == {"offer:o1": ("offer_expiry", at(32))}
    assert [(o["offer_id"], o["agent_id"], o["expires_at"]) for o in rows.offers] == [
        ("o1", "a1", at(32))
    ]
    [expiry] = rows.timers
    assert expiry["event"]["type"] == "routing.offer_declined"
    assert expiry["event"]["data"] == {"agent_id": "a1", "offer_id": "o1", "reason": "expired"}
    # OfferEnded (declined): disarmed; back in the queue with the same wait.
    rows = life.batch(("routing.offer_declined", 10, {"offer_id": "o1"}))
    assert (armed(rows), disarmed(rows)) == ({}, {"offer:o1"})
    # Offered and accepted in one batch: recorded, and its expiry ends disarmed, with the
    # queue's time-out (no longer waiting).
    rows = life.batch(
        ("routing.offered", 11, {"offer_id": "o2", "expires_at": at(41)}),
        ("agent.accepted", 12, {"offer_id": "o2"}),
    )
    assert [o["offer_id"] for o in rows.offers] == ["o2"]
    assert (armed(rows), disarmed(rows)) == ({}, {"offer:o2", f"queue:{CID}"})
    # Wrap-up: armed from when it is stored (the tenant's 30 s: the team sets none),
    # disarmed when submitted.
    rows = life.batch(("media.hangup", 60, {"source": "customer"}))
    assert armed(rows) == {f"wrapup:{CID}": ("wrap_up_timeout", NOW + timedelta(seconds=30))}
    rows = life.batch(("wrapup.submitted", 70, {}))
    assert (armed(rows), disarmed(rows)) == ({}, {f"wrapup:{CID}"})


def test_a_transfer_to_an_agent_ends_the_offer_it_replaces():
    life = Batches()
    life.batch(
        ("conversation.created", 0, {"team": "sales"}),
        ("routing.enqueued", 1, {}),
        ("routing.offered", 2, {"offer_id": "o1", "expires_at": at(32)}),
    )
    rows = life.batch(
        (
            "routing.transferred",
            5,
            {"team": None, "agent_id": "a2", "offer_id": "o2", "expires_at": at(35)},
        )
    )
    assert armed(rows) == {"offer:o2": ("offer_expiry", at(35))}
    assert disarmed(rows) == {"offer:o1"}
    assert [(o["offer_id"], o["agent_id"]) for o in rows.offers] == [("o2", "a2")]


def test_an_external_router_times_its_own_offers_and_queue():
    life = Batches({**SETTINGS, "routing": "external"})
    rows = life.batch(
        ("conversation.created", 0, {"team": "sales"}),
        ("routing.enqueued", 1, {}),
        ("routing.offered", 2, {"offer_id": "o1", "expires_at": at(32)}),
    )
    assert armed(rows) == {}
    assert [o["offer_id"] for o in rows.offers] == ["o1"]  # still answerable by the agent


def test_an_outgoing_message_waits_for_its_reply():
    life = Batches()
    rows = life.batch(("conversation.initiated", 0, {"channel": "sms", "text": "hi"}))
    assert armed(rows) == {f"reply:{CID}": ("reply_timeout", NOW + timedelta(seconds=60))}
    [reply] = rows.timers
    assert reply["event"]["type"] == "media.no_answer"
    assert reply["event"]["data"] == {"reason": "no_reply"}
    rows = life.batch(
        ("media.message", 5, {"message_id": "m2", "sender": "customer", "text": "yes"})
    )
    assert (armed(rows), disarmed(rows)) == ({}, {f"reply:{CID}"})
    # An outgoing call waits for its answer on the provider's side: no reply timer.
    assert armed(Batches().batch(("conversation.initiated", 0, {"channel": "call"}))) == {}
