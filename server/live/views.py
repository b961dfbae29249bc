"""Saved views: definitions (validated on save), their HTTP API, and paged rows.

A view is `{"id", "name", "filters", "columns", "sort", "visibility"}` (api.md).
Private views belong to the user who made them; `tenant` views are shared with the
tenant (every supervisor may read them, and agents too, seeing only their own
conversations in them). Only the owner or an admin changes or deletes a view.
"""

from __future__ import annotations

import functools
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request

from server.edge.http import ApiError, read_object, require_role, respond
from server.live.filters import ViewQuery, _storable, compile_view, decode_cursor, encode_cursor
from server.storage import models as m
from server.storage.repository import decode_channels
from server.wire.rows import COLUMNS, instant, wire_row

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
DEFINITION_FIELDS = {"filters", "columns", "sort"}
VIEW_FIELDS = {"name", "visibility", *DEFINITION_FIELDS}
MAX_LIMIT = 1000
# Built page and count statements, by view, tenant and limit; the oldest goes first.
_STATEMENTS: dict = {}
MAX_STATEMENTS = 1000


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
    compile_view(filters, sort, tz)  # validates; raises ApiError 422
    columns = body.get("columns")
    if columns is None:
        columns = list(DEFAULT_COLUMNS)
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ApiError(
            422, "invalid_view", "columns: must be a list of column names", field="columns"
        )
    for column in columns:
        if column not in COLUMNS:
            raise ApiError(
                422,
                "invalid_view",
                f"columns: unknown column {column!r}; columns: {', '.join(COLUMNS)}",
                field="columns",
            )
    ordered = ["id", *dict.fromkeys(c for c in columns if c != "id")]  # id always first
    return Definition(list(filters), tuple(ordered), list(sort))


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


async def load_view(conn: AsyncConnection, principal, view_id: str) -> dict:
    """A view the caller may read, or 404 (another tenant's, or someone's private)."""
    if not _storable(view_id):  # NUL or a lone surrogate: no database takes it as a value
        raise ApiError(404, "not_found", f"no view {view_id!r}")
    table = m.views
    row = (
        await conn.execute(
            select(table).where(table.c.tenant_id == principal.tenant, table.c.id == view_id)
        )
    ).first()
    if row is None:
        raise ApiError(404, "not_found", f"no view {view_id!r}")
    row = dict(row._mapping)
    if row["visibility"] != "tenant" and row["owner"] != principal.user:
        raise ApiError(404, "not_found", f"no view {view_id!r}")
    if principal.role == "agent" and row["visibility"] != "tenant":
        raise ApiError(404, "not_found", f"no view {view_id!r}")
    return row


def definition_of(row: dict) -> Definition:
    return Definition(row["filters"], tuple(row["columns"]), row["sort"])


def agent_scope(principal) -> str | None:
    return principal.user if principal.role == "agent" else None


# --- HTTP ---------------------------------------------------------------------------------

READERS = ("supervisor", "admin", "agent")
WRITERS = ("supervisor", "admin")


async def list_views(request: Request):
    sb = request.app.state.sb
    principal = await sb.principal(request)
    require_role(principal, *READERS)
    table = m.views
    visible = table.c.visibility == "tenant"
    if principal.role != "agent":
        visible = or_(visible, table.c.owner == principal.user)
    async with sb.db.read() as conn:
        rows = await conn.execute(
            select(table)
            .where(and_(table.c.tenant_id == principal.tenant, visible))
            .order_by(table.c.name, table.c.id)
        )
    return respond(request, {"views": [view_wire(dict(row._mapping)) for row in rows]})


async def create_view(request: Request):
    sb = request.app.state.sb
    principal = await sb.principal(request)
    require_role(principal, *WRITERS)
    body = await read_object(request, sb.settings.max_body_bytes)
    values = new_view_values(body, await sb.tenant_zone(principal.tenant))
    now = sb.clock.now()
    row = {
        "tenant_id": principal.tenant,
        "id": "v_" + secrets.token_urlsafe(9),
        "owner": principal.user,
        "created_at": now,
        "updated_at": now,
        **values,
    }
    async with sb.db.write() as conn:
        await conn.execute(m.views.insert().values(row))
    return respond(request, view_wire(row), 201)


def new_view_values(body: dict, tz) -> dict:
    """The stored columns of a new view, validated as POST /api/v1/views does (422)."""
    return _validated(body, tz, partial=False)


async def get_view(request: Request):
    sb = request.app.state.sb
    principal = await sb.principal(request)
    require_role(principal, *READERS)
    async with sb.db.read() as conn:
        row = await load_view(conn, principal, request.path_params["view_id"])
    return respond(request, view_wire(row))


