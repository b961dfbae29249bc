"""The core of the OpenAPI document: the schema helpers every part uses, and the
operations and schemas of events, conversations, the set-up and views.

The document (document.py) describes every route of server/edge/routes.py (a test
holds the two to each other) and is built from the tables the server itself uses
wherever one exists: the event types and their data from state_machine.EVENT_TYPES,
the conversation row from server/wire/rows.py COLUMNS, the statuses and states from
the state machine's enums, and every request body from the field objects its service
reads it with (server/core/fields.py: TENANT_BODY, VIEW_BODY, ...).
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Any, Literal

from server.core.fields import NAME, BusinessHours, nullable, ref
from server.ingest.pipeline import MAX_EVENTS_PER_REQUEST
from server.live import filters
from server.live.definitions import VIEW_BODY, VIEW_DEFINITION
from server.routing.presence import PRESENCES
from server.tenants.settings import AGENT_BODY, TEAM_BODY, TENANT_BODY
from server.wire import rows
from server.wire.protocol import PAGE_LIMIT
from state_machine import EVENT_TYPES, State, Status
from state_machine.events import ID_MAX_LENGTH, Channel, HangupSource, Sender

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
MSGPACK = "application/msgpack"

CHANNELS = [*typing.get_args(Channel), "omnichannel"]
OUTCOMES = ["applied", "duplicate", "stale", "rejected"]
MESSAGE_STATUSES = ["sent", "delivered", "read", "failed"]


# --- schema helpers -----------------------------------------------------------------------


def string(**extra: Any) -> dict:
    return {"type": "string", **extra}


def integer(minimum: int | None = None, maximum: int | None = None, **extra: Any) -> dict:
    bounds = {"minimum": minimum, "maximum": maximum}
    return {"type": "integer", **{k: v for k, v in bounds.items() if v is not None}, **extra}


def enum(values, **extra: Any) -> dict:
    return {"type": "string", "enum": [str(value) for value in values], **extra}


def obj(properties: dict, required: list[str] | None = None, closed: bool = True, **extra) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return {**schema, **extra}


def array(items: dict, **extra: Any) -> dict:
    return {"type": "array", "items": items, **extra}


INSTANT = string(
    format="date-time", description="RFC 3339 instant in UTC, e.g. 2026-11-24T10:00:00.123Z"
)


# --- events ----------------------------------------------------------------------------------


def _hint_schema(hint: Any) -> tuple[dict, bool]:
    """The JSON schema of one event-data annotation, and whether it may be left out."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if type(None) in args:
        inner, _ = _hint_schema(next(arg for arg in args if arg is not type(None)))
        return nullable(inner), True
    if origin is Literal:
        return enum(args), False
    if hint is str:
        return string(), False
    if hint is int:
        return integer(), False
    if hint is float:
        return {"type": "number", "minimum": 0}, False
    if hint is datetime:
        return string(format="date-time"), False
    if dataclasses.is_dataclass(hint):
        return _dataclass_schema(hint, skip=()), False
    if origin in (list, tuple):
        return array(_hint_schema(args[0])[0] if args else {}), False
    return {"description": f"A {hint}."}, False  # a type this table does not know yet


def _dataclass_schema(cls: type, skip: tuple[str, ...]) -> dict:
    hints = typing.get_type_hints(cls)
    properties, required = {}, []
    for field in dataclasses.fields(cls):
        if not field.init or field.name in skip:
            continue
        schema, optional = _hint_schema(hints[field.name])
        has_default = (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        )
        properties[field.name] = schema
        if not (optional or has_default):
            required.append(field.name)
    return obj(properties, required, closed=False)


def event_data_name(event_type: str) -> str:
    return f"EventData.{event_type}"


def event_name(event_type: str) -> str:
    return f"Event.{event_type}"


ENVELOPE = ("event_id", "conversation_id", "occurred_at")


