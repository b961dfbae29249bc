"""The websocket protocol of `/ws`, declared once: every frame a client sends and the
server sends, with its keys as field objects (server/core/fields.py); the
subprotocols; the close codes. The OpenAPI document publishes them as JSON Schema
(components `ClientFrame.<type>` and `ServerFrame.<type>`, and `x-websocket`) and
docs/api.md is written from them.

A client frame is read with its schema, as a request body is:

    keys = CLIENT_FRAMES["fetch"].read(frame)  # {"ref": "2", "sub": "s7", "limit": 100}

A frame that carries an HTTP request's body (`initiate`, `send_message`, `transfer`,
`presence`) names it by its component: its other keys are that body, answered under
`body` for the service that reads it (`INITIATE_BODY.read(keys["body"])`).
"""

from __future__ import annotations

from typing import Any

from server.core.fields import (
    Choice,
    Field,
    Instant,
    Integer,
    List,
    Object,
    Ref,
    String,
    Text,
    Value,
)
from server.wire.frames import JSON, MSGPACK

PATH = "/ws"
SUBPROTOCOLS = {"switchboard.v1.json": JSON, "switchboard.v1.msgpack": MSGPACK}
SUBPROTOCOL_FRAMES = {
    "switchboard.v1.json": "text frames, one JSON object each (also when none is asked for)",
    "switchboard.v1.msgpack": "binary frames, one msgpack map each",
}
MAX_FRAME_BYTES = 64 * 1024  # a frame larger closes the socket (1009)
PING_INTERVAL_S = 20.0  # the server pings a socket this long after the last ping
PING_TIMEOUT_S = 20.0  # and closes it (1011) when the pong does not come within this

# The close codes the server sends, by what they mean.
CLOSE_INVALID_TEXT = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_RESTARTING = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_CODES = {
    CLOSE_INVALID_TEXT: "A text frame that is not valid UTF-8.",
    CLOSE_POLICY: "Policy violation: the client went on sending frames while they were "
    "refused `rate_limited`.",
    CLOSE_TOO_BIG: f"A frame larger than {MAX_FRAME_BYTES // 1024} KiB.",
    CLOSE_INTERNAL_ERROR: f"No pong within {PING_TIMEOUT_S:g} s of the server's ping, or an "
    "unexpected error in the server's protocol. An error in handling one frame is an "
    "`error` frame with code `internal` instead, and the socket stays open.",
    CLOSE_RESTARTING: "The server is restarting: connect again.",
    CLOSE_TRY_AGAIN_LATER: "The client cannot keep up: its subscriptions ended with `resync` "
    "and it fell behind again before it caught up. Connect again, later.",
    CLOSE_TOKEN_EXPIRED: "The token expired while the socket was open: connect again with a "
    "new one.",
}

MAX_LIMIT = 1000  # rows in one snapshot or page
DEFAULT_LIMIT = 100
PAGE_LIMIT = Integer(1, MAX_LIMIT, default=DEFAULT_LIMIT, description="Rows in the page.")


class Frame(Object):
    """A websocket frame: its `type`, its keys, who may send it (`roles`, for a client
    frame) and what answers it. `body`: the component of the HTTP request body whose
    keys the frame carries besides its own; `result`: the component whose keys an `ok`
    answer carries besides `ref`."""

    def __init__(
        self,
        type_: str,
        about: str,
        *,
        roles: str = "",
        answer: str = "",
        result: str = "",
        body: str = "",
        required: tuple[str, ...] = (),
        **keys: Field,
    ):
        super().__init__(required=required, closed=False, defaults=True, description=about, **keys)
        self.type = type_
        self.roles = roles
        self.answer = answer
        self.result = result
        self.body = body

    def read(self, value: Any, where: str = "") -> dict[str, Any]:
        """The frame's own keys, checked (defaults filled in), and under `body` its
        other keys when it carries a request body."""
        keys = super().read(value, where)
        if self.body:
            keys["body"] = {
                name: item
                for name, item in value.items()
                if name != "type" and name not in self.fields
            }
        return keys

    def schema(self, body: dict | None = None) -> dict:
        """As JSON Schema; `body`, the schema of the body it carries (its keys become the
        frame's, and no other key is taken)."""
        schema = super().schema()
        schema["properties"] = {"type": {"const": self.type}, **schema["properties"]}
        schema["required"] = ["type", *self.required]
        if body is not None:
            schema["properties"].update(body.get("properties", {}))
            schema["required"] += [name for name in body.get("required", ())]
            if body.get("additionalProperties") is False:
                schema["additionalProperties"] = False
        return schema


