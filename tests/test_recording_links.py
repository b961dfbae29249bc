"""Recording links on both backends: a link plays its recording with Range and no
header; it is refused for any other recording, conversation or tenant, after it
expires, when tampered with, and anywhere but the recording it names; it grants no more
than its asker's own token would now; the header path still works."""

from __future__ import annotations

import base64
import json
import logging
import random
import warnings
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server.providers.recording_links import AUDIENCE, LINK_TTL_S, link_key
from tests.app_support import SECRET, running_api
from tests.recording_support import at, conversation, stored_recording
from tests.server_support import live_server
from tests.support import ManualClock

DATA = random.Random(7).randbytes(200_000)  # bytes that differ everywhere
OTHER = random.Random(8).randbytes(50_000)


@pytest.fixture
async def clocked(backend, tmp_path):
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    async with running_api(backend, tmp_path / "data", clock) as api:
        yield api, clock


def path_of(cid: str, rid: str) -> str:
    return f"/api/v1/conversations/{cid}/recordings/{rid}"


async def mint(api, cid: str, rid: str, headers: dict) -> httpx.Response:
    return await api.client.post(f"{path_of(cid, rid)}/link", headers=headers)


async def link(api, cid: str, rid: str, role: str = "supervisor", user: str = "sup1", **kw):
    response = await mint(api, cid, rid, api.auth(role, user, **kw))
    assert response.status_code == 200, response.text
    return response.json()


def token_of(url: str) -> str:
    [token] = parse_qs(urlsplit(url).query)["access"]
    return token


