"""POST /api/v1/events end to end, on both backends: idempotency under concurrency, late
and invalid events, malformed bodies, msgpack, data a database cannot store, and
"nothing half-stored" (a database failure injected mid-batch) with the bus news that
goes with a commit. The conversation walks are in test_api_conversations.py."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

import msgpack
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from server.bus import BusMessage
from server.storage import models as m
from server.storage import repository
from tests.support import wait_for

BASE = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)  # 00:30 the next day in Madrid


def at(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def step(api, event: dict, version: int, outcome: str = "applied") -> dict:
    """Post one event and check its outcome and the version it answers with."""
    [result] = await api.post_events([event])
    assert result["event_id"] == event["event_id"]
    assert result["conversation_id"] == event["conversation_id"]
    assert (result["outcome"], result["version"]) == (outcome, version), result
    return result


def timeline_of(detail: dict) -> list[tuple]:
    return [(item["type"], item["outcome"], item["version"]) for item in detail["timeline"]]


async def count(api, table, **where) -> int:
    async with api.services.db.read() as conn:
        statement = select(func.count()).select_from(table)
        for name, value in where.items():
            column = table.c[name]
            statement = statement.where(
                column.in_(value) if isinstance(value, list | set | tuple) else column == value
            )
        return (await conn.execute(statement)).scalar_one()


# --------------------------------------------------------------------------- concurrency


async def test_the_same_event_100_times_concurrently_is_applied_once(api):
    await step(api, api.event("conversation.created", "dup-1", at(0), channel="call",
                              contact="+34911000103", customer={"name": "Eve"}), 1)  # fmt: skip
    event = api.event("routing.enqueued", "dup-1", at(1), team="sales")
    headers = api.auth("service", "svc")

    async def post() -> dict:
        response = await api.client.post("/api/v1/events", json=event, headers=headers)
        assert response.status_code == 200, response.text
        [result] = response.json()["results"]
        return result

    results = await asyncio.gather(*(post() for _ in range(100)))
    outcomes = [r["outcome"] for r in results]
    assert outcomes.count("applied") == 1
    assert outcomes.count("duplicate") == 99
    assert {r["version"] for r in results} == {2}
    detail = await api.conversation("dup-1")
    assert detail["conversation"]["version"] == 2
    assert timeline_of(detail) == [
        ("conversation.created", "applied", 1),
        ("routing.enqueued", "applied", 2),
    ]
    assert await count(api, m.events, tenant_id="acme", event_id=event["event_id"]) == 1


async def test_concurrent_overlapping_batches_do_not_deadlock(api):
    ids = [f"ov-{n}" for n in range(6)]
    created = [
        api.event("conversation.created", cid, at(0), channel="chat", contact=f"visitor-{cid}",
                  customer={"name": cid, "id": f"cust-{n % 2}"})
        for n, cid in enumerate(ids)
    ]  # fmt: skip
    assert {r["outcome"] for r in await api.post_events(created)} == {"applied"}
    # Each batch touches half of the conversations, in its own order, so that some
    # batches run side by side and others wait for each other.
    shuffle = random.Random(7)
    batches = []
    for b in range(20):
        batch = [
            api.event("media.message", cid, at(1 + b), message_id=f"b{b}-{cid}",
                      sender="customer", text=f"batch {b}")
            for cid in shuffle.sample(ids, 3)
        ]  # fmt: skip
        # Batches also race to create the same new conversations (one wins, the rest
        # are stale), upserting shared customers in different orders.
        for n in shuffle.sample(range(4), 2):
            batch.append(
                api.event("conversation.created", f"new-{n}", at(1 + b), channel="sms",
                          contact=f"+3460000000{n}", customer={"name": f"N{n}",
                          "id": f"cust-{(n + b) % 3}"})
            )  # fmt: skip
        shuffle.shuffle(batch)
        # ... and one event id shared with the next batch, on whatever conversation each
        # names: they race on the event log's unique key and exactly one applies it.
        shared = {"event_id": f"shared-{b // 2}", "type": "ticket.linked",
                  "conversation_id": batch[0]["conversation_id"], "occurred_at": at(1),
                  "data": {"ticket_id": f"T-{b // 2}"}}  # fmt: skip
        batch.append(shared)
        batches.append(batch)

    headers = api.auth("service", "svc")

    async def post(batch: list[dict]) -> list[dict]:
        response = await api.client.post("/api/v1/events", json={"events": batch}, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["results"]

    answers = await asyncio.wait_for(asyncio.gather(*(post(batch) for batch in batches)), 60)
    applied: dict[str, int] = {}
    outcome_of: dict[str, list[str]] = {}
    for results in answers:
        for result in results:
            outcome_of.setdefault(result["event_id"], []).append(result["outcome"])
            if result["outcome"] == "applied":
                applied[result["conversation_id"]] = applied.get(result["conversation_id"], 0) + 1
    for event_id, outcomes in outcome_of.items():
        if event_id.startswith("shared-"):
            assert sorted(outcomes) == ["applied", "duplicate"], (event_id, outcomes)
        elif event_id.startswith("b"):
            assert outcomes == ["applied"], (event_id, outcomes)
    touched = {cid: 0 for cid in ids}
    creations: dict[str, list[str]] = {}
    for batch, results in zip(batches, answers, strict=True):
        assert [r["event_id"] for r in results] == [e["event_id"] for e in batch]
        for event, result in zip(batch, results, strict=True):
            if event["type"] == "media.message":
                touched[event["conversation_id"]] += 1
            elif event["type"] == "conversation.created":
                creations.setdefault(event["conversation_id"], []).append(result["outcome"])
    for cid, outcomes in creations.items():
        assert sorted(outcomes) == ["applied"] + ["stale"] * (len(outcomes) - 1), cid
    for cid in [*ids, *creations]:
        detail = await api.conversation(cid)
        assert detail["conversation"]["version"] == (cid in ids) + applied[cid], cid
        applied_events = [item for item in detail["timeline"] if item["outcome"] == "applied"]
        assert len(applied_events) == detail["conversation"]["version"], cid
        if cid in ids:
            assert len(detail["transcript"]) == touched[cid], cid


async def test_a_group_being_written_holds_up_only_what_names_its_conversations(api, monkeypatch):
    """The ingest is pipelined: while one group's rows are being written, the next group
    is judged and committed beside it on PostgreSQL (SQLite has one writer: it waits).
    A later request naming the held group's conversation waits for its commit and
    applies after it."""
    created = await api.post_events([
        api.event("conversation.created", cid, at(0), channel="chat", contact=f"v-{cid}",
                  customer={"name": cid})
        for cid in ("held", "free")
    ])  # fmt: skip
    assert {result["outcome"] for result in created} == {"applied"}
    real_write = repository.write_ingest_rows
    reached, release = asyncio.Event(), asyncio.Event()

    async def held_write(conn, rows):
        if any(row["id"] == "held" for row in rows.changed_conversations):
            reached.set()
            await release.wait()  # the transaction is open, its locks held
        await real_write(conn, rows)

    monkeypatch.setattr(repository, "write_ingest_rows", held_write)
    held = asyncio.create_task(
        api.post_events([api.event("routing.enqueued", "held", at(1), team="sales")])
    )
    await asyncio.wait_for(reached.wait(), 10)
    free = asyncio.create_task(
        api.post_events([api.event("routing.enqueued", "free", at(1), team="sales")])
    )
    if not api.services.db.is_sqlite:
        [result] = await asyncio.wait_for(free, 10)  # committed while "held" is not
        assert (result["outcome"], result["version"]) == ("applied", 2)
        assert not held.done()
    same = asyncio.create_task(
        api.post_events([api.event("media.message", "held", at(2), message_id="m1",
                                   sender="customer", text="after the enqueue")])
    )  # fmt: skip
    release.set()
    [first] = await asyncio.wait_for(held, 10)
    [second] = await asyncio.wait_for(same, 10)
    [result] = await asyncio.wait_for(free, 10)
    assert (first["outcome"], first["version"]) == ("applied", 2)
    assert (second["outcome"], second["version"]) == ("applied", 3)
    assert (result["outcome"], result["version"]) == ("applied", 2)
    detail = await api.conversation("held")
    assert timeline_of(detail) == [
        ("conversation.created", "applied", 1),
        ("routing.enqueued", "applied", 2),
        ("media.message", "applied", 3),
    ]


# --------------------------------------------------------------------------- late and invalid


async def test_late_invalid_is_stale_newer_invalid_is_rejected_and_reserves_nothing(api):
    cid = "late-1"
    await api.post_events([
        api.event("conversation.created", cid, at(0), channel="call", contact="+34911000104",
                  customer={"name": "Fay"}),
        api.event("routing.enqueued", cid, at(10), team="sales"),
    ])  # fmt: skip

    late = api.event("wrapup.submitted", cid, at(5), disposition="x")
    result = await step(api, late, 2, "stale")
    assert "wrapup.submitted" in result["message"] and "queued" in result["message"]
    # A stale event is kept in the log: sent again it is a duplicate.
    await step(api, late, 2, "duplicate")

    newer = api.event("wrapup.submitted", cid, at(20), disposition="done")
    result = await step(api, newer, 2, "rejected")
    assert result["code"] == "invalid_transition"
    assert "wrapup.submitted" in result["message"] and "'queued'" in result["message"]
    detail = await api.conversation(cid)
    assert detail["conversation"]["version"] == 2
    assert timeline_of(detail) == [
        ("conversation.created", "applied", 1),
        ("routing.enqueued", "applied", 2),
        ("wrapup.submitted", "stale", 2),
    ]
    assert await count(api, m.rejected_events, tenant_id="acme", event_id=newer["event_id"]) == 1

    # The rejected event reserved nothing: once it is valid, the same event_id applies.
    await api.post_events([
        api.event("routing.offered", cid, at(11), agent_id="a1", offer_id="o1",
                  expires_at=at(40)),
        api.event("agent.accepted", cid, at(12), agent_id="a1", offer_id="o1"),
        api.event("media.hangup", cid, at(15), source="agent"),
    ])  # fmt: skip
    await step(api, newer, 6)
    await step(api, newer, 6, "duplicate")
    row = (await api.conversation(cid))["conversation"]
    assert (row["status"], row["disposition"]) == ("closed", "done")

    # An event for a conversation that does not exist yet is rejected, and accepted later.
    early = api.event("routing.enqueued", "late-2", at(1), team="sales")
    result = await step(api, early, None, "rejected")
    assert result["code"] == "unknown_conversation"
    await step(api, api.event("conversation.created", "late-2", at(0), channel="call",
                              contact="+34911000105", customer={"name": "Gus"}), 1)  # fmt: skip
    await step(api, early, 2)


# --------------------------------------------------------------------------- bad input


NOT_EVENTS = [
    ("garbage", b"{not json", "application/json"),
    ("empty", b"", "application/json"),
    ("bad-utf8", b"\xff\xfe\x00", "application/json"),
    ("array", b"[1, 2, 3]", "application/json"),
    ("number", b"42", "application/json"),
    ("string", b'"an event"', "application/json"),
    ("null", b"null", "application/json"),
    ("no-type", b'{"no": "type"}', "application/json"),
    ("events-not-a-list", b'{"events": "not a list"}', "application/json"),
    ("bad-msgpack", b"\xc1\xc1 not msgpack", "application/msgpack"),
    ("msgpack-array", msgpack.packb([1, 2]), "application/msgpack"),
]


async def test_a_body_is_one_event_or_a_batch_and_anything_else_is_400(api):
    for name, body, content_type in NOT_EVENTS:
        response = await api.client.post(
            "/api/v1/events",
            content=body,
            headers={**api.auth("service"), "Content-Type": content_type},
        )
        assert response.status_code == 400, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == "malformed", name
        assert isinstance(error["message"], str) and error["message"], name
    assert await count(api, m.events) == 0
    assert await count(api, m.rejected_events) == 0

    event = api.event("conversation.created", "lone-1", at(0), channel="sms",
                      contact="+34600000009", customer={"name": "Jo"})  # fmt: skip
    response = await api.client.post("/api/v1/events", json=event, headers=api.auth("service"))
    assert response.status_code == 200
    assert response.json() == {"results": [
        {"event_id": event["event_id"], "outcome": "applied", "conversation_id": "lone-1",
         "version": 1}
    ]}  # fmt: skip
    response = await api.client.post(
        "/api/v1/events", json={"events": []}, headers=api.auth("service")
    )
    assert (response.status_code, response.json()) == (200, {"results": []})


async def test_invalid_events_are_rejected_and_the_rest_of_the_batch_applies(api):
    cid = "bad-1"
    good_created = api.event("conversation.created", cid, at(0), channel="call",
                             contact="+34911000106", customer={"name": "Hal"})  # fmt: skip
    missing = api.event("routing.enqueued", cid, at(1))
    wrong_type = api.event("conversation.created", "bad-2", at(1), channel=5,
                           contact="+34911000107", customer={"name": "Ida"})  # fmt: skip
    wrong_nested = api.event(
        "conversation.created",
        "bad-3",
        at(1),
        channel="call",
        contact="+34911000108",
        customer={"email": "x@example.com"},
    )
    bad_time = api.event("routing.enqueued", cid, "yesterday", team="sales")
    unknown = api.event("routing.teleported", cid, at(2), team="mars")
    no_id = api.event("routing.enqueued", cid, at(2), team="sales")
    del no_id["event_id"]
    good_enqueued = api.event("routing.enqueued", cid, at(3), team="sales")
    batch = [good_created, missing, wrong_type, wrong_nested, bad_time, unknown, no_id,
             "not an object", good_enqueued]  # fmt: skip

    results = await api.post_events(batch)
    assert len(results) == len(batch)
    outcomes = [(r["outcome"], r.get("code")) for r in results]
    assert outcomes == [
        ("applied", None),
        ("rejected", "invalid_data"),
        ("rejected", "invalid_data"),
        ("rejected", "invalid_data"),
        ("rejected", "invalid_data"),
        ("rejected", "unknown_type"),
        ("rejected", "invalid_data"),
        ("rejected", "invalid_data"),
        ("applied", None),
    ]
    messages = [r.get("message") or "" for r in results]
    assert "data.team" in messages[1]
    assert "data.channel" in messages[2]
    assert "data.customer.name" in messages[3]
    assert "occurred_at" in messages[4]
    assert "routing.teleported" in messages[5]
    assert "event_id" in messages[6]
    assert results[1]["event_id"] == missing["event_id"]
    assert results[1]["conversation_id"] == cid
    assert results[-1]["version"] == 2

    row = (await api.conversation(cid))["conversation"]
    assert (row["status"], row["team"], row["version"]) == ("queued", "sales", 2)
    for absent in ("bad-2", "bad-3"):
        response = await api.client.get(
            f"/api/v1/conversations/{absent}", headers=api.auth("supervisor")
        )
        assert response.status_code == 404
    assert await count(api, m.events, tenant_id="acme") == 2
    assert await count(api, m.rejected_events, tenant_id="acme") == 7


async def test_msgpack_body_and_msgpack_answer(api):
    created = api.event("conversation.created", "mp-1", at(0), channel="whatsapp",
                        contact="+34600000010", customer={"name": "Kim"})  # fmt: skip
    # msgpack may carry the instant as a native timestamp.
    enqueued = api.event("routing.enqueued", "mp-1", at(1), team="sales")
    enqueued["occurred_at"] = BASE + timedelta(seconds=1)
    body = msgpack.packb({"events": [created, enqueued]}, datetime=True)
    response = await api.client.post(
        "/api/v1/events",
        content=body,
        headers={
            **api.auth("service"),
            "Content-Type": "application/msgpack",
            "Accept": "application/msgpack",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/msgpack")
    answer = msgpack.unpackb(response.content)
    assert [(r["outcome"], r["version"]) for r in answer["results"]] == [
        ("applied", 1),
        ("applied", 2),
    ]
    # A JSON body may ask for a msgpack answer too, and errors come as msgpack.
    response = await api.client.get(
        "/api/v1/conversations/mp-1",
        headers={**api.auth("supervisor"), "Accept": "application/msgpack"},
    )
    detail = msgpack.unpackb(response.content)
    assert detail["conversation"]["status"] == "queued"
    assert detail["conversation"]["created_time"] == "00:30:00"
    response = await api.client.post(
        "/api/v1/events",
        content=b"nope",
        headers={**api.auth("service"), "Accept": "application/msgpack"},
    )
    assert response.status_code == 400
    assert msgpack.unpackb(response.content)["error"]["code"] == "malformed"


async def test_data_a_database_cannot_store_is_rejected_not_a_500(api):
    """NUL characters, NaN and infinities, and ids longer than their columns: PostgreSQL
    refuses them, so they are invalid data on every backend, and the batch goes on."""
    base = {"channel": "call", "contact": "+34911000111", "customer": {"name": "Ann"}}
    await step(api, api.event("conversation.created", "store-0", at(0), **base), 1)
    cases = [
        ("data.customer.name", "conversation.created", {**base, "customer": {"name": "A\0n"}}),
        ("data.team", "conversation.created", {**base, "team": "t" * 201}),
        ("data.contact", "conversation.created", {**base, "contact": "v" * 201}),
        ("data.customer.id", "conversation.created",
         {**base, "customer": {"name": "Ann", "id": "c" * 201}}),
        ("data.text", "media.message", {"message_id": "m1", "sender": "agent", "text": "a\0b"}),
        ("data.message_id", "media.message",
         {"message_id": "m" * 201, "sender": "agent", "text": "hi"}),
        ("data.content_type", "media.recording_ready",
         {"recording_id": "r1", "duration_s": 1, "content_type": "a/" + "b" * 80}),
        ("data.duration_s", "media.recording_ready",
         {"recording_id": "r1", "duration_s": float("inf"), "content_type": "audio/mpeg"}),
        ("data.extra", "routing.enqueued", {"team": "sales", "extra": float("nan")}),
        ("data.extra", "routing.enqueued", {"team": "sales", "extra": {"k": ["ok", "\0"]}}),
    ]  # fmt: skip
    batch = [
        api.event(event_type, f"store-{n}" if "created" in event_type else "store-0", at(n),
                  **data)
        for n, (_, event_type, data) in enumerate(cases, start=1)
    ]  # fmt: skip
    nul_id = api.event("routing.enqueued", "store-0", at(20), team="sales")
    nul_id["event_id"] = "ev\0nul"
    nul_type = api.event("routing.\0enqueued", "store-0", at(20), team="sales")
    nan_id = api.event("routing.enqueued", "store-0", at(20), team="sales")
    nan_id["event_id"] = float("nan")
    nul_key = api.event("routing.enqueued", "store-0", at(20), team="sales")
    nul_key["x\0"] = 1
    deep: list = []
    for _ in range(700):
        deep = [deep]
    too_deep = api.event("routing.enqueued", "store-0", at(20), team="sales", deep=deep)
    good = api.event("routing.enqueued", "store-0", at(30), team="sales",
                     extra={"a": [{"b": 1.5, "c": "ok"}]})  # fmt: skip
    batch += [nul_id, nul_type, nan_id, nul_key, too_deep, good]
    # NaN and Infinity are not JSON (Python's encoder writes them, as some clients do):
    # such a body is refused whole, naming the number, and nothing of it is stored.
    response = await api.client.post(
        "/api/v1/events",
        content=json.dumps({"events": batch}),
        headers={**api.auth("service"), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert "Infinity" in response.json()["error"]["message"]
    assert await count(api, m.rejected_events, tenant_id="acme") == 0
    # msgpack carries them: the events that hold them are rejected one by one, and the
    # JSON answer never echoes them
    response = await api.client.post(
        "/api/v1/events",
        content=msgpack.packb({"events": batch}),
        headers={**api.auth("service"), "Content-Type": "application/msgpack"},
    )
    assert response.status_code == 200, response.text

    def no_constants(name):
        raise AssertionError(f"the answer is not strict JSON: {name}")

    results = json.loads(response.text, parse_constant=no_constants)["results"]
    for (field, _type, _data), result in zip(cases, results, strict=False):
        assert (result["outcome"], result.get("code")) == ("rejected", "invalid_data"), field
        assert field in result["message"], (field, result["message"])
    assert [(r["outcome"], r.get("code")) for r in results[len(cases) :]] == [
        ("rejected", "invalid_data"),
        ("rejected", "unknown_type"),
        ("rejected", "invalid_data"),
        ("rejected", "invalid_data"),
        ("rejected", "invalid_data"),
        ("applied", None),
    ]
    assert "NUL" in results[-3]["message"] and "nested deeper" in results[-2]["message"]
    assert results[-1]["version"] == 2
    assert results[-4]["event_id"] is None  # NaN is not echoed
    assert await count(api, m.conversations, tenant_id="acme") == 1
    assert await count(api, m.rejected_events, tenant_id="acme") == len(cases) + 5
    detail = await api.conversation("store-0")
    assert (detail["conversation"]["version"], detail["conversation"]["status"]) == (2, "queued")
    assert detail["timeline"][-1]["data"] == {
        "team": "sales",
        "extra": {"a": [{"b": 1.5, "c": "ok"}]},
    }


async def test_keys_repeated_in_one_batch_end_as_if_written_one_by_one(api):
    """A batch is written set-based, one statement per table: a key met twice must end
    as the events in order leave it (last status, last ticket values, last customer,
    first message and recording), also for a message stored by an earlier request."""
    await api.post_events([
        api.event("conversation.created", "rk-0", at(0), channel="chat", contact="v-rk",
                  customer={"name": "Old", "id": "cust-rk"}),
        api.event("media.message", "rk-0", at(1), message_id="m0", sender="customer",
                  text="stored before"),
    ])  # fmt: skip
    results = await api.post_events([
        api.event("media.message_status", "rk-0", at(2), message_id="m0", status="delivered"),
        api.event("media.message", "rk-0", at(3), message_id="m1", sender="agent",
                  text="first"),
        api.event("media.message_status", "rk-0", at(4), message_id="m1", status="delivered"),
        api.event("media.message", "rk-0", at(5), message_id="m1", sender="agent",
                  text="second, ignored"),
        api.event("media.message_status", "rk-0", at(6), message_id="m1", status="read"),
        api.event("media.message_status", "rk-0", at(7), message_id="m0", status="read"),
        api.event("ticket.linked", "rk-0", at(8), ticket_id="T-rk", url="https://t/1"),
        api.event("ticket.linked", "rk-0", at(9), ticket_id="T-rk", url="https://t/2"),
        api.event("media.recording_ready", "rk-0", at(10), recording_id="r1", duration_s=1,
                  content_type="audio/mpeg"),
        api.event("media.recording_ready", "rk-0", at(11), recording_id="r1", duration_s=2,
                  content_type="audio/mpeg"),
        api.event("conversation.created", "rk-1", at(12), channel="chat", contact="v-rk1",
                  customer={"name": "Middle", "id": "cust-rk"}),
        api.event("conversation.created", "rk-2", at(13), channel="chat", contact="v-rk2",
                  customer={"name": "New", "id": "cust-rk"}),
    ])  # fmt: skip
    assert {r["outcome"] for r in results} == {"applied"}, results
    detail = await api.conversation("rk-0")
    assert [(t["message_id"], t["text"], t["status"]) for t in detail["transcript"]] == [
        ("m0", "stored before", "read"),
        ("m1", "first", "read"),
    ]
    assert [(t["ticket_id"], t["url"]) for t in detail["tickets"]] == [("T-rk", "https://t/2")]
    assert [(r["id"], r["duration_s"]) for r in detail["recordings"]] == [("r1", 1.0)]
    assert (await api.conversation("rk-2"))["customer"]["name"] == "New"
    assert await count(api, m.customers, tenant_id="acme", id="cust-rk") == 1


# --------------------------------------------------------------------------- atomicity and bus


async def next_news(subscription, timeout: float = 5.0) -> BusMessage:
    """The next message on the bus (a Gap, news of a reconnect, is skipped)."""

    async def message() -> BusMessage:
        while True:
            item = await subscription.get()
            if isinstance(item, BusMessage):
                return item

    return await asyncio.wait_for(message(), timeout)


def news_rows(news: BusMessage) -> list[dict]:
    """The rows a bus message announces, each the row's new image."""
    return [item["row"] if "row" in item else item for item in news.payload["rows"]]


