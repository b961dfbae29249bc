"""What every benchmark needs: the machine and versions, a fresh PostgreSQL database,
the server as a subprocess (started, polled until ready, stopped by its pid), CPU
accounting from /proc, a lean HTTP/1.1 keep-alive client, statistics and the report.

Nothing here imports `server`: the server under test always runs as its own process,
exactly as deployed (`switchboard serve`), so what is measured is what ships.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
KEY_PACKAGES = (
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "msgpack",
    "pyjwt",
)


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_state(),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
    }


def git_state() -> str:
    """The commit measured, and whether the server's code had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_DIR, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "server", "state_machine", "channels")
    changed = len(dirty.splitlines()) if dirty else 0
    return f"{commit}" + (
        f" + {changed} uncommitted file(s) in the server's code" if changed else ""
    )


def describe_machine(info: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    lines = [
        f"* date: {info['date']}",
        f"* machine: {info['nproc']} cores ({info['cpu_model']}), "
        f"{info['memory_gib']} GiB RAM, Linux {info['kernel']}",
        f"* python {info['python']}; {packages}",
        f"* code: {info.get('git', 'unknown')}",
    ]
    if info.get("postgres"):
        lines.append(f"* {info['postgres']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CPU


def proc_cpu_seconds(pid: int, reaped: bool = False) -> float:
    """utime + stime of one process (all its threads), in seconds; with `reaped`, that
    of its children that exited and were waited for instead (cutime + cstime)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        raw = handle.read()
    fields = raw[raw.rindex(b")") + 2 :].split()
    first = 13 if reaped else 11
    return (int(fields[first]) + int(fields[first + 1])) / CLOCK_TICKS


PG_SHARED = (b"checkpointer", b"background writer", b"walwriter", b"autovacuum launcher")


def postgres_cpu_snapshot(database: str | None = None) -> dict[int, tuple[str, float]]:
    """CPU seconds of PostgreSQL's processes, read from /proc, by pid: ("backend", s)
    for the backends connected to `database` (their title names it), ("autovacuum", s)
    for autovacuum workers on it, ("shared", s) for the WAL writer, checkpointer and
    background writer, which work for every database. Backends of other databases
    (other people's tests on a shared machine) are left out. With database None every
    `postgres` process counts as a backend. Under the key 0, ("reaped", s): the CPU of
    the postmaster's children that have exited (postgres_cpu_delta)."""
    snapshot = {}
    needle = database.encode() if database else None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm", "rb") as handle:
                if handle.read().strip() != b"postgres":
                    continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                title = handle.read()
            if not title.startswith(b"postgres:"):  # the postmaster keeps its command line
                snapshot[0] = ("reaped", proc_cpu_seconds(int(entry.name), reaped=True))
                continue
            kind = "backend"
            if needle is not None:
                if any(name in title for name in PG_SHARED):
                    kind = "shared"
                elif needle not in title:
                    continue
                elif b"autovacuum worker" in title:
                    kind = "autovacuum"
            snapshot[int(entry.name)] = (kind, proc_cpu_seconds(int(entry.name)))
        except (OSError, ValueError):
            continue
    return snapshot


def postgres_cpu_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], kind: str
) -> float:
    """CPU used between two snapshots by one kind of process alive at the second."""
    return sum(
        cpu - before.get(pid, (kind, 0.0))[1] for pid, (what, cpu) in after.items() if what == kind
    )


def postgres_exited_cpu(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> float:
    """CPU used between two snapshots by PostgreSQL processes that exited in between (a
    pool's overflow connections, parallel workers): no longer in /proc, their time went
    to the postmaster's total of reaped children, whose growth less what those
    processes had used before the first snapshot is theirs. It cannot tell databases
    apart: on a shared machine it includes others' backends that exited."""
    if 0 not in before or 0 not in after:
        return 0.0
    gone = sum(cpu for pid, (_, cpu) in before.items() if pid and pid not in after)
    return max(0.0, after[0][1] - before[0][1] - gone)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return total - idle, total


def wait_quiet(threshold: float = 0.25, max_wait: float = 5.0, sample: float = 0.5) -> float:
    """Wait (at most max_wait seconds) until the machine is less than `threshold` busy
    over `sample` seconds: other people's work on a shared machine skews a run.
    Returns the last busy share seen."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_cpu()
        time.sleep(sample)
        after = machine_cpu()
        busy = (after[0] - before[0]) / max(1, after[1] - before[1])
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def self_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class CpuMeter:
    """CPU of the server, PostgreSQL, this process (the load generator) and the whole
    machine over one measured interval."""

    server_pid: int | None
    postgres: bool = True
    database: str | None = None
    started: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        self.started = self._sample()

    def stop(self) -> dict[str, float]:
        end = self._sample()
        start = self.started
        busy = end["machine"][0] - start["machine"][0]
        total = end["machine"][1] - start["machine"][1]
        wall = end["wall"] - start["wall"]
        exited = postgres_exited_cpu(start["pg"], end["pg"])
        result = {
            "wall_s": wall,
            "server_cpu_s": (end["server"] - start["server"]) if self.server_pid else 0.0,
            # Backends alive at the end, and the PostgreSQL processes that exited meanwhile
            # (counted in, and also given apart).
            "postgres_cpu_s": postgres_cpu_delta(start["pg"], end["pg"], "backend") + exited,
            "postgres_exited_cpu_s": exited,
            "postgres_autovacuum_cpu_s": postgres_cpu_delta(start["pg"], end["pg"], "autovacuum"),
            "postgres_shared_cpu_s": postgres_cpu_delta(start["pg"], end["pg"], "shared"),
            "client_cpu_s": end["client"] - start["client"],
            # Share of all cores busy (1.0 = every core at 100 %).
            "machine_busy": busy / total if total else 0.0,
        }
        ours = (
            result["server_cpu_s"]
            + result["postgres_cpu_s"]
            + result["postgres_autovacuum_cpu_s"]
            + result["postgres_shared_cpu_s"]
            + result["client_cpu_s"]
        )
        # Cores used by everything else on the machine (other people's work).
        result["others_cores"] = max(0.0, CORES * result["machine_busy"] - ours / wall)
        return result

    def _sample(self) -> dict[str, Any]:
        return {
            "wall": time.perf_counter(),
            "server": proc_cpu_seconds(self.server_pid) if self.server_pid else 0.0,
            "pg": postgres_cpu_snapshot(self.database) if self.postgres else {},
            "client": self_cpu_seconds(),
            "machine": machine_cpu(),
        }


# --------------------------------------------------------------------------- PostgreSQL


def asyncpg_dsn(url: str, database: str | None = None) -> str:
    """postgresql+asyncpg://user@host:port/db as a DSN asyncpg takes."""
    scheme, rest = url.split("://", 1)
    del scheme
    if database is not None:
        rest = rest.rsplit("/", 1)[0] + "/" + database
    return "postgresql://" + rest


def with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


async def create_database(admin_url: str, prefix: str) -> str:
    import asyncpg

    name = f"{prefix}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(asyncpg_dsn(admin_url), timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def analyze(name: str, admin_url: str = ADMIN_URL) -> None:
    """ANALYZE a bench database, as autovacuum would (this PostgreSQL runs without it)."""
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(admin_url, name), timeout=5)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(admin_url), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def postgres_version(admin_url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(admin_url), timeout=5)
    try:
        version = await conn.fetchval("SELECT version()")
        settings = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('shared_buffers', 'synchronous_commit', 'fsync', 'max_connections', 'autovacuum')"
        )
    finally:
        await conn.close()
    extra = ", ".join(f"{row['name']}={row['setting']}" for row in settings)
    return f"{version.split(' on ')[0]} ({extra})"


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def switchboard_command() -> list[str]:
    """The console script next to this interpreter (the project's venv), else on PATH."""
    script = Path(sys.executable).parent / "switchboard"
    if script.exists():
        return [str(script)]
    found = shutil.which("switchboard")
    if found:
        return [found]
    return [sys.executable, "-m", "server"]


