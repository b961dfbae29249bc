"""Switchboard benchmarks (docs: bench/README.md, figures: bench/RESULTS.md).

`python -m bench` runs every benchmark in BENCHMARKS; `python -m bench f3` runs one.
A benchmark is a module with `TITLE`, `add_arguments(parser)` and `run(args) -> int`;
adding F1, F2, F4 ... is one line here and one module.
"""

from __future__ import annotations

# name -> module. Order is the order `python -m bench` runs them in.
BENCHMARKS: dict[str, str] = {
    "f1": "bench.f1_fanout",
    "f2": "bench.f2_views",
    "f3": "bench.f3_ingest",
    "f4": "bench.f4_snapshot",
    "f5": "bench.f5_redis",
    "f6": "bench.f6_recovery",
    "f8": "bench.f8_postgres_restart",
    "r1": "bench.r1_routing",
    "soak": "bench.soak",
}
