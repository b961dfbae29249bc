"""PUT/GET /api/v1/providers: channels, numbers, write-only credentials (api.md)."""

from __future__ import annotations

import logging

TWILIO = {"account_sid": "AC" + "0" * 32, "auth_token": "twilio-secret-token-xyz"}


async def test_a_new_tenant_runs_on_the_sandbox_and_web_chat(api):
    response = await api.client.get("/api/v1/providers", headers=api.auth("admin"))
    assert response.status_code == 200, response.text
    providers = {p["provider"]: p for p in response.json()["providers"]}
    assert providers["sandbox"]["channels"] == ["call", "sms", "whatsapp"]
    assert providers["webchat"]["channels"] == ["chat"]
    assert providers["sandbox"]["webhook_url"].endswith("/webhooks/sandbox/acme")


async def test_credentials_are_checked_stored_and_never_shown_or_logged(api, caplog):
    caplog.set_level(logging.INFO)  # the server's level (a driver's DEBUG log echoes SQL)
    body = {
        "channels": ["call", "sms"],
        "numbers": [{"number": "+14155552671", "team": "sales"}],
        "credentials": TWILIO,
    }
    response = await api.client.put(
        "/api/v1/providers/twilio", json=body, headers=api.auth("admin")
    )
    assert response.status_code == 200, response.text
    assert response.json()["credentials_set"] is True
    assert TWILIO["auth_token"] not in response.text
    listed = await api.client.get("/api/v1/providers", headers=api.auth("admin"))
    assert TWILIO["auth_token"] not in listed.text
    providers = {p["provider"]: p for p in listed.json()["providers"]}
    # The channels twilio took are no longer the sandbox's.
    assert providers["sandbox"]["channels"] == ["whatsapp"]
    assert providers["twilio"]["numbers"] == [{"number": "+14155552671", "team": "sales"}]
    assert TWILIO["auth_token"] not in caplog.text
    # Changing the numbers alone keeps the stored credentials.
    response = await api.client.put(
        "/api/v1/providers/twilio",
        json={"numbers": [{"number": "+14155552672", "team": "support"}]},
        headers=api.auth("admin"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["credentials_set"] is True
    assert response.json()["channels"] == ["call", "sms"]


async def test_bad_provider_bodies_name_the_field_and_change_nothing(api):
    admin = api.auth("admin")
    cases = [
        ({"channels": ["call"], "credentials": {"account_sid": "AC1"}}, "credentials"),
        ({"channels": ["call"], "credentials": "secret"}, "credentials"),
        ({"channels": ["chat"], "credentials": TWILIO}, "channels"),
        ({"channels": ["call"], "credentials": TWILIO, "numbers": [{"number": "555"}]}, "numbers"),
        (
            {
                "channels": ["call"],
                "credentials": TWILIO,
                "numbers": [{"number": "+14155552671", "team": "s"}] * 2,
            },
            "numbers[1].number",
        ),
        ({"credentials": TWILIO}, "channels"),
        ({"channels": ["call"], "colour": "red", "credentials": TWILIO}, "colour"),
    ]
    for body, field in cases:
        response = await api.client.put("/api/v1/providers/twilio", json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["error"]
        assert error["field"].startswith(field.split("[")[0]), (body, error)
        assert "twilio-secret" not in response.text
    unknown = await api.client.put("/api/v1/providers/acme-tel", json={}, headers=admin)
    assert unknown.status_code == 404
    listed = await api.client.get("/api/v1/providers", headers=admin)
    assert [p["provider"] for p in listed.json()["providers"]] == ["sandbox", "webchat"]


async def test_only_an_admin_configures_providers(api):
    for role in ("supervisor", "agent", "service"):
        response = await api.client.put(
            "/api/v1/providers/sandbox", json={"channels": ["call"]}, headers=api.auth(role)
        )
        assert response.status_code == 403, role
        listed = await api.client.get("/api/v1/providers", headers=api.auth(role))
        assert listed.status_code == 403, role
