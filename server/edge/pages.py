"""The pages (docs/api.md, "Pages"): the HTML of static/ at the pages' paths, its assets, and
what the pages ask of the server besides the API: who the caller is and what a view's
filter builder may offer. The pages themselves hold no data: every page loads its
token from the tab, then talks to the API and /ws like any client."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse

from server.edge.http import NO_STORE, principal_of, respond
from server.live import filters
from server.storage import models as m
from server.storage import repository as repo
from server.wire.rows import COLUMNS

# The repo's static/, through the link server/static (so a wheel, which copies it as
# package data, finds it at the same place).
STATIC = Path(__file__).resolve().parent.parent / "static"

# No caching of the HTML: a page must pick up a new version of its modules at once.
# Strict: the pages' own scripts, styles, API, websocket and recordings (streamed from
# the server by their links).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def page(name: str):
    """The handler of one page of static/."""

    async def page(request: Request):
        return FileResponse(
            STATIC / name,
            media_type="text/html; charset=utf-8",
            headers={**NO_STORE, "Content-Security-Policy": CSP},
        )

    page.__name__ = f"page_{name.removesuffix('.html')}"
    return page


async def widget_js(request: Request):
    """The chat widget a shop embeds (any site may load it; the socket checks origins)."""
    return FileResponse(
        STATIC / "widget.js",
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"},
    )


async def chat_demo(request: Request):
    """A shop's page with the widget, for the demo tenant."""
    return FileResponse(STATIC / "chat-demo.html", media_type="text/html; charset=utf-8")


async def me(request: Request):
    """The caller as its token names it, and its tenant's time zone (for the pages'
    clocks: dates and times show in the tenant's zone, not the browser's)."""
    services = request.app.state.services
    principal = await principal_of(request)
    zone = await services.tenants.zone(principal.tenant)
    answer = {
        "tenant": principal.tenant,
        "user": principal.user,
        "role": principal.role,
        "timezone": zone.key,
        "expires_at": principal.expires_at.isoformat(),
    }
    if principal.role == "agent":  # the console starts from the agent's presence
        async with services.db.read() as conn:
            agent = await repo.get_row(conn, m.agents, principal.tenant, "id", principal.user)
        answer["name"] = (agent or {}).get("name") or principal.user
        answer["presence"] = (agent or {}).get("presence") or "offline"
    return respond(request, answer)


async def view_schema(request: Request):
    """What a view may hold (server/live/filters.py is the one source): columns with
    their labels, each filterable field's type, operators and values."""
    principal = await principal_of(request)
    principal.require("supervisor", "admin", "agent")
    return respond(
        request,
        {
            "columns": [{"name": name, "label": label} for name, label in COLUMNS.items()],
            "fields": {
                name: {
                    "kind": kind,
                    "operators": list(filters.OPERATORS[kind]),
                    **(
                        {"values": list(filters.ENUM_VALUES[name])}
                        if name in filters.ENUM_VALUES
                        else {}
                    ),
                    **(
                        {"values": list(filters.CHANNEL_VALUES)} if kind == filters.CHANNELS else {}
                    ),
                }
                for name, kind in filters.FIELD_KINDS.items()
            },
            "within": list(filters.WITHIN),
            "sortable": list(filters.SORTABLE),
            "max_filters": filters.MAX_FILTERS,
            "max_sort_keys": filters.MAX_SORT_KEYS,
        },
    )