def put_json(base_url: str, path: str, body: dict, token: str) -> None:
    """An admin PUT of set-up (teams, agents, the tenant) that must succeed."""
    request = urllib.request.Request(
        base_url + path,
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        if answer.status != 200:
            raise RuntimeError(f"PUT {path}: HTTP {answer.status}")


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> str:
    """Run `switchboard ARGS`; returns stdout, raises with stderr on failure."""
    done = subprocess.run(
        [*switchboard_command(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO_DIR,
    )
    if done.returncode != 0:
        raise RuntimeError(f"switchboard {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


class ServerProcess:
    """`switchboard serve --no-demo` on a free loopback port. Use as a context manager:
    the process is stopped by its own pid (SIGTERM, then SIGKILL) on the way out."""

    def __init__(self, env: dict[str, str], log_path: Path, ready_timeout: float = 30):
        self.env = env
        self.port = free_port()
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # handed to the child, closed in stop()
        self._log = log
        command = [
            *switchboard_command(),
            "serve",
            "--no-demo",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_DIR
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        self.stop()
        if exc_type is None:
            self.trim_log()

    def trim_log(self, keep: int = 300) -> None:
        """One JSON line per request adds up to megabytes: after a clean run keep every
        line but the requests' (warnings, garbage collector pauses) and the tail (a
        failed run keeps the whole log)."""
        try:
            lines = self.log_path.read_bytes().splitlines(keepends=True)
        except OSError:
            return
        if len(lines) > keep:
            head = [line for line in lines[:-keep] if b'"message": "request"' not in line]
            dropped = len(lines) - keep - len(head)
            note = f"[bench: {dropped} earlier request lines dropped after a clean run]\n"
            self.log_path.write_bytes(b"".join(head) + note.encode() + b"".join(lines[-keep:]))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return
                    last = f"HTTP {answer.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (OSError, TimeoutError) as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(
            f"the server was not ready within {self.ready_timeout} s ({last}):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- HTTP client


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request in flight at a time. Requests are
    pre-encoded bytes and responses are split by Content-Length: a few microseconds of
    Python per request, so the generator stays far below the server's cost (measured
    against a stub server by `generator_ceiling`)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, "127.0.0.1", port)
        return protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            waiter.set_exception(ConnectionError("response without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop > 0 else None])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter.set_result((status, body))

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        if self.transport.is_closing():
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def http_request(
    method: str, path: str, port: int, body: bytes = b"", headers: dict | None = None
) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    for name, value in (headers or {}).items():
        head.append(f"{name}: {value}")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GeneratorStalls:
    """How late the load generator's own event loop ran, and its garbage collector's
    pauses, over one measured interval. The generator timestamps what it receives on
    this loop, so a stall here is added to every latency it measures: these figures
    say how much of a measured tail is the generator's own."""

    TICK_S = 0.005

    def __init__(self):
        self.lags_ms: list[float] = []
        self.gc_pauses_ms: list[float] = []
        self._gc_started = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._tick())

    def stop(self) -> dict[str, float]:
        gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
        return {
            "loop_lag_p99_ms": percentile(self.lags_ms, 99) if self.lags_ms else 0.0,
            "loop_lag_max_ms": max(self.lags_ms, default=0.0),
            "gc_pauses_over_20ms": sum(1 for pause in self.gc_pauses_ms if pause > 20),
            "gc_pause_max_ms": max(self.gc_pauses_ms, default=0.0),
        }

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.TICK_S)
            self.lags_ms.append(max(0.0, (time.perf_counter() - before - self.TICK_S) * 1000))

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses_ms.append((time.perf_counter() - self._gc_started) * 1000)


def run_async(coro):
    """asyncio.run on uvloop when it is installed (the generator's loop)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# --------------------------------------------------------------------------- stub server


STUB_BODY = b'{"results":[{"event_id":"x","outcome":"applied","conversation_id":"c","version":1}]}'


class _StubProtocol(asyncio.Protocol):
    """Answers every request with a fixed 200 at once: the generator's ceiling."""

    response = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(STUB_BODY)).encode()
        + b"\r\n\r\n"
        + STUB_BODY
    )

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop > 0 else None])
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            self.transport.write(self.response)


