"""docs/domain.md is written from the machine by state_machine/reference.py: the
committed file must be what it writes now, so that it never drifts from the table."""

from __future__ import annotations

import difflib

from state_machine import Status, reference
from state_machine.table import TABLE


def test_docs_domain_md_is_what_the_machine_writes():
    written = reference.DOCUMENT.read_text()
    wanted = reference.render()
    diff = "".join(
        list(difflib.unified_diff(written.splitlines(True), wanted.splitlines(True)))[:60]
    )
    assert written == wanted, (
        f"docs/domain.md is out of date: run `{reference.COMMAND}` and commit it.\n{diff}"
    )


def test_every_row_of_the_table_and_every_status_is_in_it():
    text = reference.render()
    rows = [line for line in text.splitlines() if line.startswith("| `") and " | " in line]
    assert sum(1 for line in rows if line.count(" | ") == 4) == len(TABLE)
    assert all(f"`{status}`" in text for status in Status)
