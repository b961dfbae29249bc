"""PUT/GET /api/v1/providers: channels, numbers, write-only credentials (docs/api.md)."""

from __future__ import annotations

import json
import logging

from sqlalchemy import select, update

from server.providers.sealing import Sealer, is_sealed, seal_stored_credentials
from server.storage import models as m

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


async def stored_credentials(api, tenant: str, provider: str):
    """The providers row's credentials column as the database holds it."""
    table = m.providers
    async with api.services.db.read() as conn:
        return (
            await conn.execute(
                select(table.c.credentials).where(
                    table.c.tenant_id == tenant, table.c.provider == provider
                )
            )
        ).scalar_one()


async def store_credentials(api, tenant: str, provider: str, value) -> None:
    table = m.providers
    async with api.services.db.write() as conn:
        await conn.execute(
            update(table)
            .where(table.c.tenant_id == tenant, table.c.provider == provider)
            .values(credentials=value)
        )


async def put_twilio(api, tenant: str = "acme", credentials: dict = TWILIO):
    response = await api.client.put(
        "/api/v1/providers/twilio",
        json={"channels": ["sms"], "credentials": credentials},
        headers=api.auth("admin", tenant=tenant),
    )
    assert response.status_code == 200, response.text
    return response.json()


async def credentials_set(api, tenant: str = "acme") -> bool:
    listed = await api.client.get("/api/v1/providers", headers=api.auth("admin", tenant=tenant))
    assert listed.status_code == 200, listed.text
    return {p["provider"]: p for p in listed.json()["providers"]}["twilio"]["credentials_set"]


async def opened_credentials(api, tenant: str = "acme") -> dict | None:
    """The twilio credentials the server opens for its adapter."""
    config = await api.services.provider_configs.config(tenant, "twilio")
    return config.credentials


async def test_credentials_are_stored_sealed_and_open_only_in_their_own_row(api, caplog):
    """A copy of the database does not give the provider's keys away, and a sealed
    value moved into another tenant's row does not open there."""
    await put_twilio(api)
    stored = await stored_credentials(api, "acme", "twilio")
    assert set(stored) == {"sealed"} and stored["sealed"].startswith("v1.")
    assert TWILIO["auth_token"] not in json.dumps(stored)
    assert TWILIO["account_sid"] not in json.dumps(stored)
    assert TWILIO.items() <= (await opened_credentials(api)).items()

    other = {"account_sid": "AC" + "1" * 32, "auth_token": "globex-token"}
    await put_twilio(api, "globex", other)
    await store_credentials(api, "globex", "twilio", stored)
    caplog.set_level(logging.INFO)
    assert await credentials_set(api, "globex") is False
    assert await credentials_set(api, "globex") is False
    told = [r for r in caplog.records if "cannot be opened" in r.getMessage()]
    assert len(told) == 1 and told[0].tenant == "globex"  # said once, naming the tenant
    assert await credentials_set(api, "acme") is True


async def test_credentials_sealed_under_another_secret_read_as_unset_until_put_again(api):
    sealed_elsewhere = Sealer("another deployment's secret").seal("acme", "twilio", TWILIO)
    await put_twilio(api)
    await store_credentials(api, "acme", "twilio", sealed_elsewhere)
    assert await credentials_set(api) is False
    assert await opened_credentials(api) is None
    assert (await put_twilio(api))["credentials_set"] is True
    assert await credentials_set(api) is True


async def test_migrate_seals_credentials_stored_before_sealing(api):
    """Rows written before sealing are used as they are, and `switchboard migrate`
    seals them (seal_stored_credentials) once."""
    await put_twilio(api)
    await store_credentials(api, "acme", "twilio", TWILIO)  # as an older server stored them
    assert await credentials_set(api) is True
    url, secret = api.services.settings.database_url, api.services.settings.secret
    assert await seal_stored_credentials(url, secret) == 1
    stored = await stored_credentials(api, "acme", "twilio")
    assert is_sealed(stored) and TWILIO["auth_token"] not in json.dumps(stored)
    assert await opened_credentials(api) == TWILIO
    assert await seal_stored_credentials(url, secret) == 0
    assert await stored_credentials(api, "acme", "twilio") == stored