async def _stub_main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_StubProtocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


class StubServer:
    """The stub as a subprocess (so it has a core of its own, like the real server)."""

    def __enter__(self) -> StubServer:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.common", "stub", str(self.port)], cwd=REPO_DIR
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("the stub server did not start")

    def __exit__(self, *exc_info) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


# --------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an unsorted list."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def spread(values: list[float], digits: int = 0, scale: float = 1.0) -> str:
    """'median (min-max)' of the runs."""
    values = [v * scale for v in values if v == v]
    if not values:
        return "n/a"
    fmt = f"{{:,.{digits}f}}"
    median = fmt.format(statistics.median(values))
    if len(values) == 1:
        return median
    return f"{median} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- output


class Recorder:
    """bench/out/<name>-<stamp>.jsonl (raw lines) and .md (the tables)."""

    def __init__(self, name: str, out_dir: Path = OUT_DIR):
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        self.stem = out_dir / f"{name}-{stamp}"
        self.jsonl = self.stem.with_suffix(".jsonl")
        self.markdown = self.stem.with_suffix(".md")

    def line(self, **record: Any) -> None:
        with open(self.jsonl, "a") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def write_markdown(self, text: str) -> None:
        self.markdown.write_text(text)

    def path(self, suffix: str) -> Path:
        return Path(f"{self.stem}{suffix}")


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"  {label}: {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "stub":
        run_async(_stub_main(int(sys.argv[2])))
    else:
        sys.exit("usage: python -m bench.common stub PORT")


SECRET = "bench-secret-not-for-production-0123456789abcdef"


def server_env(database_url: str, data_dir: Path) -> dict[str, str]:
    """The environment of a `switchboard` process under test: our settings only."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SWITCHBOARD_", "REDIS_URL", "DATABASE_URL"))
    }
    env.update(
        DATABASE_URL=database_url,
        SWITCHBOARD_DATA_DIR=str(data_dir),
        SWITCHBOARD_SECRET=SECRET,
        REDIS_URL="memory://",
    )
    return env


async def started_in_process(url: str, name: str, tenant: str, routing: str):
    """The app of a Switchboard in this process on the PostgreSQL database at `url`
    (migrated here), with the in-process bus and one tenant; started (app.state.services),
    so the caller stops it."""
    from server.app import create_app
    from server.core.settings import Settings
    from server.storage.migrate import migrate
    from server.tenants.setup import create_tenant

    await asyncio.to_thread(migrate, url)
    settings = Settings(
        data_dir=OUT_DIR / name,
        database_url=url,
        bus_url="memory://",
        bus_prefix="",
        secret=SECRET,
    )
    app = create_app(settings)
    async with app.state.services.db.write() as conn:
        await create_tenant(conn, tenant, "Europe/Madrid", routing=routing)
    await app.state.services.start()
    return app
