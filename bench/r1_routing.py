"""R1, routing: decisions per second and offer latency (the commit of the event that
made an offer possible -> the popup at the agent's websocket) with 500 agents and
5,000 queued conversations, one server process on PostgreSQL.

Per run, a fresh database and server (`routing: builtin`), one team, N agents logged
in but `away`, Q conversations posted and queued by the router. Each agent holds a
websocket. Then:

* **burst**: every agent turns `available` at once (HTTP, concurrently). The router
  offers N conversations. Decisions/s = N / (first presence request sent -> last popup
  received); latency per agent = its popup's arrival - its presence answer.
* **steady**: each agent accepts its popup (websocket), talks for a random 5-15 s
  (the first call: the time left of a call in progress, so that the hang-ups are a
  steady stream from the start, see time_left_of_a_call), then the conversation is
  hung up and wrapped up (one POST of two events); the router offers the agent the
  next queued conversation. Measured after a warm-up of the shortest talk time, in
  which the agents' first accepts are answered. Latency = popup arrival -
  the wrap-up POST's answer (the commit that freed the agent). Decisions/s = offers
  received / duration.

Wallboard: one `subscribe_wallboard` client; for each wrap-up commit, the time until
the next `wallboard` frame arrives (frames are pushed at most 100 ms after a change).

Baseline in the same run: the round trip of that wrap-up POST itself (an ingest
commit under the same load), so the latency is also given as a ratio to it.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import random
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from websockets.asyncio.client import connect

from bench import common as c

TITLE = "routing: decisions/s and popup latency, 500 agents and 5,000 queued"
TENANT = "bench"
TEAM = "desk"


def add_arguments(group) -> None:
    group.add_argument("--r1-agents", type=int, default=500)
    group.add_argument("--r1-queued", type=int, default=5000)
    group.add_argument("--r1-steady", type=float, default=30.0, help="seconds of steady phase")
    group.add_argument(
        "--r1-talk",
        default="5,15",
        help="min,max seconds an agent talks before hanging up (sets the steady rate: "
        "agents / mean talk time; 500 agents, 5-15 s: about 50 offers/s)",
    )


def token(role: str, user: str) -> str:
    now = int(time.time())
    claims = {"tenant": TENANT, "sub": user, "role": role, "iat": now, "exp": now + 3600}
    return jwt.encode(claims, c.SECRET, algorithm="HS256")


def now_iso() -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        + f".{int(time.time() * 1000) % 1000:03d}Z"
    )


class Agent:
    """One agent: its websocket, and one keep-alive HTTP connection of the bench's
    light client (httpx costs the generator more CPU than the server's work)."""

    def __init__(self, agent_id: str):
        self.id = agent_id
        self.http: c.HttpConnection | None = None
        self.port = 0
        self.popups: asyncio.Queue = asyncio.Queue(100)
        self.socket = None
        self.reader: asyncio.Task | None = None
        self.refs = 0
        self.answers: dict[str, asyncio.Future] = {}

    async def open(self, url: str, port: int) -> None:
        self.port = port
        self.http = await c.HttpConnection.open(port)
        self.socket = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token('agent', self.id)}"},
            subprotocols=["switchboard.v1.json"],
            max_size=2**22,
            ping_interval=None,
        )
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.socket:
            arrived = time.perf_counter()
            frame = json.loads(raw)
            if frame.get("type") == "popup":
                self.popups.put_nowait((arrived, frame))
            elif frame.get("ref") in self.answers:
                self.answers.pop(frame["ref"]).set_result(frame)

    async def request(self, frame: dict) -> dict:
        self.refs += 1
        ref = f"{self.id}-{self.refs}"
        future = asyncio.get_running_loop().create_future()
        self.answers[ref] = future
        await self.socket.send(json.dumps({**frame, "ref": ref}))
        return await asyncio.wait_for(future, 30)

    async def send(self, method: str, path: str, body: dict, role: str) -> None:
        data = c.http_request(
            method,
            path,
            self.port,
            json.dumps(body).encode(),
            {
                "Authorization": f"Bearer {token(role, self.id)}",
                "Content-Type": "application/json",
            },
        )
        try:
            status, answer = await self.http.request(data)
        except ConnectionError:  # closed by the server as idle (keep-alive timeout)
            self.http.close()
            self.http = await c.HttpConnection.open(self.port)
            status, answer = await self.http.request(data)  # safe: idempotent requests
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {answer[:200]!r}")

    async def close(self) -> None:
        if self.reader:
            self.reader.cancel()
        if self.socket:
            await self.socket.close()
        if self.http:
            self.http.close()


