"""GET /api/v1/conversations/{id} after the walks of docs/domain.md over HTTP, on both
backends: every column, the customer, transcript, tickets, recordings and timeline;
dates in the tenant's zone; what an agent may see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

BASE = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)  # 00:30 the next day in Madrid

# docs/domain.md's view columns: every one must be on the wire.
COLUMNS = (
    "id", "customer_name", "created_date", "created_time", "created_at", "agent_name",
    "agent_id", "team", "direction", "disposition", "state", "wrap_up_note", "channel",
    "channels", "contact", "contacto_number", "ticket_id", "csat", "hangup_source", "status",
    "has_recording", "wait_s", "handle_s",
)  # fmt: skip


def at(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def instant(seconds: float) -> str:
    """As the API renders instants: UTC, milliseconds, Z."""
    moment = BASE + timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def put_agent(api, agent_id: str, name: str) -> None:
    response = await api.client.put(
        f"/api/v1/agents/{agent_id}",
        json={"name": name, "teams": ["sales"]},
        headers=api.auth("admin", "adm"),
    )
    assert response.status_code == 200, response.text


async def step(api, event: dict, version: int, outcome: str = "applied") -> dict:
    """Post one event and check its outcome and the version it answers with."""
    [result] = await api.post_events([event])
    assert result["event_id"] == event["event_id"]
    assert result["conversation_id"] == event["conversation_id"]
    assert (result["outcome"], result["version"]) == (outcome, version), result
    return result


def check_row(row: dict, expected: dict) -> None:
    missing = [name for name in (*COLUMNS, "version") if name not in row]
    assert not missing, f"columns missing from the row: {missing}"
    assert {name: row[name] for name in expected} == expected


def timeline_of(detail: dict) -> list[tuple]:
    return [(item["type"], item["outcome"], item["version"]) for item in detail["timeline"]]


async def get(api, conversation_id: str, role: str = "supervisor", user: str = "sup1"):
    return await api.client.get(
        f"/api/v1/conversations/{conversation_id}", headers=api.auth(role, user)
    )


# --------------------------------------------------------------------------- the walks


async def test_inbound_walk_sets_every_column(api):
    await put_agent(api, "a1", "Alice Agent")
    cid = "in-1"
    walk = [
        (api.event("conversation.created", cid, at(0), channel="call", contact="+34911000101",
                   contacto_number="+34910000000",
                   customer={"name": "Ann Lee", "id": "cust-1", "email": "ann@example.com",
                             "phone": "+34911000101"}), "new"),
        (api.event("routing.enqueued", cid, at(5), team="sales"), "queued"),
        (api.event("routing.offered", cid, at(10), agent_id="a1", offer_id="o1",
                   expires_at=at(30)), "offered"),
        (api.event("agent.accepted", cid, at(17.5), agent_id="a1", offer_id="o1"), "active"),
        (api.event("media.hangup", cid, at(77.5), source="customer"), "wrap_up"),
        (api.event("wrapup.submitted", cid, at(107.5), disposition="resolved",
                   note="refund issued"), "closed"),
    ]  # fmt: skip
    for version, (event, status) in enumerate(walk, start=1):
        await step(api, event, version)
        assert (await api.conversation(cid))["conversation"]["status"] == status

    detail = await api.conversation(cid)
    check_row(
        detail["conversation"],
        {
            "id": cid,
            "version": 6,
            "status": "closed",
            "state": "customer_answered",
            "team": "sales",
            "agent_id": "a1",
            "agent_name": "Alice Agent",
            "direction": "incoming",
            "channel": "call",
            "channels": ["call"],
            "contact": "+34911000101",
            "contacto_number": "+34910000000",
            "customer_name": "Ann Lee",
            "hangup_source": "customer",
            "disposition": "resolved",
            "wrap_up_note": "refund issued",
            "ticket_id": None,
            "csat": None,
            "has_recording": False,
            "wait_s": 17.5,
            "handle_s": 90.0,
            "created_at": instant(0),
            "created_date": "2026-11-25",
            "created_time": "00:30:00",
        },
    )
    assert detail["customer"] == {
        "id": "cust-1",
        "name": "Ann Lee",
        "email": "ann@example.com",
        "phone": "+34911000101",
        "contact": "+34911000101",
    }
    assert timeline_of(detail) == [
        ("conversation.created", "applied", 1),
        ("routing.enqueued", "applied", 2),
        ("routing.offered", "applied", 3),
        ("agent.accepted", "applied", 4),
        ("media.hangup", "applied", 5),
        ("wrapup.submitted", "applied", 6),
    ]
    assert [item["event_id"] for item in detail["timeline"]] == [e["event_id"] for e, _ in walk]
    assert detail["timeline"][0]["occurred_at"] == instant(0)
    assert detail["timeline"][1]["data"] == {"team": "sales"}


async def test_outbound_walk_wrapped_up_by_the_agent_or_by_the_timeout(api):
    await outbound_walk(api, "submitted")
    await outbound_walk(api, "timeout")


async def outbound_walk(api, wrap_up: str) -> None:
    await put_agent(api, "a7", "Olga Out")
    cid = f"out-{wrap_up}"
    if wrap_up == "submitted":
        last = api.event("wrapup.submitted", cid, at(100), disposition="sale", note="2 seats")
    else:
        last = api.event("wrapup.timeout", cid, at(100))
    walk = [
        (api.event("conversation.initiated", cid, at(0), channel="call", contact="+34600000001",
                   agent_id="a7", contacto_number="+34910000000"), "dialing"),
        (api.event("media.ringing", cid, at(2)), "ringing"),
        (api.event("media.answered", cid, at(12)), "active"),
        (api.event("media.hangup", cid, at(70), source="agent"), "wrap_up"),
        (last, "closed"),
    ]  # fmt: skip
    for version, (event, status) in enumerate(walk, start=1):
        await step(api, event, version)
        assert (await api.conversation(cid))["conversation"]["status"] == status

    detail = await api.conversation(cid)
    submitted = wrap_up == "submitted"
    check_row(
        detail["conversation"],
        {
            "id": cid,
            "version": 5,
            "status": "closed",
            "state": "customer_answered",
            "team": None,
            "agent_id": "a7",
            "agent_name": "Olga Out",
            "direction": "outgoing",
            "channel": "call",
            "channels": ["call"],
            "contact": "+34600000001",
            "contacto_number": "+34910000000",
            "hangup_source": "agent",
            "disposition": "sale" if submitted else None,
            "wrap_up_note": "2 seats" if submitted else None,
            "wait_s": 12.0,
            "handle_s": 88.0,
            "created_at": instant(0),
            "created_date": "2026-11-25",
            "created_time": "00:30:00",
        },
    )
    assert timeline_of(detail) == [
        ("conversation.initiated", "applied", 1),
        ("media.ringing", "applied", 2),
        ("media.answered", "applied", 3),
        ("media.hangup", "applied", 4),
        (last["type"], "applied", 5),
    ]
    if not submitted:
        # A late wrap-up after the timeout still records the disposition.
        late = api.event("wrapup.submitted", cid, at(130), disposition="callback")
        await step(api, late, 6)
        row = (await api.conversation(cid))["conversation"]
        assert (row["status"], row["disposition"], row["handle_s"]) == ("closed", "callback", 88.0)


async def test_transfers_keep_the_first_state_and_follow_the_agent(api):
    await put_agent(api, "a1", "Alice Agent")
    await put_agent(api, "a2", "Bob Builder")

    async def answered(cid: str) -> None:
        events = [
            api.event("conversation.created", cid, at(0), channel="call", contact="+34911000102",
                      customer={"name": "Cy"}),
            api.event("routing.enqueued", cid, at(1), team="sales"),
            api.event("routing.offered", cid, at(2), agent_id="a1", offer_id=f"{cid}-o1",
                      expires_at=at(30)),
            api.event("agent.accepted", cid, at(10), agent_id="a1", offer_id=f"{cid}-o1"),
        ]  # fmt: skip
        results = await api.post_events(events)
        assert [r["outcome"] for r in results] == ["applied"] * 4

    # Answered, transferred to a team, timed out there: closed, still customer_answered.
    await answered("tr-1")
    await step(api, api.event("routing.transferred", "tr-1", at(40), team="support"), 5)
    row = (await api.conversation("tr-1"))["conversation"]
    assert (row["status"], row["state"], row["team"]) == ("queued", "customer_answered", "support")
    await step(api, api.event("routing.queue_timeout", "tr-1", at(400)), 6)
    row = (await api.conversation("tr-1"))["conversation"]
    assert (row["status"], row["state"], row["team"]) == ("closed", "customer_answered", "support")
    assert row["wait_s"] == 10.0

    # Answered by a1, transferred to a2 who accepts: a2 is the agent, with a2's name,
    # and the wait is not added to.
    await answered("tr-2")
    transfer = api.event("routing.transferred", "tr-2", at(40), agent_id="a2",
                         offer_id="tr-2-o2", expires_at=at(60))  # fmt: skip
    await step(api, transfer, 5)
    await step(api, api.event("agent.accepted", "tr-2", at(45), agent_id="a2",
                              offer_id="tr-2-o2"), 6)  # fmt: skip
    row = (await api.conversation("tr-2"))["conversation"]
    assert (row["status"], row["state"]) == ("active", "customer_answered")
    assert (row["agent_id"], row["agent_name"]) == ("a2", "Bob Builder")
    assert row["wait_s"] == 10.0
    # A declined transfer to an agent goes back to active with the same agent.
    await step(api, api.event("routing.transferred", "tr-2", at(50), agent_id="a1",
                              offer_id="tr-2-o3", expires_at=at(70)), 7)  # fmt: skip
    await step(api, api.event("routing.offer_declined", "tr-2", at(55), agent_id="a1",
                              offer_id="tr-2-o3", reason="rejected"), 8)  # fmt: skip
    row = (await api.conversation("tr-2"))["conversation"]
    assert (row["status"], row["agent_id"], row["agent_name"]) == ("active", "a2", "Bob Builder")
    # Then to an agent the tenant has not set up: its id, shown as its name (not a2's).
    await step(api, api.event("routing.transferred", "tr-2", at(60), agent_id="ghost",
                              offer_id="tr-2-o4", expires_at=at(80)), 9)  # fmt: skip
    await step(api, api.event("agent.accepted", "tr-2", at(62), agent_id="ghost",
                              offer_id="tr-2-o4"), 10)  # fmt: skip
    row = (await api.conversation("tr-2"))["conversation"]
    assert (row["status"], row["agent_id"], row["agent_name"]) == ("active", "ghost", "ghost")
    assert row["state"] == "customer_answered"


async def test_detail_has_transcript_tickets_recordings_and_csat(api):
    await put_agent(api, "a1", "Alice Agent")
    cid = "chat-1"
    events = [
        api.event("conversation.created", cid, at(0), channel="chat", contact="visitor-9",
                  customer={"name": "Dee", "email": "dee@example.com"}),
        api.event("routing.enqueued", cid, at(1), team="sales"),
        api.event("routing.offered", cid, at(2), agent_id="a1", offer_id="o1", expires_at=at(30)),
        api.event("agent.accepted", cid, at(4), agent_id="a1", offer_id="o1"),
        api.event("media.message", cid, at(5), message_id="m1", sender="customer",
                  text="Hello <b>there</b> 👋"),
        api.event("media.message", cid, at(6), message_id="m2", sender="agent", text="Hi Dee"),
        api.event("media.message_status", cid, at(7), message_id="m2", status="read"),
        api.event("media.channel_added", cid, at(8), channel="whatsapp"),
        api.event("ticket.linked", cid, at(9), ticket_id="T-1", system="zendesk",
                  url="https://t.example/1"),
        api.event("ticket.linked", cid, at(10), ticket_id="T-2"),
        api.event("media.recording_ready", cid, at(11), recording_id="r1", duration_s=42.5,
                  content_type="audio/mpeg"),
        api.event("media.hangup", cid, at(20), source="agent"),
        api.event("csat.received", cid, at(21), score=4),
        api.event("wrapup.submitted", cid, at(30), disposition="info"),
    ]  # fmt: skip
    results = await api.post_events(events)
    assert [(r["outcome"], r["version"]) for r in results] == [
        ("applied", n) for n in range(1, len(events) + 1)
    ]
    detail = await api.conversation(cid)
    check_row(
        detail["conversation"],
        {
            "status": "closed",
            "channel": "omnichannel",
            "channels": ["chat", "whatsapp"],
            "ticket_id": "T-2",
            "csat": 4,
            "has_recording": True,
            "hangup_source": "agent",
            "contacto_number": None,
            "version": len(events),
        },
    )
    assert detail["customer"]["name"] == "Dee"
    assert detail["customer"]["email"] == "dee@example.com"
    assert [
        (item["message_id"], item["sender"], item["text"], item["status"], item["at"])
        for item in detail["transcript"]
    ] == [
        ("m1", "customer", "Hello <b>there</b> 👋", None, instant(5)),
        ("m2", "agent", "Hi Dee", "read", instant(6)),
    ]
    assert [(t["ticket_id"], t["system"], t["url"]) for t in detail["tickets"]] == [
        ("T-1", "zendesk", "https://t.example/1"),
        ("T-2", None, None),
    ]
    assert [
        {k: r[k] for k in ("id", "duration_s", "content_type")} for r in detail["recordings"]
    ] == [{"id": "r1", "duration_s": 42.5, "content_type": "audio/mpeg"}]
    assert [item["version"] for item in detail["timeline"]] == list(range(1, len(events) + 1))


# --------------------------------------------------------------------------- reading


async def test_dates_follow_the_tenant_time_zone_and_unknown_ids_are_404(api):
    await step(api, api.event("conversation.created", "tz-1", at(0), channel="sms",
                              contact="+34600000011", customer={"name": "Tom"}), 1)  # fmt: skip
    row = (await api.conversation("tz-1"))["conversation"]
    assert (row["created_date"], row["created_time"]) == ("2026-11-25", "00:30:00")
    assert row["created_at"] == "2026-11-24T23:30:00.000Z"
    response = await api.client.put(
        "/api/v1/tenant", json={"timezone": "America/New_York"}, headers=api.auth("admin")
    )
    assert response.status_code == 200, response.text
    row = (await api.conversation("tz-1"))["conversation"]
    assert (row["created_date"], row["created_time"]) == ("2026-11-24", "18:30:00")
    assert row["created_at"] == "2026-11-24T23:30:00.000Z"

    for conversation_id in ("nope", "a%00b", "x" * 300, "%F0%9F%92%A9"):
        response = await get(api, conversation_id)
        assert response.status_code == 404, (conversation_id, response.text)
        error = response.json()["error"]
        assert error["code"] == "not_found"
        assert error["message"]


async def test_an_agent_sees_only_its_own_conversations(api):
    await put_agent(api, "a1", "Alice Agent")
    await put_agent(api, "a2", "Bob Builder")
    cid = "vis-1"
    await api.post_events([
        api.event("conversation.created", cid, at(0), channel="call", contact="+34911000130",
                  customer={"name": "Vi"}),
        api.event("routing.enqueued", cid, at(1), team="sales"),
        api.event("routing.offered", cid, at(2), agent_id="a1", offer_id="o1",
                  expires_at=at(20)),
    ])  # fmt: skip

    async def sees(user: str) -> bool:
        response = await get(api, cid, "agent", user)
        assert response.status_code in (200, 404), response.text
        if response.status_code == 404:
            assert response.json()["error"]["code"] == "not_found"
        return response.status_code == 200

    # Offered to a1 now: a1 sees it, a2 does not; supervisors and admins see everything.
    assert (await sees("a1"), await sees("a2")) == (True, False)
    for role in ("supervisor", "admin"):
        assert (await get(api, cid, role, "boss")).status_code == 200
    # Declined: the offer is over and so is a1's view of it.
    await step(api, api.event("routing.offer_declined", cid, at(5), agent_id="a1",
                              offer_id="o1", reason="rejected"), 4)  # fmt: skip
    assert (await sees("a1"), await sees("a2")) == (False, False)
    # Offered to a2, accepted: a2 is its agent and sees it from then on.
    await api.post_events([
        api.event("routing.offered", cid, at(6), agent_id="a2", offer_id="o2",
                  expires_at=at(26)),
        api.event("agent.accepted", cid, at(8), agent_id="a2", offer_id="o2"),
        api.event("media.hangup", cid, at(30), source="customer"),
    ])  # fmt: skip
    assert (await sees("a1"), await sees("a2")) == (False, True)
    detail = (await get(api, cid, "agent", "a2")).json()
    assert detail["conversation"]["agent_name"] == "Bob Builder"
    assert len(detail["timeline"]) == 7

    # An outgoing conversation is its initiating agent's from the start.
    await step(api, api.event("conversation.initiated", "vis-2", at(0), channel="call",
                              contact="+34600000012", agent_id="a1"), 1)  # fmt: skip
    assert (await get(api, "vis-2", "agent", "a1")).status_code == 200
    assert (await get(api, "vis-2", "agent", "a2")).status_code == 404
    assert (await get(api, "vis-2", "agent", "a1")).json()["conversation"]["agent_name"] == (
        "Alice Agent"
    )
