"""The channels' part of the OpenAPI document: providers, webhooks, initiate, replies,
hangup and recordings (their bodies as server/providers declares them).
server/openapi/document.py merges it in."""

from __future__ import annotations

from server.openapi.core import (
    ERROR_HEADERS,
    INSTANT,
    array,
    content,
    enum,
    obj,
    operation,
    path_parameter,
    query_parameter,
    ref,
    request_body,
    returns,
    string,
)
from server.providers import initiate, recording_links
from server.providers import registry as providers
from server.providers.actions import MESSAGE_BODY
from state_machine import Status

RETRY_AFTER = {"Retry-After": {"required": True, "schema": string(pattern=r"^\d+$")}}


def schemas() -> dict[str, dict]:
    body = providers.PROVIDER_BODY
    provider_fields = {
        "channels": array(enum(providers.CHANNELS)),
        "numbers": array(ref("ProviderNumber")),
    }
    return {
        "ProviderNumber": body.fields["numbers"].item.schema(),
        "Provider": obj(
            {
                "provider": enum(sorted(providers.CAPABILITIES)),
                **provider_fields,
                "credentials_set": {"type": "boolean"},
                "webhook_url": {
                    "type": ["string", "null"],
                    "description": "The URL to give the provider: under SWITCHBOARD_PUBLIC_URL; "
                    "null while that is unset.",
                },
            },
            ["provider", "channels", "numbers", "credentials_set", "webhook_url"],
        ),
        "Providers": obj({"providers": array(ref("Provider"))}, ["providers"]),
        "ProviderUpdate": body.schema(),
        "InitiateRequest": initiate.INITIATE_BODY.schema(),
        "Initiated": obj(
            {"conversation_id": string(), "status": enum(Status)}, ["conversation_id", "status"]
        ),
        "MessageRequest": MESSAGE_BODY.schema(),
        "MessageSent": obj(
            {"message_id": string(), "conversation": ref("ConversationRow")},
            ["message_id", "conversation"],
        ),
        "RecordingLink": obj(
            {
                "url": string(
                    description="A path on this server (no scheme or host): the recording "
                    f"with `?{recording_links.QUERY_PARAMETER}=` a token for it alone. Use it "
                    "as an <audio src>: no Authorization header is needed."
                ),
                "expires_at": INSTANT,
            },
            ["url", "expires_at"],
        ),
        "ActionResult": obj(
            {
                "conversation": ref("ConversationRow"),
                "warning": string(description="The provider could not end the call."),
            },
            ["conversation"],
        ),
    }


def _error(description: str, headers: dict | None = None) -> dict:
    response = {"description": description, "content": content(ref("Error"))}
    if headers:
        response["headers"] = headers
    return response


PROVIDER_FAILED = _error(
    "provider_failed: the provider refused or did not answer; `conversation_id` (and "
    "`message_id`) name what was recorded"
)
CONFLICT = _error(
    "invalid_transition (with the current `conversation`), idempotency_key_reused, in_progress"
)
NOT_NOW = _error(
    "invalid_transition: not in the conversation's status (with the current `conversation`)"
)
NO_MESSAGE = _error(
    "invalid_transition: not in the conversation's status (with the current `conversation`);"
    " no_provider: the conversation's channel has no provider configured"
)