async def call(client: httpx.AsyncClient, method: str, url: str, **kwargs) -> httpx.Response:
    """A request, retried on a connection the server closed as idle meanwhile."""
    for attempt in range(3):
        try:
            response = await client.request(method, url, **kwargs)
            response.raise_for_status()
            return response
        except (httpx.ReadError, httpx.RemoteProtocolError):
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class WallboardWatcher:
    """A wallboard client: when each `wallboard` frame arrived."""

    def __init__(self):
        self.arrivals: list[float] = []
        self.socket = None
        self.reader: asyncio.Task | None = None

    async def open(self, url: str) -> None:
        self.socket = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token('wallboard', 'wall')}"},
            subprotocols=["switchboard.v1.json"],
            max_size=2**22,
            ping_interval=None,
        )
        await self.socket.send(json.dumps({"type": "subscribe_wallboard", "ref": "w"}))
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.socket:
            if json.loads(raw).get("type") == "wallboard":
                self.arrivals.append(time.perf_counter())

    def lag_ms(self, moments: list[float]) -> list[float]:
        """For each moment, how long until the next wallboard frame arrived."""
        lags = []
        for moment in moments:
            at = bisect.bisect_right(self.arrivals, moment)
            if at < len(self.arrivals):
                lags.append((self.arrivals[at] - moment) * 1000)
        return lags

    async def close(self) -> None:
        if self.reader:
            self.reader.cancel()
        if self.socket:
            await self.socket.close()


async def post_events(client: httpx.AsyncClient, events: list[dict]) -> None:
    """Safe to retry: the events' ids are fixed, a repeat is a duplicate."""
    await call(
        client,
        "POST",
        "/api/v1/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {token('service', 'svc')}"},
    )


async def waiting(client: httpx.AsyncClient) -> int:
    response = await client.get(
        "/api/v1/wallboard", headers={"Authorization": f"Bearer {token('supervisor', 's')}"}
    )
    response.raise_for_status()
    return response.json()["metrics"]["total"]["waiting"]


async def all_queued(client: httpx.AsyncClient, count: int, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        if await waiting(client) >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} conversations queued after {limit_s} s")
        await asyncio.sleep(0.2)


