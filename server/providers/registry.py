"""A tenant's providers: their stored configuration (`ProviderConfigs`: which
channels and numbers each carries, its credentials) and the channel adapters built
from it (`Providers`).

Each channel is carried by one provider: putting a provider with some channels takes
them from whichever provider carried them before. A tenant that never put one runs on
the defaults (the sandbox for call, SMS and WhatsApp; web chat for chat). Credentials
are checked by channels.registry, stored sealed (server/providers/sealing.py), and never
answered or logged (the credential classes hide secrets from repr; the answers say
only whether they are set).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from channels import registry
from channels.base import CredentialsError, Provider
from server.core.clock import Clock
from server.core.errors import Refused, invalid
from server.core.fields import MISSING, NAME, Choice, List, Object, Phone, Value
from server.providers import repository as crepo
from server.providers.sandbox import Sandboxes
from server.providers.sealing import Sealer, Unreadable, is_sealed
from server.storage.db import Database

log = logging.getLogger("switchboard.providers")

# What each provider can carry, by its wire name.
CAPABILITIES: dict[str, frozenset[str]] = {
    "sandbox": frozenset({"call", "sms", "whatsapp"}),
    "twilio": frozenset({"call", "sms", "whatsapp"}),
    "plivo": frozenset({"call", "sms"}),
    "whatsapp_cloud": frozenset({"whatsapp"}),
    "webchat": frozenset({"chat"}),
}
DEFAULTS = (("sandbox", ["call", "sms", "whatsapp"]), ("webchat", ["chat"]))
CHANNELS = ("call", "sms", "whatsapp", "chat")
MAX_NUMBERS = 1000
PROVIDER_BODY = Object(
    channels=List(
        Choice(CHANNELS),
        description="The channels it carries, taken from whichever provider carried them; "
        "required for a provider not configured yet.",
    ),
    numbers=List(
        Object(number=Phone(), team=NAME, required=("number", "team")),
        max_items=MAX_NUMBERS,
        description="Its contact-center numbers: an inbound contact to one is routed to its team.",
    ),
    credentials=Value(
        {"type": ["object", "null"]},
        description="Write-only, per provider (docs/channels.md): twilio {account_sid, "
        "auth_token}, plivo {auth_id, auth_token}, whatsapp_cloud {phone_number_id, "
        "access_token, app_secret, verify_token}, sandbox {secret}. Never answered; kept "
        "when left out.",
    ),
)
# A provider's API: connect quickly or say so; a slow answer is a failure too.
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    channels: tuple[str, ...]
    numbers: tuple[dict, ...] = ()
    credentials: dict | None = field(default=None, repr=False)

    def team_of(self, number: str | None) -> str | None:
        for entry in self.numbers:
            if number is not None and entry["number"] == number:
                return entry["team"]
        return None

    def default_number(self) -> str | None:
        return self.numbers[0]["number"] if self.numbers else None


def _config(row: dict, credentials: dict | None) -> ProviderConfig:
    return ProviderConfig(
        row["provider"], tuple(row["channels"]), tuple(row["numbers"]), credentials
    )


class ProviderConfigs:
    """The tenants' stored provider configurations, read on use, and the one way to
    change them (`put`)."""

    def __init__(self, db: Database, sealer: Sealer, clock: Clock):
        self.db = db
        self.sealer = sealer
        self.clock = clock
        self._unreadable_told: set[tuple[str, str]] = set()

    async def configs(self, tenant: str) -> list[ProviderConfig]:
        async with self.db.read() as conn:
            rows = await crepo.list_providers(conn, tenant)
        if not rows:
            return [ProviderConfig(name, tuple(channels)) for name, channels in DEFAULTS]
        return [_config(row, self.credentials(tenant, row)) for row in rows]

    def credentials(self, tenant: str, row: dict) -> dict | None:
        """A stored provider row's credentials, opened; None (said once in the log)
        when they were sealed under another secret: the provider then works as if
        they were not set, and the admin puts them again."""
        try:
            return self.sealer.open(tenant, row["provider"], row["credentials"])
        except Unreadable as error:
            if (tenant, row["provider"]) not in self._unreadable_told:
                self._unreadable_told.add((tenant, row["provider"]))
                log.error(
                    "provider credentials cannot be opened (%s): put them again",
                    error,
                    extra={"tenant": tenant, "provider": row["provider"]},
                )
            return None

    async def config(self, tenant: str, name: str) -> ProviderConfig | None:
        return next((c for c in await self.configs(tenant) if c.name == name), None)

    async def for_channel(self, tenant: str, channel: str) -> ProviderConfig | None:
        return next((c for c in await self.configs(tenant) if channel in c.channels), None)

    async def team_of_number(self, tenant: str, number: str | None) -> str | None:
        for config in await self.configs(tenant):
            team = config.team_of(number)
            if team is not None:
                return team
        return None

    async def put(self, tenant: str, name: str, body: dict) -> ProviderConfig:
        """Configure provider `name` from a request body (422 naming the field); the
        channels it takes are taken from whichever provider carried them."""
        if name not in CAPABILITIES:
            raise Refused(
                "not_found",
                f"no provider {name[:40]!r} (one of {', '.join(sorted(CAPABILITIES))})",
            )
        values = PROVIDER_BODY.read(body)
        channels = _channels(values.get("channels", MISSING), name)
        numbers = _numbers(values.get("numbers", MISSING))
        async with self.db.write() as conn:
            rows = {row["provider"]: row for row in await crepo.list_providers(conn, tenant)}
            if not rows:  # the first change: the defaults become rows of their own
                for default, default_channels in DEFAULTS:
                    rows[default] = {
                        "tenant_id": tenant,
                        "provider": default,
                        "channels": default_channels,
                        "numbers": [],
                        "credentials": None,
                        "updated_at": self.clock.now(),
                    }
                    await crepo.put_provider(conn, rows[default])
            current = rows.get(name)
            if channels is MISSING:
                if current is None:
                    raise invalid("channels", "is required for a provider not configured yet")
                channels = current["channels"]
            credentials = _credentials(body, name, current)
            if credentials is not None and not is_sealed(credentials):
                credentials = self.sealer.seal(tenant, name, credentials)
            row = {
                "tenant_id": tenant,
                "provider": name,
                "channels": channels,
                "numbers": current["numbers"] if numbers is MISSING and current else numbers,
                "credentials": credentials,
                "updated_at": self.clock.now(),
            }
            if row["numbers"] is MISSING:
                row["numbers"] = []
            for other, other_row in rows.items():
                taken = [c for c in other_row["channels"] if c in channels]
                if other != name and taken:
                    kept = [c for c in other_row["channels"] if c not in channels]
                    await crepo.set_provider_channels(conn, tenant, other, kept)
            await crepo.put_provider(conn, row)
        log.info("provider configured", extra={"tenant": tenant, "provider": name})
        return _config(row, self.credentials(tenant, row))


class Providers:
    """The channel adapters of every tenant, built from its configuration on use, and
    the HTTP client they share."""

    def __init__(
        self,
        configs: ProviderConfigs,
        sandboxes: Sandboxes,
        public_url: str | None,
        api_bases: dict[str, str] | None = None,
    ):
        self.configs = configs
        self.sandboxes = sandboxes
        self.public_url = public_url
        self.http = httpx.AsyncClient(timeout=HTTP_TIMEOUT)
        # provider name -> its API's address; tests point it at a local server.
        self.api_bases: dict[str, str] = dict(api_bases or {})

    async def close(self) -> None:
        await self.http.aclose()

    def webhook_url(self, tenant: str, provider: str) -> str | None:
        """Where `provider` calls back for `tenant`: under SWITCHBOARD_PUBLIC_URL, never
        under a request's Host (anyone can send any Host); None while it is unset."""
        if self.public_url is None:
            return None
        return f"{self.public_url}/webhooks/{provider}/{tenant}"

    def require_public_url(self, provider: str) -> None:
        """A real provider calls back: Refused (422) naming the setting while unset."""
        if provider in registry.API_PROVIDERS and self.public_url is None:
            raise Refused(
                "public_url_required",
                f"{provider} calls this server back: set SWITCHBOARD_PUBLIC_URL to the "
                "address it can reach (e.g. https://switchboard.example.com) and restart",
            )

    def adapter(self, tenant: str, config: ProviderConfig) -> Provider:
        """The adapter for one of the tenant's providers; a real provider's callbacks
        go to its webhook_url (Refused while SWITCHBOARD_PUBLIC_URL is unset)."""
        if config.name == "sandbox":
            return self.sandboxes.provider(tenant, config.credentials)
        self.require_public_url(config.name)
        return registry.build(
            config.name,
            config.credentials or {},
            self.webhook_url(tenant, config.name),
            self.http,
            self.api_bases.get(config.name),
        )


