"""docs/api.md is written from the code by server/edge/reference.py: the committed file
must be what it writes now, so that the reference never drifts from the server."""

from __future__ import annotations

import difflib
import re

from server.edge import reference


def test_docs_api_md_is_what_the_code_writes():
    written = reference.DOCUMENT.read_text()
    wanted = reference.render()
    diff = "".join(
        list(
            difflib.unified_diff(
                written.splitlines(keepends=True),
                wanted.splitlines(keepends=True),
                "docs/api.md (committed)",
                "docs/api.md (from the code)",
            )
        )[:60]
    )
    assert written == wanted, (
        f"docs/api.md is out of date: run `{reference.COMMAND}` and commit the result.\n{diff}"
    )


def test_every_section_is_filled_in_and_every_link_lands():
    text = reference.render()
    assert not re.findall(r"<!-- ([a-z ]+) -->", text)  # a marker left unreplaced
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', text))
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links <= anchors, sorted(links - anchors)