async def one_run(
    server: c.ServerProcess, args, meter: c.CpuMeter, database: str
) -> dict[str, Any]:
    n, q = args.r1_agents, args.r1_queued
    admin = {"Authorization": f"Bearer {token('admin', 'admin')}"}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client:
        (
            await client.put(
                f"/api/v1/teams/{TEAM}",
                json={"queue_capacity": 100_000, "offer_timeout_s": 600, "queue_timeout_s": 86400},
                headers=admin,
            )
        ).raise_for_status()
        agents = [Agent(f"ag{i:04d}") for i in range(n)]

        async def put_agent(agent: Agent) -> None:
            await call(
                client,
                "PUT",
                f"/api/v1/agents/{agent.id}",
                json={"name": agent.id, "teams": [TEAM]},
                headers=admin,
            )

        async def presence(agent: Agent, value: str) -> float:
            await call(
                client,
                "PUT",
                "/api/v1/agents/me/presence",
                json={"presence": value},
                headers={"Authorization": f"Bearer {token('agent', agent.id)}"},
            )
            return time.perf_counter()

        await asyncio.gather(*(put_agent(a) for a in agents))
        await asyncio.gather(*(presence(a, "away") for a in agents))
        ws_url = server.base_url.replace("http://", "ws://") + "/ws"
        for start in range(0, n, 50):
            await asyncio.gather(*(a.open(ws_url, server.port) for a in agents[start : start + 50]))
        watcher = WallboardWatcher()
        await watcher.open(ws_url)
        run_id = secrets.token_hex(3)
        created = time.perf_counter()
        for start in range(0, q, 100):
            events = [
                {
                    "event_id": f"{run_id}-new-{i}",
                    "type": "conversation.created",
                    "conversation_id": f"{run_id}-c{i}",
                    "occurred_at": now_iso(),
                    "data": {
                        "channel": "call",
                        "contact": f"+3460{i:07d}",
                        "customer": {"name": f"Customer {i}"},
                        "team": TEAM,
                    },
                }
                for i in range(start, min(q, start + 100))
            ]
            await post_events(client, events)
        await all_queued(client, q, 300)
        queued_s = time.perf_counter() - created
        # What autovacuum would have done by now on a database that is up (this
        # PostgreSQL runs without it; F3 does the same): without statistics the plans
        # cached while the tables were empty scan them.
        await c.analyze(database)
        # --- burst
        meter.start()
        burst_start = time.perf_counter()

        async def available(agent: Agent) -> float:
            await agent.send(
                "PUT", "/api/v1/agents/me/presence", {"presence": "available"}, "agent"
            )
            return time.perf_counter()

        answered_at = dict(
            zip(
                [a.id for a in agents],
                await asyncio.gather(*(available(a) for a in agents)),
                strict=True,
            )
        )
        burst = []
        for agent in agents:
            arrived, frame = await asyncio.wait_for(agent.popups.get(), 120)
            burst.append((arrived, agent, frame))
        burst_end = max(arrived for arrived, _, _ in burst)
        burst_cpu = meter.stop()
        burst_latency = [(arrived - answered_at[a.id]) * 1000 for arrived, a, _ in burst]
        # --- steady
        latencies: list[float] = []
        commits: list[float] = []
        freed_at: list[float] = []
        offers = 0
        rng = random.Random(1)
        talk_min, talk_max = (float(x) for x in args.r1_talk.split(","))
        # Measured after a warm-up of the shortest talk time, in which the agents'
        # first accepts (all sent at once as the burst ends) are answered.
        steady_start = time.perf_counter() + talk_min
        stop_at = steady_start + args.r1_steady

        async def work(agent: Agent, arrived: float, frame: dict) -> None:
            nonlocal offers
            talk = time_left_of_a_call(rng, talk_min, talk_max)
            while time.perf_counter() < stop_at:
                answer = await agent.request({"type": "accept", "offer_id": frame["offer_id"]})
                if answer["type"] != "ok":
                    raise RuntimeError(f"accept failed: {answer}")
                await asyncio.sleep(talk)  # the call itself
                talk = rng.uniform(talk_min, talk_max)
                cid = frame["conversation"]["id"]
                sent = time.perf_counter()
                await agent.send(
                    "POST",
                    "/api/v1/events",
                    {
                        "events": [
                            {
                                "event_id": f"{cid}-hangup",
                                "type": "media.hangup",
                                "conversation_id": cid,
                                "occurred_at": now_iso(),
                                "data": {"source": "agent"},
                            },
                            {
                                "event_id": f"{cid}-wrapup",
                                "type": "wrapup.submitted",
                                "conversation_id": cid,
                                "occurred_at": now_iso(),
                                "data": {"disposition": "ok"},
                            },
                        ]
                    },
                    "service",
                )
                freed = time.perf_counter()
                measured = sent >= steady_start
                if measured:
                    commits.append((freed - sent) * 1000)
                    freed_at.append(freed)
                try:
                    arrived, frame = await asyncio.wait_for(agent.popups.get(), 30)
                except TimeoutError:
                    return
                if measured:
                    offers += 1
                    latencies.append((arrived - freed) * 1000)

        stalls = c.GeneratorStalls()

        async def start_measuring() -> None:
            await asyncio.sleep(steady_start - time.perf_counter())
            meter.start()
            stalls.start()

        await asyncio.gather(start_measuring(), *(work(a, arrived, f) for arrived, a, f in burst))
        steady_s = time.perf_counter() - steady_start
        steady_cpu = meter.stop()
        generator = stalls.stop()
        for agent in agents:
            await agent.close()
        await watcher.close()
    wallboard_lag = watcher.lag_ms(sorted(freed_at))
    return {
        "talk": args.r1_talk,
        "agents": n,
        "queued": q,
        "queue_fill_s": queued_s,
        "burst_decisions_per_s": n / (burst_end - burst_start),
        "burst_p50_ms": c.percentile(burst_latency, 50),
        "burst_p99_ms": c.percentile(burst_latency, 99),
        "burst_server_cpu_s": burst_cpu["server_cpu_s"],
        "burst_others_cores": burst_cpu["others_cores"],
        "steady_offers": offers,
        "steady_decisions_per_s": offers / steady_s,
        "steady_p50_ms": c.percentile(latencies, 50),
        "steady_p99_ms": c.percentile(latencies, 99),
        "commit_p50_ms": c.percentile(commits, 50),
        "commit_p99_ms": c.percentile(commits, 99),
        "steady_server_cpu_per_offer_ms": steady_cpu["server_cpu_s"] * 1000 / max(1, offers),
        "steady_postgres_cpu_per_offer_ms": steady_cpu["postgres_cpu_s"] * 1000 / max(1, offers),
        "steady_others_cores": steady_cpu["others_cores"],
        "steady_client_cores": steady_cpu["client_cpu_s"] / steady_cpu["wall_s"],
        "burst_client_cores": burst_cpu["client_cpu_s"] / burst_cpu["wall_s"],
        "wallboard_lag_p50_ms": c.percentile(wallboard_lag, 50),
        "wallboard_lag_p99_ms": c.percentile(wallboard_lag, 99),
        **{f"generator_{name}": value for name, value in generator.items()},
    }


