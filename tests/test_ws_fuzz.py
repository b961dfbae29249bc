"""`/ws` under generated frames, over a real socket to a real server, on both backends,
as a supervisor and as an agent, in both subprotocols (issue 17, the hostile-input
suite).

The frames are generated from their declarations: the `ClientFrame.<type>` schemas of
the OpenAPI document, which server/wire/protocol.py's CLIENT_FRAMES build. Valid
frames follow every key's type and bounds; hostile ones take a valid frame and break
it (a key's value replaced with a wrong type, NaN, an infinity, a huge integer, deep
nesting, odd unicode; a required key dropped; an unknown key or type; not an object at
all). The properties, checked frame by frame on one socket per role and format:

* the socket stays open (a close would be 1000, 1008, 1009 or 4401, and none of those
  is due here; 1008, a flooding client's, is tolerated: the test opens a new socket);
* every frame with a `ref` gets an answer with that `ref`, of a type its frame
  declares (or `error`), and every frame the server sends is valid per its
  `ServerFrame.<type>` schema;
* a subscription taken before the fuzzing still gets its deltas after it (no lost
  subscription), and the server still answers /healthz.

Each frame is followed by a ping: frames on one socket are handled in order, so
everything the frame caused has arrived once its pong has. Oversize frames close the
socket by design (1009): they are sent last, on a socket of their own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import math
import os
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema_rs
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from server.openapi.document import openapi_document
from server.wire.protocol import CLIENT_FRAMES, MAX_FRAME_BYTES
from tests.server_support import LiveServer, WsClient, live_server
from tests.support import wait_for

SCHEMAS = openapi_document()["components"]["schemas"]
# Examples per client frame type, role and subprotocol (four sockets per backend);
# SWITCHBOARD_FUZZ_EXAMPLES scales them for a deeper run by hand, as in test_openapi.py.
EXAMPLES = max(1, round(16 * float(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", "1"))))
DOCUMENTED_CLOSES = {1000, 1008, 1009, 4401}
# What answers each client frame, besides `error` (protocol.py's `answer`).
ANSWERS = {
    "subscribe": {"snapshot"},
    "unsubscribe": {"ok"},
    "fetch": {"page"},
    "subscribe_popups": {"ok"},
    "accept": {"ok"},
    "reject": {"ok"},
    "subscribe_wallboard": {"wallboard"},
    "presence": {"ok"},
    "initiate": {"ok"},
    "send_message": {"ok"},
    "hangup": {"ok"},
    "transfer": {"ok"},
    "ping": {"pong"},
}
assert set(ANSWERS) == set(CLIENT_FRAMES), "a new client frame needs its answer here"


# --------------------------------------------------------------------------- strategies


def _resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


# Valid text: no NUL, which every text field refuses (NUL belongs to the hostile values).
TEXT = st.characters(codec="utf-8", exclude_characters="\x00")


def from_schema(schema: dict, depth: int = 0) -> st.SearchStrategy:
    """Values valid per a JSON schema of the document (the subset it uses)."""
    schema = _resolve(schema)
    if depth > 6:
        return st.none()
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return st.one_of(*(from_schema(branch, depth + 1) for branch in schema[key]))
    types = schema.get("type")
    if types is None:
        return ANY_JSON if not schema.get("properties") else _object(schema, depth)
    if isinstance(types, list):
        return st.one_of(*(from_schema({**schema, "type": t}, depth) for t in types))
    if types == "null":
        return st.none()
    if types == "boolean":
        return st.booleans()
    if types == "integer":
        low = schema.get("minimum", -(2**40))
        high = schema.get("maximum", 2**40)
        return st.sampled_from([low, high]) | st.integers(low, high)  # the bounds often
    if types == "number":
        return st.floats(schema.get("minimum", -1e9), schema.get("maximum", 1e9), allow_nan=False)
    if types == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        if schema.get("format") == "date-time":
            return st.datetimes(
                min_value=datetime(2000, 1, 1),
                max_value=datetime(2100, 1, 1),
                timezones=st.just(UTC),
            ).map(lambda d: d.isoformat())
        low, high = schema.get("minLength", 0), schema.get("maxLength", 40)
        sized = st.text(TEXT, min_size=low, max_size=min(high, 40))
        if low:  # a Text field wants something besides white space (its schema cannot say)
            sized = sized.filter(str.strip)
        if high > 40:  # the bound itself too
            sized |= st.just("x" * high)
        return sized
    if types == "array":
        items = from_schema(schema.get("items", {}), depth + 1)
        return st.lists(items, max_size=min(schema.get("maxItems", 4), 4))
    return _object(schema, depth)


def _object(schema: dict, depth: int) -> st.SearchStrategy:
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {name: from_schema(sub, depth + 1) for name, sub in properties.items() if name in required},
        optional={
            name: from_schema(sub, depth + 1)
            for name, sub in properties.items()
            if name not in required and sub
        },
    )


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for n in range(depth):
        value = [value] if n % 2 else {"k": value}
    return value


HOSTILE = st.one_of(
    st.sampled_from(
        [math.nan, math.inf, -math.inf, 2**63, 2**64, -(2**63) - 1, 10**30, -1, 0, 1e308, -0.0]
    ),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.just({}),
    st.just([]),
    st.builds(_nested, st.integers(10, 300)),
    st.text(st.characters(codec="utf-8"), max_size=30),  # any code point UTF-8 carries
    st.sampled_from(
        [
            "\u0000",
            "\ufeff",
            "\u202e",
            "e\u0301",
            "\U0001f600" * 50,
            "x" * 5000,
            "s1",
            "v_nope",
            "' OR 1=1 --",
            "%s%n",
        ]
    ),
    ANY_JSON,
)


def valid_frames(name: str) -> st.SearchStrategy:
    return from_schema(SCHEMAS[f"ClientFrame.{name}"])


VALID = st.sampled_from(sorted(CLIENT_FRAMES)).flatmap(valid_frames)


@st.composite
def broken(draw, valid: st.SearchStrategy) -> Any:
    """A valid frame broken in one way: a hostile value, a key dropped, an unknown key,
    another type, or not an object at all."""
    frame = dict(draw(valid))
    how = draw(
        st.sampled_from(["value", "value", "value", "drop", "unknown_key", "type", "not_object"])
    )
    keys = [key for key in frame if key not in ("type", "ref")]
    if how == "value" and keys:
        frame[draw(st.sampled_from(keys))] = draw(HOSTILE)
    elif how == "drop" and keys:
        del frame[draw(st.sampled_from(keys))]
    elif how == "unknown_key":
        frame[draw(st.text(min_size=1, max_size=20))] = draw(HOSTILE)
    elif how == "type":
        frame["type"] = draw(st.text(max_size=30) | HOSTILE)
    elif how == "not_object":
        return draw(HOSTILE)
    return frame


def hostile_frames(name: str) -> st.SearchStrategy:
    return broken(valid_frames(name))


def frames(name: str) -> st.SearchStrategy:
    """Frames of one declared type: two valid ones for one broken one."""
    return st.one_of(valid_frames(name), valid_frames(name), hostile_frames(name))


# --------------------------------------------------------------------------- checks


_validators: dict[str, Any] = {}


def _validator(type_: str):
    if type_ not in _validators:
        _validators[type_] = jsonschema_rs.validator_for(
            {
                "$ref": f"#/components/schemas/ServerFrame.{type_}",
                "components": {"schemas": SCHEMAS},
            }
        )
    return _validators[type_]


def _plain(value: Any) -> Any:
    """A msgpack frame as JSON would carry it (timestamps as text)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def check_server_frame(frame: Any) -> None:
    assert isinstance(frame, dict) and isinstance(frame.get("type"), str), frame
    assert f"ServerFrame.{frame['type']}" in SCHEMAS, f"undocumented frame {frame!r:.300}"
    ref = frame.get("ref")
    if isinstance(ref, float) and not math.isfinite(ref):
        frame = {**frame, "ref": 0}  # echoed as sent; JSON Schema has no NaN
    errors = list(_validator(frame["type"]).iter_errors(_plain(frame)))
    assert not errors, (f"{frame!r:.500}", [str(e) for e in errors[:3]])