async def update_view(request: Request):
    sb = request.app.state.sb
    principal = await sb.principal(request)
    require_role(principal, *WRITERS)
    body = await read_object(request, sb.settings.max_body_bytes)
    tz = await sb.tenant_zone(principal.tenant)
    async with sb.db.write() as conn:
        row = await load_view(conn, principal, request.path_params["view_id"])
        _require_owner(principal, row)
        values = _validated({**_editable(row), **body}, tz, partial=True, given=body)
        values["updated_at"] = sb.clock.now()
        await conn.execute(
            m.views.update()
            .where(m.views.c.tenant_id == principal.tenant, m.views.c.id == row["id"])
            .values(values)
        )
        row.update(values)
    return respond(request, view_wire(row))


async def delete_view(request: Request):
    sb = request.app.state.sb
    principal = await sb.principal(request)
    require_role(principal, *WRITERS)
    async with sb.db.write() as conn:
        row = await load_view(conn, principal, request.path_params["view_id"])
        _require_owner(principal, row)
        await conn.execute(
            m.views.delete().where(
                m.views.c.tenant_id == principal.tenant, m.views.c.id == row["id"]
            )
        )
    return respond(request, {"deleted": row["id"]})


async def view_rows(request: Request):
    """One page of a view, in the same rows and order as a websocket snapshot."""
    sb = request.app.state.sb
    principal = await sb.principal(request)
    require_role(principal, *READERS)
    limit = _limit(request.query_params.get("limit", "100"))
    tz = await sb.tenant_zone(principal.tenant)
    async with sb.db.read() as conn:
        row = await load_view(conn, principal, request.path_params["view_id"])
    definition = definition_of(row)
    query = definition.compile(tz, agent_scope(principal))
    cursor = request.query_params.get("cursor")
    after = decode_cursor(query, cursor) if cursor else None
    # A live window of this view keeps its total exact: no count over the whole view.
    total = sb.live.total(principal.tenant, definition.key, query.agent)
    shown = projection(definition.columns, query.sort_fields)
    async with sb.db.snapshot() as conn:
        statement, params = _cached_page(
            conn.dialect.name, principal.tenant, query, shown, sb.clock.now(), limit, after
        )
        rows = (await conn.execute(statement, params)).all()
        if total is None:
            total = await count(conn, principal.tenant, query, sb.clock.now())
    next_cursor = encode_cursor(query, rows[-1]._mapping) if len(rows) == limit else None
    return respond(
        request,
        {"rows": [shown.wire(row, tz) for row in rows], "cursor": next_cursor, "total": total},
    )


@dataclass(frozen=True)
class Projection:
    """What a page of a view reads and sends: only the stored columns its wire columns
    need, each wire value made once from the database row (the same values as
    `project(wire_row(...))`, which the live windows use)."""

    names: tuple[str, ...]  # wire columns, in project()'s order
    selected: tuple  # the stored columns, as Column objects
    makers: tuple  # per wire column: (index in `selected`, maker(value, tz))

    def wire(self, row, tz) -> dict:
        return {
            name: make(row[index], tz)
            for name, (index, make) in zip(self.names, self.makers, strict=True)
        }


_STORED_AS = {"created_date": "created_at", "created_time": "created_at"}
_MAKERS = {
    "created_at": lambda value, tz: instant(value),
    "created_date": lambda value, tz: value.astimezone(tz).date().isoformat(),
    "created_time": lambda value, tz: value.astimezone(tz).time().isoformat(timespec="seconds"),
    "channels": lambda value, tz: decode_channels(value),
    "has_recording": lambda value, tz: bool(value),
}


def _copied(value, tz):
    return value


def _cached_page(dialect: str, tenant: str, query: ViewQuery, shown: Projection, now,
                 limit: int, after: dict | None) -> tuple[Any, dict]:  # fmt: skip
    """The page statement and its parameters. Building a statement costs about as
    much as running it, so it is built once per view, tenant and limit, with the
    cursor as named parameters; not for `within` filters, whose bounds move with
    the clock."""
    if query.relative:
        return page_statement(shown.selected, tenant, query, dialect, now, limit, after), {}
    fields = query.sort_fields
    key = ("page", dialect, tenant, query, shown.names, limit, after is not None)
    statement = _STATEMENTS.get(key)
    if statement is None:
        cursor = None
        if after is not None:
            table = m.conversations
            cursor = {f: bindparam(f"after_{f}", type_=table.c[f].type) for f in fields}
        statement = page_statement(shown.selected, tenant, query, dialect, now, limit, cursor)
        _remember(key, statement)
    return statement, {f"after_{f}": after[f] for f in fields} if after is not None else {}


def _remember(key, statement) -> None:
    _STATEMENTS[key] = statement
    while len(_STATEMENTS) > MAX_STATEMENTS:
        _STATEMENTS.pop(next(iter(_STATEMENTS)))


