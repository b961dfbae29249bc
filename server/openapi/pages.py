"""The pages' part of the OpenAPI document: the pages themselves (HTML, no token), who
the caller is, what a view may hold, and the agent's wrap-up. Merged into the document
by server/openapi/document.py."""

from __future__ import annotations

from server.live import filters
from server.openapi.core import (
    INSTANT,
    array,
    content,
    enum,
    obj,
    operation,
    path_parameter,
    ref,
    request_body,
    returns,
    string,
)
from server.providers.actions import WRAPUP_BODY
from server.routing.presence import PRESENCES
from server.tenants.tickets import TICKET_TTL_S

PAGES = {
    "/": ("pageIndex", "The links to every page and what each is for"),
    "/views": ("pageViews", "The views list (supervisor)"),
    "/views/{view_id}": ("pageView", "One live view (supervisor)"),
    "/conversations/{conversation_id}": ("pageConversation", "A conversation's detail"),
    "/agent": ("pageAgent", "The agent console"),
    "/wallboard": ("pageWallboard", "The wallboard"),
}


def pages_schemas() -> dict[str, dict]:
    return {
        "Me": obj(
            {
                "tenant": string(),
                "user": string(),
                "role": string(),
                "timezone": string(description="The tenant's IANA time zone."),
                "expires_at": INSTANT,
                "name": string(description="Agents only."),
                "presence": enum(PRESENCES, description="Agents only."),
            },
            ["tenant", "user", "role", "timezone", "expires_at"],
        ),
        "ViewSchema": obj(
            {
                "columns": array(obj({"name": string(), "label": string()}, ["name", "label"])),
                "fields": {
                    "type": "object",
                    "additionalProperties": obj(
                        {
                            "kind": enum(sorted(set(filters.FIELD_KINDS.values()))),
                            "operators": array(string()),
                            "values": array(string()),
                        },
                        ["kind", "operators"],
                    ),
                },
                "within": array(enum(list(filters.WITHIN))),
                "sortable": array(enum(list(filters.SORTABLE))),
                "max_filters": {"type": "integer"},
                "max_sort_keys": {"type": "integer"},
            },
            ["columns", "fields", "within", "sortable", "max_filters", "max_sort_keys"],
        ),
        "Wrapup": WRAPUP_BODY.schema(),
        "WsTicket": obj(
            {
                "ticket": string(
                    description="Open /ws?ticket=<ticket> with it: once, within expires_in "
                    "seconds, as the token that asked for it."
                ),
                "expires_in": {"type": "integer", "enum": [TICKET_TTL_S]},
            },
            ["ticket", "expires_in"],
        ),
    }


def pages_paths() -> dict[str, dict]:
    html = {"content": {"text/html": {"schema": string()}}}
    parameters = {
        "/views/{view_id}": [path_parameter("view_id", "The view id.")],
        "/conversations/{conversation_id}": [
            path_parameter("conversation_id", "The conversation id.")
        ],
    }
    paths: dict[str, dict] = {
        path: {
            "get": operation(
                operation_id,
                summary,
                (200, "The page (it asks for a token itself)", html),
                parameters=parameters.get(path),
                public=True,
                tag="pages",
            )
        }
        for path, (operation_id, summary) in PAGES.items()
    }
    paths["/api/v1/me"] = {
        "get": operation(
            "getMe",
            "The caller as its token names it, and its tenant's time zone",
            (200, "The caller", returns(ref("Me"))),
            roles="any",
        )
    }
    paths["/api/v1/ws-tickets"] = {
        "post": operation(
            "createWsTicket",
            "A single-use ticket to open /ws with, so that no token is put in a URL",
            (200, "The ticket", returns(ref("WsTicket"))),
            roles="any",
        )
    }
    paths["/api/v1/view-schema"] = {
        "get": operation(
            "getViewSchema",
            "Columns with their labels, and each filterable field's operators and values",
            (200, "What a view may hold", returns(ref("ViewSchema"))),
            roles="supervisor, admin, agent",
        )
    }
    paths["/api/v1/conversations/{conversation_id}/wrapup"] = {
        "post": operation(
            "submitWrapup",
            "The agent's after-conversation work: disposition and note",
            (200, "Recorded", returns(obj({"conversation": ref("ConversationRow")}))),
            (400, 404, 413, 422),
            roles="the conversation's agent, whatever its role (agent, supervisor, admin)",
            body=request_body(ref("Wrapup"), "Disposition and an optional note."),
            parameters=[path_parameter("conversation_id", "The conversation id.")],
            more={
                409: {
                    "description": "invalid_transition, with the current `conversation`",
                    "content": content(ref("Error")),
                }
            },
        )
    }
    return paths