def paths() -> dict[str, dict]:
    conversation = path_parameter("conversation_id", "The conversation id.")
    body_errors = (400, 413)
    audio = {"schema": string(format="binary")}
    recording = path_parameter("recording_id", "The recording id.")
    return {
        "/api/v1/providers": {
            "get": operation(
                "listProviders",
                "The tenant's providers, without credentials",
                (200, "Providers by name", returns(ref("Providers"))),
                roles="admin",
                tag="admin",
            )
        },
        "/api/v1/providers/{provider}": {
            "put": operation(
                "putProvider",
                "Configure a provider: channels, numbers, write-only credentials",
                (200, "The provider as stored, without credentials", returns(ref("Provider"))),
                (*body_errors, 404, 422),
                roles="admin",
                body=request_body(ref("ProviderUpdate"), "The fields to set."),
                parameters=[
                    {
                        **path_parameter("provider", "The provider's name."),
                        "schema": enum(sorted(providers.CAPABILITIES)),
                    }
                ],
                tag="admin",
            )
        },
        "/api/v1/conversations/initiate": {
            "post": operation(
                "initiate",
                "Click-to-initiate a call or message",
                (202, "Started", returns(ref("Initiated"))),
                (*body_errors, 422),
                roles="agent, supervisor, admin (only a supervisor names another agent)",
                body=request_body(ref("InitiateRequest"), "What to start."),
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "The same key and body give the same answer, once.",
                        "schema": string(minLength=1, maxLength=initiate.MAX_KEY),
                    }
                ],
                more={
                    409: CONFLICT,
                    429: _error("rate_limited: too many per user; retry later", RETRY_AFTER),
                    502: PROVIDER_FAILED,
                },
            )
        },
        "/api/v1/conversations/{conversation_id}/messages": {
            "post": operation(
                "sendMessage",
                "Reply on a text channel, through its provider",
                (202, "Stored and sent", returns(ref("MessageSent"))),
                (*body_errors, 404, 422),
                roles="the conversation's agent, whatever its role (agent, supervisor, admin)",
                body=request_body(ref("MessageRequest"), "The reply."),
                parameters=[conversation],
                more={409: NO_MESSAGE, 502: PROVIDER_FAILED},
            )
        },
        "/api/v1/conversations/{conversation_id}/hangup": {
            "post": operation(
                "hangup",
                "End the call or chat",
                (200, "Ended", returns(ref("ActionResult"))),
                (404,),
                roles="the conversation's agent, whatever its role (agent, supervisor, admin)",
                parameters=[conversation],
                more={409: NOT_NOW},
            )
        },
        "/api/v1/conversations/{conversation_id}/recordings/{recording_id}": {
            "get": {
                **operation(
                    "getRecording",
                    "A recording's audio, with HTTP Range",
                    (
                        200,
                        "The whole recording",
                        {"content": {"audio/wav": audio, "audio/*": audio}},
                    ),
                    (400, 404),
                    roles="supervisor, admin, agent (its own conversation); or a recording "
                    f"link's `{recording_links.QUERY_PARAMETER}` token instead of the header, "
                    "as the user who asked for the link",
                    parameters=[
                        conversation,
                        recording,
                        query_parameter(
                            recording_links.QUERY_PARAMETER,
                            "A recording link's token (createRecordingLink), for this "
                            "recording only and until it expires; then the Authorization "
                            "header is not read. 401 when bad or expired, 403 for a link to "
                            "another recording.",
                            string(minLength=1),
                        ),
                    ],
                    more={
                        206: {
                            "description": "The range asked for (Content-Range)",
                            "content": {"audio/wav": audio, "audio/*": audio},
                        },
                        416: _error(
                            "range_not_satisfiable",
                            {"Content-Range": {"required": True, "schema": string()}},
                        ),
                    },
                ),
                "security": [{"bearer": []}, {"recordingLink": []}],
            }
        },
        "/api/v1/conversations/{conversation_id}/recordings/{recording_id}/link": {
            "post": operation(
                "createRecordingLink",
                "A short-lived link to play one recording without the Authorization header "
                "(for an <audio src>, which streams and seeks with Range)",
                (200, "The link, minted for the caller", returns(ref("RecordingLink"))),
                (404,),
                roles="supervisor, admin, agent (its own conversation)",
                parameters=[conversation, recording],
            )
        },
        "/webhooks/{provider}/{tenant}": {
            method: operation(
                f"webhook{method.title()}",
                "A provider's callback (signed by the provider, no token)",
                (
                    200,
                    "The provider's own answer (call-control markup, a challenge, an ack)",
                    {
                        "content": {
                            "application/xml": {"schema": string()},
                            "text/plain": {"schema": string()},
                        }
                    },
                ),
                (400, 403, 404, 413),
                public=True,
                tag="webhooks",
                parameters=[
                    {
                        **path_parameter("provider", "The provider's name."),
                        "schema": enum([p for p in providers.CAPABILITIES if p != "webchat"]),
                    },
                    path_parameter("tenant", "The tenant's id."),
                ],
                more={
                    401: _error("missing_signature"),
                    502: _error("A recording could not be fetched from the provider; retried"),
                    503: _error("The database is down; the provider retries", ERROR_HEADERS[503]),
                },
            )
            for method in ("get", "post")
        },
        # Web chat (docs/webchat.md): the widget and its demo page, public. The chat
        # itself is the websocket WS /webchat/{tenant}, not an OpenAPI operation.
        "/widget.js": {
            "get": operation(
                "widgetScript",
                "The embeddable chat widget (plain JavaScript, no token)",
                (200, "The script", {"content": {"text/javascript": {"schema": string()}}}),
                public=True,
                tag="webchat",
            )
        },
        "/chat-demo": {
            "get": operation(
                "chatDemoPage",
                "A shop's page that embeds the chat widget (the demo tenant by default)",
                (200, "The page", {"content": {"text/html": {"schema": string()}}}),
                public=True,
                tag="webchat",
            )
        },
    }