async def subscribed(api):
    """A bus subscription proven to receive: probe batches are posted until one arrives
    (the Redis bus subscribes in the background)."""
    subscription = api.services.bus.subscribe()
    probes = iter(range(1000))

    async def probe_arrives() -> bool:
        cid = f"probe-{next(probes)}"
        await api.post_events(
            [
                api.event(
                    "conversation.created",
                    cid,
                    at(0),
                    channel="chat",
                    contact=cid,
                    customer={"name": "probe"},
                )
            ]
        )
        try:
            while True:
                news = await next_news(subscription, 0.5)
                if any(row["id"] == cid for row in news_rows(news)):
                    return True
        except TimeoutError:
            return False

    await wait_for(probe_arrives, timeout=15, message="a probe batch on the bus")
    return subscription


async def marker_is_next(api, subscription, name: str) -> None:
    """Post a marker batch and check that the next bus message is its news: whatever
    was (not) published before it is then known."""
    await api.post_events(
        [
            api.event(
                "conversation.created",
                name,
                at(0),
                channel="chat",
                contact=name,
                customer={"name": "marker"},
            )
        ]
    )
    news = await next_news(subscription)
    assert [row["id"] for row in news_rows(news)] == [name]


async def test_a_batch_publishes_one_message_with_the_changed_rows(api):
    subscription = await subscribed(api)
    try:
        await step(
            api,
            api.event(
                "conversation.created",
                "bus-0",
                at(0),
                channel="call",
                contact="+34911000120",
                customer={"name": "Mo"},
            ),
            1,
        )
        await next_news(subscription)
        results = await api.post_events([
            api.event("conversation.created", "bus-1", at(0), channel="call",
                      contact="+34911000121", customer={"name": "Ned"}),
            api.event("routing.enqueued", "bus-1", at(1), team="sales"),
            api.event("routing.enqueued", "bus-0", at(1), team="support"),
            api.event("media.ringing", "bus-0", at(0.5)),  # late and invalid: stale
        ])  # fmt: skip
        assert [r["outcome"] for r in results] == ["applied", "applied", "applied", "stale"]
        news = await next_news(subscription)
        assert news.tenant == "acme"
        rows = {row["id"]: row for row in news_rows(news)}
        assert {cid: (row["version"], row["status"], row["team"]) for cid, row in rows.items()} == {
            "bus-1": (2, "queued", "sales"),
            "bus-0": (2, "queued", "support"),
        }
        assert all(row["tenant_id"] == "acme" for row in rows.values())
        seq = news.payload["seq"]
        assert isinstance(seq, int)
        # A batch of duplicates and stale events changes nothing and publishes nothing;
        # the next message is the marker's, with a greater change sequence.
        assert {r["outcome"] for r in await api.post_events([
            api.event("routing.enqueued", "bus-0", at(0.5), team="x"),
        ])} == {"stale"}  # fmt: skip
        await marker_is_next(api, subscription, "bus-marker")
    finally:
        subscription.close()