def event_schemas() -> dict[str, dict]:
    """One schema per event type (its envelope with `type` fixed, and its data), and
    `Event`, any one of them."""
    schemas: dict[str, dict] = {
        "EventType": enum(EVENT_TYPES, description="Every event type."),
    }
    for name, cls in EVENT_TYPES.items():
        data = _dataclass_schema(cls, skip=ENVELOPE)
        data["description"] = f"The data of `{name}`. Fields not listed here are ignored."
        schemas[event_data_name(name)] = data
        schemas[event_name(name)] = obj(
            {
                "event_id": string(
                    maxLength=ID_MAX_LENGTH, description="Unique per tenant: the idempotency key."
                ),
                "type": enum([name]),
                "conversation_id": string(maxLength=ID_MAX_LENGTH),
                "occurred_at": string(
                    format="date-time", description="RFC 3339, UTC or with an offset."
                ),
                "data": ref(event_data_name(name)),
            },
            [
                "event_id",
                "type",
                "conversation_id",
                "occurred_at",
                *(["data"] if data.get("required") else []),
            ],
            closed=False,
        )
    schemas["Event"] = {
        "description": (
            "An event envelope. `type` is one of EventType; `data` depends on it. The tenant "
            "comes from the credentials. An envelope that does not fit is not refused as a "
            "request: it gets the outcome `rejected` with a `code`."
        ),
        "oneOf": [ref(event_name(name)) for name in EVENT_TYPES],
        "discriminator": {
            "propertyName": "type",
            "mapping": {name: f"#/components/schemas/{event_name(name)}" for name in EVENT_TYPES},
        },
    }
    schemas["EventBatch"] = obj(
        {"events": array(ref("Event"), maxItems=MAX_EVENTS_PER_REQUEST)}, ["events"], closed=False
    )
    schemas["EventResult"] = obj(
        {
            "event_id": {
                "type": ["string", "number", "null"],
                "description": "As sent; null when the envelope had none (or not a plain value).",
            },
            "outcome": enum(OUTCOMES),
            "conversation_id": {"type": ["string", "number", "null"]},
            "version": nullable(
                integer(description="The conversation's version after the event, if it exists.")
            ),
            "code": string(
                description="Why, for `rejected` and `stale`: invalid_transition, unknown_type, "
                "invalid_data, unknown_conversation, ..."
            ),
            "message": string(description="A human message naming the status and the event."),
        },
        ["event_id", "outcome", "conversation_id", "version"],
    )
    schemas["EventResults"] = obj(
        {"results": array(ref("EventResult"), description="One per event, in order.")},
        ["results"],
    )
    return schemas


# --- conversations ---------------------------------------------------------------------------

# The type of each view column (rows.COLUMNS gives the names and the labels).
COLUMN_TYPES: dict[str, dict] = {
    "id": string(),
    "customer_name": nullable(string()),
    "created_date": string(format="date", description="In the tenant's time zone."),
    "created_time": string(
        pattern=r"^\d\d:\d\d:\d\d$", description="HH:MM:SS in the tenant's time zone."
    ),
    "created_at": INSTANT,
    "agent_name": nullable(string()),
    "agent_id": nullable(string()),
    "team": nullable(string()),
    "direction": enum(["incoming", "outgoing"]),
    "disposition": nullable(string()),
    "state": nullable(enum(State)),
    "wrap_up_note": nullable(string()),
    "channel": enum(CHANNELS),
    "channels": array(enum(CHANNELS)),
    "contact": string(),
    "contacto_number": nullable(string()),
    "ticket_id": nullable(string()),
    "csat": nullable(integer(1, 5)),
    "hangup_source": nullable(enum(typing.get_args(HangupSource))),
    "status": enum(Status),
    "has_recording": {"type": "boolean"},
    "wait_s": nullable({"type": "number", "minimum": 0}),
    "handle_s": nullable({"type": "number", "minimum": 0}),
}
# What a row carries besides the columns.
ROW_EXTRAS: dict[str, dict] = {
    "version": integer(1, description="Goes up by one with every applied event."),
    "queued_at": nullable(INSTANT),
    "answered_at": nullable(INSTANT),
    "ended_at": nullable(INSTANT),
    "closed_at": nullable(INSTANT),
}