def with_token(cid: str, rid: str, token: str) -> str:
    return f"{path_of(cid, rid)}?access={token}"


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    assert response.json()["error"]["message"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_link_plays_its_recording_with_range_and_no_header(clocked, tmp_path):
    api, clock = clocked
    await conversation(api, "c1")
    await stored_recording(api, tmp_path, "c1", "r1", DATA)

    minted = await mint(api, "c1", "r1", api.auth("supervisor", "sup1"))
    assert minted.status_code == 200, minted.text
    assert minted.headers["cache-control"] == "no-store"
    body = minted.json()
    assert body["url"].startswith("/api/v1/conversations/c1/recordings/r1?access=")
    expires = datetime.fromisoformat(body["expires_at"])
    assert expires == clock.now() + timedelta(seconds=LINK_TTL_S)

    url = body["url"]
    whole = await api.client.get(url)  # no Authorization header at all
    assert whole.status_code == 200 and whole.content == DATA
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "audio/wav"
    first = await api.client.get(url, headers={"Range": "bytes=0-99"})
    assert first.status_code == 206 and first.content == DATA[:100]
    assert first.headers["content-range"] == f"bytes 0-99/{len(DATA)}"
    middle = await api.client.get(url, headers={"Range": "bytes=150000-150999"})
    assert middle.status_code == 206 and middle.content == DATA[150000:151000]
    seek = await api.client.get(url, headers={"Range": "bytes=199000-"})
    assert seek.status_code == 206 and seek.content == DATA[199000:]
    assert seek.headers["content-range"] == f"bytes 199000-{len(DATA) - 1}/{len(DATA)}"
    beyond = await api.client.get(url, headers={"Range": f"bytes={len(DATA)}-"})
    assert beyond.status_code == 416
    head = await api.client.head(url, headers={"Range": "bytes=10-19"})
    assert head.status_code == 206 and head.headers["content-length"] == "10"
    # The header path is unchanged.
    headed = await api.client.get(
        path_of("c1", "r1"), headers={**api.auth("admin", "adm"), "Range": "bytes=100-199"}
    )
    assert headed.status_code == 206 and headed.content == DATA[100:200]
    # Good until the last second of its life (expiry: the next test).
    clock.advance(timedelta(seconds=LINK_TTL_S - 1))
    again = await api.client.get(url, headers={"Range": "bytes=5-9"})
    assert again.status_code == 206 and again.content == DATA[5:10]


async def test_an_agent_gets_a_link_to_its_own_conversation_only(api, tmp_path):
    await conversation(api, "c1", offered_to="a1")
    await stored_recording(api, tmp_path, "c1", "r1", DATA)
    url = (await link(api, "c1", "r1", "agent", "a1"))["url"]
    played = await api.client.get(url, headers={"Range": "bytes=0-9"})
    assert played.status_code == 206 and played.content == DATA[:10]

    assert_refused(await mint(api, "c1", "r1", api.auth("agent", "a2")), 404, "not_found")
    for role in ("wallboard", "service"):
        assert_refused(await mint(api, "c1", "r1", api.auth(role, "x")), 403, "forbidden")
    assert_refused(await mint(api, "c1", "nope", api.auth("agent", "a1")), 404, "not_found")
    assert_refused(await mint(api, "c1", "r1", {}), 401, "unauthorized")

    # The conversation is no longer the agent's: its link stops playing at once.
    declined = api.event("routing.offer_declined", "c1", at(api, -20), agent_id="a1",
                         offer_id="o-c1", reason="rejected")  # fmt: skip
    [result] = await api.post_events([declined])
    assert result["outcome"] == "applied", result
    assert_refused(await api.client.get(url), 404, "not_found")
    supervisor = (await link(api, "c1", "r1"))["url"]
    assert (await api.client.get(supervisor)).content == DATA


async def test_a_link_is_refused_for_another_recording_conversation_or_tenant(api, tmp_path):
    await conversation(api, "c1")
    await stored_recording(api, tmp_path, "c1", "r1", DATA)
    await stored_recording(api, tmp_path, "c1", "r2", OTHER)
    await conversation(api, "c2")
    await stored_recording(api, tmp_path, "c2", "r1", OTHER)
    # globex has a conversation and a recording of the same ids, with other bytes.
    await conversation(api, "c1", tenant="globex")
    await stored_recording(api, tmp_path, "c1", "r1", OTHER[:1000], tenant="globex")

    token = token_of((await link(api, "c1", "r1"))["url"])
    assert (await api.client.get(with_token("c1", "r1", token))).content == DATA
    for cid, rid in (("c1", "r2"), ("c2", "r1"), ("c2", "r2"), ("c1", "r1x"), ("c1", "R1")):
        response = await api.client.get(with_token(cid, rid, token))
        assert_refused(response, 403, "forbidden")

    # A link carries its tenant: globex's link to its own c1/r1 plays globex's bytes,
    # acme's plays acme's, and neither tenant can mint a link to the other's.
    globex = token_of((await link(api, "c1", "r1", tenant="globex"))["url"])
    assert (await api.client.get(with_token("c1", "r1", globex))).content == OTHER[:1000]
    assert_refused(await api.client.get(with_token("c2", "r1", globex)), 403, "forbidden")
    await conversation(api, "acme-only")
    await stored_recording(api, tmp_path, "acme-only", "r9", DATA)
    response = await mint(api, "acme-only", "r9", api.auth("supervisor", "sup1", "globex"))
    assert_refused(response, 404, "not_found")
    # The header path keeps its own rules beside links.
    headed = await api.client.get(
        path_of("acme-only", "r9"), headers=api.auth("admin", "g", "globex")
    )
    assert_refused(headed, 404, "not_found")


def forged(claims: dict, key) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def hs512(claims: dict, key: bytes) -> str:
    with warnings.catch_warnings():  # the right key, the wrong algorithm: short for it
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm="HS512")


