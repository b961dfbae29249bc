"""The providers by their wire name (as `PUT /api/v1/providers/{provider}` names them).

`webchat` is not here: web chat is the server's own websocket, not a provider API.
"""

from __future__ import annotations

from typing import Any

import httpx

from channels import plivo, sandbox, twilio, whatsapp_cloud
from channels.base import CredentialsError, Provider

CREDENTIALS = {
    twilio.NAME: twilio.TwilioCredentials,
    plivo.NAME: plivo.PlivoCredentials,
    whatsapp_cloud.NAME: whatsapp_cloud.WhatsAppCredentials,
    sandbox.NAME: sandbox.SandboxCredentials,
}
API_PROVIDERS = {
    twilio.NAME: twilio.TwilioProvider,
    plivo.NAME: plivo.PlivoProvider,
    whatsapp_cloud.NAME: whatsapp_cloud.WhatsAppCloudProvider,
}


def parse_credentials(provider: str, values: Any):
    """Check credentials for `provider` (raise CredentialsError naming the field)."""
    cls = CREDENTIALS.get(provider)
    if cls is None:
        raise CredentialsError(f"unknown provider {provider[:40]!r}")
    return cls.from_dict(values)


def build(
    provider: str,
    credentials: Any,
    webhook_url: str,
    http: httpx.AsyncClient,
    api_base: str | None = None,
) -> Provider:
    """An adapter for one tenant's account at a real provider. `webhook_url` is that
    tenant's `/webhooks/{provider}/{tenant}` under SWITCHBOARD_PUBLIC_URL; `api_base`
    replaces the provider's API address (tests point it at a local server)."""
    cls = API_PROVIDERS.get(provider)
    if cls is None:
        raise CredentialsError(f"{provider[:40]!r} is not a provider with an API")
    parsed = parse_credentials(provider, credentials)
    if api_base is None:
        return cls(parsed, webhook_url, http)
    return cls(parsed, webhook_url, http, api_base=api_base)
