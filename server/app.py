"""The Starlette application: services, routes, error handling, request logging."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from zoneinfo import ZoneInfo

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.bus import bus_from_url
from server.core.auth import Principal
from server.core.clock import SYSTEM_CLOCK, Clock
from server.core.metrics import REQUESTS
from server.core.settings import Settings
from server.edge import channel_routes, pages
from server.edge.api import admin as api_admin
from server.edge.api import conversations as api_conversations
from server.edge.api import events as api_events
from server.edge.api import routing as api_routing
from server.edge.http import ApiError, authenticate, error_body, error_response, respond
from server.edge.ws import routes as ws
from server.ingest.pipeline import DatabaseUnavailable
from server.live import views
from server.live.catchup import CatchUp
from server.live.windows import LiveViews
from server.openapi.document import openapi_document
from server.providers import webchat
from server.routing.service import Routing
from server.routing.timers import TimedIngest
from server.storage import repository as repo
from server.storage.db import Database, is_unavailable

log = logging.getLogger("switchboard.http")


class Switchboard:
    """The running services of one process, shared by every endpoint."""

    def __init__(self, settings: Settings, clock: Clock = SYSTEM_CLOCK):
        self.settings = settings
        self.clock = clock
        self.db = Database(settings.database_url)
        self.bus = bus_from_url(settings.bus_url, settings.bus_prefix)
        self.ingest = TimedIngest(self.db, self.bus, clock)  # ingest that arms durable timers
        self.live = LiveViews(self.db, self.bus, clock, self.tenant_zone, settings.push_interval_s)
        self.catchup = CatchUp(self.db, self.live, self.bus)
        self.routing = Routing(
            self.db,
            self.bus,
            self.ingest,
            clock,
            self.tenant_zone,
            settings.presence_grace_s,
            settings.presence_heartbeat_s,
        )
        self._zones: dict[str, ZoneInfo] = {}
        channel_routes.attach(self)  # providers, the sandbox, recordings (issue 8)

    async def start(self) -> None:
        await self.live.start()  # subscribed before the bus connects: no news missed
        await self.catchup.start()
        await self.routing.start()
        await self.bus.start()

    async def stop(self) -> None:
        await self.routing.stop()
        await channel_routes.detach(self)
        await self.ingest.close()
        await self.catchup.stop()
        await self.live.stop()
        await self.bus.close()
        await self.db.close()

    async def principal(self, request: Request) -> Principal:
        """The caller, whose tenant must exist."""
        principal = authenticate(request, self.settings.secret, self.clock)
        await self.tenant_zone(principal.tenant)
        return principal

    async def tenant_zone(self, tenant: str) -> ZoneInfo:
        zone = self._zones.get(tenant)
        if zone is None:
            async with self.db.read() as conn:
                row = await repo.get_tenant(conn, tenant)
            if row is None:
                raise ApiError(403, "forbidden", f"tenant {tenant!r} does not exist")
            zone = self._zones[tenant] = ZoneInfo(row["timezone"])
        return zone

    def forget_tenant(self, tenant: str) -> None:
        self._zones.pop(tenant, None)


async def healthz(request: Request):
    return JSONResponse({"status": "ok"})


async def readyz(request: Request):
    sb: Switchboard = request.app.state.sb
    body = {"database": "ok", "bus": "ok" if sb.bus.connected else "down"}
    try:
        async with asyncio.timeout(2):
            await sb.db.ping()
    except Exception as exc:
        body["database"] = f"down: {type(exc).__name__}"
        return JSONResponse({"status": "unavailable", **body}, 503, {"Retry-After": "5"})
    return JSONResponse({"status": "ok", **body})


async def metrics(request: Request):
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request):
    return JSONResponse(openapi_document())


ROUTES = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/metrics", metrics),
    Route("/openapi.json", openapi),
    Route("/api/v1/events", api_events.post_events, methods=["POST"]),
    Route("/api/v1/conversations/{conversation_id}", api_conversations.get_conversation),
    Route("/api/v1/tenant", api_admin.get_tenant, methods=["GET"]),
    Route("/api/v1/tenant", api_admin.put_tenant, methods=["PUT"]),
    Route("/api/v1/teams", api_admin.list_teams),
    Route("/api/v1/teams/{name}", api_admin.put_team, methods=["PUT"]),
    Route("/api/v1/agents", api_admin.list_agents),
    Route("/api/v1/agents/{agent_id}", api_admin.put_agent, methods=["PUT"]),
    Route("/api/v1/agents/me/presence", api_routing.put_presence, methods=["PUT"]),
    Route("/api/v1/offers/{offer_id}/accept", api_routing.accept_offer, methods=["POST"]),
    Route("/api/v1/offers/{offer_id}/reject", api_routing.reject_offer, methods=["POST"]),
    Route(
        "/api/v1/conversations/{conversation_id}/transfer", api_routing.transfer, methods=["POST"]
    ),
    Route("/api/v1/wallboard", api_routing.get_wallboard),
    Route("/api/v1/views", views.list_views, methods=["GET"]),
    Route("/api/v1/views", views.create_view, methods=["POST"]),
    Route("/api/v1/views/{view_id}", views.get_view, methods=["GET"]),
    Route("/api/v1/views/{view_id}", views.update_view, methods=["PATCH"]),
    Route("/api/v1/views/{view_id}", views.delete_view, methods=["DELETE"]),
    Route("/api/v1/views/{view_id}/rows", views.view_rows, methods=["GET"]),
    *ws.ROUTES,  # /ws and the visitors' chat socket, /webchat/{tenant}
    *channel_routes.ROUTES,
    *webchat.ROUTES,  # /widget.js, /chat-demo
    *pages.ROUTES,  # the pages of static/, /api/v1/me, view-schema, wrap-up (issue 9)
]


async def on_api_error(request: Request, exc: ApiError):
    return error_response(request, exc)


async def on_http_error(request: Request, exc: HTTPException):
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return respond(request, error_body(code, str(exc.detail)), exc.status_code, exc.headers)


async def on_database_down(request: Request, exc: DatabaseUnavailable):
    log.warning("database unavailable", extra={"error": str(exc)})
    return respond(
        request,
        error_body("unavailable", "the database is unavailable; retry"),
        503,
        {"Retry-After": "2"},
    )


async def on_database_error(request: Request, exc: Exception):
    if is_unavailable(exc):
        return await on_database_down(request, DatabaseUnavailable(str(exc)))
    return await on_unexpected(request, exc)


async def on_unexpected(request: Request, exc: Exception):
    log.exception("unhandled error", extra={"path": request.url.path})
    return respond(request, error_body("internal", "internal error"), 500)


class Instrumentation:
    """Times each request for /metrics and writes one structured log line."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_with_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            REQUESTS.labels(scope["method"], path, str(status[0])).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status[0],
                    "ms": round(elapsed * 1000, 2),
                },
            )


def create_app(
    settings: Settings | None = None,
    clock: Clock = SYSTEM_CLOCK,
    demo: bool = False,
    demo_origins: tuple[str, ...] = (),
) -> Starlette:
    """`demo_origins`: where browsers reach this server, allowed to embed the demo
    tenant's chat widget (its /chat-demo page)."""
    settings = settings or Settings.from_env()
    sb = Switchboard(settings, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await sb.start()
        played = None
        if demo:
            from server.demo.traffic import Demo

            played = Demo(sb, demo_origins)
            await played.start()
        try:
            yield
        finally:
            if played is not None:
                await played.stop()
            await sb.stop()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_error,
            DatabaseUnavailable: on_database_down,
            DBAPIError: on_database_error,
            OSError: on_database_error,
            Exception: on_unexpected,
        },
    )
    app.state.sb = sb
    app.add_middleware(Instrumentation)
    return app
