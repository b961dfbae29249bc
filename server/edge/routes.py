"""Every HTTP and websocket route of the server, in one list (the OpenAPI document
describes each HTTP one; a test holds the two to each other)."""

from __future__ import annotations

from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from server.edge import pages
from server.edge.api import (
    actions,
    admin,
    conversations,
    events,
    health,
    providers,
    recordings,
    routing,
    tickets,
    views,
    webhooks,
)
from server.edge.ws import connection, webchat

CONVERSATION = "/api/v1/conversations/{conversation_id}"
RECORDING = f"{CONVERSATION}/recordings/{{recording_id}}"
POST, PUT, PATCH, DELETE = ["POST"], ["PUT"], ["PATCH"], ["DELETE"]

ROUTES = [
    # operations
    Route("/healthz", health.healthz),
    Route("/readyz", health.readyz),
    Route("/metrics", health.metrics),
    Route("/openapi.json", health.openapi),
    # events from integrations, and conversations
    Route("/api/v1/events", events.post_events, methods=POST),
    Route("/api/v1/conversations/initiate", actions.post_initiate, methods=POST),
    Route(CONVERSATION, conversations.get_conversation),
    Route(f"{CONVERSATION}/messages", actions.post_message, methods=POST),
    Route(f"{CONVERSATION}/hangup", actions.post_hangup, methods=POST),
    Route(f"{CONVERSATION}/wrapup", actions.post_wrapup, methods=POST),
    Route(f"{CONVERSATION}/transfer", routing.transfer, methods=POST),
    Route(RECORDING, recordings.get_recording),
    Route(f"{RECORDING}/link", recordings.post_recording_link, methods=POST),
    # set-up
    Route("/api/v1/tenant", admin.get_tenant, methods=["GET"]),
    Route("/api/v1/tenant", admin.put_tenant, methods=PUT),
    Route("/api/v1/teams", admin.list_teams),
    Route("/api/v1/teams/{name}", admin.put_team, methods=PUT),
    Route("/api/v1/agents", admin.list_agents),
    Route("/api/v1/agents/{agent_id}", admin.put_agent, methods=PUT),
    Route("/api/v1/providers", providers.list_providers),
    Route("/api/v1/providers/{provider}", providers.put_provider, methods=PUT),
    # routing
    Route("/api/v1/agents/me/presence", routing.put_presence, methods=PUT),
    Route("/api/v1/offers/{offer_id}/accept", routing.accept_offer, methods=POST),
    Route("/api/v1/offers/{offer_id}/reject", routing.reject_offer, methods=POST),
    Route("/api/v1/wallboard", routing.get_wallboard),
    # views
    Route("/api/v1/views", views.list_views, methods=["GET"]),
    Route("/api/v1/views", views.create_view, methods=POST),
    Route("/api/v1/views/{view_id}", views.get_view, methods=["GET"]),
    Route("/api/v1/views/{view_id}", views.update_view, methods=PATCH),
    Route("/api/v1/views/{view_id}", views.delete_view, methods=DELETE),
    Route("/api/v1/views/{view_id}/rows", views.view_rows, methods=["GET"]),
    # what the pages ask besides the API
    Route("/api/v1/me", pages.me),
    Route("/api/v1/view-schema", pages.view_schema),
    Route("/api/v1/ws-tickets", tickets.post_ws_ticket, methods=POST),
    # the websockets: live views, popups and wallboards; a website visitor's chat
    WebSocketRoute("/ws", connection.ENDPOINT, name="ws"),
    WebSocketRoute("/webchat/{tenant}", webchat.ENDPOINT, name="webchat"),
    # providers' callbacks
    Route("/webhooks/{provider}/{tenant}", webhooks.webhook, methods=["GET", "POST"]),
    # the pages
    Route("/", pages.page("index.html")),
    Route("/views", pages.page("views.html")),
    Route("/views/{view_id}", pages.page("view.html")),
    Route("/conversations/{conversation_id}", pages.page("conversation.html")),
    Route("/agent", pages.page("agent.html")),
    Route("/wallboard", pages.page("wallboard.html")),
    Route("/widget.js", pages.widget_js),
    Route("/chat-demo", pages.chat_demo),
    Mount("/static", StaticFiles(directory=pages.STATIC), name="static"),
]
