"""`GET/POST /webhooks/{provider}/{tenant}`: provider callbacks (docs/api.md), no token.

Challenge (a GET handshake), verify the signature (401 missing, 403 bad), parse (400
for a payload the adapter cannot read), deliver every item through server/providers/inbound.py
to ingest, and answer the provider's own markup. A replay carries the same event ids,
so it is a `duplicate`; that and a `stale` still answer 2xx, or the provider retries.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from channels.base import PayloadError, ProviderError, SignatureError, WebhookRequest
from server.core.errors import Refused
from server.edge.http import read_bytes
from server.providers.registry import CAPABILITIES
from server.storage import repository as repo

log = logging.getLogger("switchboard.webhooks")

WEBHOOK_PROVIDERS = frozenset(CAPABILITIES) - {"webchat"}  # web chat is our own websocket


async def webhook(request: Request):
    services = request.app.state.services
    provider = request.path_params["provider"]
    tenant = request.path_params["tenant"]
    if provider not in WEBHOOK_PROVIDERS:
        raise Refused("not_found", f"no provider {provider[:40]!r}")
    if "\x00" in tenant or len(tenant) > 64:
        raise Refused("not_found", "no such tenant")
    async with services.db.read() as conn:
        known = await repo.get_tenant(conn, tenant) is not None
    if not known:
        raise Refused("not_found", "no such tenant")
    config = await services.provider_configs.config(tenant, provider)
    if config is None:
        raise Refused("not_found", f"{provider} is not configured for this tenant")
    body = await read_bytes(request, services.settings.max_body_bytes)
    signed = WebhookRequest(
        request.method, _called_url(request, services), dict(request.headers), body
    )
    adapter = services.providers.adapter(tenant, config)
    try:
        handshake = adapter.challenge(signed)
        if handshake is not None:
            return Response(handshake.body, handshake.status, media_type=handshake.content_type)
        adapter.verify(signed)
    except SignatureError as error:
        log.info("webhook signature refused", extra={"tenant": tenant, "provider": provider})
        raise Refused(error.code, error.message) from None
    try:
        result = adapter.parse(signed, services.clock.now())
    except PayloadError as error:
        raise Refused(error.code, error.message) from None
    for item in result.items:
        try:
            await services.inbound.deliver(tenant, provider, adapter, item)
        except ProviderError as error:  # the recording could not be fetched: retry later
            log.warning(
                "recording download failed",
                extra={"tenant": tenant, "provider": provider, "error": error.message},
            )
            raise Refused("provider_error", error.message) from None
    reply = result.reply
    return Response(reply.body, reply.status, media_type=reply.content_type)


def _called_url(request: Request, services) -> str:
    """The URL the provider called, as it signed it: behind a proxy the Host header
    is not the public address, so SWITCHBOARD_PUBLIC_URL is used when set."""
    public = services.settings.public_url
    if not public:
        return str(request.url)
    query = request.url.query
    return public + request.url.path + (f"?{query}" if query else "")