@functools.lru_cache(maxsize=1024)
def projection(columns: tuple[str, ...], sort_fields: tuple[str, ...]) -> Projection:
    names = tuple(dict.fromkeys(("id", "version", *columns, *sort_fields)))
    stored = tuple(dict.fromkeys(_STORED_AS.get(name, name) for name in names))
    position = {name: index for index, name in enumerate(stored)}
    makers = tuple(
        (position[_STORED_AS.get(name, name)], _MAKERS.get(name, _copied)) for name in names
    )
    return Projection(names, tuple(m.conversations.c[name] for name in stored), makers)


# --- queries shared with the live views -------------------------------------------------------


async def page(
    conn: AsyncConnection, tenant: str, query: ViewQuery, now, limit: int, after: dict | None = None
) -> list[dict]:
    """Up to `limit` stored rows of the view in its order, after `after`'s sort values."""
    statement = page_statement(
        m.conversations.c, tenant, query, conn.dialect.name, now, limit, after
    )
    return [dict(row._mapping) for row in await conn.execute(statement)]


def page_statement(columns, tenant: str, query: ViewQuery, dialect: str, now, limit: int,
                   after: dict | None = None):  # fmt: skip
    """SELECT `columns` (which include the sort keys) of the view's next `limit` rows.

    A cursor seeks: with one sort direction it is a row comparison, an index bound;
    with mixed directions, one index range per sort level, each limited, in a UNION
    ALL under the view's order (filters.ViewQuery.after_levels)."""
    table = m.conversations
    base = select(*columns).where(table.c.tenant_id == tenant, query.where(table, dialect, now))
    order = query.order_by(table, dialect)
    if after is None:
        return base.order_by(*order).limit(limit)
    if query.one_direction:
        return base.where(query.after(table, dialect, after)).order_by(*order).limit(limit)
    ranges = [
        select(*part.c)
        for part in (
            base.where(level).order_by(*order).limit(limit).subquery()
            for level in query.after_levels(table, dialect, after)
        )
    ]
    pages = union_all(*ranges).subquery("pages")
    return select(*pages.c).order_by(*query.order_by(pages, dialect)).limit(limit)


async def count(conn: AsyncConnection, tenant: str, query: ViewQuery, now) -> int:
    key = ("count", conn.dialect.name, tenant, query)
    statement = None if query.relative else _STATEMENTS.get(key)
    if statement is None:
        table = m.conversations
        statement = (
            select(func.count())
            .select_from(table)
            .where(table.c.tenant_id == tenant, query.where(table, conn.dialect.name, now))
        )
        if not query.relative:
            _remember(key, statement)
    return (await conn.execute(statement)).scalar_one()


async def oldest(conn: AsyncConnection, tenant: str, query: ViewQuery, now):
    """The earliest created_at in the view: when a `last_*` filter next drops a row."""
    table = m.conversations
    statement = select(func.min(table.c.created_at)).where(
        table.c.tenant_id == tenant, query.where(table, conn.dialect.name, now)
    )
    return (await conn.execute(statement)).scalar()


def project(row: dict, columns, query: ViewQuery, tz) -> dict:
    """A stored row as a client of this view sees it: its columns, plus id, version
    and the sort keys (shown or not) so that a client can place it."""
    wire = wire_row(row, tz)
    keys = ("id", "version", *columns, *query.sort_fields)
    return {name: wire[name] for name in dict.fromkeys(keys)}


# --- helpers -----------------------------------------------------------------------------------


def _validated(body: dict, tz, partial: bool, given: dict | None = None) -> dict:
    extra = sorted(set(given if given is not None else body) - VIEW_FIELDS)
    if extra:
        raise ApiError(422, "invalid_view", f"{extra[0]}: unknown field", field=extra[0])
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or not _storable(name):
        raise ApiError(
            422,
            "invalid_view",
            "name: must be a non-empty string of at most 200 characters, without NUL",
            field="name",
        )
    visibility = body.get("visibility", "private")
    if visibility not in ("private", "tenant"):
        raise ApiError(
            422, "invalid_view", "visibility: must be private or tenant", field="visibility"
        )
    definition = parse_definition(body, tz)
    return {
        "name": name,
        "visibility": visibility,
        "filters": definition.filters,
        "columns": list(definition.columns),
        "sort": definition.sort,
    }


def _editable(row: dict) -> dict:
    return {name: row[name] for name in VIEW_FIELDS}


def _require_owner(principal, row: dict) -> None:
    if row["owner"] != principal.user and principal.role != "admin":
        raise ApiError(403, "forbidden", "only the view's owner or an admin may change it")


def _limit(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(
            422, "invalid_field", f"limit: must be an integer from 1 to {MAX_LIMIT}", field="limit"
        )
    return int(raw)