def encode(frame: Any, format: str, ascii_only: bool) -> str | bytes:
    if format == "msgpack":
        try:
            return msgpack.packb(frame)
        except (OverflowError, ValueError, TypeError):  # beyond msgpack: as JSON text
            pass
    return json.dumps(frame, ensure_ascii=ascii_only)


# --------------------------------------------------------------------------- the socket


def _limited(frame: dict) -> bool:
    """An `error` for the connection's frame rate (issue 17's per-connection limits)."""
    return frame.get("type") == "error" and frame.get("code") == "rate_limited"


class Fuzzed:
    """One role's socket, an honest subscription on it, and the frames sent so far."""

    def __init__(self, server: LiveServer, role: str, user: str, format: str):
        self.server, self.role, self.user, self.format = server, role, user, format
        self.refs = itertools.count(1)
        self.reopened = 0
        self.sent = 0

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        self.ws: WsClient = await stack.enter_async_context(
            self.server.ws(role=self.role, user=self.user, format=self.format, ping_interval=None)
        )
        snapshot = await self.ws.request({"type": "subscribe", "view": {}, "limit": 10})
        assert snapshot["type"] == "snapshot", snapshot
        self.honest = snapshot["sub"]

    async def fence(self) -> int:
        """Ping and wait for the pong: every answer to what went before is in. A ping
        refused for the connection's frame rate (`rate_limited`) is sent again once the
        server's `retry_after` (or a fifth of a second) has passed."""
        for _ in range(50):
            ref, start = f"fence-{next(self.refs)}", len(self.ws.frames)
            await self.ws.send({"type": "ping", "ref": ref})
            answer = await self._first_after(start, lambda f, ref=ref: f.get("ref") == ref)
            if answer.get("ref") == ref and answer["type"] == "pong":
                return len(self.ws.frames)
            await asyncio.sleep(float(answer.get("retry_after") or 0.2))  # the server's pace
        raise AssertionError("the fence ping was refused 50 times")

    async def _first_after(self, start: int, predicate) -> dict:
        """The first frame after `start` that satisfies `predicate` or is `rate_limited`."""
        found: list[dict] = []

        def seen() -> bool:
            found[:] = [f for f in self.ws.frames[start:] if predicate(f) or _limited(f)]
            return bool(found)

        await wait_for(seen, 20)
        return found[0]

    async def send(self, frame: Any, ascii_only: bool, stack: contextlib.AsyncExitStack) -> None:
        ref = None
        if isinstance(frame, dict) and isinstance(frame.get("ref", ""), str | type(None)):
            ref = f"fz-{next(self.refs)}"
            frame = {**frame, "ref": ref}
        if (
            isinstance(frame, dict)
            and frame.get("type") == "unsubscribe"
            and frame.get("sub") == self.honest
        ):
            return  # the honest subscription is not the fuzzer's to end
        start = len(self.ws.frames)
        try:
            await self.ws.socket.send(encode(frame, self.format, ascii_only))
            end = await self.fence()
        except (ConnectionClosed, TimeoutError):
            code = self.ws.socket.close_code
            assert code in DOCUMENTED_CLOSES, (code, f"{frame!r:.500}")
            assert code == 1008, (code, f"{frame!r:.500}")  # nothing else is due here
            self.reopened += 1
            await self.open(stack)
            return
        self.sent += 1
        new = self.ws.frames[start:end]
        for got in new:
            check_server_frame(got)
        if ref is not None and isinstance(frame.get("type"), str):
            answers = [f for f in new if f.get("ref") == ref]
            if not answers and any(_limited(f) for f in new):
                return  # refused for the connection's frame rate before it was read
            if self.format == "json" and not _finite(frame):
                # NaN and Infinity are not JSON (RFC 8259): the frame is refused whole,
                # before its ref can be read
                assert not answers and new[0]["code"] == "malformed", (f"{frame!r:.300}", new)
                return
            assert answers, f"no answer to {frame!r:.500}; got {new!r:.500}"
            wanted = ANSWERS.get(frame["type"], set()) | {"error"}
            assert answers[0]["type"] in wanted, (f"{frame!r:.300}", answers[0])
            if answers[0]["type"] == "error":
                assert answers[0]["code"] != "internal", (f"{frame!r:.500}", answers[0])
        else:  # no ref to echo: still an answer (an error, or the frame's own)
            assert len(new) > 1, f"no answer to {frame!r:.500}"
            assert all(f.get("code") != "internal" for f in new), f"{frame!r:.500}: {new!r:.500}"


