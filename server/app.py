"""The composition root: every service of one process, built once here with what it
needs passed in, and the Starlette application over them. Nothing else constructs a
service, and nothing adds to one after it is built.

Start order matters where news could be missed: the live views subscribe to the bus
before it connects; stop order is the reverse of what depends on what.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware

from server.bus import Bus, bus_from_url
from server.core.clock import SYSTEM_CLOCK, Clock
from server.core.limits import KeyedBuckets
from server.core.settings import Settings
from server.edge.errors import HANDLERS
from server.edge.middleware import Instrumentation
from server.edge.routes import ROUTES
from server.edge.ws.connection import FLOOD_CLOSES
from server.ingest.pipeline import Ingest
from server.live.catchup import CatchUp
from server.live.windows import LiveViews
from server.providers.actions import ConversationActions
from server.providers.inbound import InboundDelivery
from server.providers.initiate import Initiator
from server.providers.recordings import FileRecordingStore
from server.providers.registry import ProviderConfigs, Providers
from server.providers.sandbox import Sandboxes
from server.providers.sealing import Sealer
from server.providers.webchat import WebChat, WebChatLimits
from server.routing.actions import AgentActions
from server.routing.agent_connections import AgentConnections
from server.routing.popups import Popups
from server.routing.presence import AgentBoard, Presence
from server.routing.router import Router
from server.routing.service import Routing
from server.routing.timers import TimerArming, TimerRunner
from server.routing.wallboard import Wallboard
from server.storage.db import Database
from server.tenants.settings import TenantSettings
from server.tenants.tickets import WsTickets
from server.tenants.zones import TenantZones


@dataclass(frozen=True)
class Services:
    """The running services of one process, shared by every endpoint."""

    settings: Settings
    clock: Clock
    db: Database
    bus: Bus
    tenants: TenantZones
    tenant_settings: TenantSettings
    ingest: Ingest
    live: LiveViews
    catchup: CatchUp
    recordings: FileRecordingStore
    provider_configs: ProviderConfigs
    inbound: InboundDelivery
    sandboxes: Sandboxes
    providers: Providers
    initiator: Initiator
    conversation_actions: ConversationActions
    routing: Routing
    webchat: WebChat
    tickets: WsTickets
    ws_user_rows: KeyedBuckets  # rows asked over /ws per (tenant, user), this process
    ws_floods: KeyedBuckets  # /ws closes for flooding per (tenant, user), this process

    async def start(self) -> None:
        await self.live.start()  # subscribed before the bus connects: no news missed
        await self.catchup.start()
        await self.routing.start()
        await self.bus.start()

    async def stop(self) -> None:
        await self.routing.stop()
        await self.webchat.stop()
        await self.sandboxes.stop()
        await self.providers.close()
        await self.ingest.close()
        await self.catchup.stop()
        await self.live.stop()
        await self.bus.close()
        await self.db.close()


def build_services(
    settings: Settings, clock: Clock = SYSTEM_CLOCK, api_bases: dict[str, str] | None = None
) -> Services:
    """`api_bases`: provider name -> the address of its API (a local recorder in tests;
    by default each provider's public API)."""
    db = Database(settings.database_url)
    bus = bus_from_url(settings.bus_url, settings.bus_prefix)
    tenants = TenantZones(db)
    webchat_limits = WebChatLimits.from_settings(settings)
    # Every ingest records, with the rows it commits, the offers and timers they call for.
    arming = TimerArming(db)
    ingest = Ingest(db, bus, clock, alongside=(arming,))
    live = LiveViews(
        db, bus, clock, tenants.zone, settings.push_interval_s, settings.window_memory_bytes
    )
    recordings = FileRecordingStore(Path(settings.data_dir) / "recordings")
    provider_configs = ProviderConfigs(db, Sealer(settings.secret), clock)
    inbound = InboundDelivery(db, ingest, recordings, clock, provider_configs.team_of_number)
    sandboxes = Sandboxes(clock, Path(settings.data_dir), inbound.deliver)
    providers = Providers(provider_configs, sandboxes, settings.public_url, api_bases)
    conversation_actions = ConversationActions(
        db, ingest, provider_configs, providers, tenants.zone, clock
    )
    return Services(
        settings=settings,
        clock=clock,
        db=db,
        bus=bus,
        tenants=tenants,
        tenant_settings=TenantSettings(db, bus, tenants, webchat_limits.defaults),
        ingest=ingest,
        live=live,
        catchup=CatchUp(db, live, bus),
        recordings=recordings,
        provider_configs=provider_configs,
        inbound=inbound,
        sandboxes=sandboxes,
        providers=providers,
        initiator=Initiator(db, ingest, provider_configs, providers, clock),
        conversation_actions=conversation_actions,
        routing=build_routing(
            settings, clock, db, bus, ingest, arming, tenants, conversation_actions
        ),
        webchat=WebChat(db, bus, ingest, inbound, clock, webchat_limits),
        tickets=WsTickets(db, clock),
        ws_user_rows=KeyedBuckets(settings.ws_user_rows_burst, settings.ws_user_rows_rate),
        ws_floods=KeyedBuckets(*FLOOD_CLOSES),
    )


def build_routing(
    settings: Settings,
    clock: Clock,
    db: Database,
    bus: Bus,
    ingest: Ingest,
    arming: TimerArming,
    tenants: TenantZones,
    conversation_actions: ConversationActions,
) -> Routing:
    """Routing's parts: the router and the timers write their decisions through a writer
    of their own, and an accepted call is bridged by the provider glue."""
    decisions = Ingest(db, bus, clock, alongside=(arming,))
    board = AgentBoard(db, clock)
    presence = Presence(db, bus, clock, settings.presence_grace_s)
    popups = Popups(db, tenants.zone)
    connections = AgentConnections(
        db, clock, presence, popups.agents, settings.presence_heartbeat_s
    )
    return Routing(
        bus=bus,
        arming=arming,
        decisions=decisions,
        board=board,
        presence=presence,
        popups=popups,
        router=Router(db, decisions, clock, board, on_offers=popups.prefetch),
        connections=connections,
        wallboard=Wallboard(db, clock, tenants.zone, board),
        timers=TimerRunner(db, decisions, clock, connections.grace_over),
        actions=AgentActions(
            db, ingest, clock, tenants.zone, conversation_actions.bridge_after_accept
        ),
        tenants=tenants,
    )


def create_app(
    settings: Settings | None = None,
    clock: Clock = SYSTEM_CLOCK,
    demo: bool = False,
    demo_origins: tuple[str, ...] = (),
    services: Services | None = None,
) -> Starlette:
    """`demo_origins`: where browsers reach this server, allowed to embed the demo
    tenant's chat widget (its /chat-demo page). `services`: built by the caller (a
    test that reaches into them), else here."""
    if services is None:
        services = build_services(settings or Settings.from_env(), clock)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await services.start()
        played = None
        if demo:
            from server.demo.traffic import Demo

            played = Demo(services, demo_origins)
            await played.start()
        try:
            yield
        finally:
            if played is not None:
                await played.stop()
            await services.stop()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers=HANDLERS,
        middleware=[Middleware(Instrumentation)],
    )
    app.state.services = services
    return app
