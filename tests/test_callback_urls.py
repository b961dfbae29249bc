"""Issue 17, finding 6: provider callback URLs come from SWITCHBOARD_PUBLIC_URL only,
never from a request's Host. Without it `webhook_url` is null and a real provider
(Twilio, Plivo, WhatsApp Cloud) cannot be configured (422 naming the setting), while
the sandbox and web chat work; with it, no answer and nothing sent to a provider
carries the Host a request came with."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from channels import twilio
from tests.app_support import running_api
from tests.test_channels_helpers import provider_api
from tests.test_webhooks import (
    OUR_NUMBER,
    PLIVO_CREDENTIALS,
    TWILIO_CREDENTIALS,
    TWILIO_VOICE,
    WHATSAPP_CREDENTIALS,
)

__all__ = ["provider_api"]

EVIL = {"Host": "evil.example"}
PUBLIC = "https://switchboard.example.com"
REAL = {
    "twilio": (["call", "sms"], TWILIO_CREDENTIALS),
    "plivo": (["call", "sms"], PLIVO_CREDENTIALS),
    "whatsapp_cloud": (["whatsapp"], WHATSAPP_CREDENTIALS),
}
AGENT_PHONE = "+14155552680"


def body(provider: str) -> dict:
    channels, credentials = REAL[provider]
    return {
        "channels": channels,
        "numbers": [{"number": OUR_NUMBER, "team": "sales"}],
        "credentials": credentials,
    }


def outgoing(channel: str, contact: str) -> dict:
    if channel == "call":
        return {"channel": channel, "contact": contact}
    return {"channel": channel, "contact": contact, "text": "Hello"}


@pytest.fixture
async def unset(backend, tmp_path):
    async with running_api(backend, tmp_path / "data", public_url=None) as api:
        yield api


@pytest.fixture
async def public(backend, tmp_path):
    async with running_api(backend, tmp_path / "data", public_url=PUBLIC) as api:
        yield api


async def providers(api) -> dict:
    response = await api.client.get("/api/v1/providers", headers={**api.auth("admin"), **EVIL})
    assert response.status_code == 200, response.text
    assert "evil.example" not in response.text
    return {p["provider"]: p for p in response.json()["providers"]}


async def test_without_a_public_url_no_callback_url_and_no_real_provider(unset):
    api = unset
    listed = await providers(api)
    assert {name: p["webhook_url"] for name, p in listed.items()} == {
        "sandbox": None,
        "webchat": None,
    }
    for provider in REAL:
        response = await api.client.put(
            f"/api/v1/providers/{provider}",
            json=body(provider),
            headers={**api.auth("admin"), **EVIL},
        )
        assert response.status_code == 422, (provider, response.text)
        error = response.json()["error"]
        assert error["code"] == "public_url_required", error
        assert "SWITCHBOARD_PUBLIC_URL" in error["message"], error
        assert "evil.example" not in response.text
    assert set(await providers(api)) == {"sandbox", "webchat"}  # nothing stored
    # The sandbox and web chat need no public URL: they work as before.
    sandbox = await api.client.put(
        "/api/v1/providers/sandbox",
        json={"channels": ["call", "sms"], "numbers": [{"number": OUR_NUMBER, "team": "sales"}]},
        headers={**api.auth("admin"), **EVIL},
    )
    assert sandbox.status_code == 200, sandbox.text
    assert sandbox.json()["webhook_url"] is None
    chat = await api.client.put(
        "/api/v1/providers/webchat", json={"channels": ["chat"]}, headers=api.auth("admin")
    )
    assert chat.status_code == 200, chat.text
    started = await api.client.post(
        "/api/v1/conversations/initiate",
        json={"channel": "sms", "contact": "+34911000150", "text": "Hello"},
        headers={**api.auth("agent", "u1"), "Idempotency-Key": "k1", **EVIL},
    )
    assert started.status_code == 202, started.text


async def test_a_provider_stored_before_the_public_url_was_unset_starts_nothing(
    unset, provider_api
):
    """Configured while the server had a public URL (stored through the service, as an
    older server did), then run without it: an initiate is refused before anything is
    recorded, and the provider is never called."""
    api = unset
    await api.services.provider_configs.put("acme", "twilio", body("twilio"))
    api.services.providers.api_bases["twilio"] = provider_api.base_url
    await api.client.put(
        "/api/v1/agents/u1", json={"name": "Ann", "phone": AGENT_PHONE}, headers=api.auth("admin")
    )
    assert (await providers(api))["twilio"]["webhook_url"] is None
    for channel in ("call", "sms"):
        response = await api.client.post(
            "/api/v1/conversations/initiate",
            json=outgoing(channel, "+34911000151"),
            headers={**api.auth("agent", "u1"), "Idempotency-Key": channel, **EVIL},
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "public_url_required", response.text
        assert "SWITCHBOARD_PUBLIC_URL" in response.json()["error"]["message"]
    assert provider_api.requests == []
    rows = await api.client.get("/api/v1/views", headers=api.auth("supervisor"))
    assert rows.status_code == 200


async def test_with_a_public_url_the_host_never_reaches_an_answer_or_a_provider(
    public, provider_api
):
    api = public
    for provider in REAL:
        response = await api.client.put(
            f"/api/v1/providers/{provider}",
            json=body(provider),
            headers={**api.auth("admin"), **EVIL},
        )
        assert response.status_code == 200, response.text
        assert response.json()["webhook_url"] == f"{PUBLIC}/webhooks/{provider}/acme"
    # Twilio last for calls and SMS (each PUT took the channels it names).
    response = await api.client.put(
        "/api/v1/providers/twilio", json=body("twilio"), headers={**api.auth("admin"), **EVIL}
    )
    assert response.status_code == 200, response.text
    listed = await providers(api)
    for name, entry in listed.items():
        assert entry["webhook_url"] == f"{PUBLIC}/webhooks/{name}/acme", entry
    api.services.providers.api_bases["twilio"] = provider_api.base_url
    sid = "CA" + "7" * 32
    account = TWILIO_CREDENTIALS["account_sid"]
    provider_api.route(
        "POST", rf"/2010-04-01/Accounts/{account}/Calls\.json", 201, f'{{"sid": "{sid}"}}'
    )
    provider_api.route(
        "POST",
        rf"/2010-04-01/Accounts/{account}/Messages\.json",
        201,
        '{"sid": "SM' + "8" * 32 + '"}',
    )
    await api.client.put(
        "/api/v1/agents/u1", json={"name": "Ann", "phone": AGENT_PHONE}, headers=api.auth("admin")
    )
    answers = []
    for channel in ("call", "sms"):
        started = await api.client.post(
            "/api/v1/conversations/initiate",
            json=outgoing(channel, "+34911000152"),
            headers={**api.auth("agent", "u1"), "Idempotency-Key": channel, **EVIL},
        )
        assert started.status_code == 202, started.text
        answers.append(started.text)
    # An inbound call's webhook, called at the public URL through a proxy that passes
    # another Host: its markup (TwiML, with callback URLs in it) names the public URL.
    url = f"{PUBLIC}/webhooks/twilio/acme"
    params = list(TWILIO_VOICE.items())
    inbound = await api.client.post(
        "/webhooks/twilio/acme",
        content=urlencode(params).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio.signature(TWILIO_CREDENTIALS["auth_token"], url, params),
            **EVIL,
        },
    )
    assert inbound.status_code == 200, inbound.text
    answers.append(inbound.text)
    sent = b"".join(r.body for r in provider_api.requests)
    assert len(provider_api.requests) == 2, provider_api.requests
    assert PUBLIC.encode() in sent or b"switchboard.example.com" in sent  # callbacks are ours
    assert b"evil.example" not in sent
    assert all("evil.example" not in text for text in answers), answers
