"""`python -m bench [NAME ...] [options]`: run the named benchmarks, or all of them."""

from __future__ import annotations

import argparse
import importlib
import sys

from bench import BENCHMARKS


def main(argv: list[str] | None = None) -> int:
    modules = {name: importlib.import_module(path) for name, path in BENCHMARKS.items()}
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run Switchboard's benchmarks (see bench/README.md). "
        "Results go to bench/out/ as a markdown table and raw JSON lines.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--runs", type=int, default=3, help="measured runs per mode (>= 3)")
    parser.add_argument(
        "--quick", action="store_true", help="short runs, to check that everything works"
    )
    for name, module in modules.items():
        group = parser.add_argument_group(f"{name}: {module.TITLE}")
        module.add_arguments(group)
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: one of {', '.join(BENCHMARKS)}")
    status = 0
    for name in args.names or list(BENCHMARKS):
        print(f"== {name}: {modules[name].TITLE}", file=sys.stderr)
        status = max(status, modules[name].run(args))
    return status


if __name__ == "__main__":
    sys.exit(main())
