"""The OpenAPI operations and schemas of routing: presence, offers, transfers, the
wallboard. Merged into the document by server/openapi/document.py."""

from __future__ import annotations

from server.openapi.core import (
    INSTANT,
    array,
    enum,
    integer,
    nullable,
    obj,
    operation,
    path_parameter,
    query_parameter,
    ref,
    request_body,
    returns,
    string,
)
from server.routing.actions import TRANSFER_BODY
from server.routing.presence import PRESENCE_BODY, PRESENCES
from server.routing.wallboard import UNANSWERED


def routing_schemas() -> dict[str, dict]:
    number = nullable({"type": "number", "minimum": 0})
    metrics = obj(
        {
            "waiting": integer(0),
            "longest_wait_s": {"type": "number", "minimum": 0},
            "offered": integer(0),
            "active": integer(0),
            "wrap_up": integer(0),
            "answered": integer(0),
            "unanswered": obj({state: integer(0) for state in UNANSWERED}, list(UNANSWERED)),
            "abandon_rate": number,
            "service_level": number,
            "avg_wait_s": number,
            "avg_handle_s": number,
            "csat_avg": number,
            "csat_count": integer(0),
            "agents": obj(
                {name: integer(0) for name in ("available", "busy", "away", "offline")},
                ["available", "busy", "away", "offline"],
            ),
        },
        ["waiting", "offered", "active", "wrap_up", "answered", "unanswered"],
        closed=False,
        description="docs/routing.md defines each figure.",
    )
    return {
        "PresenceUpdate": PRESENCE_BODY.schema(),
        "Presence": obj(
            {"agent_id": string(), "presence": enum(PRESENCES), "at": INSTANT},
            ["agent_id", "presence", "at"],
        ),
        "Transfer": TRANSFER_BODY.schema(),
        "ConversationAnswer": obj({"conversation": ref("ConversationRow")}, ["conversation"]),
        "WallboardMetrics": metrics,
        "WallboardBreakdown": obj(
            {
                "total": ref("WallboardMetrics"),
                "teams": {
                    "type": "object",
                    "additionalProperties": ref("WallboardMetrics"),
                    "description": "By team name ((none): conversations without a team); "
                    "each with its own `channels`.",
                },
                "channels": {
                    "type": "object",
                    "additionalProperties": ref("WallboardMetrics"),
                    "description": "By channel.",
                },
            },
            ["total", "teams", "channels"],
            description="The metrics in total, by team and by channel.",
        ),
        "Wallboard": obj(
            {"at": INSTANT, "metrics": ref("WallboardBreakdown")},
            ["at", "metrics"],
        ),
    }


def routing_paths() -> dict[str, dict]:
    body_errors = (400, 413)
    answered = (200, "The conversation's row", returns(ref("ConversationAnswer")))
    offer_id = [path_parameter("offer_id", "The offer's id, from the popup.")]
    return {
        "/api/v1/agents/me/presence": {
            "put": operation(
                "putPresence",
                "Set the calling agent's presence",
                (200, "The presence as stored", returns(ref("Presence"))),
                (*body_errors, 404, 422),
                roles="agent",
                body=request_body(ref("PresenceUpdate"), "available, away or offline."),
                tag="routing",
            )
        },
        "/api/v1/offers/{offer_id}/accept": {
            "post": operation(
                "acceptOffer",
                "Accept an offer (the offered agent)",
                answered,
                (404, 409),
                roles="agent (the offered one)",
                parameters=offer_id,
                tag="routing",
            )
        },
        "/api/v1/offers/{offer_id}/reject": {
            "post": operation(
                "rejectOffer",
                "Reject an offer (the offered agent): it goes to the next agent",
                answered,
                (404, 409),
                roles="agent (the offered one)",
                parameters=offer_id,
                tag="routing",
            )
        },
        "/api/v1/conversations/{conversation_id}/transfer": {
            "post": operation(
                "transferConversation",
                "Transfer to a team or to an agent",
                answered,
                (*body_errors, 404, 409, 422),
                roles="agent (own), supervisor, admin",
                body=request_body(ref("Transfer"), "team or agent_id."),
                parameters=[path_parameter("conversation_id", "The conversation's id.")],
                tag="routing",
            )
        },
        "/api/v1/wallboard": {
            "get": operation(
                "getWallboard",
                "The wallboard's metrics now",
                (200, "Per team and channel, and in total", returns(ref("Wallboard"))),
                roles="wallboard, supervisor, admin",
                parameters=[
                    query_parameter("team", "Only these teams (repeatable).", array(string())),
                    query_parameter(
                        "channel", "Only these channels (repeatable).", array(string())
                    ),
                ],
                tag="routing",
            )
        },
    }
