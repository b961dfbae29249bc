"""The WhatsApp Cloud API adapter: the verification challenge, X-Hub-Signature-256,
message and status webhooks, and sending a text through a local fake Graph API."""

from __future__ import annotations

import copy
import json

import httpx
import pytest

from channels.base import (
    OutboundMessage,
    PayloadError,
    ProviderError,
    SignatureError,
    WebhookRequest,
)
from channels.whatsapp_cloud import (
    API_VERSION,
    WhatsAppCloudProvider,
    WhatsAppCredentials,
    signature,
)
from state_machine import parse_event
from tests.test_channels_helpers import NOW, WEBHOOK, http, provider_api, run_events

__all__ = ["http", "provider_api"]

HOOK = WEBHOOK.format(provider="whatsapp_cloud")
CREDENTIALS = WhatsAppCredentials(
    phone_number_id="106540352242922",
    access_token="EAAG-access-token",
    app_secret="app-secret-1",
    verify_token="verify-me-please",
)

# A text message webhook:
# https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/payload-examples#text-messages
MESSAGE_WEBHOOK = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "102290129340398",
            "changes": [
                {
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {
                            "display_phone_number": "15559000000",
                            "phone_number_id": "106540352242922",
                        },
                        "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": "16315551181"}],
                        "messages": [
                            {
                                "from": "16315551181",
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
# A status webhook (delivered):
# https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/payload-examples#message-status-updates
STATUS_WEBHOOK = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "102290129340398",
            "changes": [
                {
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {
                            "display_phone_number": "15559000000",
                            "phone_number_id": "106540352242922",
                        },
                        "statuses": [
                            {
                                "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA",
                                "status": "delivered",
                                "timestamp": "1795514405",
                                "recipient_id": "16315551181",
                                "biz_opaque_callback_data": "msg-42",
                                "pricing": {
                                    "billable": True,
                                    "pricing_model": "CBP",
                                    "category": "service",
                                },
                            }
                        ],
                    },
                    "field": "messages",
                }
            ],
        }
    ],
}


def provider(api_base: str = "https://graph.facebook.com", http_client=None):
    return WhatsAppCloudProvider(CREDENTIALS, HOOK, http_client or httpx.AsyncClient(), api_base)


def signed(payload: dict, secret: str = "app-secret-1") -> WebhookRequest:
    body = json.dumps(payload).encode()
    return WebhookRequest(
        "POST",
        HOOK,
        {"Content-Type": "application/json", "X-Hub-Signature-256": signature(secret, body)},
        body,
    )


def get(query: str) -> WebhookRequest:
    return WebhookRequest("GET", f"{HOOK}?{query}", {}, b"")


# ------------------------------------------------------------------------ challenge


def test_the_verify_challenge_echoes_hub_challenge_for_our_token():
    # https://developers.facebook.com/docs/graph-api/webhooks/getting-started#verification-requests
    reply = provider().challenge(
        get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=verify-me-please")
    )
    assert (reply.status, reply.body) == (200, b"1158201444")


def test_the_verify_challenge_with_another_token_is_refused():
    with pytest.raises(SignatureError) as caught:
        provider().challenge(
            get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess")
        )
    assert caught.value.status == 403
    with pytest.raises(SignatureError) as caught:
        provider().challenge(get("hub.mode=subscribe&hub.challenge=1158201444"))
    assert caught.value.status == 401


def test_a_get_without_hub_mode_and_a_post_are_no_challenge():
    assert provider().challenge(get("foo=bar")) is None
    assert provider().challenge(signed(MESSAGE_WEBHOOK)) is None


# ------------------------------------------------------------------------ signatures


def test_signatures_good_missing_bad_and_over_the_raw_body():
    whatsapp = provider()
    whatsapp.verify(signed(MESSAGE_WEBHOOK))
    request = signed(MESSAGE_WEBHOOK)
    with pytest.raises(SignatureError) as caught:
        whatsapp.verify(WebhookRequest("POST", HOOK, {}, request.body))
    assert caught.value.code == "missing_signature"
    with pytest.raises(SignatureError) as caught:
        whatsapp.verify(signed(MESSAGE_WEBHOOK, secret="other-secret"))
    assert caught.value.code == "bad_signature"
    # The same JSON with other spacing is another body: the signature covers the bytes.
    respaced = json.dumps(MESSAGE_WEBHOOK, indent=1).encode()
    with pytest.raises(SignatureError):
        whatsapp.verify(WebhookRequest("POST", HOOK, dict(request.headers), respaced))


def test_a_replayed_webhook_yields_the_same_event_ids():
    request = signed(MESSAGE_WEBHOOK)
    first = provider().parse(request, NOW).items[0]
    again = provider().parse(request, NOW.replace(hour=12)).items[0]
    assert first.opening.event_id == again.opening.event_id
    assert first.events[0].event_id == again.events[0].event_id


# ------------------------------------------------------------------------ webhooks


