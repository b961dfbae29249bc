"""docs/domain.md, written from the machine: the statuses and outcome states with the
groups the server asks about, every event with its data, the transition table and
the statuses in which an event repeats the past. Pure: `render()` returns the text.

    python -m state_machine.reference    # writes docs/domain.md

tests/test_domain_reference.py fails while the committed file differs from it.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from . import conversation as c
from .events import EVENT_TYPES, Event
from .table import CREATING, FALLBACK, OFFER_ANSWERS, REPEATS_THE_PAST, SAME, TABLE

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "domain.md"
COMMAND = "python -m state_machine.reference"

GROUPS = (
    "ROUTABLE_STATUSES",
    "WAITING_STATUSES",
    "UNROUTED_STATUSES",
    "HANDLING_STATUSES",
    "HOLDING_STATUSES",
    "ENDED_STATUSES",
    "ANSWERED_STATES",
    "UNANSWERED_STATES",
)

INTRODUCTION = f"""# The conversation model

<!-- Written by `{COMMAND}` from state_machine/; edit the machine and
run it again, not this file. -->

A conversation has a lifecycle `status` and, once it has an outcome, a `state`. Events
move it: `apply(conversation, event)` in `state_machine/machine.py` runs the transition
table of `state_machine/table.py`, first matching row first, and four rules around it
(the state is written once; an answer to an offer applies only to the current offer;
what repeats the past is `stale`; an event that fits no row is `stale` when it is not
newer than the conversation's latest event, else `rejected`). Each applied event adds
one to the conversation's `version`. docs/domain-decisions.md says why, where the
design left a choice; docs/api.md has the HTTP and websocket forms.
"""


def _names(values) -> str:
    order = {member: index for index, member in enumerate((*c.Status, *c.State))}
    return ", ".join(f"`{value}`" for value in sorted(values, key=order.__getitem__))


def _type(hint: Any) -> str:
    args = typing.get_args(hint)
    if type(None) in args:
        return _type(next(arg for arg in args if arg is not type(None))) + " or null"
    if typing.get_origin(hint) is Literal:
        return " \\| ".join(f"`{arg}`" for arg in args)
    if hint is datetime:
        return "instant (RFC 3339)"
    if dataclasses.is_dataclass(hint):
        fields = ", ".join(field.name for field in dataclasses.fields(hint))
        return f"object ({fields})"
    return {str: "text", int: "integer", float: "number"}.get(hint) or getattr(
        hint, "__name__", str(hint)
    )


def _data(cls: type[Event]) -> str:
    hints = typing.get_type_hints(cls)
    own = [field for field in dataclasses.fields(cls) if field.name not in Event.__annotations__]
    if not own:
        return "none"
    parts = []
    for field in own:
        optional = field.default is not dataclasses.MISSING
        parts.append(f"`{field.name}`{'?' if optional else ''}: {_type(hints[field.name])}")
    return "; ".join(parts)


def _callable(function) -> str:
    """A setter or guard as the table names it: `declined`, `state(dropped)`."""
    name = function.__qualname__.split(".<locals>")[0]
    cells = [cell.cell_contents for cell in function.__closure__ or ()]
    cells = [cell for cell in cells if cell != {}]  # `state(value, **also)` with no also
    if not cells:
        return f"`{name}`"
    return f"`{name}({', '.join(str(cell) for cell in cells)})`"


def _to(row) -> str:
    if row.to == SAME:
        return "(unchanged)"
    if row.to == FALLBACK:
        return "where the offer came from (`queued`, or `active` for a transfer)"
    return f"`{row.to}`"


def render() -> str:
    out = [INTRODUCTION]
    out.append("## Statuses and states\n")
    out.append(f"Statuses: {_names(c.Status)}.\n")
    out.append(f"States (outcomes): {_names(c.State)}.\n")
    out.append("Groups the server asks about (`state_machine/conversation.py`):\n")
    out.append("| group | members |\n|---|---|")
    out.extend(f"| `{name}` | {_names(getattr(c, name))} |" for name in GROUPS)
    out.append("\n## Events\n")
    out.append(
        "Every event carries `event_id`, `conversation_id`, `occurred_at` and its `data`"
        " (`?`: may be left out). Events that create a conversation: "
        f"{', '.join(f'`{name}`' for name in sorted(CREATING))}.\n"
    )
    out.append("| type | data |\n|---|---|")
    out.extend(f"| `{name}` | {_data(cls)} |" for name, cls in EVENT_TYPES.items())
    out.append("\n## The transition table\n")
    out.append(
        "The first row whose event, status and guard fit decides. `from`: the statuses"
        " it applies in; `sets`: the function of `state_machine/table.py` that says what"
        " changes and which effects the server records.\n"
    )
    out.append("| event | from | guard | to | sets |\n|---|---|---|---|---|")
    for row in TABLE:
        sources = "(creates it)" if row.sources is None else _names(row.sources)
        guard = _callable(row.guard) if row.guard else ""
        out.append(f"| `{row.event}` | {sources} | {guard} | {_to(row)} | {_callable(row.sets)} |")
    out.append("\n## What repeats the past\n")
    out.append(
        "An event that fits no row is `stale`, not `rejected`, in the statuses below: it"
        " reports something that already happened on the conversation's own path. An"
        f" answer to an offer ({', '.join(f'`{e}`' for e in sorted(OFFER_ANSWERS))}) that"
        " is not about the current offer is `stale` too.\n"
    )
    for direction, rules in REPEATS_THE_PAST.items():
        out.append(f"**{direction.capitalize()}:**\n")
        out.append("| event | stale in |\n|---|---|")
        out.extend(f"| `{event}` | {_names(statuses)} |" for event, statuses in rules.items())
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    DOCUMENT.write_text(render())
    print(f"wrote {DOCUMENT}", file=sys.stderr)