# --- keys that recur -----------------------------------------------------------------------

REF = Value({"type": ["string", "number", "null"]}, description="Echoed by the answer.")
SUB = String(description="The subscription's id, from its snapshot.")
CONVERSATION_ID = Text(200, description="The conversation's id.")
OFFER_ID = Text(200, description="The offer's id, from its popup.")
TOTAL = Integer(0, None, description="Rows in the whole view.")
ROWS = List(
    Ref("ViewRow"),
    description="In the view's order; each carries `id`, `version` and the view's sort "
    "keys, shown or not.",
)
NAMES = List(String(), nullable=True, description="Only these (default: all).")


# --- client to server ----------------------------------------------------------------------

CLIENT_FRAMES: dict[str, Frame] = {
    frame.type: frame
    for frame in (
        Frame(
            "subscribe",
            "Watch a view: its first `limit` rows, kept exact by deltas.",
            roles="supervisor, admin, agent (its own conversations only)",
            answer="snapshot",
            ref=REF,
            view=Value(
                {"oneOf": [String().schema(), Ref("ViewDefinition").schema()]},
                description="A saved view's id, or a definition given inline.",
            ),
            limit=Integer(
                0,
                MAX_LIMIT,
                default=DEFAULT_LIMIT,
                description="The window's size; 0 subscribes to the count alone (deltas "
                "then carry only `total`).",
            ),
            columns=Value(
                List(Ref("Column")),
                description="With a saved view's id only: extra columns the page needs, "
                "shown after the view's own.",
            ),
            required=("view",),
        ),
        Frame(
            "unsubscribe",
            "End a subscription.",
            answer="ok when the frame has a `ref`",
            ref=REF,
            sub=SUB,
            required=("sub",),
        ),
        Frame(
            "fetch",
            "The next rows after the subscription's window, which from then on belong to it.",
            answer="page",
            ref=REF,
            sub=SUB,
            limit=PAGE_LIMIT,
            required=("sub",),
        ),
        Frame(
            "subscribe_popups",
            "Receive popups (implied on connect for agents).",
            roles="agent",
            answer="ok, then popup and popup_closed frames",
            ref=REF,
        ),
        Frame(
            "accept",
            "Accept an offer.",
            roles="agent (the offered one)",
            answer="ok or error (taken, expired: with the current `conversation`)",
            result="ConversationAnswer",
            ref=REF,
            offer_id=OFFER_ID,
            required=("offer_id",),
        ),
        Frame(
            "reject",
            "Reject an offer: it goes to the next agent.",
            roles="agent (the offered one)",
            answer="ok or error",
            result="ConversationAnswer",
            ref=REF,
            offer_id=OFFER_ID,
            required=("offer_id",),
        ),
        Frame(
            "subscribe_wallboard",
            "Receive the wallboard's metrics now and whenever they change.",
            roles="wallboard, supervisor, admin",
            answer="wallboard (with the `ref`), then wallboard frames",
            ref=REF,
            teams=NAMES,
            channels=NAMES,
        ),
        Frame(
            "presence",
            "Set the agent's presence, as PUT /api/v1/agents/me/presence.",
            roles="agent",
            answer="ok or error",
            result="Presence",
            body="PresenceUpdate",
            ref=REF,
        ),
        Frame(
            "initiate",
            "Start a call or a message, as POST /api/v1/conversations/initiate.",
            roles="agent, supervisor, admin (only a supervisor names another agent)",
            answer="ok or error (provider_failed: with `conversation_id`)",
            result="Initiated",
            body="InitiateRequest",
            ref=REF,
            idempotency_key=Text(200, description="As the HTTP header Idempotency-Key."),
        ),
        Frame(
            "send_message",
            "Reply on a text channel, as POST /api/v1/conversations/{id}/messages.",
            roles="agent (its own conversation)",
            answer="ok or error (provider_failed: with `message_id`)",
            result="MessageSent",
            body="MessageRequest",
            ref=REF,
            conversation_id=CONVERSATION_ID,
            required=("conversation_id",),
        ),
        Frame(
            "hangup",
            "End the call or chat, as POST /api/v1/conversations/{id}/hangup.",
            roles="agent (its own conversation)",
            answer="ok or error",
            result="ActionResult",
            ref=REF,
            conversation_id=CONVERSATION_ID,
            required=("conversation_id",),
        ),
        Frame(
            "transfer",
            "Transfer to a team or an agent, as POST /api/v1/conversations/{id}/transfer.",
            roles="agent (its own conversation), supervisor, admin",
            answer="ok or error",
            result="ConversationAnswer",
            body="Transfer",
            ref=REF,
            conversation_id=CONVERSATION_ID,
            required=("conversation_id",),
        ),
        Frame("ping", "Is the socket alive?", answer="pong", ref=REF),
    )
}


