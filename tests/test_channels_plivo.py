"""The Plivo adapter: V3 signatures with their nonce, inbound calls with hangup
causes and sources, an outbound call's legs, retried callbacks, recordings, SMS,
and its REST requests against a local fake API."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from channels.base import OutboundCall, OutboundMessage, ProviderError, SignatureError
from channels.plivo import PlivoCredentials, PlivoProvider, signature_v3
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

HOOK = WEBHOOK.format(provider="plivo")
AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
TOKEN = "plivo-auth-token-1"
NONCE = "05429567804466091622"

# Parameters of the answer_url request: https://docs.plivo.com/docs/voice/xml/request
# (every name's source: docs/channels.md, "Plivo: parameter names and their sources")
ANSWER = {
    "CallUUID": "2d2a1b4c-6f5e-11ee-9c0a-0242ac120002",
    "From": "15550123456",
    "To": "15559000000",
    "CallStatus": "ringing",
    "Direction": "inbound",
    "Event": "StartApp",
    "CallerName": "+15550123456",
    "BillRate": "0.0085",
}
# hangup_url adds the hangup cause and source:
# https://docs.plivo.com/docs/voice/troubleshooting/hangup-causes
HANGUP = dict(
    ANSWER,
    CallStatus="completed",
    Event="Hangup",
    HangupCause="NORMAL_CLEARING",
    HangupCauseCode="4000",
    HangupCauseName="Normal Hangup",
    HangupSource="Caller",
    Duration="61",
    BillDuration="120",
    StartTime="2026-11-24 10:00:00",
    AnswerTime="2026-11-24 10:00:01",
    EndTime="2026-11-24 10:01:02",
)
# An incoming SMS at the application's message_url:
# https://docs.plivo.com/docs/messaging/api/message/handling-incoming
INBOUND_SMS = {
    "From": "15550123456",
    "To": "15559000000",
    "Type": "sms",
    "Text": "Hola, ¿mi pedido?",
    "MessageUUID": "6f6b2a8e-6f5e-11ee-8c99-0242ac120002",
    "Units": "1",
    "TotalRate": "0",
    "TotalAmount": "0",
    "MessageIntent": "optin",
}
# A message status callback at the `url` of Send a message:
# https://docs.plivo.com/docs/messaging/api/message/message-status-callbacks
MESSAGE_STATUS = {
    "MessageUUID": "7a7a7a7a-6f5e-11ee-8c99-0242ac120002",
    "Status": "delivered",
    "From": "15559000000",
    "To": "15550123456",
    "ErrorCode": "",
    "Units": "1",
    "TotalRate": "0.0050",
    "TotalAmount": "0.0050",
}
# The Record XML element's callbackUrl (plivo-examples-python voice/record/record_call.py;
# the *Ms fields are not confirmed by a Plivo source).
RECORDING = {
    "RecordUrl": "https://media.plivo.com/v1/Account/MA/Recording/rec-1.wav",
    "RecordingID": "rec-1",
    "RecordingDuration": "42",
    "RecordingDurationMs": "42500",
    "RecordingStartMs": "1795514401000",
    "RecordingEndMs": "1795514443500",
    "CallUUID": "2d2a1b4c-6f5e-11ee-9c0a-0242ac120002",
}


def provider(api_base: str = "https://api.plivo.com", http_client=None) -> PlivoProvider:
    return PlivoProvider(
        PlivoCredentials(AUTH_ID, TOKEN), HOOK, http_client or httpx.AsyncClient(), api_base
    )


def signed(url: str, params: dict[str, str], nonce: str = NONCE, token: str = TOKEN):
    sig = signature_v3(token, "POST", url, list(params.items()), nonce)
    return form_request(
        url, params, {"X-Plivo-Signature-V3": sig, "X-Plivo-Signature-V3-Nonce": nonce}
    )


# ------------------------------------------------------------------------ signatures


@pytest.mark.parametrize(
    ("method", "url", "params", "nonce", "expected"),
    [
        # Known answers computed with Plivo's own SDK (plivo-python, signature_v3.py).
        (
            "POST",
            "https://switchboard.example.com/webhooks/plivo/acme",
            {
                "CallUUID": "u-1",
                "From": "15550123456",
                "To": "15559000000",
                "CallStatus": "ringing",
            },
            "12345678901234567890",
            "fOsoCdg0lIrT4Zhrky4+vJyF2zlptGLiWwxtQMmPHYc=",
        ),
        (
            "POST",
            "https://switchboard.example.com/webhooks/plivo/acme?ref=r1&leg=agent",
            {"CallUUID": "u-1", "CallStatus": "completed"},
            "nonce-2",
            "vfQoPTkq2VZcJ5IDhS61zZc7gP83CJYqrsTEIwyGojE=",
        ),
        (
            "GET",
            "https://switchboard.example.com/webhooks/plivo/acme?b=2&a=1",
            {},
            "nonce-3",
            "vnisRVXX3zjyXnYW9cneYHxM91MrSEVMhHMUpB0oMoU=",
        ),
        (
            "POST",
            "https://switchboard.example.com/webhooks/plivo/acme?b=2&a=1",
            {},
            "nonce-4",
            "0hZMaEj0n6Vteh5JSt8ayi9BXi6/dUOSA4ABL+LqwG0=",
        ),
        # Non-ASCII values are signed as UTF-8: plivo-python 4.63.0's
        # validate_v3_signature accepts this one.
        (
            "POST",
            "https://h.example/x?leg=customer&ref=r1",
            {"DialAction": "answer", "Text": "Hola, ¿mi pedido?", "A": "1"},
            "n5",
            "JfGnSsdSfLQr2X9tjlP8b4O7dpDcgFVFYKluNUJUM3E=",
        ),
    ],
)
def test_signature_v3_agrees_with_plivos_sdk(method, url, params, nonce, expected):
    assert signature_v3(TOKEN, method, url, list(params.items()), nonce) == expected


def test_a_good_signature_verifies_also_among_several():
    plivo = provider()
    plivo.verify(signed(HOOK, ANSWER))
    request = signed(HOOK, ANSWER)
    headers = dict(request.headers)
    # Plivo sends one signature per active auth token, comma-separated.
    headers["X-Plivo-Signature-V3"] = "c29tZXRoaW5nIGVsc2U=," + headers["X-Plivo-Signature-V3"]
    plivo.verify(type(request)("POST", HOOK, headers, request.body))


@pytest.mark.parametrize("missing", ["X-Plivo-Signature-V3", "X-Plivo-Signature-V3-Nonce"])
def test_a_missing_signature_or_nonce_is_refused_as_missing(missing):
    request = signed(HOOK, ANSWER)
    headers = {k: v for k, v in request.headers.items() if k != missing}
    with pytest.raises(SignatureError) as caught:
        provider().verify(type(request)("POST", HOOK, headers, request.body))
    assert caught.value.status == 401


@pytest.mark.parametrize("tamper", ["token", "nonce", "body", "query"])
def test_a_bad_signature_is_refused(tamper):
    request = signed(HOOK, ANSWER, token="not-the-token" if tamper == "token" else TOKEN)
    headers, body, url = dict(request.headers), request.body, HOOK
    if tamper == "nonce":
        headers["X-Plivo-Signature-V3-Nonce"] = "another-nonce"
    if tamper == "body":
        body = body.replace(b"15550123456", b"15550999999")
    if tamper == "query":
        url = HOOK + "?ref=someone-else"
    with pytest.raises(SignatureError) as caught:
        provider().verify(type(request)("POST", url, headers, body))
    assert (caught.value.code, caught.value.status) == ("bad_signature", 403)


def test_a_retried_callback_with_a_new_nonce_maps_to_the_same_events():
    # Plivo retries a callback it could not deliver, signed afresh: same events.
    plivo = provider()
    first, retry = signed(HOOK, HANGUP, nonce="n-1"), signed(HOOK, HANGUP, nonce="n-2")
    plivo.verify(first)
    plivo.verify(retry)
    ids = [plivo.parse(r, NOW).items[0].events[0].event_id for r in (first, retry, first)]
    assert len(set(ids)) == 1


# ------------------------------------------------------------------------ inbound


def test_an_inbound_call_opens_a_conversation_and_holds_the_caller():
    result = provider().parse(signed(HOOK, ANSWER), NOW)
    (item,) = result.items
    assert item.reference.call_id == ANSWER["CallUUID"]
    envelope = item.opening.envelope("conv-1")
    assert parse_event(envelope).type == "conversation.created"
    assert envelope["data"]["contact"] == "+15550123456"
    assert envelope["data"]["contacto_number"] == "+15559000000"
    assert b"<Speak>" in result.reply.body and b'<Play loop="0">' in result.reply.body


@pytest.mark.parametrize(
    ("source", "code", "expected"),
    [
        ("Caller", "4000", "customer"),
        ("API Request", "1000", "agent"),
        ("Answer XML", "4010", "agent"),
        # Our <Hangup/> after the bridge's <Dial>: source "Answer XML", whatever the cause.
        ("Answer XML", "4000", "agent"),
        ("Unknown", "4010", "agent"),
        ("Carrier", "5010", "system"),
        ("Error", "6000", "system"),
    ],
)
def test_an_inbound_hangup_names_who_ended_it(source, code, expected):
    params = dict(HANGUP, HangupSource=source, HangupCauseCode=code)
    (item,) = provider().parse(signed(HOOK, params), NOW).items
    (event,) = item.events
    assert (event.type, event.data) == ("media.hangup", {"source": expected})


def test_an_inbound_sms_opens_a_conversation_with_its_message():
    (item,) = provider().parse(signed(HOOK, INBOUND_SMS), NOW).items
    assert (item.reference.kind, item.reference.contact) == ("message", "+15550123456")
    conversation, outcomes = run_events([item.opening, *item.events])
    assert outcomes == ["applied", "applied"]
    assert conversation.channel == "sms"


def test_a_delivery_status_names_the_servers_message_id():
    url = HOOK + "?message_id=msg-7"
    (item,) = provider().parse(signed(url, MESSAGE_STATUS), NOW).items
    assert item.events[0].data == {"message_id": "msg-7", "status": "delivered"}
    rejected = dict(MESSAGE_STATUS, Status="rejected", ErrorCode="200")
    (item,) = provider().parse(signed(url, rejected), NOW).items
    assert item.events[0].data["status"] == "failed"
    assert provider().parse(signed(url, dict(MESSAGE_STATUS, Status="queued")), NOW).items == ()


# ------------------------------------------------------------------------ outbound call


def outbound(leg: str, params: dict[str, str], **query: str):
    url = HOOK + "?" + "&".join(f"{k}={v}" for k, v in {"ref": "r-1", "leg": leg, **query}.items())
    return signed(url, params)


def test_an_outbound_call_connects_the_customer_when_the_agent_answers():
    plivo = provider()
    connect = outbound(
        "connect",
        dict(ANSWER, Direction="outbound", CallStatus="in-progress"),
        contact="%2B15550123456",
        caller="%2B15559000000",
    )
    result = plivo.parse(connect, NOW)
    assert b"<Number>15550123456</Number>" in result.reply.body
    assert b"leg=recording" in result.reply.body and b"startOnDialAnswer" in result.reply.body
    events = [initiated()]
    events += result.items[0].events  # ringing at the customer
    answer = {"DialAction": "answer", "DialALegUUID": "a", "DialBLegUUID": "b"}
    events += plivo.parse(outbound("customer", answer), NOW).items[0].events
    done = {"DialStatus": "completed", "DialALegUUID": "a", "DialBLegUUID": "b"}
    events += plivo.parse(outbound("customer", done), NOW).items[0].events
    # The agent's leg then ends with the XML: nothing more to report.
    agent_end = dict(HANGUP, Direction="outbound", HangupCauseCode="4010")
    assert plivo.parse(outbound("agent", agent_end), NOW).items[0].events == ()
    conversation, outcomes = run_events(events)
    assert outcomes == ["applied"] * 4
    assert (conversation.status, conversation.state) == ("wrap_up", "customer_answered")


@pytest.mark.parametrize(
    ("dial_status", "reason"),
    [("busy", "busy"), ("no-answer", "no_answer"), ("timeout", "no_answer"), ("failed", "failed")],
)
def test_a_customer_who_does_not_answer(dial_status, reason):
    params = {"DialStatus": dial_status, "DialALegUUID": "a", "DialBLegUUID": "b"}
    (item,) = provider().parse(outbound("customer", params), NOW).items
    assert (item.events[0].type, item.events[0].data) == ("media.no_answer", {"reason": reason})


def test_a_dial_callback_with_only_dial_b_leg_status_reports_the_answer():
    # Plivo's open-source server (plivoframework, inboundsocket.py) posts the <Dial>
    # callbackUrl with DialBLegStatus answer/hangup and no DialAction.
    plivo = provider()
    answer = {"DialBLegStatus": "answer", "DialALegUUID": "a", "DialBLegUUID": "b", "CallUUID": "a"}
    (item,) = plivo.parse(outbound("customer", answer), NOW).items
    assert [e.type for e in item.events] == ["media.answered"]
    hangup = dict(answer, DialBLegStatus="hangup", DialBLegHangupCause="NORMAL_CLEARING")
    assert plivo.parse(outbound("customer", hangup), NOW).items == ()


def test_a_dial_action_is_read_by_its_dial_status_whatever_else_it_carries():
    # DialStatus is documented only for the action URL; B-leg fields beside it do not
    # make it a callbackUrl event.
    params = {"DialStatus": "busy", "DialBLegStatus": "hangup", "DialALegUUID": "a"}
    (item,) = provider().parse(outbound("customer", params), NOW).items
    assert (item.events[0].type, item.events[0].data) == ("media.no_answer", {"reason": "busy"})


@pytest.mark.parametrize(
    ("source", "code"),
    [("Answer XML", "4000"), ("Caller", "4010")],
    ids=["hangup_xml", "end_of_xml"],
)
def test_the_agent_leg_ended_by_our_xml_reports_nothing(source, code):
    # Our <Hangup/> answers the customer's <Dial> action (HangupSource "Answer XML"), or
    # the XML runs out (4010): the <Dial> already reported the end.
    params = dict(HANGUP, Direction="outbound", HangupSource=source, HangupCauseCode=code)
    assert provider().parse(outbound("agent", params), NOW).items[0].events == ()
    hung_up = dict(params, HangupSource="Caller", HangupCauseCode="4000")
    (item,) = provider().parse(outbound("agent", hung_up), NOW).items
    assert item.events[0].data == {"source": "agent"}


def test_an_agent_phone_that_does_not_answer_fails_the_call():
    params = dict(HANGUP, Direction="outbound", CallStatus="no-answer", HangupCauseCode="3010")
    (item,) = provider().parse(outbound("agent", params), NOW).items
    assert item.events[0].data == {"reason": "failed"}


def test_the_bridge_request_dials_the_agent_and_its_end_returns_to_hold():
    plivo = provider()
    bridge = outbound("bridge", ANSWER, agent="%2B15557770000", caller="%2B15559000000")
    reply = plivo.parse(bridge, NOW).reply
    assert b"<Number>15557770000</Number>" in reply.body
    missed = outbound("bridge_result", {"DialStatus": "no-answer", "DialALegUUID": "a"})
    assert b"<Play" in plivo.parse(missed, NOW).reply.body
    done = outbound("bridge_result", {"DialStatus": "completed", "DialALegUUID": "a"})
    assert b"<Hangup/>" in plivo.parse(done, NOW).reply.body


async def test_a_recording_is_ready_and_downloads(provider_api, http, tmp_path: Path):
    provider_api.route("GET", r"/rec-1\.wav", 200, b"RIFF....WAVE")
    params = dict(RECORDING, RecordUrl=provider_api.base_url + "/rec-1.wav")
    (item,) = provider().parse(outbound("recording", params), NOW).items
    assert item.events[0].data == {
        "recording_id": "rec-1",
        "duration_s": 42.5,
        "content_type": "audio/wav",
    }
    await provider(provider_api.base_url, http).download_recording(
        item.recording, tmp_path / "r.wav"
    )
    assert (tmp_path / "r.wav").read_bytes() == b"RIFF....WAVE"


# ------------------------------------------------------------------------ REST API


async def test_place_call_rings_the_agent_with_callbacks_naming_the_call(provider_api, http):
    provider_api.route(
        "POST",
        rf"/v1/Account/{AUTH_ID}/Call/",
        201,
        '{"api_id": "x", "message": "call fired", "request_uuid": "9834029e-58b6-11e1"}',
    )
    placed = await provider(provider_api.base_url, http).place_call(
        OutboundCall("r-1", "+15550123456", "+15559000000", "+15557770000")
    )
    assert placed.provider_id == "9834029e-58b6-11e1"
    (request,) = provider_api.requests
    assert request.basic_auth() == (AUTH_ID, TOKEN)
    body = json.loads(request.body)
    assert (body["to"], body["from"]) == ("15557770000", "15559000000")
    answer = dict(parse_qsl(urlsplit(body["answer_url"]).query))
    assert answer == {
        "ref": "r-1",
        "leg": "connect",
        "contact": "+15550123456",
        "caller": "+15559000000",
    }
    assert dict(parse_qsl(urlsplit(body["hangup_url"]).query)) == {"ref": "r-1", "leg": "agent"}


async def test_send_message_bridge_and_hangup(provider_api, http):
    provider_api.route(
        "POST",
        rf"/v1/Account/{AUTH_ID}/Message/",
        202,
        '{"message": "message(s) queued", "message_uuid": ["db3ce55a-7f1d-11e1"]}',
    )
    provider_api.route("POST", rf"/v1/Account/{AUTH_ID}/Call/c-1/", 202, '{"message": "ok"}')
    provider_api.route("DELETE", rf"/v1/Account/{AUTH_ID}/Call/c-1/", 204, "")
    plivo = provider(provider_api.base_url, http)
    placed = await plivo.send_message(
        OutboundMessage("sms", "+15550123456", "+15559000000", "On its way", "m-9")
    )
    assert placed.provider_id == "db3ce55a-7f1d-11e1"
    await plivo.bridge("c-1", "+15557770000", "+15559000000")
    await plivo.hangup("c-1")
    message, transfer, hangup = provider_api.requests
    assert json.loads(message.body)["url"] == HOOK + "?message_id=m-9"
    aleg_url = json.loads(transfer.body)["aleg_url"]
    assert dict(parse_qsl(urlsplit(aleg_url).query))["agent"] == "+15557770000"
    assert hangup.method == "DELETE"


async def test_a_provider_that_is_down(http):
    with pytest.raises(ProviderError) as caught:
        await provider(f"http://127.0.0.1:{free_port()}", http).send_message(
            OutboundMessage("sms", "+15550123456", "+15559000000", "hi", "m-1")
        )
    assert caught.value.safe_to_retry


async def test_a_provider_refusal_names_its_status(provider_api, http):
    provider_api.route("POST", r".*", 401, '{"error": "authentication failed"}')
    with pytest.raises(ProviderError, match="401") as caught:
        await provider(provider_api.base_url, http).place_call(
            OutboundCall("r-1", "+15550123456", "+15559000000", "+15557770000")
        )
    assert caught.value.status == 401 and not caught.value.safe_to_retry
