"""F3 detail: the ingest's own cost per event, in process, without HTTP.

`.venv/bin/python -m bench.f3_inprocess [--seconds 8] [--senders 32] [--batch 100]`

One Switchboard in this process on a fresh PostgreSQL database (in-process bus,
`routing: external`, as F3), fed by F3's own event streams through
`Ingest.submit`: single events from 32 concurrent submitters, then batches of 100
from 8. It reports this process's CPU per event and events per second. Without the
HTTP server, the load generator and their scheduling, the CPU figure moves little
with others' load on the machine, so it tells one change to the ingest from the
next where F3's end-to-end figures drown in a shared machine's noise.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
import zlib

from bench import common as c
from bench.f3_ingest import EventSource

TENANT = "bench"
MAX_RATE = 40_000  # events per second a phase could take at most (made in advance)


async def _phase(services, mode: str, senders: int, batch: int, seconds: float, tag: str) -> dict:
    # The events are made before the clock starts: this process's CPU is the ingest's.
    per_sender = int(MAX_RATE * seconds / senders) + 1
    requests = []
    for index in range(senders):
        # F3's shapes: a single sender keeps 4 conversations open, a batch sender 50
        # (two events of each per batch of 100)
        open_conversations = 4 if mode == "single" else batch // 2
        seed = zlib.crc32(f"{tag}-{index}".encode())
        source = EventSource(f"{tag}-{index}", seed, open_conversations)
        if mode == "single":
            requests.append([[source.next_event()] for _ in range(per_sender)])
        else:
            requests.append([source.next_batch(batch, 2) for _ in range(per_sender // batch + 1)])
    gc.freeze()  # the events made are no garbage collection's work: not the ingest's
    stop = time.perf_counter() + seconds
    events = 0

    async def sender(mine: list[list[dict]]) -> None:
        nonlocal events
        for envelopes in mine:
            if time.perf_counter() >= stop:
                return
            outcomes = await services.ingest.submit(TENANT, envelopes)
            if any(outcome.outcome == "rejected" for outcome in outcomes):
                raise RuntimeError(f"rejected: {outcomes[0]}")
            events += len(envelopes)
        raise RuntimeError("the sender ran out of events: raise MAX_RATE")

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(sender(mine) for mine in requests))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    del requests
    gc.unfreeze()
    return {
        "mode": mode,
        "events": events,
        "events_per_s": events / wall,
        "cpu_ms_per_event": 1000 * cpu / events,
        "process_cores": cpu / wall,
    }


async def measure(url: str, seconds: float, senders: int, batch: int, rounds: int) -> list:
    app = await c.started_in_process(url, "f3p", TENANT, "external")
    services = app.state.services
    results = []
    try:
        await _phase(services, "single", senders, batch, 2.0, "warm-s")
        await _phase(services, "batch", max(1, senders // 4), batch, 2.0, "warm-b")
        async with services.db.write() as conn:  # as F3 does: the statistics autovacuum keeps
            await conn.exec_driver_sql("ANALYZE")
        for round_ in range(rounds):
            results.append(await _phase(services, "single", senders, batch, seconds, f"s{round_}"))
            results.append(
                await _phase(services, "batch", max(1, senders // 4), batch, seconds, f"b{round_}")
            )
    finally:
        await services.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    admin_url = c.ADMIN_URL

    async def run() -> list:
        name = await c.create_database(admin_url, "f3p")
        try:
            return await measure(
                c.with_database(admin_url, name),
                args.seconds,
                args.senders,
                args.batch,
                args.rounds,
            )
        finally:
            await c.drop_database(admin_url, name)

    results = c.run_async(run())
    for mode in ("single", "batch"):
        runs = [r for r in results if r["mode"] == mode]
        cpu = statistics.median(r["cpu_ms_per_event"] for r in runs)
        rate = statistics.median(r["events_per_s"] for r in runs)
        cores = statistics.median(r["process_cores"] for r in runs)
        each = ", ".join(f"{r['cpu_ms_per_event']:.3f}" for r in runs)
        print(
            f"{mode:6}: {rate:8,.0f} events/s  {cpu:.3f} CPU ms/event  {cores:.2f} cores  "
            f"(runs: {each})"
        )
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
