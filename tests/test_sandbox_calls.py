"""The sandbox inside the server, on a manual clock: an initiated call walks dialing ->
ringing -> answered -> hangup and leaves a playable recording, served with HTTP Range;
messages get statuses and replies; the agent actions as websocket frames."""

from __future__ import annotations

import io
import json
import wave
from datetime import UTC, datetime, timedelta

import pytest

from channels import sandbox
from server.providers.repository import latest_conversation_of_contact
from tests.app_support import running_api
from tests.server_support import live_server
from tests.support import ManualClock, wait_for

START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture
async def clocked(backend, tmp_path):
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    async with running_api(backend, tmp_path / "data", clock) as api:
        yield api, clock


async def status_of(api, cid: str) -> str:
    return (await api.conversation(cid))["conversation"]["status"]


async def walk_to(api, clock, cid: str, seconds: float, status: str) -> dict:
    clock.advance(timedelta(seconds=seconds))

    async def reached():
        return await status_of(api, cid) == status

    await wait_for(reached, 10, message=f"{cid} reaches {status}")
    return await api.conversation(cid)


async def initiate(api, body: dict, key: str = "k1", user: str = "u1"):
    headers = {**api.auth("agent", user), "Idempotency-Key": key}
    response = await api.client.post("/api/v1/conversations/initiate", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["conversation_id"]


async def answered_call(api, clock) -> tuple[str, dict]:
    cid = await initiate(api, {"channel": "call", "contact": "+34911000101"})
    assert await status_of(api, cid) == "dialing"
    await walk_to(api, clock, cid, 0.3, "ringing")
    await walk_to(api, clock, cid, 0.7, "active")
    detail = await walk_to(api, clock, cid, 3.0, "wrap_up")

    async def recorded():
        found = await api.conversation(cid)
        return found if found["recordings"] else None

    detail = await wait_for(recorded, 10)
    return cid, detail


async def test_an_initiated_sandbox_call_walks_to_hangup_with_a_playable_recording(clocked):
    api, clock = clocked
    cid, detail = await answered_call(api, clock)
    row = detail["conversation"]
    assert (row["state"], row["hangup_source"], row["has_recording"]) == (
        "customer_answered",
        "customer",
        True,
    )
    types = [e["type"] for e in detail["timeline"] if e["outcome"] == "applied"]
    assert types == [
        "conversation.initiated",
        "media.ringing",
        "media.answered",
        "media.hangup",
        "media.recording_ready",
    ]
    (recording,) = detail["recordings"]
    assert recording["content_type"] == "audio/wav" and recording["duration_s"] == 3.0
    url = f"/api/v1/conversations/{cid}/recordings/{recording['id']}"
    response = await api.client.get(url, headers=api.auth("agent", "u1"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["accept-ranges"] == "bytes"
    with wave.open(io.BytesIO(response.content)) as played:
        assert (played.getframerate(), played.getnchannels(), played.getsampwidth()) == (8000, 1, 2)
        assert played.getnframes() == 3 * 8000


async def test_recordings_are_served_with_range(clocked):
    api, clock = clocked
    cid, detail = await answered_call(api, clock)
    url = f"/api/v1/conversations/{cid}/recordings/{detail['recordings'][0]['id']}"
    headers = api.auth("supervisor", "sup1")
    whole = (await api.client.get(url, headers=headers)).content
    size = len(whole)

    async def ranged(value: str):
        return await api.client.get(url, headers={**headers, "Range": value})

    first = await ranged("bytes=0-99")
    assert first.status_code == 206 and first.content == whole[:100]
    assert first.headers["content-range"] == f"bytes 0-99/{size}"
    assert first.headers["content-length"] == "100"
    middle = await ranged("bytes=1000-1999")
    assert middle.status_code == 206 and middle.content == whole[1000:2000]
    suffix = await ranged("bytes=-500")
    assert suffix.status_code == 206 and suffix.content == whole[-500:]
    assert suffix.headers["content-range"] == f"bytes {size - 500}-{size - 1}/{size}"
    open_ended = await ranged(f"bytes={size - 10}-")
    assert open_ended.content == whole[-10:]
    past_end = await ranged(f"bytes=0-{size * 2}")
    assert past_end.status_code == 206 and past_end.content == whole
    unsatisfiable = await ranged(f"bytes={size}-")
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{size}"
    ignored = await ranged("lines=1-2")
    assert ignored.status_code == 200 and ignored.content == whole


async def test_recordings_are_scoped_to_the_tenant_and_the_agent(clocked):
    api, clock = clocked
    cid, detail = await answered_call(api, clock)
    rid = detail["recordings"][0]["id"]
    url = f"/api/v1/conversations/{cid}/recordings/{rid}"
    assert (await api.client.get(url, headers=api.auth("agent", "u2"))).status_code == 404
    other_tenant = api.auth("supervisor", "sup1", tenant="globex")
    assert (await api.client.get(url, headers=other_tenant)).status_code == 404
    assert (await api.client.get(url, headers=api.auth("wallboard"))).status_code == 403
    sup = api.auth("supervisor", "sup1")
    for bad in ("..%2F..%2Fsecret", "%2E%2E", f"{rid}.wav", "%2Fetc%2Fpasswd"):
        response = await api.client.get(
            f"/api/v1/conversations/{cid}/recordings/{bad}", headers=sup
        )
        assert response.status_code == 404, bad


async def test_an_sms_gets_statuses_and_a_reply_and_the_agent_replies(clocked):
    api, clock = clocked
    cid = await initiate(api, {"channel": "sms", "contact": "+34911000105", "text": "Hello!"})
    detail = await walk_to(api, clock, cid, 1.0, "active")  # the reply answers it

    async def read_and_replied():
        found = await api.conversation(cid)
        texts = [(m["sender"], m["status"]) for m in found["transcript"]]
        return found if texts[:1] == [("agent", "read")] and len(texts) == 2 else None

    detail = await wait_for(read_and_replied, 10)
    assert detail["conversation"]["state"] == "customer_answered"
    assert detail["transcript"][1]["sender"] == "customer"

    reply = await api.client.post(
        f"/api/v1/conversations/{cid}/messages",
        json={"text": "Great, see you then"},
        headers=api.auth("agent", "u1"),
    )
    assert reply.status_code == 202, reply.text
    message_id = reply.json()["message_id"]
    clock.advance(timedelta(seconds=1))

    async def delivered():
        found = await api.conversation(cid)
        return any(
            m["message_id"] == message_id and m["status"] == "read" for m in found["transcript"]
        )

    await wait_for(delivered, 10)
    # Not the agent's conversation: refused; bad bodies name the field.
    other = await api.client.post(
        f"/api/v1/conversations/{cid}/messages", json={"text": "x"}, headers=api.auth("agent", "u2")
    )
    assert other.status_code == 404
    empty = await api.client.post(
        f"/api/v1/conversations/{cid}/messages", json={"text": ""}, headers=api.auth("agent", "u1")
    )
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "text"


async def test_agent_actions_as_websocket_frames(backend, tmp_path):
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    async with live_server(backend, tmp_path / "data", clock) as server:
        async with server.ws("agent", "u1") as ws:
            body = {"type": "initiate", "channel": "call", "contact": "+34911000101"}
            ok = await ws.request({**body, "idempotency_key": "w1"})
            assert ok["type"] == "ok", ok
            again = await ws.request({**body, "idempotency_key": "w1"})
            assert again["conversation_id"] == ok["conversation_id"]
            cid = ok["conversation_id"]
            clock.advance(timedelta(seconds=1.5))

            async def active():
                return await status_of(server.api, cid) == "active"

            await wait_for(active, 10)
            refused = await ws.request(
                {"type": "send_message", "conversation_id": cid, "text": "hi"}
            )
            assert refused["type"] == "error" and refused["code"] == "invalid_transition"
            hung = await ws.request({"type": "hangup", "conversation_id": cid})
            assert hung["type"] == "ok" and hung["conversation"]["status"] == "wrap_up"
            bad = await ws.request({"type": "initiate", "channel": "call", "contact": "nope"})
            assert bad["type"] == "error" and bad["code"] == "invalid_field"


async def test_an_inbound_sandbox_call_is_held_then_bridged_to_the_accepting_agent(clocked):
    api, clock = clocked
    admin = api.auth("admin")
    response = await api.client.put(
        "/api/v1/providers/sandbox", json={"credentials": {"secret": "s3"}}, headers=admin
    )
    assert response.status_code == 200, response.text
    body = json.dumps({"kind": "call", "contact": "+34911000150"}).encode()
    response = await api.client.post(
        "/webhooks/sandbox/acme",
        content=body,
        headers={sandbox.SIGNATURE_HEADER: sandbox.signature("s3", body)},
    )
    assert response.status_code == 200, response.text
    async with api.services.db.read() as conn:
        found = await latest_conversation_of_contact(conn, "acme", "+34911000150", "call")
    cid = found["id"]
    at = (clock.now() + timedelta(seconds=1)).isoformat()
    expires = (clock.now() + timedelta(seconds=30)).isoformat()
    results = await api.post_events(
        [
            api.event("routing.enqueued", cid, at, team="support"),
            api.event("routing.offered", cid, at, agent_id="u1", offer_id="o1", expires_at=expires),
            api.event("agent.accepted", cid, at, agent_id="u1", offer_id="o1"),
        ]
    )
    assert [r["outcome"] for r in results] == ["applied"] * 3, results
    await api.services.conversation_actions.bridge_call("acme", cid, "u1")
    # The agent's phone picks up within 3 s; the customer talks at most 240 s. (Read
    # with a token minted now: one minted after the jump would not be valid yet.)
    supervisor = api.auth("supervisor", "sup1")
    clock.advance(timedelta(seconds=3))
    clock.advance(timedelta(seconds=241))

    async def recorded():
        response = await api.client.get(f"/api/v1/conversations/{cid}", headers=supervisor)
        detail = response.json()
        return detail if detail["recordings"] else None

    detail = await wait_for(recorded, 10)
    row = detail["conversation"]
    assert (row["status"], row["hangup_source"]) == ("wrap_up", "customer")
    assert detail["recordings"][0]["duration_s"] >= 20