def conversation_row_schema() -> dict:
    properties = {
        name: {**COLUMN_TYPES.get(name, {}), "title": label} for name, label in rows.COLUMNS.items()
    }
    properties.update(ROW_EXTRAS)
    return obj(properties, list(properties), description="A conversation row: every column.")


def conversation_schemas() -> dict[str, dict]:
    return {
        "ConversationRow": conversation_row_schema(),
        "Customer": obj(
            {
                "id": string(description="The integrator's customer id, else the contact."),
                "name": nullable(string()),
                "email": nullable(string()),
                "phone": nullable(string()),
                "contact": string(),
            },
            ["id", "name", "email", "phone", "contact"],
        ),
        "Message": obj(
            {
                "message_id": string(),
                "sender": enum(typing.get_args(Sender)),
                "text": string(),
                "at": INSTANT,
                "status": nullable(enum(MESSAGE_STATUSES)),
            },
            ["message_id", "sender", "text", "at", "status"],
        ),
        "Ticket": obj(
            {
                "ticket_id": string(),
                "system": nullable(string()),
                "url": nullable(string()),
                "linked_at": INSTANT,
            },
            ["ticket_id", "system", "url", "linked_at"],
        ),
        "Recording": obj(
            {
                "id": string(),
                "duration_s": {"type": "number", "minimum": 0},
                "content_type": string(),
                "created_at": INSTANT,
            },
            ["id", "duration_s", "content_type", "created_at"],
        ),
        "TimelineEntry": obj(
            {
                "event_id": string(),
                "type": ref("EventType"),
                "occurred_at": INSTANT,
                "received_at": INSTANT,
                "outcome": enum(["applied", "stale"]),
                "version": integer(description="After the event (applied), or when it came."),
                "message": nullable(string()),
                "data": {"type": "object"},
            },
            [
                "event_id",
                "type",
                "occurred_at",
                "received_at",
                "outcome",
                "version",
                "message",
                "data",
            ],
        ),
        "ConversationDetail": obj(
            {
                "conversation": ref("ConversationRow"),
                "customer": ref("Customer"),
                "transcript": array(ref("Message")),
                "tickets": array(ref("Ticket")),
                "recordings": array(ref("Recording")),
                "timeline": array(ref("TimelineEntry"), description="Applied and stale events."),
            },
            ["conversation", "customer", "transcript", "tickets", "recordings", "timeline"],
        ),
    }


# --- tenant, teams, agents -------------------------------------------------------------------


def admin_schemas() -> dict[str, dict]:
    """The set-up's bodies as their services declare them, and the stored rows."""
    tenant, team, agent = TENANT_BODY.schema(), TEAM_BODY.schema(), AGENT_BODY.schema()
    return {
        "Tenant": obj({"id": string(), **tenant["properties"]}, ["id", *tenant["properties"]]),
        "TenantUpdate": tenant,
        "WeeklySchedule": BusinessHours.weekly_schedule(),
        "Team": obj({"name": string(), **team["properties"]}, ["name", *team["properties"]]),
        "TeamUpdate": team,
        "Teams": obj({"teams": array(ref("Team"))}, ["teams"]),
        "Agent": obj(
            {"id": string(), "presence": enum(PRESENCES), **agent["properties"]},
            ["id", "presence", *agent["properties"]],
        ),
        "AgentUpdate": agent,
        "Agents": obj({"agents": array(ref("Agent"))}, ["agents"]),
    }


# --- views -----------------------------------------------------------------------------------