def provider_wire(config: ProviderConfig, webhook_url: str | None) -> dict[str, Any]:
    return {
        "provider": config.name,
        "channels": list(config.channels),
        "numbers": [dict(entry) for entry in config.numbers],
        "credentials_set": bool(config.credentials),
        "webhook_url": webhook_url,
    }


def _channels(channels, name: str):
    """The channels given, each one `name` can carry, once."""
    if channels is MISSING:
        return channels
    allowed = sorted(CAPABILITIES[name])
    for channel in channels:
        if channel not in allowed:
            raise invalid("channels", f"{channel!r}: {name} carries only {', '.join(allowed)}")
    return list(dict.fromkeys(channels))


def _numbers(numbers):
    """The numbers given, each once."""
    if numbers is MISSING:
        return numbers
    seen = set()
    for i, entry in enumerate(numbers):
        if entry["number"] in seen:
            raise invalid(f"numbers[{i}].number", "is listed twice")
        seen.add(entry["number"])
    return numbers


def _credentials(body: dict, name: str, current: dict | None) -> dict | None:
    """The credentials to store: the new ones, checked; else the stored ones."""
    if "credentials" not in body:
        stored = current["credentials"] if current else None
        if stored is None and name in registry.API_PROVIDERS:
            raise invalid("credentials", f"{name} needs credentials")
        return stored
    value = body["credentials"]
    if name == "webchat":
        if value not in (None, {}):
            raise invalid("credentials", "webchat takes no credentials")
        return None
    if value is None and name == "sandbox":
        return None
    try:
        parsed = registry.parse_credentials(name, value)
    except CredentialsError as error:  # names the field, never a value
        raise Refused(
            "invalid_field", f"credentials: {error.message}", field="credentials"
        ) from None
    stored = {k: val for k, val in dataclasses.asdict(parsed).items() if val is not None}
    return stored or None
