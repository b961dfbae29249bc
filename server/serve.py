"""`switchboard serve`: uvicorn on uvloop with the settings of performance.md."""

from __future__ import annotations

import uvicorn

from . import logs
from .app import create_app
from .settings import Settings

WS_MAX_FRAME_BYTES = 64 * 1024


def serve(settings: Settings, host: str, port: int, demo: bool) -> int:
    logs.configure()
    app = create_app(settings, demo=demo)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws_max_size=WS_MAX_FRAME_BYTES,
        ws_per_message_deflate=False,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
    return 0
