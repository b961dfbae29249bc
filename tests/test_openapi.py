"""The OpenAPI document: valid, in step with server/edge/routes.py ROUTES, and true of the app.

The fuzzing tests let schemathesis generate requests for every operation (positive and
negative data) and send them to the app in process on each backend, with a real bearer
token, asserting no 500 and no response that the document does not describe (status
code, content type, headers, body schema).

Hypothesis drives the generation in a worker thread; each request is sent by the `api`
fixture's httpx client on the test's own event loop, where the app's database engine
and bus live (schemathesis' own ASGI transport would run the app on another loop).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema_rs
import msgpack
import pytest
import schemathesis
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from server.app import create_app
from server.edge.routes import ROUTES
from server.openapi.core import COLUMN_TYPES
from server.openapi.document import openapi_document
from server.openapi.pages import PAGES
from server.wire import rows
from state_machine import EVENT_TYPES
from tests import app_support
from tests.support import Backend

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
BASE_URL = "http://testserver"
# Answers in either format (every API answer honours Accept: application/msgpack).
ACCEPT = st.sampled_from(["application/json", "application/msgpack"])
REQUEST_TIMEOUT_S = 30


@schemathesis.serializer("application/msgpack")
def _to_msgpack(ctx, value):
    return msgpack.packb(value)


@schemathesis.deserializer("application/msgpack")
def _from_msgpack(ctx, response):
    return msgpack.unpackb(response.content, timestamp=3, strict_map_key=False)


# --- the document itself ------------------------------------------------------------------


async def test_served_document_loads_and_matches_routes(tmp_path):
    backend = Backend("sqlite-memory", f"sqlite+aiosqlite:///{tmp_path}/db", "memory://", "t:")
    app = create_app(app_support.test_settings(backend, tmp_path / "data"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        response = await client.get("/openapi.json")
    await app.state.services.stop()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document == json.loads(json.dumps(openapi_document()))

    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI meta-schema
    documented = {(op.method.upper(), op.path) for op in _operations(schema)}
    routed = {
        (method, route.path)
        for route in ROUTES
        if isinstance(route, Route)  # the websocket is not an OpenAPI operation
        for method in route.methods
        if method != "HEAD"
    }
    assert documented == routed

    public = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/webhooks/{provider}/{tenant}"}
    public |= {"/widget.js", "/chat-demo"}  # the chat widget's files
    public |= set(PAGES)  # the pages' HTML; they ask for a token themselves
    assert document["security"] == [{"bearer": []}]
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            assert (op.get("security") == []) == (path in public), (method, path)
            if path not in public:
                assert {"401", "403", "503"} <= set(op["responses"]), (method, path)


def test_component_schemas_are_json_schemas():
    for name, schema in openapi_document()["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name


def test_document_is_derived_from_the_server_tables():
    schemas = openapi_document()["components"]["schemas"]
    assert schemas["EventType"]["enum"] == list(EVENT_TYPES)
    assert [branch["$ref"].rsplit("/", 1)[1] for branch in schemas["Event"]["oneOf"]] == [
        f"Event.{name}" for name in EVENT_TYPES
    ]
    row = schemas["ConversationRow"]
    assert set(rows.COLUMNS) <= set(row["properties"])
    assert set(COLUMN_TYPES) == set(rows.COLUMNS), "every view column needs a type"
    assert set(row["required"]) == set(row["properties"])


# --- the running app ---------------------------------------------------------------------


def _operations(schema):
    """Every operation; DELETEs last, so the seeded resources live through the others."""
    operations = [result.ok() for result in schema.get_all_operations()]
    return sorted(operations, key=lambda op: op.method.upper() == "DELETE")


async def _seed(api) -> dict[str, list[str]]:
    """Conversations with every part of a detail filled in (and one nearly empty), and
    views, so that operations on them answer 200 with real data: path parameter ->
    values to try."""
    response = await api.client.put(
        "/api/v1/agents/u1", json={"name": "Ann Agent"}, headers=api.auth("admin")
    )
    assert response.status_code == 200, response.text
    e, t = api.event, "2026-11-24T10:00:{:02d}Z".format
    results = await api.post_events(
        [
            e(
                "conversation.created",
                "c-full",
                t(0),
                channel="call",
                contact="+34911000101",
                customer={"name": "Ann", "email": "ann@example.com"},
                contacto_number="+3490000",
            ),
            e("routing.enqueued", "c-full", t(1), team="sales"),
            e("routing.offered", "c-full", t(2), agent_id="u1", offer_id="o1", expires_at=t(30)),
            e("agent.accepted", "c-full", t(3), agent_id="u1", offer_id="o1"),
            e("media.message", "c-full", t(4), message_id="m1", sender="agent", text="Hi"),
            e("media.message_status", "c-full", t(5), message_id="m1", status="read"),
            e(
                "ticket.linked",
                "c-full",
                t(6),
                ticket_id="T-1",
                system="desk",
                url="https://desk.example.com/T-1",
            ),
            e(
                "media.recording_ready",
                "c-full",
                t(7),
                recording_id="r1",
                duration_s=12.5,
                content_type="audio/mpeg",
            ),
            e("media.hangup", "c-full", t(8), source="agent"),
            e("wrapup.submitted", "c-full", t(9), disposition="sold", note="ok"),
            e("csat.received", "c-full", t(10), score=5),
            e("media.hangup", "c-full", t(11), source="customer"),  # stale
            e(
                "conversation.created",
                "c-new",
                t(0),
                channel="chat",
                contact="visitor-1",
                customer={"name": "Bo"},
            ),
            e(
                "conversation.initiated",
                "c-out",
                t(0),
                channel="sms",
                contact="+34911000105",
                agent_id="u1",
                text="Hello",
            ),
        ]
    )
    outcomes = [result["outcome"] for result in results]
    assert outcomes == ["applied"] * 11 + ["stale"] + ["applied"] * 2, results
    views = []
    for role, user, body in [
        ("supervisor", "u1", {"name": "Mine", "visibility": "private"}),
        (
            "supervisor",
            "sup2",
            {
                "name": "Shared",
                "visibility": "tenant",
                "columns": list(rows.COLUMNS),
                "filters": [{"field": "channel", "op": "in", "value": ["call", "chat"]}],
                "sort": [{"field": "contact", "dir": "asc"}],
            },
        ),
        ("admin", "adm", {"name": "Someone else's", "visibility": "private"}),
    ]:
        response = await api.client.post("/api/v1/views", json=body, headers=api.auth(role, user))
        assert response.status_code == 201, response.text
        views.append(response.json()["id"])
    return {"conversation_id": ["c-full", "c-new", "c-out"], "view_id": views}


# --- known issues outside this test's reach ------------------------------------------------
#
# 500s found by fuzzing (or by probing around what the fuzzer found) in code with an
# owner of its own, each with where it comes from. The fuzzer skips exactly these
# inputs, so that it keeps guarding everything else; `test_known_issues_are_still_open`
# sends one example of each and xfails while any still answers 500, and fails once one
# is fixed, so that its entry is removed here (and the fuzzer covers it again).


def _walk(value):
    """Every key and scalar in a decoded body, without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield from item.keys()
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        else:
            yield item