def _finite(value: Any) -> bool:
    """Whether every number in a frame is finite (JSON has no NaN or Infinity)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(key) and _finite(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return all(_finite(item) for item in value)
    return True


def _fuzz(fuzzed: Fuzzed, loop, stack) -> None:
    """In a worker thread: Hypothesis draws, the test's loop sends."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    def run(frame, ascii_only):
        future = asyncio.run_coroutine_threadsafe(fuzzed.send(frame, ascii_only, stack), loop)
        future.result(timeout=60)

    for name in CLIENT_FRAMES:
        given(frame=frames(name), ascii_only=st.booleans())(run)()


async def _post_entering(server: LiveServer, role: str, user: str, cid: str) -> None:
    api = server.api
    now = datetime.now(UTC)
    later = (now + timedelta(minutes=10)).isoformat()
    now = now.isoformat()
    events = [
        api.event(
            "conversation.created", cid, now, channel="chat", contact=f"visitor-{cid}",
            customer={"name": "Honest"},
        ),
    ]  # fmt: skip
    if role == "agent":
        events += [
            api.event("routing.enqueued", cid, now, team="sales"),
            api.event(
                "routing.offered", cid, now, agent_id=user, offer_id=f"o-{cid}", expires_at=later
            ),
        ]
    results = await api.post_events(events)
    assert all(r["outcome"] == "applied" for r in results), results