async def test_the_bus_message_tells_the_offers_started_and_ended(api):
    """Beside each row, the machine's offer effects of the batch, in order (popups
    follow them); a row whose offers did not change carries none."""
    subscription = await subscribed(api)
    try:
        expires = "2099-01-01T00:00:00.000Z"
        results = await api.post_events([
            api.event("conversation.created", "of-1", at(0), channel="call",
                      contact="+34911000130", customer={"name": "Of"}),
            api.event("routing.enqueued", "of-1", at(1), team="sales"),
            api.event("routing.offered", "of-1", at(2), agent_id="a1", offer_id="o1",
                      expires_at=expires),
            api.event("conversation.created", "of-2", at(0), channel="call",
                      contact="+34911000131", customer={"name": "Not offered"}),
        ])  # fmt: skip
        assert {r["outcome"] for r in results} == {"applied"}, results
        news = await next_news(subscription)
        items = {item["row"]["id"]: item for item in news.payload["rows"]}
        [started] = items["of-1"]["offers"]
        assert (started["offer_id"], started["agent_id"]) == ("o1", "a1")
        assert started["expires_at"] == datetime(2099, 1, 1, tzinfo=UTC)
        assert "reason" not in started
        assert "offers" not in items["of-2"]
        results = await api.post_events([
            api.event("routing.offer_declined", "of-1", at(3), agent_id="a1", offer_id="o1",
                      reason="rejected"),
            api.event("routing.offered", "of-1", at(4), agent_id="a2", offer_id="o2",
                      expires_at=expires),
            api.event("media.customer_dropped", "of-1", at(5)),
        ])  # fmt: skip
        assert {r["outcome"] for r in results} == {"applied"}, results
        news = await next_news(subscription)
        [item] = news.payload["rows"]
        assert [
            (offer["offer_id"], offer["agent_id"], offer.get("reason")) for offer in item["offers"]
        ] == [("o1", "a1", "rejected"), ("o2", "a2", None), ("o2", "a2", "cancelled")]
    finally:
        subscription.close()