def _filter_schema(kind: str) -> dict:
    """A condition on a field of one kind: the operators that fit it (else 422)."""
    fields = [name for name, field_kind in filters.FIELD_KINDS.items() if field_kind == kind]
    return obj(
        {
            "field": enum(fields),
            "op": enum(filters.OPERATORS[kind]),
            "value": {
                "description": "Per operator: none for is_empty/is_not_empty; a list for "
                "in/not_in and [low, high] for between; one of "
                f"{', '.join(filters.WITHIN)} for within; else one value of the field's type."
            },
        },
        ["field", "op"],
        title=f"A condition on a field of kind {kind}",
    )


def view_schemas() -> dict[str, dict]:
    kinds = dict.fromkeys(filters.FIELD_KINDS.values())
    fields = VIEW_BODY.schema()["properties"]
    row = conversation_row_schema()
    return {
        "Column": enum(rows.COLUMNS, description="A view column."),
        "Filter": {"oneOf": [_filter_schema(kind) for kind in kinds]},
        "View": obj(
            {"id": string(), "owner": string(description="The user who made it."), **fields},
            ["id", "owner", *fields],
        ),
        "ViewCreate": VIEW_BODY.schema(),
        "ViewUpdate": {
            **VIEW_BODY.partial().schema(),
            "description": "Only the fields given change.",
        },
        "ViewDefinition": {
            **VIEW_DEFINITION.schema(),
            "description": "A view's definition, given inline (a saved view's name, "
            "visibility and id may come along, and are not read).",
        },
        "Views": obj({"views": array(ref("View"))}, ["views"]),
        "ViewDeleted": obj({"deleted": string(description="The view's id.")}, ["deleted"]),
        "ViewRow": obj(
            row["properties"],
            ["id", "version"],
            description="A conversation row with the view's columns, plus id, version and "
            "the view's sort keys (shown or not).",
        ),
        "ViewPage": obj(
            {
                "rows": array(ref("ViewRow")),
                "cursor": nullable(
                    string(description="Pass as ?cursor= for the next page; null at the end.")
                ),
                "total": integer(0, description="Rows in the whole view."),
            },
            ["rows", "cursor", "total"],
        ),
    }


# --- errors, health ----------------------------------------------------------------------------

ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "BadRequest",
        "Malformed: the body is not JSON (or msgpack) or not the right shape; "
        "or a cursor this view did not give out.",
    ),
    401: ("Unauthorized", "No bearer token, or a bad or expired one."),
    403: ("Forbidden", "The token's role may not do this, or its tenant does not exist."),
    404: ("NotFound", "Not found (or not visible to this caller)."),
    409: ("Conflict", "A conflict: `taken`, `expired`, `invalid_transition`, a reused key."),
    413: ("TooLarge", "The body is too large, or has too many events."),
    422: ("InvalidField", "A field is invalid (invalid_field, invalid_view); `field` names it."),
    503: ("Unavailable", "A dependency (the database) is down; retry after Retry-After."),
}
ERROR_HEADERS: dict[int, dict] = {
    401: {"WWW-Authenticate": {"required": True, "schema": string()}},
    503: {"Retry-After": {"required": True, "schema": string(pattern=r"^\d+$")}},
}


def error_responses() -> dict[str, dict]:
    responses = {}
    for status, (name, description) in ERRORS.items():
        response: dict[str, Any] = {"description": description, "content": content(ref("Error"))}
        if status in ERROR_HEADERS:
            response["headers"] = ERROR_HEADERS[status]
        responses[name] = response
    return responses