def _overflows_utc(text) -> bool:
    try:
        datetime.fromisoformat(text).astimezone(UTC)
    except OverflowError:
        return True
    except (TypeError, ValueError):
        return False
    return False


@dataclass(frozen=True)
class KnownIssue:
    name: str
    where: str
    backends: tuple[str, ...]
    method: str
    paths: tuple[str, ...]
    matches: Callable[[Any, dict], bool]  # (body, path parameters) -> bool
    example: tuple[str, str, Any]  # method, URL, JSON body


BOTH = ("sqlite-memory", "postgresql-redis")
EVENT = {
    "event_id": "ki-1",
    "type": "conversation.created",
    "conversation_id": "ki-c1",
    "occurred_at": "2026-11-24T10:00:00Z",
    "data": {"channel": "chat", "contact": "visitor-ki", "customer": {"name": "Ki"}},
}

# Inputs the fuzzer should skip because they are known to fail; empty while none is.
KNOWN_ISSUES: list[KnownIssue] = []

# Once known issues, fixed: each must answer 200 with a rejected outcome, not a 500.
OUT_OF_RANGE = [
    {**EVENT, "occurred_at": "0001-01-01T00:00:00+01:00"},
    {**EVENT, "occurred_at": "9999-12-31T23:59:59-01:00"},
    {
        **EVENT,
        "type": "media.recording_ready",
        "data": {"recording_id": "r", "duration_s": 10**400, "content_type": "a"},
    },
]


def _known_issue(case, backend: str) -> KnownIssue | None:
    body = case.body if isinstance(case.body, dict | list) else None
    params = case.path_parameters or {}
    for issue in KNOWN_ISSUES:
        if (
            backend in issue.backends
            and issue.method in ("*", case.method.upper())
            and case.path in issue.paths
            and issue.matches(body, params)
        ):
            return issue
    return None