def unsigned(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_a_link_is_refused_after_expiry_and_when_tampered(clocked, tmp_path):
    api, clock = clocked
    await conversation(api, "c1")
    await stored_recording(api, tmp_path, "c1", "r1", DATA)
    await stored_recording(api, tmp_path, "c1", "r2", OTHER)
    good = token_of((await link(api, "c1", "r1"))["url"])
    claims = jwt.decode(good, options={"verify_signature": False})
    assert (claims["aud"], claims["conversation"], claims["recording"]) == (AUDIENCE, "c1", "r1")
    header, payload, signature = good.split(".")

    def payload_of(changes: dict) -> str:
        raw = json.dumps({**claims, **changes}).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    key = link_key(SECRET)
    later = int((clock.now() + timedelta(hours=1)).timestamp())
    bad = {
        "empty": "",
        "garbage": "not-a-token",
        "too long": "a" * 5000,
        "recording swapped": f"{header}.{payload_of({'recording': 'r2'})}.{signature}",
        "exp extended": f"{header}.{payload_of({'exp': later})}.{signature}",
        "role raised": f"{header}.{payload_of({'role': 'admin'})}.{signature}",
        "signature reversed": f"{header}.{payload}.{signature[::-1]}",
        "alg none": unsigned(claims),
        "signed with the bare secret": forged(claims, SECRET),
        "signed with another secret": forged(claims, link_key("another-secret-0123456789abc")),
        "no aud": forged({k: v for k, v in claims.items() if k != "aud"}, key),
        "other aud": forged({**claims, "aud": "switchboard:other"}, key),
        "aud list": forged({**claims, "aud": [AUDIENCE, "x"]}, key),
        "no exp": forged({k: v for k, v in claims.items() if k != "exp"}, key),
        "exp not a number": forged({**claims, "exp": "soon"}, key),
        "exp out of range": forged({**claims, "exp": 10**20}, key),
        "unknown role": forged({**claims, "role": "root"}, key),
        "recording not a string": forged({**claims, "recording": ["r1"]}, key),
        "a bearer token": api.token("admin", "adm"),
        "HS512": hs512(claims, key),
    }
    for name, token in bad.items():
        response = await api.client.get(with_token("c1", "r1", token))
        assert response.status_code == 401, (name, response.status_code, response.text)
        assert_refused(response, 401, "unauthorized")
    # Two links at once: malformed, whatever they are.
    response = await api.client.get(f"{path_of('c1', 'r1')}?access={good}&access={good}")
    assert_refused(response, 400, "malformed")
    # With a link, the header is not read: a good header does not rescue a bad link.
    response = await api.client.get(
        with_token("c1", "r1", bad["garbage"]), headers=api.auth("admin", "adm")
    )
    assert_refused(response, 401, "unauthorized")

    # Expiry: 5 minutes after minting, on the server's clock.
    short = api.token("supervisor", "sup1", ttl=LINK_TTL_S + 60)  # minted now: see below
    assert (await api.client.get(with_token("c1", "r1", good))).status_code == 200
    clock.advance(timedelta(seconds=LINK_TTL_S))
    assert_refused(await api.client.get(with_token("c1", "r1", good)), 401, "unauthorized")
    # Never later than the asker's token: a link minted with a token that has 60 s left.
    response = await mint(api, "c1", "r1", {"Authorization": f"Bearer {short}"})
    assert response.status_code == 200, response.text
    capped = response.json()
    assert datetime.fromisoformat(capped["expires_at"]) == clock.now() + timedelta(seconds=60)
    assert (await api.client.get(capped["url"])).status_code == 200
    clock.advance(timedelta(seconds=60))
    assert_refused(await api.client.get(capped["url"]), 401, "unauthorized")


async def test_a_link_is_accepted_nowhere_but_its_recording(backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        api = server.api
        await conversation(api, "c1")
        await stored_recording(api, tmp_path, "c1", "r1", DATA)
        token = token_of((await link(api, "c1", "r1"))["url"])
        bearer = {"Authorization": f"Bearer {token}"}
        # Not a bearer token: not on the recording itself, not on any other endpoint.
        for method, path in (
            ("GET", path_of("c1", "r1")),
            ("GET", "/api/v1/conversations/c1"),
            ("GET", "/api/v1/me"),
            ("POST", f"{path_of('c1', 'r1')}/link"),
        ):
            response = await api.client.request(method, path, headers=bearer)
            assert_refused(response, 401, "unauthorized")
            # Nor as `?access=` anywhere else; in particular a link cannot mint another.
            response = await api.client.request(method, f"{path}?access={token}")
            if path != path_of("c1", "r1"):
                assert_refused(response, 401, "unauthorized")
        # Nor the websocket's ?token=.
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                f"{server.ws_url}?token={token}", subprotocols=["switchboard.v1.json"]
            ):
                pass
        assert refused.value.response.status_code == 401


async def test_a_links_token_stays_out_of_the_request_log(api, tmp_path, caplog):
    await conversation(api, "c1")
    await stored_recording(api, tmp_path, "c1", "r1", DATA)
    url = (await link(api, "c1", "r1"))["url"]
    with caplog.at_level(logging.DEBUG):
        assert (await api.client.get(url, headers={"Range": "bytes=0-0"})).status_code == 206
        assert (await api.client.get(url + "x")).status_code == 401
    token = token_of(url)
    assert any(record.name == "switchboard.http" for record in caplog.records)
    for record in caplog.records:
        if record.name.split(".")[0] in ("httpx", "httpcore"):
            continue  # the test's client, not the server
        text = json.dumps(record.__dict__, default=str)
        assert token.split(".")[2] not in text, record
