"""`switchboard serve`: uvicorn on uvloop with the settings of performance.md."""

from __future__ import annotations

import uvicorn

from server.app import create_app
from server.core import logs, metrics
from server.core.settings import Settings
from server.edge.ws.protocol import SocketProtocol
from server.wire.protocol import MAX_FRAME_BYTES, PING_INTERVAL_S, PING_TIMEOUT_S


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


def uvicorn_config(app, host: str, port: int, loop: str = "uvloop", **changes) -> uvicorn.Config:
    """uvicorn with uvloop and httptools; websockets on the same host
    and port, spoken by our own protocol (server/edge/ws/protocol.py: no per-message
    compression, and the fast path /ws pushes through), a 64 KiB inbound message limit.
    Tests that run a real server build it with this too (`changes`: other
    uvicorn.Config arguments)."""
    settings = {
        "loop": loop,
        "http": "httptools",
        "ws": SocketProtocol,
        "ws_max_size": MAX_FRAME_BYTES,
        "ws_ping_interval": PING_INTERVAL_S,
        "ws_ping_timeout": PING_TIMEOUT_S,
        "log_config": None,
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
        # The client's address is the socket's peer: X-Forwarded-For is read by the
        # server only from SWITCHBOARD_TRUSTED_PROXIES (server/core/limits.py), never
        # by uvicorn's default trust of 127.0.0.1 (FORWARDED_ALLOW_IPS).
        "proxy_headers": False,
    }
    return uvicorn.Config(app, host=host, port=port, **{**settings, **changes})
