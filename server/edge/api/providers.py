"""`GET /api/v1/providers` and `PUT /api/v1/providers/{provider}` (admin)."""

from __future__ import annotations

from starlette.requests import Request

from server.edge.http import principal_of, read_object, respond
from server.providers.registry import provider_wire


async def list_providers(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    principal.require("admin")
    tenant = principal.tenant
    configs = await services.provider_configs.configs(tenant)
    wires = [provider_wire(c, services.providers.webhook_url(tenant, c.name)) for c in configs]
    return respond(request, {"providers": wires})


async def put_provider(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    principal.require("admin")
    name = request.path_params["provider"]
    body = await read_object(request, services.settings.max_body_bytes)
    services.providers.require_public_url(name)
    config = await services.provider_configs.put(principal.tenant, name, body)
    webhook_url = services.providers.webhook_url(principal.tenant, name)
    return respond(request, provider_wire(config, webhook_url))
