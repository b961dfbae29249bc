"""Whatever a signed webhook carries, an adapter answers with a result or a
PayloadError (a 400 naming what is wrong), never another exception (a 500); and
every event it does produce is one ingest accepts."""

from __future__ import annotations

import json
import random
from pathlib import Path
from urllib.parse import urlencode

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.base import PayloadError, WebhookRequest, WebhookResult
from channels.plivo import PlivoCredentials, PlivoProvider
from channels.sandbox import SandboxCredentials, SandboxProvider
from channels.twilio import TwilioCredentials, TwilioProvider
from channels.whatsapp_cloud import WhatsAppCloudProvider, WhatsAppCredentials
from state_machine import parse_event
from tests.support import ManualClock
from tests.test_channels_helpers import NOW

HOOK = "https://switchboard.example.com/webhooks/p/acme"
HTTP = httpx.AsyncClient()  # never sends: these tests only parse
TWILIO = TwilioProvider(TwilioCredentials("AC1", "t"), HOOK, HTTP)
PLIVO = PlivoProvider(PlivoCredentials("MA1", "t"), HOOK, HTTP)
WHATSAPP = WhatsAppCloudProvider(WhatsAppCredentials("1", "a", "s", "v"), HOOK, HTTP)

# The keys the adapters look at, so generated forms reach every branch.
KEYS = [
    "CallSid", "CallStatus", "From", "To", "CallerName", "Timestamp", "DialCallStatus",
    "MessageSid", "MessageStatus", "Body", "RecordingSid", "RecordingUrl",
    "RecordingStatus", "RecordingDuration", "CallUUID", "HangupSource", "HangupCauseCode",
    "DialStatus", "DialAction", "MessageUUID", "Status", "Text", "RecordUrl",
    "RecordingID", "RecordingDurationMs",
]  # fmt: skip
VALUE_WORDS = (
    "ringing in-progress completed busy no-answer failed canceled queued timeout cancel"
    " answer delivered read 4010 Caller +15550100 12.5 nan -1 1e999"
).split()
VALUES = st.one_of(
    st.sampled_from([*VALUE_WORDS, "", "Tue, 24 Nov 2026 10:00:05 +0000"]),
    st.text(max_size=30),
)
QUERIES = st.sampled_from(
    (
        " ref=r1 ref=r1&leg=customer ref=r1&leg=agent ref=r1&leg=bridge"
        " ref=r1&leg=connect&contact=%2B1555&caller=%2B1999 leg=bridge_result&ref=x"
        " ref=r1&leg=recording message_id=m1 leg=weird&ref=r"
    ).split(" ")
)
FORMS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8)


def check(result: WebhookResult) -> None:
    """Every event produced must parse as ingest parses it."""
    for item in result.items:
        for event in ((item.opening,) if item.opening else ()) + item.events:
            parse_event(event.envelope("conv-1"))


def request(query: str, form: dict[str, str]) -> WebhookRequest:
    url = HOOK + ("?" + query if query else "")
    return WebhookRequest("POST", url, {}, urlencode(form).encode())


@settings(max_examples=300, deadline=None)
@given(query=QUERIES, form=FORMS)
def test_twilio_and_plivo_answer_any_form_with_a_result_or_a_payload_error(query, form):
    for provider in (TWILIO, PLIVO):
        try:
            check(provider.parse(request(query, form), NOW))
        except PayloadError as exc:
            assert exc.message


@given(
    duration=st.sampled_from(["nan", "-1", "1e999", "inf", "x", "", "12.5"]),
    provider=st.sampled_from(["twilio", "plivo"]),
)
def test_a_recording_duration_that_is_not_a_length_is_a_payload_error(duration, provider):
    if provider == "twilio":
        form = {"RecordingSid": "RE1", "RecordingUrl": "https://x/r", "CallSid": "CA1"}
        form["RecordingDuration"] = duration
        adapter = TWILIO
    else:
        form = {"RecordUrl": "https://x/r.wav", "RecordingID": "r1", "CallUUID": "u1"}
        form["RecordingDurationMs"] = duration
        adapter = PLIVO
    try:
        result = adapter.parse(request("", form), NOW)
    except PayloadError as exc:
        assert "Duration" in exc.message
        assert duration not in ("12.5", "")
    else:
        check(result)
        assert duration in ("12.5", "")  # empty is as if absent


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                (
                    "object entry changes value field messages statuses from id timestamp"
                    " type text body contacts metadata status recipient_id profile name"
                    " wa_id display_phone_number image"
                ).split()
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(payload=JSON, wrap=st.booleans())
def test_whatsapp_answers_any_json_with_a_result_or_a_payload_error(payload, wrap):
    if wrap:  # reach past the envelope checks
        payload = {"object": "whatsapp_business_account", "entry": [{"changes": [payload]}]}
    body = json.dumps(payload).encode()
    try:
        check(WHATSAPP.parse(WebhookRequest("POST", HOOK, {}, body), NOW))
    except PayloadError as exc:
        assert exc.message


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=JSON | st.binary(max_size=40))
def test_the_sandbox_webhook_answers_anything_with_a_result_or_a_payload_error(
    payload, tmp_path: Path
):
    sandbox = SandboxProvider(
        lambda item: None, ManualClock(NOW), random.Random(0), tmp_path, SandboxCredentials()
    )
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        check(sandbox.parse(WebhookRequest("POST", HOOK, {}, body), NOW))
    except PayloadError as exc:
        assert exc.message