def other_schemas() -> dict[str, dict]:
    return {
        "Error": obj(
            {
                "error": obj(
                    {
                        "code": string(
                            description="Machine-readable: malformed, unauthorized, forbidden, "
                            "not_found, too_large, invalid_field, unavailable, ..."
                        ),
                        "message": string(),
                        "field": string(description="For invalid_field: the field."),
                    },
                    ["code", "message"],
                    closed=False,
                )
            },
            ["error"],
        ),
        "Health": obj({"status": enum(["ok"])}, ["status"]),
        "Readiness": obj(
            {
                "status": enum(["ok", "unavailable"]),
                "database": string(description='"ok", or "down: <reason>"'),
                "bus": enum(["ok", "down"], description="Reported; does not fail readiness."),
            },
            ["status", "database", "bus"],
        ),
    }


# --- operations ------------------------------------------------------------------------------


def content(schema: dict, msgpack: bool = True) -> dict:
    """JSON, and msgpack with the same keys (Content-Type / Accept: application/msgpack)."""
    media = {JSON: {"schema": schema}}
    if msgpack:
        media[MSGPACK] = {"schema": schema}
    return media


def request_body(schema: dict, description: str) -> dict:
    return {"required": True, "description": description, "content": content(schema)}


def path_parameter(name: str, description: str) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": NAME.schema(),
    }


def query_parameter(name: str, description: str, schema: dict) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def operation(
    operation_id: str,
    summary: str,
    ok: tuple[int, str, dict],
    errors: tuple[int, ...] = (),
    roles: str | None = None,
    body: dict | None = None,
    parameters: list[dict] | None = None,
    public: bool = False,
    tag: str = "api",
    more: dict[int, dict] | None = None,
) -> dict:
    status, description, response = ok
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": {str(status): {"description": description, **response}},
    }
    if roles:
        op["description"] = f"Roles: {roles}."
    if public:
        op["security"] = []
    else:
        errors = (401, 403, *errors, 503)
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    for code in sorted(set(errors)):
        op["responses"][str(code)] = {"$ref": f"#/components/responses/{ERRORS[code][0]}"}
    for code, response in (more or {}).items():
        op["responses"][str(code)] = response
    return op


def returns(schema: dict, msgpack: bool = True) -> dict:
    return {"content": content(schema, msgpack)}


def returns_text() -> dict:
    return {"content": {"text/plain": {"schema": string()}}}


def paths() -> dict[str, dict]:
    body_errors = (400, 413)
    return {
        "/healthz": {
            "get": operation(
                "healthz",
                "Liveness",
                (200, "Alive", returns(ref("Health"), False)),
                public=True,
                tag="health",
            )
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "Readiness: the database answers (the bus is reported, not required)",
                (200, "Ready", returns(ref("Readiness"), False)),
                public=True,
                tag="health",
                # Not the error format: the same body as when ready.
                more={
                    503: {
                        "description": "Not ready: the database is unreachable",
                        "headers": ERROR_HEADERS[503],
                        "content": content(ref("Readiness"), msgpack=False),
                    }
                },
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics",
                (200, "The text exposition format", returns_text()),
                public=True,
                tag="health",
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "The OpenAPI document of this API",
                (200, "OpenAPI", returns({"type": "object"}, False)),
                public=True,
                tag="health",
            )
        },
        "/api/v1/events": {
            "post": operation(
                "postEvents",
                "Post one event, or a batch",
                (
                    200,
                    "One result per event, in order (a bad event is `rejected`, not an error)",
                    returns(ref("EventResults")),
                ),
                body_errors,
                roles="service, admin",
                body=request_body(
                    {"anyOf": [ref("Event"), ref("EventBatch")]},
                    f'One event, or {{"events": [...]}} (at most {MAX_EVENTS_PER_REQUEST}).',
                ),
            )
        },
        "/api/v1/conversations/{conversation_id}": {
            "get": operation(
                "getConversation",
                "A conversation's row and everything its detail page shows",
                (200, "The conversation", returns(ref("ConversationDetail"))),
                (404,),
                roles="supervisor, admin, agent (its own: its agent, or offered to it now)",
                parameters=[path_parameter("conversation_id", "The conversation id.")],
            )
        },
        "/api/v1/tenant": {
            "get": operation(
                "getTenant",
                "The tenant's settings",
                (200, "The tenant", returns(ref("Tenant"))),
                roles="admin, supervisor",
                tag="admin",
            ),
            "put": operation(
                "putTenant",
                "Change the tenant's settings",
                (200, "The tenant as stored", returns(ref("Tenant"))),
                (*body_errors, 422),
                roles="admin",
                body=request_body(ref("TenantUpdate"), "The fields to change."),
                tag="admin",
            ),
        },
        "/api/v1/teams": {
            "get": operation(
                "listTeams",
                "The tenant's teams",
                (200, "Teams by name", returns(ref("Teams"))),
                roles="admin, supervisor",
                tag="admin",
            )
        },
        "/api/v1/teams/{name}": {
            "put": operation(
                "putTeam",
                "Create or change a team",
                (200, "The team as stored", returns(ref("Team"))),
                (*body_errors, 422),
                roles="admin",
                body=request_body(ref("TeamUpdate"), "The fields to set."),
                parameters=[path_parameter("name", "The team's name.")],
                tag="admin",
            )
        },
        "/api/v1/agents": {
            "get": operation(
                "listAgents",
                "The tenant's agents",
                (200, "Agents by id", returns(ref("Agents"))),
                roles="admin, supervisor",
                tag="admin",
            )
        },
        "/api/v1/agents/{agent_id}": {
            "put": operation(
                "putAgent",
                "Create or change an agent",
                (200, "The agent as stored", returns(ref("Agent"))),
                (*body_errors, 422),
                roles="admin",
                body=request_body(ref("AgentUpdate"), "The fields to set."),
                parameters=[path_parameter("agent_id", "The agent's id (its user id).")],
                tag="admin",
            )
        },
        **view_paths(),
    }