@pytest.mark.parametrize("role", ["supervisor", "agent"])
async def test_generated_frames_never_break_the_socket_or_the_server(backend, tmp_path, role):
    user = "sup1" if role == "supervisor" else "a1"
    async with live_server(backend, tmp_path) as server, contextlib.AsyncExitStack() as stack:
        loop = asyncio.get_running_loop()
        for format in ("json", "msgpack"):
            fuzzed = Fuzzed(server, role, user, format)
            await fuzzed.open(stack)
            await asyncio.to_thread(_fuzz, fuzzed, loop, stack)
            assert fuzzed.sent >= EXAMPLES * len(CLIENT_FRAMES) // 2, fuzzed.sent
            # No lost subscription: a conversation that enters the honest view shows.
            cid = f"honest-{role}-{format}"
            await _post_entering(server, role, user, cid)
            await fuzzed.ws.wait(
                lambda f, fz=fuzzed, cid=cid: (
                    f.get("type") == "delta"
                    and f.get("sub") == fz.honest
                    and any(row.get("id") == cid for row in f["upsert"])
                ),
                20,
            )
            assert (await server.api.client.get("/healthz")).status_code == 200


async def test_oversize_frames_close_1009_and_the_server_serves_on(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        async with server.ws() as honest:
            snapshot = await honest.request({"type": "subscribe", "view": {}, "limit": 10})
            for format, payload in [
                ("json", json.dumps({"type": "ping", "ref": "x" * MAX_FRAME_BYTES})),
                ("msgpack", msgpack.packb({"type": "ping", "ref": b"x" * MAX_FRAME_BYTES})),
                ("json", "[" * (MAX_FRAME_BYTES + 1)),
                # One message in fragments, each small, together over the limit.
                ("json", ["[" * 8192] * (MAX_FRAME_BYTES // 8192 + 1)),
            ]:
                async with server.ws(format=format) as ws:
                    await ws.socket.send(payload)
                    await asyncio.wait_for(ws.socket.wait_closed(), 10)
                    assert ws.socket.close_code == 1009
            await _post_entering(server, "supervisor", "sup1", "after-oversize")
            await honest.wait(
                lambda f: (
                    f.get("type") == "delta"
                    and f.get("sub") == snapshot["sub"]
                    and any(row.get("id") == "after-oversize" for row in f["upsert"])
                )
            )
        assert (await server.api.client.get("/healthz")).status_code == 200


TOKENS = st.one_of(
    st.text(max_size=60),
    st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=4000),
    st.sampled_from(["", "Bearer", "null", "eyJhbGciOiJub25lIn0.e30.", "a.b.c", "..", "x" * 8000]),
)


async def test_generated_handshakes_are_refused_as_documented(backend, tmp_path):
    """Tokens and subprotocols that are not what a client sends: the handshake is refused
    with 401 (or 400/403, or 414/431 for a URL or header too long), never a 500, and the
    server serves on."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    from server.core.auth import mint_token
    from tests.app_support import SECRET, TENANT

    async with live_server(backend, tmp_path) as server:
        good = server.api.token("supervisor", "sup1")
        wrong_secret = mint_token("another-secret-" + "x" * 40, TENANT, "supervisor", "s", 3600)
        expired = mint_token(SECRET, TENANT, "supervisor", "s", -10)
        loop = asyncio.get_running_loop()
        seen: collections.Counter = collections.Counter()

        async def attempt(token: str, where: str, protocols: list[str]) -> None:
            url, headers = server.ws_url, {}
            if where == "header":
                headers["Authorization"] = f"Bearer {token}"
            elif where == "raw":
                headers["Authorization"] = token
            else:
                url += "?token=" + urllib.parse.quote(token, safe="")
            try:
                async with connect(
                    url, additional_headers=headers, subprotocols=protocols or None,
                    open_timeout=20,
                ) as socket:  # fmt: skip
                    await socket.send(json.dumps({"type": "ping", "ref": "p"}))
                    raw = await asyncio.wait_for(socket.recv(), 10)
                    pong = msgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)
                    assert pong["type"] == "pong", pong
                    seen[101] += 1
            except InvalidStatus as refused:
                status = refused.response.status_code
                # 414 and 431: a URL or a header too long for the HTTP parser
                assert status in (400, 401, 403, 414, 431), (token[:200], where, protocols, status)
                seen[status] += 1
            except InvalidHandshake:  # a subprotocol the server did not take
                seen["no subprotocol"] += 1

        @settings(
            max_examples=EXAMPLES * 6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            token=st.one_of(
                TOKENS,
                st.sampled_from([wrong_secret, expired, good[:-3], good + "x", good[::-1]]),
                TOKENS.map(lambda junk: good + junk),
            ),
            where=st.sampled_from(["header", "raw", "query"]),
            protocols=st.lists(
                st.sampled_from(["switchboard.v1.json", "switchboard.v1.msgpack", "chat", "v2"])
            ),
        )
        def run(token, where, protocols):
            if "\r" in token or "\n" in token or (not token.isprintable() and where != "query"):
                return  # no HTTP client sends these in a header
            future = asyncio.run_coroutine_threadsafe(attempt(token, where, protocols), loop)
            future.result(timeout=60)

        await asyncio.to_thread(run)
        assert seen[401] > 0, seen
        async with server.ws() as ws:  # an honest client still gets in
            assert (await ws.request({"type": "ping"}))["type"] == "pong"
        assert (await server.api.client.get("/healthz")).status_code == 200


def test_the_generators_follow_the_declarations():
    """Valid frames pass their declaration's own reader, so that what the server
    refuses of them is a refusal of meaning (unknown ids, roles), not of shape."""
    from server.core.fields import Invalid

    @settings(max_examples=200, deadline=None, database=None)
    @given(frame=VALID)
    def run(frame):
        declared = CLIENT_FRAMES[frame["type"]]
        try:
            declared.read(frame)
        except Invalid as invalid:
            raise AssertionError(f"{frame!r:.300}: {invalid}") from None

    run()


# --------------------------------------------------------------------------- /webchat

SHOP = "https://shop.example"
WEBCHAT_TYPES = {"message", "status", "error"}  # what the server sends a visitor (api.md)


def _webchat_frames() -> st.SearchStrategy:
    """The visitor's frames, to the bounds server/edge/ws/webchat.py reads them with
    (they have no field declarations: the widget is their only client), and broken."""
    from server.edge.ws import webchat

    visitor = st.from_regex(webchat.VISITOR, fullmatch=True)
    hello = st.fixed_dictionaries(
        {"type": st.just("hello"), "visitor": visitor},
        optional={
            "name": st.text(max_size=40) | st.just("n" * webchat.MAX_NAME),
            "email": st.emails() | st.text(max_size=20),
            "team": st.sampled_from(["support", "nowhere"]) | st.just("t" * webchat.MAX_TEAM),
        },
    )
    message = st.fixed_dictionaries(
        {"type": st.just("message"), "text": st.text(min_size=1, max_size=40)},
        optional={"id": st.from_regex(webchat.CLIENT_MESSAGE_ID, fullmatch=True)},
    ) | st.just({"type": "message", "text": "x" * webchat.MAX_TEXT})
    valid = st.one_of(hello, message, st.just({"type": "end"}))

    rest = st.lists(st.one_of(valid, valid, broken(valid)), min_size=1, max_size=4)
    # Most examples introduce themselves first, so that what follows reaches past hello.
    return st.one_of(rest, st.tuples(hello, rest).map(lambda pair: [pair[0], *pair[1]]))


async def _webchat_example(server: LiveServer, frames: list, ascii_only: bool, n: int) -> None:
    from websockets.asyncio.client import connect

    url = server.url.replace("http://", "ws://") + "/webchat/acme"
    async with connect(url, origin=SHOP) as socket:
        for frame in frames:
            await socket.send(json.dumps(frame, ensure_ascii=ascii_only))
        fence = f"fence-{n}"
        await socket.send(json.dumps({"type": fence}))
        got = []
        async with asyncio.timeout(20):
            while True:
                try:
                    answer = json.loads(await socket.recv())
                except ConnectionClosed:
                    raise AssertionError(
                        f"closed {socket.close_code} after {frames!r:.500}; got {got!r:.500}"
                    ) from None
                if answer.get("type") == "error" and fence in answer.get("message", ""):
                    break
                got.append(answer)
        for answer in got:
            assert answer.get("type") in WEBCHAT_TYPES, (f"{frames!r:.300}", answer)
            assert answer.get("code") != "internal", (f"{frames!r:.300}", answer)
            if answer["type"] == "error":
                assert isinstance(answer.get("message"), str) and answer["message"]


# Every example is a new visitor on one address: far past the abuse limits, which
# have tests of their own (tests/test_webchat_limits.py). Here they are lifted so
# that what is fuzzed is the frames.
UNLIMITED_WEBCHAT = {
    "webchat_handshakes_per_minute": 10**6,
    "webchat_tenant_handshakes_per_minute": 10**6,
    "webchat_conversations_per_hour": 10**6,
    "webchat_tenant_conversations_per_hour": 10**6,
}


async def test_generated_webchat_frames_never_break_the_socket_or_the_server(backend, tmp_path):
    from websockets.asyncio.client import connect

    async with live_server(backend, tmp_path, settings_changes=UNLIMITED_WEBCHAT) as server:
        api = server.api
        response = await api.client.put(
            "/api/v1/tenant", json={"widget_origins": [SHOP]}, headers=api.auth("admin")
        )
        assert response.status_code == 200, response.text
        response = await api.client.put("/api/v1/teams/support", json={}, headers=api.auth("admin"))
        assert response.status_code == 200, response.text
        url = server.url.replace("http://", "ws://") + "/webchat/acme"
        async with connect(url, origin=SHOP) as honest:
            await honest.send(json.dumps({"type": "hello", "visitor": "h" * 32}))
            assert json.loads(await asyncio.wait_for(honest.recv(), 10))["type"] == "status"
            loop = asyncio.get_running_loop()
            counter = itertools.count()

            @settings(
                max_examples=EXAMPLES * 6,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                print_blob=True,
            )
            @given(frames=_webchat_frames(), ascii_only=st.booleans())
            def run(frames, ascii_only):
                example = _webchat_example(server, frames, ascii_only, next(counter))
                asyncio.run_coroutine_threadsafe(example, loop).result(timeout=60)

            await asyncio.to_thread(run)
            # The honest visitor's socket lived through it, and its message goes through.
            await honest.send(json.dumps({"type": "message", "id": "after", "text": "still here"}))
            async with asyncio.timeout(10):
                while json.loads(await honest.recv()).get("id") != "w-after":
                    pass
        assert (await api.client.get("/healthz")).status_code == 200
