"""A real Switchboard server on 127.0.0.1 and a free port, inside the test's event
loop, for tests that need real sockets (websockets, browsers)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from server.app import Services, create_app
from server.core.clock import SYSTEM_CLOCK, Clock
from server.serve import uvicorn_config
from tests.app_support import SECRET, Api, prepare_database, test_settings
from tests.support import Backend, free_port, wait_for


@dataclass
class LiveServer:
    api: Api  # HTTP over the real socket
    url: str
    services: Services | None  # None for a server in another process
    pid: int | None = None  # the server's process, when it has one of its own

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    @contextlib.asynccontextmanager
    async def ws(
        self,
        role: str = "supervisor",
        user: str = "sup1",
        tenant: str | None = None,
        format: str = "json",
        **kwargs,
    ) -> AsyncIterator[WsClient]:
        headers = {"Authorization": f"Bearer {self.api.token(role, user, tenant)}"}
        async with connect(
            self.ws_url,
            additional_headers=headers,
            subprotocols=[f"switchboard.v1.{format}"],
            **kwargs,
        ) as socket:
            yield WsClient(socket, format)


class WsClient:
    """A protocol client that keeps every frame it receives, so tests can wait on them."""

    def __init__(self, socket: ClientConnection, format: str):
        self.socket = socket
        self.format = format
        self.frames: list[dict] = []
        self._refs = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.socket:
                frame = (
                    json.loads(raw) if isinstance(raw, str) else msgpack.unpackb(raw, timestamp=3)
                )
                self.frames.append(frame)

    async def send(self, frame: dict[str, Any]) -> None:
        if self.format == "msgpack":
            await self.socket.send(msgpack.packb(frame))
        else:
            await self.socket.send(json.dumps(frame))

    async def request(self, frame: dict[str, Any], timeout: float = 10.0) -> dict:
        """Send a frame with a fresh ref and wait for the answer that echoes it."""
        self._refs += 1
        ref = f"r{self._refs}"
        await self.send({**frame, "ref": ref})
        return await self.wait(lambda f: f.get("ref") == ref, timeout)

    async def wait(self, predicate, timeout: float = 10.0) -> dict:
        found: list[dict] = []

        def seen() -> bool:
            found[:] = [f for f in self.frames if predicate(f)]
            return bool(found)

        await wait_for(seen, timeout)
        return found[0]


@contextlib.asynccontextmanager
async def live_server(
    backend: Backend,
    data_dir: Path,
    clock: Clock = SYSTEM_CLOCK,
    prepare: bool = True,
    settings_changes: dict[str, Any] | None = None,
    uvicorn_changes: dict[str, Any] | None = None,
) -> AsyncIterator[LiveServer]:
    """`settings_changes`: Settings fields to override (e.g. allowed_origins; the
    public URL is the server's own address unless given); `uvicorn_changes`:
    uvicorn.Config arguments (e.g. another `ws` protocol)."""
    if prepare:
        await prepare_database(backend.database_url)
    port = free_port()
    own = test_settings(backend, data_dir, f"http://127.0.0.1:{port}")
    settings = dataclasses.replace(own, **(settings_changes or {}))
    app = create_app(settings, clock)
    config = uvicorn_config(app, "127.0.0.1", port, loop="asyncio", **(uvicorn_changes or {}))
    server = uvicorn.Server(config)
    server.config.setup_event_loop = lambda: None
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), 15)
        if task.done():
            task.result()
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url) as client:
            yield LiveServer(Api(client, app.state.services, backend), url, app.state.services)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


def _server_log(data_dir: Path):
    """The spawned server's output, kept in its data directory for a failing test's
    post-mortem."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return open(data_dir / "server.log", "wb")


@contextlib.asynccontextmanager
async def spawned_server(
    backend: Backend,
    data_dir: Path,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> AsyncIterator[LiveServer]:
    """`switchboard serve` in a process of its own, on the backend's database and bus
    (`env`: more environment variables, e.g. a fault hook; `port`: to start one again
    where it was; SWITCHBOARD_PUBLIC_URL is its own address unless `env` says otherwise).
    Stopped by its pid when the block ends, unless it exited by itself."""
    port = port or free_port()
    env = {
        **os.environ,
        **backend.env(),
        "SWITCHBOARD_SECRET": SECRET,
        "SWITCHBOARD_DATA_DIR": str(data_dir),
        "SWITCHBOARD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        **(env or {}),
    }
    log = _server_log(data_dir)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "serve",
        "--no-demo",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env=env,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    log.close()  # the child holds its own copy
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:

            async def ready() -> bool:
                if process.returncode is not None:
                    raise AssertionError(f"server exited with {process.returncode}")
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(ready, 30)
            yield LiveServer(Api(client, None, backend), url, None, process.pid)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