def time_left_of_a_call(rng: random.Random, low: float, high: float) -> float:
    """How long a call that is already going on at a random moment has left to run.
    Every agent's first call starts at the same instant (the burst); had they all
    lasted a full talk time, the first hang-ups would spread over one talk time and
    the second ones pile up on them, a wave of twice the rate about one talk time in
    (measured: 75 wrap-ups/s for a second against 50). Starting each agent part way
    through a call, at the point a random observer would find it (the call's length
    drawn in proportion to itself, then a uniform share of it left), makes the hang-ups
    a steady stream from the first second."""
    length = math.sqrt(low * low + rng.random() * (high * high - low * low))
    return rng.random() * length


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.r1_agents, args.r1_queued, args.r1_steady, args.r1_talk = 50, 500, 5.0, "0.5,2"
    recorder = c.Recorder("r1")
    info = c.machine_info()
    recorder.line(type="meta", bench="r1", argv=sys.argv[1:], **info)
    runs = []
    for number in range(args.runs):
        database = c.run_async(c.create_database(c.ADMIN_URL, "sb_bench_r1"))
        data_dir = Path(c.OUT_DIR) / f"r1-data-{secrets.token_hex(3)}"
        try:
            env = c.server_env(c.with_database(c.ADMIN_URL, database), data_dir)
            c.run_cli(["migrate"], env)
            c.run_cli(["tenant", "add", TENANT, "--timezone", "Europe/Madrid"], env)
            with c.ServerProcess(env, recorder.path(f"-run{number}-server.log")) as server:
                meter = c.CpuMeter(server.pid, database=database)
                result = c.run_async(one_run(server, args, meter, database))
        finally:
            c.run_async(c.drop_database(c.ADMIN_URL, database))
        recorder.line(type="run", run=number, **result)
        print(f"  run {number}: {json.dumps(result, default=str)}", file=sys.stderr)
        runs.append(result)
    text = report(info, runs)
    recorder.write_markdown(text)
    print(text)
    print(f"raw: {recorder.jsonl}\ntable: {recorder.markdown}", file=sys.stderr)
    return 0


def report(info: dict, runs: list[dict]) -> str:
    def col(name, digits=1):
        return c.spread([r[name] for r in runs], digits)

    ratio = [r["steady_p99_ms"] / r["commit_p99_ms"] for r in runs if r["commit_p99_ms"]]
    rows = [
        ["burst: decisions/s", col("burst_decisions_per_s", 0)],
        ["burst: offer latency p50 / p99 ms", f"{col('burst_p50_ms')} / {col('burst_p99_ms')}"],
        ["steady: decisions/s", col("steady_decisions_per_s", 0)],
        ["steady: offer latency p50 / p99 ms", f"{col('steady_p50_ms')} / {col('steady_p99_ms')}"],
        ["baseline: wrap-up POST p50 / p99 ms", f"{col('commit_p50_ms')} / {col('commit_p99_ms')}"],
        ["steady p99 ÷ baseline p99", c.spread(ratio, 2)],
        [
            "wallboard: commit -> next frame p50 / p99 ms",
            f"{col('wallboard_lag_p50_ms')} / {col('wallboard_lag_p99_ms')}",
        ],
        ["steady: server CPU ms per offer", col("steady_server_cpu_per_offer_ms", 2)],
        ["steady: PostgreSQL CPU ms per offer", col("steady_postgres_cpu_per_offer_ms", 2)],
        [
            "others' load (cores), burst / steady",
            f"{col('burst_others_cores', 2)} / {col('steady_others_cores', 2)}",
        ],
        [
            "load generator: its loop's lag p99 / max ms, GC pauses > 20 ms (steady)",
            f"{col('generator_loop_lag_p99_ms')} / {col('generator_loop_lag_max_ms')}, "
            f"{col('generator_gc_pauses_over_20ms', 0)}",
        ],
        [
            "load generator (cores), burst / steady",
            f"{col('burst_client_cores', 2)} / {col('steady_client_cores', 2)}",
        ],
        ["queue fill: s to queue all", col("queue_fill_s")],
    ]
    head = (
        f"R1 routing, {runs[0]['agents']} agents, {runs[0]['queued']} queued, talk "
        f"{runs[0]['talk']} s, "
        f"{len(runs)} runs, median (min-max). {c.describe_machine(info)}\n\n"
    )
    return head + c.markdown_table(["figure", "value"], rows) + "\n"
