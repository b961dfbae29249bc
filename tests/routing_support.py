"""Set-up and reads for routing tests: a tenant on the built-in router, teams, agents
and their presence, conversations arriving now."""

from __future__ import annotations

import itertools
import secrets
from datetime import UTC, datetime

from tests.app_support import Api
from tests.support import wait_for

_ids = itertools.count(1)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def builtin_routing(api: Api, **tenant) -> None:
    response = await api.client.put(
        "/api/v1/tenant", json={"routing": "builtin", **tenant}, headers=api.auth("admin")
    )
    assert response.status_code == 200, response.text


async def put_team(api: Api, name: str, **settings) -> dict:
    response = await api.client.put(
        f"/api/v1/teams/{name}", json=settings, headers=api.auth("admin")
    )
    assert response.status_code == 200, response.text
    return response.json()


async def put_agent(api: Api, agent_id: str, teams: list[str], **fields) -> None:
    response = await api.client.put(
        f"/api/v1/agents/{agent_id}",
        json={"name": f"Agent {agent_id}", "teams": teams, **fields},
        headers=api.auth("admin"),
    )
    assert response.status_code == 200, response.text


async def set_presence(api: Api, agent_id: str, presence: str) -> dict:
    response = await api.client.put(
        "/api/v1/agents/me/presence",
        json={"presence": presence},
        headers=api.auth("agent", agent_id),
    )
    assert response.status_code == 200, response.text
    return response.json()


async def arrive(api: Api, team: str | None, channel: str = "call", contact=None) -> str:
    """An inbound conversation created now; returns its id."""
    cid = f"c{next(_ids)}-{secrets.token_hex(4)}"
    data = {
        "channel": channel,
        "contact": contact or f"+3491100{next(_ids):04d}",
        "customer": {"name": f"Customer {cid}"},
    }
    if team is not None:
        data["team"] = team
    event = {**api.event("conversation.created", cid, now_iso(), **data), "event_id": f"new-{cid}"}
    [result] = await api.post_events([event])
    assert result["outcome"] == "applied", result
    return cid


async def row(api: Api, cid: str) -> dict:
    return (await api.conversation(cid))["conversation"]


async def wait_row(api: Api, cid: str, timeout: float = 15.0, **expected) -> dict:
    async def matches():
        current = await row(api, cid)
        return current if all(current[k] == v for k, v in expected.items()) else None

    return await wait_for(matches, timeout, message=f"{cid} to reach {expected}")


async def timeline(api: Api, cid: str) -> list[dict]:
    return (await api.conversation(cid))["timeline"]


async def applied(api: Api, cid: str, type_: str) -> list[dict]:
    return [e for e in await timeline(api, cid) if e["type"] == type_ and e["outcome"] == "applied"]


async def current_offer(api: Api, cid: str) -> dict:
    """The data of the conversation's latest applied routing.offered."""
    offers = await applied(api, cid, "routing.offered")
    assert offers, f"{cid} was never offered"
    return offers[-1]["data"]
