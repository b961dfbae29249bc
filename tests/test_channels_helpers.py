"""Helpers for the channel adapter tests (no tests here): a local HTTP server that
plays a provider's REST API, webhook requests, and a run of events through the state
machine so a test checks that what an adapter emits is what ingest applies."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from channels.base import ChannelEvent, WebhookRequest
from state_machine import Conversation, apply, parse_event

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
WEBHOOK = "https://switchboard.example.com/webhooks/{provider}/acme"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def basic_auth(self) -> tuple[str, str]:
        scheme, _, encoded = self.headers.get("authorization", "").partition(" ")
        assert scheme == "Basic", self.headers
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        return user, password


@dataclass
class Route:
    method: str
    path: re.Pattern
    status: int
    body: bytes
    content_type: str = "application/json"
    hold: threading.Event | None = None  # answer only once set: a provider that hangs


@dataclass
class FakeProviderAPI:
    """A provider's documented API on 127.0.0.1: answers from a route table and keeps
    every request it was sent."""

    base_url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)

    def route(self, method: str, path: str, status: int, body: bytes | str, **kw: Any) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.routes.append(Route(method, re.compile(path), status, data, **kw))

    def handle(self, recorded: Recorded) -> Route | None:
        self.requests.append(recorded)
        for route in self.routes:
            if route.method == recorded.method and route.path.fullmatch(recorded.path):
                return route
        return None


@pytest.fixture
def provider_api() -> Iterator[FakeProviderAPI]:
    api = FakeProviderAPI()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            recorded = Recorded(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length),
            )
            route = api.handle(recorded)
            if route is None:
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                body = b'{"message": "not found"}'
            else:
                if route.hold is not None:
                    route.hold.wait(10)
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                body = route.body
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    api.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        for route in api.routes:
            if route.hold is not None:
                route.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The client adapters send with; closed after the test."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


def form_request(
    url: str, params: list[tuple[str, str]] | dict[str, str], headers: dict[str, str]
) -> WebhookRequest:
    pairs = list(params.items()) if isinstance(params, dict) else params
    return WebhookRequest(
        "POST",
        url,
        {"Content-Type": "application/x-www-form-urlencoded", **headers},
        urlencode(pairs).encode(),
    )


def run_events(events: list[ChannelEvent], conversation: Conversation | None = None):
    """Apply events through the state machine as ingest does (parse, then apply);
    return the conversation and each event's outcome."""
    outcomes = []
    for event in events:
        parsed = parse_event(event.envelope("conv-1"))
        try:
            conversation = apply(conversation, parsed).conversation
        except Exception as exc:
            outcomes.append(type(exc).__name__)
        else:
            outcomes.append("applied")
    return conversation, outcomes


def initiated(channel: str = "call", contact: str = "+15550100001") -> ChannelEvent:
    return ChannelEvent(
        "init-1",
        "conversation.initiated",
        NOW,
        {"channel": channel, "contact": contact, "agent_id": "a1"},
    )
