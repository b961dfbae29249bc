"""View definitions: what a view is (filters, columns, sort), validated once when it
is saved or subscribed to inline (422 `invalid_view` naming what is wrong), and
compiled into a ViewQuery (server/live/filters.py) for the caller's scope.

A view is `{"id", "name", "filters", "columns", "sort", "visibility"}`: VIEW_BODY, whose
filters, columns and sort server/live/filters.py checks. Private views belong to the
user who made them; `tenant` views are shared with the tenant (every supervisor may
read them, and agents too, seeing only their own conversations in them). Only the
owner or an admin changes or deletes a view.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from server.core.errors import Refused
from server.core.fields import NAME, Choice, List, Object, Ref, Value
from server.live.filters import MAX_FILTERS, MAX_SORT_KEYS, SORTABLE, ViewQuery, compile_view
from server.wire.rows import COLUMNS

DEFAULT_COLUMNS = (
    "id",
    "customer_name",
    "created_date",
    "created_time",
    "agent_name",
    "team",
    "channel",
    "status",
    "state",
)
VISIBILITIES = ("private", "tenant")
# Checked by parse_definition (server/live/filters.py's tables), described here.
DEFINITION = {
    "filters": Value(
        List(Ref("Filter"), max_items=MAX_FILTERS),
        nullable=True,
        description="A conversation is in the view when it satisfies every filter.",
    ),
    "columns": Value(
        List(Ref("Column")),
        nullable=True,
        description="Shown columns; `id` is always first (and added). Default: "
        + ", ".join(DEFAULT_COLUMNS)
        + ".",
    ),
    "sort": Value(
        List(
            Object(field=Choice(SORTABLE), dir=Choice(("asc", "desc")), required=("field",)),
            max_items=MAX_SORT_KEYS,
        ),
        nullable=True,
        description="Default: created_at descending; `id` always breaks ties.",
    ),
}
VIEW_BODY = Object(
    name=NAME,
    visibility=Choice(VISIBILITIES, default="private"),
    **DEFINITION,
    required=("name",),
    refusal="invalid_view",
)
# A view given inline to a websocket subscribe: its definition (a saved view's other
# keys may come along, and are not read).
VIEW_DEFINITION = Object(
    **DEFINITION,
    name=Value(),
    visibility=Value(),
    id=Value(),
    refusal="invalid_view",
)
DEFINITION_FIELDS = set(DEFINITION)
VIEW_FIELDS = set(VIEW_BODY.fields)


@dataclass(frozen=True)
class Definition:
    """What a subscription needs of a view: filters, sort and the columns shown."""

    filters: list
    columns: tuple[str, ...]
    sort: list

    @property
    def key(self) -> str:
        """Views with the same filters and sort hold the same rows, whatever columns."""
        return json.dumps([self.filters, self.sort], sort_keys=True, separators=(",", ":"))

    def compile(self, tz, agent: str | None = None) -> ViewQuery:
        return compile_view(self.filters, self.sort, tz, agent)


def parse_definition(body: dict, tz) -> Definition:
    """Validate filters, columns and sort (422 naming what is wrong)."""
    filters = body.get("filters") or []
    sort = body.get("sort") or []
    compile_view(filters, sort, tz)  # validates; raises Refused 422
    columns = body.get("columns")
    if columns is None:
        columns = list(DEFAULT_COLUMNS)
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise Refused("invalid_view", "columns: must be a list of column names", field="columns")
    for column in columns:
        if column not in COLUMNS:
            raise Refused(
                "invalid_view",
                f"columns: unknown column {column!r}; columns: {', '.join(COLUMNS)}",
                field="columns",
            )
    ordered = ["id", *dict.fromkeys(c for c in columns if c != "id")]  # id always first
    return Definition(list(filters), tuple(ordered), list(sort))


def with_columns(definition: Definition, extra, tz) -> Definition:
    """A saved view's definition with the extra `columns` a subscribe by its id asks
    for, after its own (validated as an inline definition's columns)."""
    if extra is None:
        return definition
    if not isinstance(extra, list):
        raise Refused("invalid_view", "columns: must be a list of column names", field="columns")
    body = {"filters": definition.filters, "sort": definition.sort}
    return parse_definition({**body, "columns": [*definition.columns, *extra]}, tz)


def view_wire(row: dict) -> dict:
    return {
        "id": row["id"],
        "name": row["name"],
        "visibility": row["visibility"],
        "owner": row["owner"],
        "filters": row["filters"],
        "columns": row["columns"],
        "sort": row["sort"],
    }


def definition_of(row: dict) -> Definition:
    return Definition(row["filters"], tuple(row["columns"]), row["sort"])


def agent_scope(principal) -> str | None:
    return principal.user if principal.role == "agent" else None


def new_view_values(body: dict, tz) -> dict:
    """The stored columns of a new view, validated as POST /api/v1/views does (422)."""
    return _stored({"visibility": "private", **VIEW_BODY.read(body)}, tz)


def edited_view_values(row: dict, body: dict, tz) -> dict:
    """The stored columns after a PATCH of `body` over the view `row` (422)."""
    return _stored({**_editable(row), **VIEW_BODY.partial().read(body)}, tz)


def _stored(values: dict, tz) -> dict:
    definition = parse_definition(values, tz)
    return {
        "name": values["name"],
        "visibility": values["visibility"],
        "filters": definition.filters,
        "columns": list(definition.columns),
        "sort": definition.sort,
    }


def _editable(row: dict) -> dict:
    return {name: row[name] for name in VIEW_FIELDS}


def require_owner(principal, row: dict) -> None:
    if row["owner"] != principal.user and principal.role != "admin":
        raise Refused("forbidden", "only the view's owner or an admin may change it")
