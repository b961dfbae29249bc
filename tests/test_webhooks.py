"""GET/POST /webhooks/{provider}/{tenant}: each provider's inbound path through the
server, with payloads in the providers' documented formats (numbers changed to ones
libphonenumber accepts); bad, missing and replayed signatures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from channels import plivo, sandbox, twilio, whatsapp_cloud
from server.providers.inbound import conversation_id_for
from server.providers.repository import latest_conversation_of_contact
from tests.test_channels_helpers import provider_api

__all__ = ["provider_api"]

OUR_NUMBER = "+14155552671"
CUSTOMER = "+34911000107"
BASE = "http://testserver"
TWILIO_CREDENTIALS = {"account_sid": "AC" + "1" * 32, "auth_token": "twilio-token-1"}
PLIVO_CREDENTIALS = {"auth_id": "MAXXXXXXXXXXXXXXXXXX", "auth_token": "plivo-token-1"}
WHATSAPP_CREDENTIALS = {
    "phone_number_id": "106540352242922",
    "access_token": "EAAG-access-token",
    "app_secret": "app-secret-1",
    "verify_token": "verify-me-please",
}

# https://www.twilio.com/docs/voice/twiml#request-parameters
TWILIO_VOICE = {
    "AccountSid": TWILIO_CREDENTIALS["account_sid"],
    "ApiVersion": "2010-04-01",
    "CallSid": "CA5f3c7b2a1e9d8c7b6a5f4e3d2c1b0a99",
    "CallStatus": "ringing",
    "Called": OUR_NUMBER,
    "Caller": CUSTOMER,
    "Direction": "inbound",
    "From": CUSTOMER,
    "To": OUR_NUMBER,
    "CallerName": "Ann Example",
}
# https://docs.plivo.com/docs/messaging/api/message/handling-incoming
PLIVO_SMS = {
    "From": CUSTOMER.lstrip("+"),
    "To": OUR_NUMBER.lstrip("+"),
    "Type": "sms",
    "Text": "Hola, ¿mi pedido?",
    "MessageUUID": "6f6b2a8e-6f5e-11ee-8c99-0242ac120002",
    "Units": "1",
    "TotalRate": "0",
    "TotalAmount": "0",
}
# https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/payload-examples
WHATSAPP_MESSAGE = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "102290129340398",
            "changes": [
                {
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {
                            "display_phone_number": OUR_NUMBER.lstrip("+"),
                            "phone_number_id": "106540352242922",
                        },
                        "contacts": [
                            {"profile": {"name": "Kerry Fisher"}, "wa_id": CUSTOMER.lstrip("+")}
                        ],
                        "messages": [
                            {
                                "from": CUSTOMER.lstrip("+"),
                                "id": "wamid.ABGGFlA5FpafAgo6EhAr5LRG9tHXcKQoHDq",
                                "timestamp": "1795514400",
                                "text": {"body": "Does it come in another color? 🎨"},
                                "type": "text",
                            }
                        ],
                    },
                    "field": "messages",
                }
            ],
        }
    ],
}


async def configure(api, provider: str, channels: list[str], credentials: dict) -> None:
    response = await api.client.put(
        f"/api/v1/providers/{provider}",
        json={
            "channels": channels,
            "numbers": [{"number": OUR_NUMBER, "team": "sales"}],
            "credentials": credentials,
        },
        headers=api.auth("admin"),
    )
    assert response.status_code == 200, response.text


def form(params: dict) -> bytes:
    return urlencode(list(params.items())).encode()


async def post_twilio(api, params: dict, signature: str | None = "sign", tenant: str = "acme"):
    url = f"{BASE}/webhooks/twilio/{tenant}"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature == "sign":
        signature = twilio.signature(TWILIO_CREDENTIALS["auth_token"], url, list(params.items()))
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return await api.client.post(url, content=form(params), headers=headers)


async def detail(api, conversation_id: str) -> dict:
    return await api.conversation(conversation_id)


async def test_a_twilio_call_opens_a_routed_conversation_and_holds_the_caller(api):
    await configure(api, "twilio", ["call", "sms"], TWILIO_CREDENTIALS)
    response = await post_twilio(api, TWILIO_VOICE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    assert b"<Say>" in response.content and b"<Play" in response.content
    cid = conversation_id_for(f"twilio:{TWILIO_VOICE['CallSid']}:created")
    first = await detail(api, cid)
    row = first["conversation"]
    assert (row["status"], row["channel"], row["contact"]) == ("new", "call", CUSTOMER)
    assert row["team"] == "sales" and row["contacto_number"] == OUR_NUMBER

    # A replay (Twilio retrying) is a duplicate: the same answer, nothing changed.
    again = await post_twilio(api, TWILIO_VOICE)
    assert again.status_code == 200
    assert (await detail(api, cid))["conversation"]["version"] == row["version"]

    # Bad or missing signatures are refused and change nothing.
    tampered = dict(TWILIO_VOICE, CallStatus="completed")
    bad = await post_twilio(api, tampered, signature="AAAA" + "x" * 24)
    assert bad.status_code == 403 and bad.json()["error"]["code"] == "bad_signature"
    missing = await post_twilio(api, tampered, signature=None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_signature"
    assert (await detail(api, cid))["conversation"]["status"] == "new"

    # The caller hangs up: the status callback ends the conversation.
    ended = await post_twilio(api, tampered)
    assert ended.status_code == 200, ended.text
    final = (await detail(api, cid))["conversation"]
    assert (final["status"], final["state"], final["hangup_source"]) == (
        "closed",
        "dropped",
        "customer",
    )
    # A second call from the same customer is a new conversation.
    second = dict(TWILIO_VOICE, CallSid="CA" + "7" * 32)
    assert (await post_twilio(api, second)).status_code == 200
    new_id = conversation_id_for(f"twilio:{second['CallSid']}:created")
    assert new_id != cid and (await detail(api, new_id))["conversation"]["status"] == "new"


async def test_a_twilio_sms_reply_joins_the_contacts_open_conversation(api):
    await configure(api, "twilio", ["call", "sms"], TWILIO_CREDENTIALS)
    sms = {
        "MessageSid": "SM" + "a" * 32,
        "AccountSid": TWILIO_CREDENTIALS["account_sid"],
        "From": CUSTOMER,
        "To": OUR_NUMBER,
        "Body": "Hi, is my order shipped? 📦",
        "NumMedia": "0",
    }
    assert (await post_twilio(api, sms)).status_code == 200
    cid = conversation_id_for(f"twilio:{sms['MessageSid']}:created")
    follow_up = dict(sms, MessageSid="SM" + "b" * 32, Body="Hello?")
    assert (await post_twilio(api, follow_up)).status_code == 200
    conversation = await detail(api, cid)
    assert [m["text"] for m in conversation["transcript"]] == [sms["Body"], "Hello?"]
    assert conversation["conversation"]["channel"] == "sms"


async def test_a_plivo_sms_retried_with_a_new_nonce_is_a_duplicate(api):
    await configure(api, "plivo", ["call", "sms"], PLIVO_CREDENTIALS)
    url = f"{BASE}/webhooks/plivo/acme"

    async def post(nonce: str | None, good: bool = True):
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        token = PLIVO_CREDENTIALS["auth_token"] if good else "another-token"
        if nonce is not None:
            headers["X-Plivo-Signature-V3-Nonce"] = nonce
            headers["X-Plivo-Signature-V3"] = plivo.signature_v3(
                token, "POST", url, list(PLIVO_SMS.items()), nonce
            )
        return await api.client.post(url, content=form(PLIVO_SMS), headers=headers)

    assert (await post(None)).status_code == 401
    assert (await post("111", good=False)).status_code == 403
    first = await post("05429567804466091622")
    assert first.status_code == 200, first.text
    cid = conversation_id_for(f"plivo:{PLIVO_SMS['MessageUUID']}:created")
    version = (await detail(api, cid))["conversation"]["version"]
    retry = await post("99999999999999999999")
    assert retry.status_code == 200
    conversation = await detail(api, cid)
    assert conversation["conversation"]["version"] == version
    assert [m["text"] for m in conversation["transcript"]] == [PLIVO_SMS["Text"]]
    assert conversation["conversation"]["team"] == "sales"


async def test_whatsapp_cloud_challenge_signature_and_message(api):
    await configure(api, "whatsapp_cloud", ["whatsapp"], WHATSAPP_CREDENTIALS)
    url = f"{BASE}/webhooks/whatsapp_cloud/acme"
    query = "hub.mode=subscribe&hub.verify_token=verify-me-please&hub.challenge=1158201444"
    challenge = await api.client.get(f"{url}?{query}")
    assert challenge.status_code == 200 and challenge.text == "1158201444"
    wrong = await api.client.get(f"{url}?{query.replace('verify-me', 'guess')}")
    assert wrong.status_code == 403

    body = json.dumps(WHATSAPP_MESSAGE).encode()
    good = whatsapp_cloud.signature(WHATSAPP_CREDENTIALS["app_secret"], body)
    bad = whatsapp_cloud.signature("not-the-secret", body)
    headers = {"Content-Type": "application/json"}
    refused = await api.client.post(
        url, content=body, headers={**headers, "X-Hub-Signature-256": bad}
    )
    assert refused.status_code == 403
    assert (await api.client.post(url, content=body, headers=headers)).status_code == 401
    for _ in range(2):  # delivered twice: one conversation, one message
        accepted = await api.client.post(
            url, content=body, headers={**headers, "X-Hub-Signature-256": good}
        )
        assert accepted.status_code == 200, accepted.text
    message_id = WHATSAPP_MESSAGE["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    cid = conversation_id_for(f"whatsapp_cloud:{message_id}:created")
    conversation = await detail(api, cid)
    assert conversation["conversation"]["channel"] == "whatsapp"
    assert conversation["customer"]["name"] == "Kerry Fisher"
    assert len(conversation["transcript"]) == 1


async def test_the_sandbox_webhook_starts_an_inbound_contact_when_signed(api):
    response = await api.client.put(
        "/api/v1/providers/sandbox",
        json={
            "credentials": {"secret": "sandbox-secret"},
            "numbers": [{"number": OUR_NUMBER, "team": "support"}],
        },
        headers=api.auth("admin"),
    )
    assert response.status_code == 200, response.text
    url = f"{BASE}/webhooks/sandbox/acme"
    body = json.dumps(
        {
            "kind": "message",
            "channel": "sms",
            "contact": CUSTOMER,
            "text": "hi",
            "contacto_number": OUR_NUMBER,
        }
    ).encode()
    unsigned = await api.client.post(url, content=body)
    assert unsigned.status_code == 401
    signed = await api.client.post(
        url,
        content=body,
        headers={sandbox.SIGNATURE_HEADER: sandbox.signature("sandbox-secret", body)},
    )
    assert signed.status_code == 200, signed.text
    async with api.services.db.read() as conn:
        found = await latest_conversation_of_contact(conn, "acme", CUSTOMER, "sms")
    conversation = await detail(api, found["id"])
    assert conversation["conversation"]["team"] == "support"
    assert [m["text"] for m in conversation["transcript"]] == ["hi"]


async def test_webhooks_for_unknown_tenants_providers_or_payloads(api):
    assert (await api.client.post(f"{BASE}/webhooks/twilio/nobody", content=b"")).status_code == 404
    assert (await api.client.post(f"{BASE}/webhooks/acme-tel/acme", content=b"")).status_code == 404
    # Not configured for this tenant (it runs on the defaults).
    assert (await api.client.post(f"{BASE}/webhooks/plivo/globex", content=b"")).status_code == 404
    await configure(api, "twilio", ["call"], TWILIO_CREDENTIALS)
    nonsense = {"Hello": "world"}
    response = await post_twilio(api, nonsense)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_payload"
    # Signed for acme, sent to globex: globex has no twilio.
    assert (await post_twilio(api, TWILIO_VOICE, tenant="globex")).status_code == 404


async def test_a_twilio_recording_is_fetched_into_the_store_and_served(api, provider_api):
    await configure(api, "twilio", ["call", "sms"], TWILIO_CREDENTIALS)
    assert (await post_twilio(api, TWILIO_VOICE)).status_code == 200
    cid = conversation_id_for(f"twilio:{TWILIO_VOICE['CallSid']}:created")
    wav = b"RIFF" + bytes(range(256)) * 4
    provider_api.route("GET", r"/Recordings/RE1\.wav", 200, wav, content_type="audio/wav")
    provider_api.route("GET", r"/Recordings/RE2\.wav", 500, b"{}")
    # https://www.twilio.com/docs/voice/twiml/dial#recordingstatuscallback
    callback = {
        "AccountSid": TWILIO_CREDENTIALS["account_sid"],
        "CallSid": TWILIO_VOICE["CallSid"],
        "RecordingSid": "RE1",
        "RecordingUrl": f"{provider_api.base_url}/Recordings/RE1",
        "RecordingStatus": "completed",
        "RecordingDuration": "42",
        "RecordingChannels": "2",
        "RecordingSource": "DialVerb",
    }
    failing = dict(
        callback, RecordingSid="RE2", RecordingUrl=f"{provider_api.base_url}/Recordings/RE2"
    )
    refused = await post_twilio(api, failing)
    assert refused.status_code == 502  # Twilio retries; nothing recorded meanwhile
    assert (await detail(api, cid))["recordings"] == []
    assert (await post_twilio(api, callback)).status_code == 200
    (recording,) = (await detail(api, cid))["recordings"]
    assert (recording["id"], recording["duration_s"]) == ("RE1", 42.0)
    (fetch,) = [r for r in provider_api.requests if r.path.endswith("RE1.wav")]
    assert fetch.basic_auth() == (
        TWILIO_CREDENTIALS["account_sid"],
        TWILIO_CREDENTIALS["auth_token"],
    )
    served = await api.client.get(
        f"/api/v1/conversations/{cid}/recordings/RE1", headers=api.auth("supervisor")
    )
    assert served.status_code == 200 and served.content == wav


async def test_merge_channels_joins_a_second_channel_to_the_open_conversation(api):
    response = await api.client.put(
        "/api/v1/tenant", json={"merge_channels": True}, headers=api.auth("admin")
    )
    assert response.status_code == 200, response.text
    await configure(api, "twilio", ["call", "sms"], TWILIO_CREDENTIALS)
    sms = {
        "MessageSid": "SM" + "c" * 32,
        "AccountSid": TWILIO_CREDENTIALS["account_sid"],
        "From": CUSTOMER,
        "To": OUR_NUMBER,
        "Body": "I'll call you",
    }
    assert (await post_twilio(api, sms)).status_code == 200
    cid = conversation_id_for(f"twilio:{sms['MessageSid']}:created")
    assert (await post_twilio(api, TWILIO_VOICE)).status_code == 200
    row = (await detail(api, cid))["conversation"]
    assert row["channel"] == "omnichannel" and set(row["channels"]) == {"sms", "call"}
    # The call's later callbacks map to the same conversation.
    ended = await post_twilio(api, dict(TWILIO_VOICE, CallStatus="completed"))
    assert ended.status_code == 200
    assert (await detail(api, cid))["conversation"]["status"] == "closed"


async def test_a_whatsapp_timestamp_out_of_bounds_is_the_time_of_receipt(api):
    """Issue 17 finding 2: a signed webhook's `timestamp: 253402300799` (9999-12-31)
    opens the conversation at the time of receipt, and its views render."""
    await configure(api, "whatsapp_cloud", ["whatsapp"], WHATSAPP_CREDENTIALS)
    payload = json.loads(json.dumps(WHATSAPP_MESSAGE))
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    message.update(id="wamid.HBgMfar-future==", timestamp="253402300799")
    body = json.dumps(payload).encode()
    signature = whatsapp_cloud.signature(WHATSAPP_CREDENTIALS["app_secret"], body)
    before = datetime.now(UTC)
    accepted = await api.client.post(
        f"{BASE}/webhooks/whatsapp_cloud/acme",
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
    )
    assert accepted.status_code == 200, accepted.text
    cid = conversation_id_for("whatsapp_cloud:wamid.HBgMfar-future==:created")
    row = (await detail(api, cid))["conversation"]
    created_at = datetime.fromisoformat(row["created_at"])
    assert before - timedelta(seconds=1) <= created_at <= datetime.now(UTC)
    assert row["created_date"] is not None
