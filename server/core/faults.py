"""Test-only fault hooks, off unless SWITCHBOARD_FAULT names one (never set in
production). `exit_after_commit`: the process exits right after its first commit that
changed conversations, before publishing it, as if killed there (the reliability
test of reconciliation, docs/faults.md)."""

from __future__ import annotations

import os

FAULT = os.environ.get("SWITCHBOARD_FAULT", "")


def after_commit() -> None:
    if FAULT == "exit_after_commit":
        os._exit(75)
