"""A view's rows from the database: pages in the view's order (cursors that seek),
and counts. Shared by HTTP pages, websocket snapshots and the live windows' refills."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from server.live.filters import ViewQuery, decode_cursor, encode_cursor
from server.storage import models as m
from server.wire.rows import Projection, view_projection

# Built page and count statements, by view, tenant and limit; the oldest goes first.
_STATEMENTS: dict = {}
MAX_STATEMENTS = 1000


def cached_page(dialect: str, tenant: str, query: ViewQuery, shown: Projection, now,
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


async def view_page(db, live, tenant: str, definition, query: ViewQuery, tz, limit: int,
                    cursor: str | None, now) -> dict[str, Any]:  # fmt: skip
    """One page of a view: `{"rows", "cursor", "total"}`, the rows as a snapshot of
    the view would carry them. A live window of the view keeps its total exact: then
    no count over the whole view."""
    after = decode_cursor(query, cursor) if cursor else None
    total = live.total(tenant, definition.key, query.agent)
    shown = view_projection(definition.columns, query.sort_fields)
    async with db.snapshot() as conn:
        statement, params = cached_page(conn.dialect.name, tenant, query, shown, now, limit, after)
        rows = (await conn.execute(statement, params)).all()
        if total is None:
            total = await count(conn, tenant, query, now)
    next_cursor = encode_cursor(query, rows[-1]._mapping) if len(rows) == limit else None
    return {
        "rows": [shown.wire(row._mapping, tz) for row in rows],
        "cursor": next_cursor,
        "total": total,
    }
