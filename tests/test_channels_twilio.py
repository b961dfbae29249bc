"""The Twilio adapter: signatures, inbound calls and SMS, an outbound call's legs,
recordings, message statuses, and its REST requests against a local fake API."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode

import httpx
import pytest

from channels.base import (
    OutboundCall,
    OutboundMessage,
    PayloadError,
    ProviderError,
    SignatureError,
    WebhookRequest,
)
from channels.registry import build
from channels.twilio import TwilioCredentials, TwilioProvider, signature
from state_machine import parse_event
from tests.support import free_port
from tests.test_channels_helpers import (
    NOW,
    WEBHOOK,
    form_request,
    http,
    initiated,
    provider_api,
    run_events,
)

__all__ = ["http", "provider_api"]

HOOK = WEBHOOK.format(provider="twilio")
SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "twilio-auth-token-1"
CREDENTIALS = TwilioCredentials(SID, TOKEN)

# The inbound voice request: https://www.twilio.com/docs/voice/twiml#request-parameters
VOICE_REQUEST = {
    "AccountSid": SID,
    "ApiVersion": "2010-04-01",
    "CallSid": "CA5f3c7b2a1e9d8c7b6a5f4e3d2c1b0a99",
    "CallStatus": "ringing",
    "Called": "+15559000000",
    "Caller": "+15550123456",
    "Direction": "inbound",
    "From": "+15550123456",
    "To": "+15559000000",
    "CallerName": "Ann Example",
}
# A call status callback: https://www.twilio.com/docs/voice/api/call-resource#statuscallback
STATUS_CALLBACK = {
    "AccountSid": SID,
    "ApiVersion": "2010-04-01",
    "CallSid": "CA11111111111111111111111111111111",
    "ParentCallSid": "CA22222222222222222222222222222222",
    "CallStatus": "ringing",
    "Direction": "outbound-dial",
    "From": "+15559000000",
    "To": "+15550123456",
    "SequenceNumber": "1",
    "Timestamp": "Tue, 24 Nov 2026 10:00:05 +0000",
    "CallbackSource": "call-progress-events",
}
# Incoming SMS: https://www.twilio.com/docs/messaging/guides/webhook-request
INBOUND_SMS = {
    "ToCountry": "US",
    "SmsMessageSid": "SM9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d",
    "NumMedia": "0",
    "SmsSid": "SM9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d",
    "SmsStatus": "received",
    "Body": "Hi, is my order shipped? 📦",
    "To": "+15559000000",
    "NumSegments": "1",
    "MessageSid": "SM9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d",
    "AccountSid": SID,
    "From": "+15550123456",
    "ApiVersion": "2010-04-01",
}
# Outbound message status: https://www.twilio.com/docs/messaging/guides/track-outbound-message-status
MESSAGE_STATUS = {
    "SmsSid": "SM0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
    "SmsStatus": "delivered",
    "MessageStatus": "delivered",
    "To": "+15550123456",
    "MessageSid": "SM0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
    "AccountSid": SID,
    "From": "+15559000000",
    "ApiVersion": "2010-04-01",
}
# Recording status callback: https://www.twilio.com/docs/voice/twiml/dial#recordingstatuscallback
RECORDING_CALLBACK = {
    "AccountSid": SID,
    "CallSid": "CA22222222222222222222222222222222",
    "RecordingSid": "RE3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c",
    "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC0/Recordings/RE3c",
    "RecordingStatus": "completed",
    "RecordingDuration": "42",
    "RecordingChannels": "2",
    "RecordingSource": "DialVerb",
    "RecordingStartTime": "Tue, 24 Nov 2026 10:00:06 +0000",
}


def provider(
    api_base: str = "https://api.twilio.com", http: httpx.AsyncClient | None = None
) -> TwilioProvider:
    # Parsing needs no client; tests that send pass the `http` fixture's.
    return TwilioProvider(CREDENTIALS, HOOK, http or httpx.AsyncClient(), api_base)


def signed(url: str, params: dict[str, str], token: str = TOKEN) -> WebhookRequest:
    sig = signature(token, url, list(params.items()))
    return form_request(url, params, {"X-Twilio-Signature": sig})


# ------------------------------------------------------------------------ signatures


def test_signature_matches_twilios_documented_example():
    # The worked example of https://www.twilio.com/docs/usage/security#validating-requests
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signature("12345", url, list(params.items())) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_a_good_signature_verifies_also_behind_a_proxy_that_adds_the_port():
    twilio = provider()
    twilio.verify(signed(HOOK, VOICE_REQUEST))
    request = signed("https://switchboard.example.com:443/webhooks/twilio/acme", VOICE_REQUEST)
    twilio.verify(WebhookRequest(request.method, HOOK, dict(request.headers), request.body))


def test_a_missing_signature_is_refused_as_missing():
    request = form_request(HOOK, VOICE_REQUEST, {})
    with pytest.raises(SignatureError) as caught:
        provider().verify(request)
    assert caught.value.code == "missing_signature" and caught.value.status == 401


@pytest.mark.parametrize(
    "tamper",
    ["token", "body", "url"],
)
def test_a_bad_signature_is_refused(tamper):
    request = signed(HOOK, VOICE_REQUEST, token="another-token" if tamper == "token" else TOKEN)
    if tamper == "body":
        request = WebhookRequest("POST", HOOK, dict(request.headers), request.body + b"&Digits=9")
    if tamper == "url":
        request = WebhookRequest("POST", HOOK + "?ref=x", dict(request.headers), request.body)
    with pytest.raises(SignatureError) as caught:
        provider().verify(request)
    assert caught.value.code == "bad_signature" and caught.value.status == 403


def test_a_replayed_webhook_verifies_and_yields_the_same_event_ids():
    # A replay (or Twilio's own retry) is the same request again: it must map to the
    # same events, so ingest answers `duplicate` and nothing changes twice.
    twilio = provider()
    request = signed(HOOK, VOICE_REQUEST)
    first = twilio.parse(request, NOW)
    twilio.verify(request)
    later = twilio.parse(request, NOW.replace(minute=30))
    assert first.items[0].opening.event_id == later.items[0].opening.event_id


# ------------------------------------------------------------------------ inbound


def test_an_inbound_call_opens_a_conversation_and_holds_the_caller():
    result = provider().parse(signed(HOOK, VOICE_REQUEST), NOW)
    (item,) = result.items
    assert item.reference.kind == "call"
    assert item.reference.call_id == VOICE_REQUEST["CallSid"]
    assert item.reference.contacto_number == "+15559000000"
    envelope = item.opening.envelope("conv-1")
    event = parse_event(envelope)
    assert event.type == "conversation.created"
    assert envelope["data"] == {
        "channel": "call",
        "contact": "+15550123456",
        "customer": {"name": "Ann Example", "phone": "+15550123456"},
        "contacto_number": "+15559000000",
    }
    assert result.reply.content_type.startswith("application/xml")
    assert b'<Play loop="0">' in result.reply.body and b"<Say>" in result.reply.body


def test_the_end_of_an_inbound_call_is_the_customers_hangup():
    params = dict(VOICE_REQUEST, CallStatus="completed", CallDuration="30")
    (item,) = provider().parse(signed(HOOK, params), NOW).items
    (event,) = item.events
    assert (event.type, event.data) == ("media.hangup", {"source": "customer"})
    assert item.reference.call_id == VOICE_REQUEST["CallSid"]


def test_an_unknown_call_status_is_a_payload_error():
    with pytest.raises(PayloadError, match="CallStatus"):
        provider().parse(signed(HOOK, dict(VOICE_REQUEST, CallStatus="exploded")), NOW)


def test_a_payload_of_nothing_known_is_a_payload_error():
    with pytest.raises(PayloadError):
        provider().parse(signed(HOOK, {"Foo": "bar"}), NOW)


def test_an_inbound_sms_opens_a_conversation_with_its_message():
    (item,) = provider().parse(signed(HOOK, INBOUND_SMS), NOW).items
    assert item.reference.kind == "message"
    assert (item.reference.channel, item.reference.contact) == ("sms", "+15550123456")
    assert item.opening.data["channel"] == "sms"
    (message,) = item.events
    assert message.data == {
        "message_id": INBOUND_SMS["MessageSid"],
        "sender": "customer",
        "text": "Hi, is my order shipped? 📦",
    }
    conversation, outcomes = run_events([item.opening, message])
    assert outcomes == ["applied", "applied"]
    assert conversation.status == "new"


def test_a_whatsapp_message_through_twilio_is_on_the_whatsapp_channel():
    params = dict(INBOUND_SMS, From="whatsapp:+15550123456", To="whatsapp:+15559000000")
    (item,) = provider().parse(signed(HOOK, params), NOW).items
    assert item.reference.channel == "whatsapp"
    assert item.opening.data["contact"] == "+15550123456"


def test_a_delivery_status_names_the_servers_message_id():
    url = HOOK + "?message_id=msg-42"
    (item,) = provider().parse(signed(url, MESSAGE_STATUS), NOW).items
    (event,) = item.events
    assert event.type == "media.message_status"
    assert event.data == {"message_id": "msg-42", "status": "delivered"}
    undelivered = dict(MESSAGE_STATUS, MessageStatus="undelivered", SmsStatus="undelivered")
    (item,) = provider().parse(signed(url, undelivered), NOW).items
    assert item.events[0].data["status"] == "failed"
    sending = dict(MESSAGE_STATUS, MessageStatus="sending")
    assert provider().parse(signed(url, sending), NOW).items == ()


# ------------------------------------------------------------------------ outbound call


def leg(leg_name: str, status: str, **extra: str) -> WebhookRequest:
    url = f"{HOOK}?ref=conv-ref-1&leg={leg_name}"
    return signed(url, dict(STATUS_CALLBACK, CallStatus=status, **extra))


def test_an_outbound_calls_legs_walk_the_conversation_to_wrap_up():
    twilio = provider()
    events = [initiated()]
    for name, status in [
        ("agent", "initiated"),
        ("agent", "ringing"),
        ("agent", "in-progress"),
        ("customer", "initiated"),
        ("customer", "ringing"),
        ("customer", "in-progress"),
        ("customer", "completed"),
        ("agent", "completed"),
    ]:
        for item in twilio.parse(leg(name, status), NOW).items:
            assert item.reference.call_id == "conv-ref-1"
            events.extend(item.events)
    assert [e.type for e in events] == [
        "conversation.initiated",
        "media.ringing",
        "media.answered",
        "media.hangup",
        "media.hangup",
    ]
    conversation, outcomes = run_events(events)
    # The agent's leg ends after the customer's: a second leg's hangup is stale.
    assert outcomes == ["applied", "applied", "applied", "applied", "Stale"]
    assert (conversation.status, conversation.state) == ("wrap_up", "customer_answered")
    assert conversation.hangup_source == "customer"


@pytest.mark.parametrize(
    ("name", "status", "type_", "data"),
    [
        ("customer", "busy", "media.no_answer", {"reason": "busy"}),
        ("customer", "no-answer", "media.no_answer", {"reason": "no_answer"}),
        ("customer", "failed", "media.no_answer", {"reason": "failed"}),
        ("customer", "canceled", "media.hangup", {"source": "agent"}),
        ("agent", "no-answer", "media.no_answer", {"reason": "failed"}),
        ("agent", "busy", "media.no_answer", {"reason": "failed"}),
    ],
)
def test_an_outbound_call_that_is_not_answered(name, status, type_, data):
    (item,) = provider().parse(leg(name, status), NOW).items
    (event,) = item.events
    assert (event.type, event.data) == (type_, data)
    assert event.occurred_at.isoformat() == "2026-11-24T10:00:05+00:00"  # Twilio's Timestamp


async def test_a_recording_callback_is_recording_ready_and_downloads(
    provider_api, http, tmp_path: Path
):
    provider_api.route("GET", r"/2010-04-01/Accounts/AC0/Recordings/RE3c\.wav", 200, b"RIFFdata")
    params = dict(
        RECORDING_CALLBACK,
        RecordingUrl=provider_api.base_url + "/2010-04-01/Accounts/AC0/Recordings/RE3c",
    )
    url = f"{HOOK}?ref=conv-ref-1&leg=recording"
    (item,) = provider().parse(signed(url, params), NOW).items
    (event,) = item.events
    assert event.type == "media.recording_ready"
    assert event.data == {
        "recording_id": RECORDING_CALLBACK["RecordingSid"],
        "duration_s": 42.0,
        "content_type": "audio/wav",
    }
    assert item.reference.call_id == "conv-ref-1"
    destination = tmp_path / "rec.wav"
    twilio = provider(provider_api.base_url, http)
    await twilio.download_recording(item.recording, destination)
    assert destination.read_bytes() == b"RIFFdata"
    assert provider_api.requests[-1].basic_auth() == (SID, TOKEN)


async def test_place_call_rings_the_agent_first_then_dials_the_customer(provider_api, http):
    provider_api.route(
        "POST",
        rf"/2010-04-01/Accounts/{SID}/Calls\.json",
        201,
        '{"sid": "CA99999999999999999999999999999999", "status": "queued"}',
    )
    twilio = provider(provider_api.base_url, http)
    placed = await twilio.place_call(
        OutboundCall("conv-ref-1", "+15550123456", "+15559000000", "+15557770000")
    )
    assert placed.provider_id == "CA99999999999999999999999999999999"
    assert placed.reference.call_id == "conv-ref-1"
    (request,) = provider_api.requests
    assert request.basic_auth() == (SID, TOKEN)
    form = parse_qs(request.body.decode())
    assert form["To"] == ["+15557770000"] and form["From"] == ["+15559000000"]
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert dict(parse_qsl(form["StatusCallback"][0].split("?")[1])) == {
        "ref": "conv-ref-1",
        "leg": "agent",
    }
    twiml = form["Twiml"][0]
    assert ">+15550123456</Number></Dial></Response>" in twiml
    assert 'callerId="+15559000000"' in twiml and 'record="record-from-answer-dual"' in twiml
    assert "leg=customer" in twiml and "leg=recording" in twiml


async def test_bridge_and_hangup_update_the_live_call(provider_api, http):
    path = rf"/2010-04-01/Accounts/{SID}/Calls/CA5f\w+\.json"
    provider_api.route("POST", path, 200, '{"sid": "CA5f"}')
    twilio = provider(provider_api.base_url, http)
    await twilio.bridge(VOICE_REQUEST["CallSid"], "+15557770000", "+15559000000")
    await twilio.hangup(VOICE_REQUEST["CallSid"])
    bridge, hangup = (parse_qs(r.body.decode()) for r in provider_api.requests)
    assert "<Number>+15557770000</Number>" in bridge["Twiml"][0]
    assert "leg=bridge" in bridge["Twiml"][0]
    assert hangup == {"Status": ["completed"]}


def test_the_bridges_end_puts_a_caller_back_on_hold_unless_it_was_a_conversation():
    url = f"{HOOK}?ref={VOICE_REQUEST['CallSid']}&leg=bridge"
    twilio = provider()
    missed = twilio.parse(signed(url, dict(VOICE_REQUEST, DialCallStatus="no-answer")), NOW)
    assert missed.items == () and b"<Play" in missed.reply.body
    done = twilio.parse(signed(url, dict(VOICE_REQUEST, DialCallStatus="completed")), NOW)
    assert b"<Hangup/>" in done.reply.body


async def test_send_message_posts_to_the_messages_api(provider_api, http):
    provider_api.route(
        "POST", rf"/2010-04-01/Accounts/{SID}/Messages\.json", 201, '{"sid": "SMabc"}'
    )
    twilio = provider(provider_api.base_url, http)
    placed = await twilio.send_message(
        OutboundMessage("sms", "+15550123456", "+15559000000", "Your order ships today", "m-1")
    )
    assert placed.provider_id == "SMabc"
    form = parse_qs(provider_api.requests[0].body.decode())
    assert form["Body"] == ["Your order ships today"] and form["To"] == ["+15550123456"]
    assert form["StatusCallback"] == [HOOK + "?message_id=m-1"]


# ------------------------------------------------------------------------ provider down


async def test_a_provider_that_is_down_is_a_provider_error_safe_to_retry(http):
    twilio = provider(f"http://127.0.0.1:{free_port()}", http)
    with pytest.raises(ProviderError) as caught:
        await twilio.place_call(OutboundCall("r", "+15550123456", "+15559000000", "+15557770000"))
    assert caught.value.safe_to_retry


async def test_a_provider_error_answer_is_a_provider_error_not_safe_to_retry(provider_api, http):
    provider_api.route("POST", r".*", 500, '{"code": 20500, "message": "Internal error"}')
    with pytest.raises(ProviderError) as caught:
        await provider(provider_api.base_url, http).send_message(
            OutboundMessage("sms", "+15550123456", "+15559000000", "hi", "m-1")
        )
    assert caught.value.status == 500 and not caught.value.safe_to_retry
    assert "Internal error" in caught.value.message


async def test_a_provider_that_hangs_times_out(provider_api):
    provider_api.route("POST", r".*", 201, '{"sid": "CA1"}', hold=threading.Event())
    async with httpx.AsyncClient(timeout=0.2) as slow:
        with pytest.raises(ProviderError, match="did not answer in time") as caught:
            await provider(provider_api.base_url, slow).place_call(
                OutboundCall("r", "+15550123456", "+15559000000", "+15557770000")
            )
    assert not caught.value.safe_to_retry  # it may have been placed


def test_build_checks_credentials_and_never_shows_the_token():
    from channels.base import CredentialsError

    with pytest.raises(CredentialsError, match="auth_token"):
        build("twilio", {"account_sid": SID}, HOOK, httpx.AsyncClient())
    twilio = build("twilio", {"account_sid": SID, "auth_token": TOKEN}, HOOK, httpx.AsyncClient())
    assert TOKEN not in repr(twilio.credentials)


def test_a_webhook_configured_as_get_carries_its_parameters_in_the_signed_url():
    url = HOOK + "?" + urlencode(VOICE_REQUEST)
    request = WebhookRequest("GET", url, {"X-Twilio-Signature": signature(TOKEN, url, [])}, b"")
    twilio = provider()
    twilio.verify(request)
    (item,) = twilio.parse(request, NOW).items
    assert item.opening.data["contact"] == "+15550123456"


@pytest.mark.parametrize(
    "stamp",
    [
        "Fri, 31 Dec 9999 23:59:59 +0000",
        "Sat, 01 Jan 2000 00:30:00 +0100",  # 1999 in UTC
        "Fri, 31 Dec 1999 23:59:59 +0000",
        "Wed, 25 Nov 2026 10:00:01 +0000",  # more than a day after the time of receipt
    ],
)
def test_a_timestamp_out_of_bounds_is_replaced_by_the_time_of_receipt(stamp):
    (item,) = provider().parse(leg("customer", "busy", Timestamp=stamp), NOW).items
    (event,) = item.events
    assert event.occurred_at == NOW
    parse_event(event.envelope("conv-1"), NOW)  # ingest accepts it