FAILURES = [
    ("runtime", RuntimeError("disk on fire"), 500),
    ("db-error", OperationalError("INSERT INTO tickets", {}, Exception("disk I/O error")), 500),
    ("db-down", OperationalError("INSERT", {}, ConnectionError("connection reset")), 503),
]


async def test_a_failure_mid_batch_stores_and_publishes_nothing(api, monkeypatch):
    subscription = await subscribed(api)
    real_write = repository.write_ingest_rows
    try:
        for name, error, status in FAILURES:
            await fail_mid_batch(api, monkeypatch, subscription, name, error, status)
            monkeypatch.setattr(repository, "write_ingest_rows", real_write)
    finally:
        subscription.close()


async def fail_mid_batch(api, monkeypatch, subscription, name, error, status) -> None:
    keep, fail, ticket = f"keep-{name}", f"fail-{name}", f"T-{name}"
    await api.post_events([
        api.event("conversation.created", keep, at(0), channel="chat", contact=f"v-{keep}",
                  customer={"name": "Kept"}),
        api.event("media.message", keep, at(1), message_id="m0", sender="customer",
                  text="first"),
    ])  # fmt: skip
    await next_news(subscription)
    before = await api.conversation(keep)
    counts_before = {
        table.name: await count(api, table, tenant_id="acme")
        for table in (m.conversations, m.events, m.rejected_events, m.customers, m.messages,
                      m.tickets, m.recordings)
    }  # fmt: skip
    batch = [
        api.event("conversation.created", fail, at(0), channel="chat", contact=f"v-{fail}",
                  customer={"name": "Failing", "id": f"cust-{fail}"}),
        api.event("routing.enqueued", fail, at(1), team="sales"),
        api.event("media.message", fail, at(2), message_id="mf", sender="customer",
                  text="lost"),
        api.event("media.message", keep, at(3), message_id="m1", sender="customer",
                  text="lost too"),
        api.event("media.recording_ready", keep, at(3), recording_id="rf", duration_s=3,
                  content_type="audio/mpeg"),
        api.event("routing.teleported", keep, at(3)),  # rejected
        api.event("media.ringing", keep, at(0.5)),  # stale
        api.event("ticket.linked", keep, at(4), ticket_id=ticket),
    ]  # fmt: skip
    real_write = repository.write_ingest_rows
    calls = []

    async def failing_write(conn, rows):
        # Every row of the group is written; the failure comes before the commit.
        await real_write(conn, rows)
        calls.append(rows)
        if any(row["ticket_id"] == ticket for row in rows.tickets):
            raise error

    monkeypatch.setattr(repository, "write_ingest_rows", failing_write)
    response = await api.client.post(
        "/api/v1/events", json={"events": batch}, headers=api.auth("service")
    )
    assert calls, "the injected failure was never reached"
    assert response.status_code == status, (name, response.text)
    assert response.json()["error"]["code"] == ("unavailable" if status == 503 else "internal")
    if status == 503:
        assert int(response.headers["retry-after"]) > 0

    counts_after = {
        table_name: await count(api, getattr(m, table_name), tenant_id="acme")
        for table_name in counts_before
    }
    assert counts_after == counts_before, name
    assert await count(api, m.conversations, tenant_id="acme", id=fail) == 0
    assert await api.conversation(keep) == before
    await marker_is_next(api, subscription, f"marker-{name}")

    # Nothing was reserved: the same batch, sent again once the database is well, is
    # judged afresh and applies, and its news is the next message on the bus.
    monkeypatch.setattr(repository, "write_ingest_rows", real_write)
    results = await api.post_events(batch)
    assert [r["outcome"] for r in results] == [
        "applied", "applied", "applied", "applied", "applied", "rejected", "stale", "applied"
    ]  # fmt: skip
    news = await next_news(subscription)
    assert {row["id"]: row["version"] for row in news_rows(news)} == {fail: 3, keep: 5}
    detail = await api.conversation(keep)
    assert [t["ticket_id"] for t in detail["tickets"]] == [ticket]
    assert [t["message_id"] for t in detail["transcript"]] == ["m0", "m1"]
    assert detail["conversation"]["has_recording"] is True