def test_a_message_opens_a_conversation_with_the_customers_name():
    (item,) = provider().parse(signed(MESSAGE_WEBHOOK), NOW).items
    assert (item.reference.kind, item.reference.channel) == ("message", "whatsapp")
    assert item.reference.contact == "+16315551181"
    assert item.reference.contacto_number == "+15559000000"
    opening = item.opening.envelope("conv-1")
    assert opening["data"]["customer"] == {"name": "Kerry Fisher", "phone": "+16315551181"}
    assert opening["occurred_at"] == "2026-11-24T10:00:00.000Z"  # the message's timestamp
    assert parse_event(opening).type == "conversation.created"
    conversation, outcomes = run_events([item.opening, *item.events])
    assert outcomes == ["applied", "applied"]
    assert (conversation.channel, conversation.status) == ("whatsapp", "new")
    assert item.events[0].data["text"] == "Does it come in another color? 🎨"


def test_several_messages_in_one_webhook_are_several_items():
    payload = copy.deepcopy(MESSAGE_WEBHOOK)
    value = payload["entry"][0]["changes"][0]["value"]
    image = {
        "from": "447700900123",
        "id": "wamid.second",
        "timestamp": "1795514401",
        "type": "image",
        "image": {"caption": "the receipt", "mime_type": "image/jpeg", "id": "m1"},
    }
    value["messages"].append(image)
    first, second = provider().parse(signed(payload), NOW).items
    assert first.reference.contact == "+16315551181"
    assert second.reference.contact == "+447700900123"
    assert second.events[0].data["text"] == "[image] the receipt"
    assert second.opening.data["customer"]["name"] == "+447700900123"  # no profile sent


def test_a_status_names_the_servers_message_id():
    (item,) = provider().parse(signed(STATUS_WEBHOOK), NOW).items
    (event,) = item.events
    assert event.type == "media.message_status"
    assert event.data == {"message_id": "msg-42", "status": "delivered"}
    assert item.reference.contact == "+16315551181"


def test_a_payload_that_is_not_whatsapps_is_a_payload_error():
    with pytest.raises(PayloadError):
        provider().parse(signed({"object": "page", "entry": []}), NOW)
    with pytest.raises(PayloadError):
        provider().parse(WebhookRequest("POST", HOOK, {}, b"not json"), NOW)
    broken = copy.deepcopy(MESSAGE_WEBHOOK)
    broken["entry"][0]["changes"][0]["value"]["messages"] = [{"type": "text"}]
    with pytest.raises(PayloadError, match="id or from"):
        provider().parse(signed(broken), NOW)


# ------------------------------------------------------------------------ sending


async def test_send_message_posts_a_text_to_the_graph_api(provider_api, http):
    provider_api.route(
        "POST",
        rf"/{API_VERSION}/106540352242922/messages",
        200,
        json.dumps(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": "16315551181", "wa_id": "16315551181"}],
                "messages": [{"id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3"}],
            }
        ),
    )
    placed = await provider(provider_api.base_url, http).send_message(
        OutboundMessage("whatsapp", "+16315551181", "+15559000000", "Yes, in blue.", "msg-42")
    )
    assert placed.provider_id == "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3"
    (request,) = provider_api.requests
    assert request.headers["authorization"] == "Bearer EAAG-access-token"
    assert json.loads(request.body) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16315551181",
        "type": "text",
        "text": {"preview_url": False, "body": "Yes, in blue."},
        "biz_opaque_callback_data": "msg-42",
    }


async def test_a_graph_api_error_is_a_provider_error(provider_api, http):
    error = {"error": {"message": "(#131030) Recipient not in allowed list", "code": 131030}}
    provider_api.route("POST", r".*", 400, json.dumps(error))
    with pytest.raises(ProviderError, match="131030") as caught:
        await provider(provider_api.base_url, http).send_message(
            OutboundMessage("whatsapp", "+16315551181", "+15559000000", "hi", "m")
        )
    assert caught.value.status == 400


async def test_calls_are_refused_clearly():
    with pytest.raises(ProviderError, match="no calls"):
        await provider().hangup("x")


@pytest.mark.parametrize("stamp", ["253402300799", "946684799", "99999999999999999999", "-5"])
def test_a_timestamp_out_of_bounds_is_replaced_by_the_time_of_receipt(stamp):
    """A signed webhook's `timestamp` of 9999-12-31, 1999, or past what datetime holds."""
    payload = copy.deepcopy(MESSAGE_WEBHOOK)
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = stamp
    status = copy.deepcopy(STATUS_WEBHOOK)
    status["entry"][0]["changes"][0]["value"]["statuses"][0]["timestamp"] = stamp
    (item,) = provider().parse(signed(payload), NOW).items
    (status_item,) = provider().parse(signed(status), NOW).items
    for event in (item.opening, *item.events, *status_item.events):
        assert event.occurred_at == NOW, event.type
        parse_event(event.envelope("conv-1"), NOW)  # ingest accepts it