async def test_out_of_range_values_are_rejected_with_the_field(api):
    for event in OUT_OF_RANGE:
        response = await api.client.post(
            "/api/v1/events",
            content=json.dumps(event).encode(),
            headers={**api.auth("admin"), "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        (result,) = response.json()["results"]
        assert result["outcome"] == "rejected" and result["code"] == "invalid_data"
        assert "out of range" in result["message"]


async def _check_seeded(api, schema, token: str, known: dict[str, list[str]]) -> None:
    """The seeded resources, read with `token`: answers the document describes, and for
    the fullest conversation, a detail with every part filled in."""
    reads = [("/api/v1/conversations/{conversation_id}", "conversation_id")] + [
        (path, "view_id") for path in ("/api/v1/views/{view_id}", "/api/v1/views/{view_id}/rows")
    ]
    headers = {"Authorization": f"Bearer {token}"}
    for path, name in reads:
        operation = schema[path]["GET"]
        for value in known[name]:
            response = await api.client.get(path.replace(f"{{{name}}}", value), headers=headers)
            assert str(response.status_code) in operation.definition.raw["responses"]
            operation.validate_response(response)
            if value == "c-full" and response.status_code == 200:
                detail = response.json()
                for part in ("transcript", "tickets", "recordings", "timeline"):
                    assert detail[part], part


def _strategy(operation, mode: GenerationMode, known: dict[str, list[str]]):
    """Generated cases; in positive mode, also cases naming a seeded resource."""
    strategy = operation.as_strategy(generation_mode=mode)
    for name, values in known.items():
        if mode is GenerationMode.POSITIVE and f"{{{name}}}" in operation.path:
            seeded = st.sampled_from(values).flatmap(
                lambda value, name=name: operation.as_strategy(path_parameters={name: value})
            )
            strategy = st.one_of(strategy, seeded)
    return strategy


def _httpx_request(case, token: str, accept: str) -> dict:
    try:
        kwargs = case.as_transport_kwargs(
            base_url=BASE_URL, headers={"Authorization": f"Bearer {token}", "Accept": accept}
        )
    except OverflowError:  # an integer msgpack cannot carry
        reject()
    request = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": dict(kwargs["headers"]),
        "params": kwargs.get("params") or None,
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        request["content"] = data.encode() if isinstance(data, str) else data
    return request


def _negatable(schema, operation) -> bool:
    """Whether negative data exists: parameters, a body, or a token to leave out."""
    definition = schema.raw_schema["paths"][operation.path][operation.method.lower()]
    return any(key in definition for key in ("parameters", "requestBody")) or (
        definition.get("security") != []
    )


def _fuzz(api, loop, schema, token: str, budget: dict, known) -> list[str]:
    """Runs in a worker thread: one Hypothesis run per operation and mode; each request
    goes to the app on `loop`. Returns the failures, one report per operation (and
    mode): Hypothesis stops an operation at its first failure, shrunk."""

    def send(request: dict) -> httpx.Response:
        future = asyncio.run_coroutine_threadsafe(api.client.request(**request), loop)
        return future.result(timeout=REQUEST_TIMEOUT_S)

    failures, seen = [], collections.Counter()
    for operation in _operations(schema):
        for mode, max_examples in budget.items():
            if mode is GenerationMode.NEGATIVE and not _negatable(schema, operation):
                continue

            @settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                print_blob=True,
            )
            @given(case=_strategy(operation, mode, known), accept=ACCEPT)
            def run(case, accept):
                if _known_issue(case, api.backend.name) is not None:
                    reject()
                response = send(_httpx_request(case, token, accept))
                seen[case.method.upper(), case.path, response.status_code] += 1
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Exception as exc:
                failures.append(f"{mode.value} {operation.method.upper()} {operation.path}:\n{exc}")
    if failures:
        tally = "\n".join(" ".join(map(str, (*key, count))) for key, count in sorted(seen.items()))
        failures.append(f"requests sent (method, path, status, count):\n{tally}")
    return failures


# role -> examples per operation and generation mode. SWITCHBOARD_FUZZ_EXAMPLES scales
# them for a deeper run by hand (e.g. 10 for ten times as many).
SCALE = float(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", "1"))
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
RUNS = {
    "admin": {POSITIVE: 20, NEGATIVE: 15},
    "supervisor": {POSITIVE: 6},
    "agent": {POSITIVE: 6},
}


@pytest.mark.parametrize("role", list(RUNS))
async def test_app_conforms_to_its_document(api, role):
    response = await api.client.get("/openapi.json")
    schema = schemathesis.openapi.from_dict(response.json())
    known = await _seed(api)
    budget = {mode: max(1, round(n * SCALE)) for mode, n in RUNS[role].items()}
    token = api.token(role, "u1")
    await _check_seeded(api, schema, token, known)
    loop = asyncio.get_running_loop()
    failures = await asyncio.to_thread(_fuzz, api, loop, schema, token, budget, known)
    assert not failures, "\n\n".join(failures)


# --- every bound of every operation ---------------------------------------------------------
#
# Hypothesis' random draws rarely land on a bound. Schemathesis' coverage phase does: for
# every parameter and body field, values at and just past each minimum and maximum (length,
# items, number), every enum value, each required key left out, wrong types. Every such
# case goes to the app as the admin, held to the same checks as the fuzzing above.
COVERAGE_CAP = int(200 * SCALE)  # cases per operation, spread evenly over all it makes


def _coverage_cases(schema, operation) -> list:
    config = schema.config.generation_for(operation=operation)
    cases = list(
        schema.iter_coverage_cases(
            operation, generation_modes=[POSITIVE, NEGATIVE], generation_config=config
        )
    )
    step = max(1, -(-len(cases) // COVERAGE_CAP))
    return cases[::step]


def _cover(api, loop, schema, token: str) -> tuple[list[str], int]:
    """In a worker thread: every operation's coverage cases, each sent to the app on
    `loop`. Returns the failures (the first per operation) and how many were sent."""
    failures, sent = [], 0
    for operation in _operations(schema):
        for case in _coverage_cases(schema, operation):
            if _known_issue(case, api.backend.name) is not None:
                continue
            try:
                request = _httpx_request(case, token, "application/json")
            except Exception:  # a case no HTTP client can carry (hypothesis' reject)
                continue
            future = asyncio.run_coroutine_threadsafe(api.client.request(**request), loop)
            response = future.result(timeout=REQUEST_TIMEOUT_S)
            sent += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as exc:
                body = json.dumps(case.body, default=repr)[:300] if case.body is not None else ""
                failures.append(
                    f"{operation.method.upper()} {case.formatted_path} {body}\n"
                    f"-> {response.status_code} {response.text[:300]}\n{exc}"
                )
                break
    return failures, sent


async def test_every_bound_of_every_operation(api):
    response = await api.client.get("/openapi.json")
    schema = schemathesis.openapi.from_dict(response.json())
    await _seed(api)
    loop = asyncio.get_running_loop()
    token = api.token("admin", "u1")
    failures, sent = await asyncio.to_thread(_cover, api, loop, schema, token)
    assert not failures, "\n\n".join(failures)
    assert sent >= 1000, sent  # the coverage phase made its cases


# --- bodies the generator rarely makes ------------------------------------------------------

AGENT = ("PUT", "/api/v1/agents/{agent_id}", "/api/v1/agents/a1")
EVENTS = ("POST", "/api/v1/events", "/api/v1/events")
TENANT = ("PUT", "/api/v1/tenant", "/api/v1/tenant")
VIEWS = ("POST", "/api/v1/views", "/api/v1/views")
# name -> ((method, path template, URL), JSON text, status)
MALFORMED = {
    "lone surrogate escape": (AGENT, rb'{"name": "\ud800"}', 400),
    "lone surrogate in an event": (EVENTS, rb'{"event_id": "\udfff", "type": "x"}', 400),
    "surrogate pair": (AGENT, rb'{"name": "\ud83d\ude00"}', 200),
    "lone surrogate deep down": (TENANT, b"[" * 900 + rb'"\udc00"' + b"]" * 900, 400),
    "integer of 5000 digits": (EVENTS, b"1" * 5000, 400),
    "nesting beyond the decoder": (TENANT, b"[" * 100_000, 400),
    "invalid UTF-8": (VIEWS, b'{"name": "\xff"}', 400),
    "NUL in a name": (AGENT, rb'{"name": "a\u0000b"}', 422),
    "NUL in a list": (TENANT, rb'{"widget_origins": ["\u0000"]}', 422),
    "NUL in an optional field": (AGENT, rb'{"name": "a", "phone": "\u0000"}', 422),
}


async def test_malformed_bodies_answer_as_documented(api):
    schema = schemathesis.openapi.from_dict(openapi_document())
    for name, ((method, path, url), content, status) in MALFORMED.items():
        response = await api.client.request(
            method,
            url,
            content=content,
            headers={**api.auth("admin"), "Content-Type": "application/json"},
        )
        assert response.status_code == status, (name, response.text)
        operation = schema[path][method]
        assert str(status) in operation.definition.raw["responses"], name
        operation.validate_response(response)