async def test_occurred_at_out_of_bounds_and_unreachable_ids_are_rejected_naming_them(api):
    """docs/domain.md "Bounded time" and "Reachable ids": rejected with invalid_data, the
    rest of the batch applied, and nothing stored that a view would have to render."""
    now = datetime.now(UTC)
    created = {"channel": "call", "contact": "+34911000120", "customer": {"name": "Ora"}}
    good = api.event("conversation.created", "bounds-1", at(0), **created)
    times = [
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
        "1999-12-31T23:59:59Z",
        (now + timedelta(hours=25)).isoformat(),
    ]
    ids = ["a/b", "a?b", "a#b", "a b", "", "x" * 201]
    batch = [good]
    for n, moment in enumerate(times):
        batch.append(api.event("conversation.created", f"bounds-t{n}", moment, **created))
    for cid in ids:
        batch.append(api.event("conversation.created", cid, at(1), **created))
    tomorrow = (now + timedelta(hours=23)).isoformat()
    fine = api.event("conversation.created", "wamid.HBgM-x_y~z:1@2+3=", tomorrow, **created)
    batch.append(fine)
    results = await api.post_events(batch)
    assert [(r["outcome"], r.get("code")) for r in results] == [
        ("applied", None),
        *[("rejected", "invalid_data")] * (len(times) + len(ids)),
        ("applied", None),
    ]
    for result in results[1 : 1 + len(times)]:
        assert "occurred_at" in result["message"], result
    for result in results[1 + len(times) : -1]:
        assert "conversation_id" in result["message"], result
    assert await count(api, m.conversations, tenant_id="acme") == 2
    detail = await api.conversation("wamid.HBgM-x_y~z:1@2+3=")
    assert detail["conversation"]["status"] == "new"
