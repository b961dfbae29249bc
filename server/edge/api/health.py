"""What operators and tools read: liveness, readiness, Prometheus metrics and the
OpenAPI document. No token."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.openapi.document import openapi_document

READY_TIMEOUT_S = 2.0


async def healthz(request: Request):
    return JSONResponse({"status": "ok"})


async def readyz(request: Request):
    """503 while the database does not answer; the bus is reported, not judged (ingest
    goes on without it)."""
    services = request.app.state.services
    body = {"database": "ok", "bus": "ok" if services.bus.connected else "down"}
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await services.db.ping()
    except Exception as exc:
        body["database"] = f"down: {type(exc).__name__}"
        return JSONResponse({"status": "unavailable", **body}, 503, {"Retry-After": "5"})
    return JSONResponse({"status": "ok", **body})


async def metrics(request: Request):
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request):
    return JSONResponse(openapi_document())
