"""Click-to-initiate: idempotency keys, validation, the per-user rate limit, a
provider that is down, and Twilio's outbound call through the server (its REST API
played by a local server, its callbacks signed as Twilio signs them)."""

from __future__ import annotations

import asyncio
import json
import threading
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from sqlalchemy import func, select

from channels import plivo, twilio, whatsapp_cloud
from server.storage import models as m
from tests.support import free_port
from tests.test_channels_helpers import provider_api

__all__ = ["provider_api"]

TWILIO_CREDENTIALS = {"account_sid": "AC" + "2" * 32, "auth_token": "twilio-token-2"}
OUR_NUMBER = "+14155552671"
AGENT_PHONE = "+14155552680"
CALLS_PATH = rf"/2010-04-01/Accounts/{TWILIO_CREDENTIALS['account_sid']}/Calls\.json"


async def initiate(api, body: dict, key: str | None = "k1", role="agent", user="u1"):
    headers = api.auth(role, user)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await api.client.post("/api/v1/conversations/initiate", json=body, headers=headers)


async def count_conversations(api, contact: str) -> int:
    async with api.services.db.read() as conn:
        result = await conn.execute(
            select(func.count()).where(
                m.conversations.c.tenant_id == "acme", m.conversations.c.contact == contact
            )
        )
        return result.scalar_one()


async def use_twilio(api, api_base: str) -> None:
    admin = api.auth("admin")
    response = await api.client.put(
        "/api/v1/providers/twilio",
        json={
            "channels": ["call", "sms"],
            "numbers": [{"number": OUR_NUMBER, "team": "sales"}],
            "credentials": TWILIO_CREDENTIALS,
        },
        headers=admin,
    )
    assert response.status_code == 200, response.text
    response = await api.client.put(
        "/api/v1/agents/u1", json={"name": "Ann", "phone": AGENT_PHONE}, headers=admin
    )
    assert response.status_code == 200, response.text
    api.services.providers.api_bases["twilio"] = api_base


async def test_one_key_makes_one_conversation_and_one_provider_call(api, provider_api):
    provider_api.route("POST", CALLS_PATH, 201, '{"sid": "CA' + "9" * 32 + '"}')
    await use_twilio(api, provider_api.base_url)
    body = {"channel": "call", "contact": "+34911000111"}
    answers = await asyncio.gather(*(initiate(api, body, key="same") for _ in range(100)))
    assert {a.status_code for a in answers} == {202}, {a.text for a in answers}
    assert len({a.text for a in answers}) == 1  # every answer equals the first
    assert await count_conversations(api, body["contact"]) == 1
    placed = [r for r in provider_api.requests if r.path.endswith("/Calls.json")]
    assert len(placed) == 1
    # The same key with another body is a conflict, and dials nobody.
    other = await initiate(api, {**body, "contact": "+34911000112"}, key="same")
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert await count_conversations(api, "+34911000112") == 0
    assert len([r for r in provider_api.requests if r.path.endswith("/Calls.json")]) == 1