def view_paths() -> dict[str, dict]:
    readers, writers = "supervisor, admin, agent (shared views)", "supervisor, admin"
    view_id = [path_parameter("view_id", "The view's id.")]
    changed = "the owner or an admin"
    return {
        "/api/v1/views": {
            "get": operation(
                "listViews",
                "The views the caller may read: its own and the tenant's shared ones",
                (200, "Views by name", returns(ref("Views"))),
                roles=readers,
                tag="views",
            ),
            "post": operation(
                "createView",
                "Save a view",
                (201, "The stored view, id included", returns(ref("View"))),
                (400, 413, 422),
                roles=writers,
                body=request_body(ref("ViewCreate"), "The view's definition."),
                tag="views",
            ),
        },
        "/api/v1/views/{view_id}": {
            "get": operation(
                "getView",
                "A view's definition",
                (200, "The view", returns(ref("View"))),
                (404,),
                roles=readers,
                parameters=view_id,
                tag="views",
            ),
            "patch": operation(
                "updateView",
                "Change a view",
                (200, "The view as stored", returns(ref("View"))),
                (400, 404, 413, 422),
                roles=f"{writers}; {changed}",
                body=request_body(ref("ViewUpdate"), "The fields to change."),
                parameters=view_id,
                tag="views",
            ),
            "delete": operation(
                "deleteView",
                "Delete a view",
                (200, "Deleted", returns(ref("ViewDeleted"))),
                (404,),
                roles=f"{writers}; {changed}",
                parameters=view_id,
                tag="views",
            ),
        },
        "/api/v1/views/{view_id}/rows": {
            "get": operation(
                "viewRows",
                "One page of a view: the same rows and order as a websocket snapshot",
                (200, "A page", returns(ref("ViewPage"))),
                (400, 404, 422),
                roles=readers + " (an agent sees only its own conversations)",
                parameters=[
                    *view_id,
                    query_parameter("limit", "Page size.", PAGE_LIMIT.schema()),
                    query_parameter(
                        "cursor", "The `cursor` of the previous page (400 if not one).", string()
                    ),
                ],
                tag="views",
            ),
        },
    }
