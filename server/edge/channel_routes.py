"""The channels' part of the app (issue 8), attached by server/app.py in one place:
its services on the Switchboard container and its routes."""

from __future__ import annotations

import functools

from starlette.routing import Route

from server.edge.api import actions as api_actions
from server.edge.api import webhooks as api_webhooks
from server.providers import recordings, webchat
from server.providers import registry as providers
from server.providers.inbound import KeyedLocks
from server.providers.sandbox import Sandboxes


def attach(sb) -> None:
    sb.providers = providers.Providers(sb)
    sb.sandboxes = Sandboxes(sb)
    sb.recordings = recordings.FileRecordingStore(sb.settings.data_dir / "recordings")
    sb.inbound_locks = KeyedLocks()
    sb.webchat = webchat.WebChat(sb)
    sb.routing.actions.after_accept = functools.partial(api_actions.bridge_after_accept, sb)


async def detach(sb) -> None:
    await sb.webchat.stop()
    await sb.sandboxes.stop()
    await sb.providers.close()


CONVERSATION = "/api/v1/conversations/{conversation_id}"
ROUTES = [
    Route("/api/v1/conversations/initiate", api_actions.post_initiate, methods=["POST"]),
    Route(f"{CONVERSATION}/messages", api_actions.post_message, methods=["POST"]),
    Route(f"{CONVERSATION}/hangup", api_actions.post_hangup, methods=["POST"]),
    Route(f"{CONVERSATION}/recordings/{{recording_id}}", recordings.get_recording),
    Route(
        f"{CONVERSATION}/recordings/{{recording_id}}/link",
        recordings.post_recording_link,
        methods=["POST"],
    ),
    Route("/api/v1/providers", providers.list_providers),
    Route("/api/v1/providers/{provider}", providers.put_provider, methods=["PUT"]),
    Route("/webhooks/{provider}/{tenant}", api_webhooks.webhook, methods=["GET", "POST"]),
]
