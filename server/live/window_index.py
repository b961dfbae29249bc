"""Which windows a change can matter to, without testing every window.

Each window is filed under one equality condition of its filter (`eq` or `in` on a
selective field, or the agent its scope is limited to); a window with none is
scanned for every change of its tenant. A change is offered to the windows filed
under its row's values, old and new: a row that leaves a window matched it before,
so its old values find the window, and one that enters matches now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.live.filters import ViewQuery

# Most selective first: the first one a filter has is the one it is filed under.
INDEXED_FIELDS = ("agent_id", "team", "status", "state", "channel", "direction")
AGENT_SCOPE = "agent scope"


def filing(query: ViewQuery) -> tuple[str, tuple] | None:
    if query.agent is not None:
        return AGENT_SCOPE, (query.agent,)
    for field in INDEXED_FIELDS:
        for condition in query.conditions:
            if condition.field == field and condition.op == "eq":
                return field, (condition.value,)
            if condition.field == field and condition.op == "in":
                return field, tuple(condition.value)
    return None


def _row_values(field: str, row: Mapping[str, Any]) -> tuple:
    if field == AGENT_SCOPE:
        return row["agent_id"], row["offer_agent_id"]
    return (row[field],)


class WindowIndex:
    def __init__(self) -> None:
        # tenant -> field -> value -> windows; tenant -> windows scanned always
        self._filed: dict[str, dict[str, dict[Any, set]]] = {}
        self._scanned: dict[str, set] = {}

    def add(self, window) -> None:
        place = filing(window.query)
        if place is None:
            self._scanned.setdefault(window.tenant, set()).add(window)
            return
        field, values = place
        by_value = self._filed.setdefault(window.tenant, {}).setdefault(field, {})
        for value in values:
            by_value.setdefault(value, set()).add(window)

    def remove(self, window) -> None:
        place = filing(window.query)
        if place is None:
            self._scanned.get(window.tenant, set()).discard(window)
            return
        field, values = place
        by_value = self._filed.get(window.tenant, {}).get(field, {})
        for value in values:
            windows = by_value.get(value)
            if windows is not None:
                windows.discard(window)
                if not windows:
                    del by_value[value]

    def has_tenant(self, tenant: str) -> bool:
        return bool(self._scanned.get(tenant)) or any(self._filed.get(tenant, {}).values())

    def candidates(self, tenant: str, new: Mapping[str, Any], old: Mapping[str, Any] | None) -> set:
        found = set(self._scanned.get(tenant, ()))
        for field, by_value in self._filed.get(tenant, {}).items():
            for row in (new, old):
                if row is None:
                    continue
                for value in _row_values(field, row):
                    windows = by_value.get(value)
                    if windows:
                        found |= windows
        return found
