"""`switchboard serve`: uvicorn on uvloop, with the settings measured in
docs/websocket-server.md."""

from __future__ import annotations

import uvicorn

from server.app import create_app
from server.core import logs, metrics
from server.core.settings import Settings
from server.wire.protocol import MAX_FRAME_BYTES as WS_MAX_FRAME_BYTES


def serve(settings: Settings, host: str, port: int, demo: bool) -> int:
    logs.configure()
    metrics.watch_gc()
    origins: tuple[str, ...] = ()
    if demo:
        from server.demo.traffic import origins_for

        origins = origins_for(host, port, settings.public_url)
    app = create_app(settings, demo=demo, demo_origins=origins)
    print(
        f"Switchboard on http://{host}:{port}  (database: {settings.database_url.split('://')[0]},"
        f" bus: {settings.bus_url.split('://')[0]})",
        flush=True,
    )
    if demo:
        from server.demo.traffic import links

        for line in links(settings, f"http://{host}:{port}"):
            print("  " + line, flush=True)
    print("  a token for any tenant: switchboard token --tenant T --role R --user U", flush=True)
    metrics.settle_gc()
    uvicorn.Server(uvicorn_config(app, host, port)).run()
    return 0


def uvicorn_config(app, host: str, port: int, loop: str = "uvloop") -> uvicorn.Config:
    """uvicorn with uvloop and httptools, the websockets sans-I/O implementation, no
    per-message compression, and the protocol's inbound frame limit (64 KiB)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=WS_MAX_FRAME_BYTES,
        ws_per_message_deflate=False,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
