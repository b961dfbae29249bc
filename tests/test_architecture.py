"""The architecture holds: what docs/architecture.md and server/__init__.py say about
where things live is checked here (and by import-linter's contracts in
pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

from channels.base import CredentialsError, PayloadError, ProviderError, SignatureError
from server.edge.errors import STATUS

SERVER = Path(__file__).resolve().parent.parent / "server"
# The web chat's socket endpoint moves next to /ws with the one websocket core.
NOT_YET_AT_THE_EDGE = {"providers/webchat.py"}


def _refusal_codes() -> dict[str, str]:
    """Every error code a `Refused(...)` of server/ names literally, with where."""
    codes = {}
    for path in SERVER.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Refused"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                codes[node.args[0].value] = f"{path.relative_to(SERVER)}:{node.lineno}"
    return codes


def test_every_refusal_code_has_its_http_status_in_the_one_table():
    codes = _refusal_codes()
    assert {"not_found", "invalid_field", "forbidden", "malformed"} <= set(codes)  # it reads
    codes.update(
        {
            "missing_signature": "channels SignatureError",
            "bad_signature": "channels SignatureError",
            PayloadError.code: "channels PayloadError",
            CredentialsError.code: "channels CredentialsError",
            ProviderError.code: "channels ProviderError",
        }
    )
    assert SignatureError("missing_signature", "").status == STATUS["missing_signature"]
    assert SignatureError("bad_signature", "").status == STATUS["bad_signature"]
    missing = {code: where for code, where in codes.items() if code not in STATUS}
    assert not missing, f"codes without an HTTP status in server/edge/errors.py: {missing}"


def test_http_statuses_are_known_only_at_the_edge():
    """Below the edge a refusal says what is wrong, not how HTTP says it."""
    offenders = []
    for path in SERVER.rglob("*.py"):
        relative = path.relative_to(SERVER)
        if relative.parts[0] in ("edge", "app.py") or "migrations" in relative.parts:
            continue
        if relative.as_posix() in NOT_YET_AT_THE_EDGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                ("starlette.responses", "starlette.exceptions")
            ):
                offenders.append(f"{relative}:{node.lineno} imports {node.module}")
    assert not offenders, offenders