async def test_twilio_outbound_call_rings_the_agent_then_callbacks_walk_it(api, provider_api):
    provider_api.route("POST", CALLS_PATH, 201, '{"sid": "CA' + "8" * 32 + '"}')
    provider_api.route("POST", r".*/Calls/CA8+\.json", 200, '{"sid": "CA' + "8" * 32 + '"}')
    await use_twilio(api, provider_api.base_url)
    answer = await initiate(api, {"channel": "call", "contact": "+34911000113"})
    assert answer.status_code == 202, answer.text
    cid = answer.json()["conversation_id"]
    assert answer.json()["status"] == "dialing"
    (placed,) = provider_api.requests
    sent = dict(parse_qsl(placed.body.decode()))
    assert sent["To"] == AGENT_PHONE and sent["From"] == OUR_NUMBER
    assert f"ref={cid}" in sent["StatusCallback"]

    # Twilio reports the customer's leg ringing, to the URL it was given.
    url = f"http://testserver/webhooks/twilio/acme?{urlencode({'ref': cid, 'leg': 'customer'})}"
    params = {
        "CallSid": "CA" + "7" * 32,
        "CallStatus": "ringing",
        "AccountSid": TWILIO_CREDENTIALS["account_sid"],
        "Direction": "outbound-dial",
        "From": OUR_NUMBER,
        "To": "+34911000113",
    }
    sig = twilio.signature(TWILIO_CREDENTIALS["auth_token"], url, list(params.items()))
    response = await api.client.post(
        url,
        content=urlencode(params).encode(),
        headers={"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert (await api.conversation(cid))["conversation"]["status"] == "ringing"

    # The agent hangs up: recorded, and Twilio is told to end the call.
    hangup = await api.client.post(
        f"/api/v1/conversations/{cid}/hangup", headers=api.auth("agent", "u1")
    )
    assert hangup.status_code == 200, hangup.text
    row = hangup.json()["conversation"]
    assert (row["status"], row["hangup_source"]) == ("wrap_up", "agent")
    ended = provider_api.requests[-1]
    assert ended.path.endswith(f"/Calls/CA{'8' * 32}.json") and b"Status=completed" in ended.body
    again = await api.client.post(
        f"/api/v1/conversations/{cid}/hangup", headers=api.auth("agent", "u1")
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_transition"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "call", "contact": "12345"}, "contact"),
        ({"channel": "call", "contact": "+3491100"}, "contact"),
        ({"channel": "sms", "contact": "ann@example.com", "text": "hi"}, "contact"),
        ({"channel": "sms", "contact": "+34911000121"}, "text"),
        ({"channel": "call", "contact": "+34911000121", "text": "hi"}, "text"),
        ({"channel": "fax", "contact": "+34911000121"}, "channel"),
        ({"channel": "chat", "contact": "+34911000121"}, "channel"),
        ({"channel": "call", "contact": "+34911000121", "colour": "red"}, "colour"),
        (
            {"channel": "call", "contact": "+34911000121", "contacto_number": "+1"},
            "contacto_number",
        ),
    ],
)
async def test_invalid_requests_are_422_naming_the_field_and_dial_nobody(api, body, field):
    response = await initiate(api, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert await count_conversations(api, "+34911000121") == 0


async def test_a_channel_the_tenant_lacks_is_422(api):
    response = await api.client.put(
        "/api/v1/providers/sandbox", json={"channels": ["call"]}, headers=api.auth("admin")
    )
    assert response.status_code == 200, response.text
    answer = await initiate(api, {"channel": "sms", "contact": "+34911000122", "text": "hi"})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "channel"
    assert await count_conversations(api, "+34911000122") == 0


async def test_only_a_supervisor_starts_a_conversation_for_another_agent(api):
    body = {"channel": "call", "contact": "+34911000103", "agent_id": "u2"}
    assert (await initiate(api, body, key="a")).status_code == 403
    by_supervisor = await initiate(api, body, key="b", role="supervisor", user="sup1")
    assert by_supervisor.status_code == 202, by_supervisor.text
    assert (await initiate(api, body, key="c", role="wallboard")).status_code == 403


async def test_a_flood_from_one_user_is_rate_limited_with_retry_after(api):
    from server.providers.initiate import RATE_LIMIT

    for n in range(RATE_LIMIT):
        answer = await initiate(api, {"channel": "call", "contact": "+34911000103"}, key=f"f{n}")
        assert answer.status_code == 202, answer.text
    limited = await initiate(api, {"channel": "call", "contact": "+34911000103"}, key="one-more")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # A retry of an earlier request is answered as before, and another user is not limited.
    replay = await initiate(api, {"channel": "call", "contact": "+34911000103"}, key="f0")
    assert replay.status_code == 202
    other = await initiate(api, {"channel": "call", "contact": "+34911000103"}, user="u2")
    assert other.status_code == 202


async def test_a_provider_that_refuses_connections_fails_the_call_and_says_why(api):
    port = free_port()  # nothing listens there
    await use_twilio(api, f"http://127.0.0.1:{port}")
    answer = await initiate(api, {"channel": "call", "contact": "+34911000131"})
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["code"] == "provider_failed" and "unreachable" in error["message"]
    row = (await api.conversation(error["conversation_id"]))["conversation"]
    assert (row["status"], row["state"], row["hangup_source"]) == ("wrap_up", None, "system")
    # A retry with the key gets the same answer, without calling again.
    assert (await initiate(api, {"channel": "call", "contact": "+34911000131"})).json() == (
        answer.json()
    )


async def test_a_provider_that_hangs_times_out_once_without_a_retry(api, provider_api):
    release = threading.Event()
    provider_api.route("POST", CALLS_PATH, 201, '{"sid": "CA1"}', hold=release)
    await use_twilio(api, provider_api.base_url)
    api.services.providers.http.timeout = httpx.Timeout(0.5)
    try:
        answer = await initiate(api, {"channel": "call", "contact": "+34911000132"})
    finally:
        release.set()
    assert answer.status_code == 502, answer.text
    assert "did not answer in time" in answer.json()["error"]["message"]
    # Not retried: the call may have been placed.
    assert len([r for r in provider_api.requests if r.path.endswith("/Calls.json")]) == 1
    row = (await api.conversation(answer.json()["error"]["conversation_id"]))["conversation"]
    assert row["status"] == "wrap_up"


async def test_the_sandbox_failing_contact_is_a_failed_call(api):
    answer = await initiate(api, {"channel": "sms", "contact": "+34911000104", "text": "Hi"})
    assert answer.status_code == 502
    row = (await api.conversation(answer.json()["error"]["conversation_id"]))["conversation"]
    assert (row["status"], row["hangup_source"]) == ("wrap_up", "system")


async def test_without_a_key_every_request_is_its_own(api):
    body = {"channel": "call", "contact": "+34911000103"}
    first = await initiate(api, body, key=None)
    second = await initiate(api, body, key=None)
    assert first.status_code == second.status_code == 202
    assert first.json()["conversation_id"] != second.json()["conversation_id"]


PLIVO_CREDENTIALS = {"auth_id": "MAXXXXXXXXXXXXXXXXXX", "auth_token": "plivo-token-2"}
WHATSAPP_CREDENTIALS = {
    "phone_number_id": "106540352242922",
    "access_token": "EAAG-access-token",
    "app_secret": "app-secret-2",
    "verify_token": "verify-2",
}


def plivo_status(message_id: str, contact: str) -> tuple[str, bytes, dict]:
    url = f"http://testserver/webhooks/plivo/acme?{urlencode({'message_id': message_id})}"
    params = {
        "MessageUUID": "7a7a7a7a-6f5e-11ee-8c99-0242ac120002",
        "Status": "delivered",
        "From": OUR_NUMBER.lstrip("+"),
        "To": contact.lstrip("+"),
        "ErrorCode": "",
        "Units": "1",
    }
    nonce = "12345678901234567890"
    sig = plivo.signature_v3(
        PLIVO_CREDENTIALS["auth_token"], "POST", url, list(params.items()), nonce
    )
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Plivo-Signature-V3": sig,
        "X-Plivo-Signature-V3-Nonce": nonce,
    }
    return url, urlencode(params).encode(), headers


def whatsapp_status(message_id: str, contact: str) -> tuple[str, bytes, dict]:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": OUR_NUMBER.lstrip("+"),
                                "phone_number_id": WHATSAPP_CREDENTIALS["phone_number_id"],
                            },
                            "statuses": [
                                {
                                    "id": "wamid.HBgLMTY1MDM4Nzk0Mzk",
                                    "status": "delivered",
                                    "timestamp": "1795514405",
                                    "recipient_id": contact.lstrip("+"),
                                    "biz_opaque_callback_data": message_id,
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    body = json.dumps(payload).encode()
    sig = whatsapp_cloud.signature(WHATSAPP_CREDENTIALS["app_secret"], body)
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sig}
    return "http://testserver/webhooks/whatsapp_cloud/acme", body, headers


@pytest.mark.parametrize(
    ("provider", "channel", "credentials", "path", "answer", "status_webhook"),
    [
        (
            "plivo",
            "sms",
            PLIVO_CREDENTIALS,
            rf"/v1/Account/{PLIVO_CREDENTIALS['auth_id']}/Message/",
            '{"message": "message(s) queued", "message_uuid": ["db3ce55a-7f1d-11e1"]}',
            plivo_status,
        ),
        (
            "whatsapp_cloud",
            "whatsapp",
            WHATSAPP_CREDENTIALS,
            rf"/v21\.0/{WHATSAPP_CREDENTIALS['phone_number_id']}/messages",
            '{"messaging_product": "whatsapp", "messages": [{"id": "wamid.X1"}]}',
            whatsapp_status,
        ),
    ],
)
async def test_a_message_goes_out_through_the_provider_and_its_status_comes_back(
    api, provider_api, provider, channel, credentials, path, answer, status_webhook
):
    provider_api.route("POST", path, 202, answer)
    response = await api.client.put(
        f"/api/v1/providers/{provider}",
        json={
            "channels": [channel],
            "numbers": [{"number": OUR_NUMBER, "team": "sales"}],
            "credentials": credentials,
        },
        headers=api.auth("admin"),
    )
    assert response.status_code == 200, response.text
    api.services.providers.api_bases[provider] = provider_api.base_url
    contact = "+34911000141"
    started = await initiate(api, {"channel": channel, "contact": contact, "text": "Your order"})
    assert started.status_code == 202, started.text
    cid = started.json()["conversation_id"]
    (sent,) = provider_api.requests
    assert b"Your order" in sent.body
    (message,) = (await api.conversation(cid))["transcript"]
    assert message["sender"] == "agent" and message["status"] is None

    url, body, headers = status_webhook(message["message_id"], contact)
    delivered = await api.client.post(url, content=body, headers=headers)
    assert delivered.status_code == 200, delivered.text
    (message,) = (await api.conversation(cid))["transcript"]
    assert message["status"] == "delivered"


async def test_a_supervisor_finishes_what_it_starts_over_http_and_websocket(backend, tmp_path):
    """Issue 17 finding 8: a supervisor's initiate makes it the conversation's agent; it
    may then reply, hang up and wrap up (another supervisor may not), its user id shows
    as agent_name (it has no agents row), and Customer Name is the known customer's."""
    from tests.server_support import live_server

    contact = "+34911000151"
    async with live_server(backend, tmp_path) as server:
        api = server.api
        [known] = await api.post_events(
            [
                api.event("conversation.created", "in-151", "2026-11-24T10:00:00Z",
                          channel="sms", contact=contact, customer={"name": "Kerry Fisher"})
            ]
        )  # fmt: skip
        assert known["outcome"] == "applied"
        answer = await initiate(
            api, {"channel": "sms", "contact": contact, "text": "Hi"}, role="supervisor",
            user="sup1",
        )  # fmt: skip
        assert answer.status_code == 202, answer.text
        cid = answer.json()["conversation_id"]
        row = (await api.conversation(cid))["conversation"]
        assert (row["direction"], row["agent_id"], row["agent_name"]) == (
            "outgoing",
            "sup1",
            "sup1",
        )
        assert row["customer_name"] == "Kerry Fisher"

        path = f"/api/v1/conversations/{cid}"
        other = await api.client.post(
            f"{path}/messages", json={"text": "no"}, headers=api.auth("supervisor", "sup2")
        )
        assert other.status_code == 403, other.text
        reply = await api.client.post(
            f"{path}/messages", json={"text": "More?"}, headers=api.auth("supervisor", "sup1")
        )
        assert reply.status_code == 202, reply.text
        async with server.ws("supervisor", "sup1") as ws:
            sent = await ws.request(
                {"type": "send_message", "conversation_id": cid, "text": "Still there?"}
            )
            assert sent["type"] == "ok", sent
            hung = await ws.request({"type": "hangup", "conversation_id": cid})
            assert hung["type"] == "ok", hung
        wrapup = await api.client.post(
            f"{path}/wrapup", json={"disposition": "sold"}, headers=api.auth("supervisor", "sup1")
        )
        assert wrapup.status_code == 200, wrapup.text
        row = wrapup.json()["conversation"]
        assert (row["status"], row["disposition"]) == ("closed", "sold")
        assert (row["agent_name"], row["customer_name"]) == ("sup1", "Kerry Fisher")

        # An admin who initiates a call may hang it up too.
        answer = await initiate(
            api, {"channel": "call", "contact": contact}, key="k2", role="admin", user="adm"
        )
        assert answer.status_code == 202, answer.text
        hung = await api.client.post(
            f"/api/v1/conversations/{answer.json()['conversation_id']}/hangup",
            headers=api.auth("admin", "adm"),
        )
        assert hung.status_code == 200, hung.text


async def test_customer_name_fills_when_the_customer_replies_with_a_profile_name(api, provider_api):
    """An outgoing WhatsApp to a contact nobody knows has no Customer Name; the reply's
    profile name fills it (and the contact is a known customer from then on)."""
    path = rf"/v21\.0/{WHATSAPP_CREDENTIALS['phone_number_id']}/messages"
    provider_api.route("POST", path, 202, '{"messages": [{"id": "wamid.X2"}]}')
    response = await api.client.put(
        "/api/v1/providers/whatsapp_cloud",
        json={
            "channels": ["whatsapp"],
            "numbers": [{"number": OUR_NUMBER, "team": "sales"}],
            "credentials": WHATSAPP_CREDENTIALS,
        },
        headers=api.auth("admin"),
    )
    assert response.status_code == 200, response.text
    api.services.providers.api_bases["whatsapp_cloud"] = provider_api.base_url
    contact = "+34911000143"
    started = await initiate(api, {"channel": "whatsapp", "contact": contact, "text": "Hello"})
    assert started.status_code == 202, started.text
    cid = started.json()["conversation_id"]
    assert (await api.conversation(cid))["conversation"]["customer_name"] is None

    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": OUR_NUMBER.lstrip("+"),
                         "phone_number_id": WHATSAPP_CREDENTIALS["phone_number_id"]},
            "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": contact.lstrip("+")}],
            "messages": [{"from": contact.lstrip("+"), "id": "wamid.reply-143",
                          "timestamp": "1795514400", "type": "text",
                          "text": {"body": "Yes please"}}],
        }}]}],
    }  # fmt: skip
    body = json.dumps(payload).encode()
    sig = whatsapp_cloud.signature(WHATSAPP_CREDENTIALS["app_secret"], body)
    reply = await api.client.post(
        "http://testserver/webhooks/whatsapp_cloud/acme",
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sig},
    )
    assert reply.status_code == 200, reply.text
    detail = await api.conversation(cid)
    assert sorted(m["sender"] for m in detail["transcript"]) == ["agent", "customer"]
    assert detail["conversation"]["customer_name"] == "Kerry Fisher"
    assert detail["customer"]["name"] == "Kerry Fisher"


async def test_a_reply_on_a_channel_no_provider_carries_is_refused_and_not_recorded(api):
    contact = "+34911000152"
    answer = await initiate(api, {"channel": "sms", "contact": contact, "text": "Hi"})
    assert answer.status_code == 202, answer.text
    cid = answer.json()["conversation_id"]
    # the admin takes SMS off the sandbox: no provider carries it any more
    response = await api.client.put(
        "/api/v1/providers/sandbox", json={"channels": ["call"]}, headers=api.auth("admin")
    )
    assert response.status_code == 200, response.text
    before = (await api.conversation(cid))["transcript"]
    reply = await api.client.post(
        f"/api/v1/conversations/{cid}/messages", json={"text": "More?"}, headers=api.auth("agent")
    )
    assert reply.status_code == 409, reply.text
    error = reply.json()["error"]
    assert error["code"] == "no_provider" and "sms" in error["message"], error
    assert (await api.conversation(cid))["transcript"] == before