# --- server to client ----------------------------------------------------------------------

SERVER_FRAMES: dict[str, Frame] = {
    frame.type: frame
    for frame in (
        Frame(
            "snapshot",
            "The first `limit` rows of the view, in its order.",
            ref=REF,
            sub=SUB,
            view=Value(description="The `view` of the subscribe, as sent."),
            columns=List(Ref("Column"), description="The view's columns, `id` first."),
            rows=ROWS,
            total=TOTAL,
            seq=Integer(0, 0),
            required=("sub", "view", "columns", "rows", "total", "seq"),
        ),
        Frame(
            "delta",
            "What changed in the window: rows that entered it or changed, ids that left.",
            sub=SUB,
            seq=Integer(1, None, description="One more than the subscription's last delta."),
            upsert=List(
                Ref("ViewRow"),
                description="A row new to the window comes whole; a changed one with `id`, "
                "`version`, the sort keys and the changed columns.",
            ),
            remove=List(String(), description="Ids of rows that left the window."),
            total=TOTAL,
            required=("sub", "seq", "upsert", "remove", "total"),
        ),
        Frame(
            "page",
            "The rows after the window, which now belong to it.",
            ref=REF,
            sub=SUB,
            seq=Integer(0, None, description="Unchanged: a page is not a delta."),
            rows=ROWS,
            required=("sub", "seq", "rows"),
        ),
        Frame(
            "popup",
            "An offer to this agent, with what it needs to decide.",
            offer_id=String(),
            expires_at=Instant(),
            conversation=Ref("ConversationRow"),
            customer=Ref("Customer"),
            history=List(
                Ref("ConversationRow"), description="The contact's latest other conversations."
            ),
            tickets=List(
                Object(
                    ticket_id=String(),
                    conversation_id=String(),
                    system=String(nullable=True),
                    url=String(nullable=True),
                    linked_at=Instant(),
                    required=("ticket_id", "conversation_id", "system", "url", "linked_at"),
                ),
                description="Tickets of this conversation and of those in `history`.",
            ),
            required=("offer_id", "expires_at", "conversation", "customer", "history", "tickets"),
        ),
        Frame(
            "popup_closed",
            "The offer is over.",
            offer_id=String(),
            reason=Choice(("accepted", "rejected", "expired", "taken", "cancelled")),
            required=("offer_id", "reason"),
        ),
        Frame(
            "wallboard",
            "The wallboard's metrics, as GET /api/v1/wallboard answers them.",
            ref=REF,
            seq=Integer(1, None, description="Goes up by one per wallboard frame."),
            at=Instant(),
            metrics=Ref("WallboardBreakdown"),
            required=("seq", "at", "metrics"),
        ),
        Frame(
            "resync",
            "The subscription is over and continuity cannot be guaranteed: subscribe again.",
            sub=SUB,
            reason=String(
                description="client_too_slow: the client fell behind; view_changed: the "
                "saved view it follows was changed (subscribing again gives its new "
                "definition); server_error: the server could not make the subscription's "
                "rows (logged)."
            ),
            required=("sub", "reason"),
        ),
        Frame(
            "unsubscribed",
            "The subscription by a saved view's id is over: the view was deleted, or this "
            "user may no longer see it (it turned private).",
            sub=SUB,
            reason=String(description="view_deleted, forbidden."),
            required=("sub", "reason"),
        ),
        Frame(
            "ok",
            "The frame with this `ref` was done; the result's keys come along (each client "
            "frame says which).",
            ref=REF,
        ),
        Frame("pong", "The answer to ping.", ref=REF),
        Frame(
            "error",
            "The frame with this `ref` was refused (or could not be read: no `ref`); the "
            "socket stays open.",
            ref=REF,
            code=String(description="An error code (the table of error codes)."),
            message=String(),
            conversation=Ref(
                "ConversationRow",
                description="For taken, expired, invalid_transition: the conversation now.",
            ),
            required=("code", "message"),
        ),
    )
}
