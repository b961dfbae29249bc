"""Faults the reliability tests inject: a private Redis they stop and start by its pid,
a TCP proxy in front of it that can make its connections half-open (bytes silently
dropped, sockets left open, as after a NAT or firewall forgets a flow), and a private
PostgreSQL cluster they stop and start."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bench.postgres_cluster import PostgresCluster, postgres_bin
from tests.support import free_port, service_unavailable, wait_for


class PrivateRedis:
    """A redis-server of the test's own on a free port (never the shared one)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def answers() -> bool:
            if self.process.returncode is not None:
                raise AssertionError(f"redis-server exited with {self.process.returncode}")
            client = aioredis.Redis.from_url(self.url, socket_connect_timeout=0.5)
            try:
                return await client.ping()
            except (OSError, aioredis.ConnectionError):
                return False
            finally:
                await client.aclose()

        await wait_for(answers, 10)

    async def stop(self) -> None:
        """SIGTERM by pid, and wait until it is gone."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class _Link:
    def __init__(self) -> None:
        self.dead = False  # set: whatever comes in is read and dropped, nothing goes out
        self.writers: list[asyncio.StreamWriter] = []


class Proxy:
    """127.0.0.1:port -> 127.0.0.1:target. `blackhole()` kills the connections open now
    without closing them; `freeze()` does the same to every later one until `thaw()`."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.accepted = 0  # connections accepted so far
        self.frozen = False
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def blackhole(self) -> None:
        for link in self._links:
            link.dead = True

    def freeze(self) -> None:
        self.frozen = True
        self.blackhole()

    def thaw(self) -> None:
        self.frozen = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link()
        link.dead = self.frozen
        self._links.add(link)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        link.writers = [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(link, source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, link: _Link, source, sink) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await source.read(65536):
                if not link.dead:
                    sink.write(data)
                    await sink.drain()
        if not link.dead:  # a real close passes through; a dead link stays open
            for writer in link.writers:
                writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for link in self._links:
            for writer in link.writers:
                writer.close()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[Proxy]:
    proxy = Proxy(port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


# --------------------------------------------------------------------------- PostgreSQL


class PrivatePostgres:
    """bench's PostgresCluster (a cluster of the test's own, never the machine's
    shared one) driven from a test's event loop."""

    def __init__(self, cluster: PostgresCluster):
        self.cluster = cluster

    @property
    def url(self) -> str:
        return self.cluster.url

    async def start(self) -> None:
        await asyncio.to_thread(self.cluster.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self.cluster.stop)


@contextlib.asynccontextmanager
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        service_unavailable("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    cluster = PostgresCluster(bin_dir)
    try:
        await asyncio.to_thread(cluster.create)
        await asyncio.to_thread(cluster.start)
        yield PrivatePostgres(cluster)
    finally:
        await asyncio.to_thread(cluster.remove)
