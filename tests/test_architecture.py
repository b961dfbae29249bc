"""The architecture holds: what docs/architecture.md and server/__init__.py say about
where things live, checked on the source (and by import-linter's contracts in
pyproject.toml).

* The state machine decides: statuses and outcome states are the machine's `Status`
  and `State`, and the server names them through those enums and the machine's
  groups of them, never as bare strings.
* HTTP is known only at the edge: services raise `Refused` with a code, and the one
  table of server/edge/errors.py gives each code its status (import-linter's "only the
  edge speaks HTTP" keeps Starlette out of the other packages).
"""

from __future__ import annotations

import ast
import tokenize
from pathlib import Path

from channels.base import CredentialsError, PayloadError, ProviderError, SignatureError
from server.edge.errors import STATUS
from state_machine import State, Status

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server"
MIGRATIONS = SERVER / "storage" / "migrations" / "versions"  # SQL as it was then

MACHINE_WORDS = frozenset(member.value for member in (*Status, *State))

# Files that write the wire schema out, and the words they may spell: there these
# words are names on the wire that coincide with a status, not statuses.
WIRE_SCHEMA: dict[str, frozenset[str]] = {
    # The OpenAPI document of the wallboard frame: `offered`, `active` and `wrap_up`
    # are metric names (docs/api.md: how many conversations are in that status now; the
    # wallboard counts them with the machine's groups, routing/wallboard.py LIVE).
    "server/openapi/routing.py": frozenset({"offered", "active", "wrap_up"}),
}


def machine_words_in(path: Path) -> list[tuple[int, str]]:
    """(line, word) of every string literal in `path` equal to a status or a state."""
    found = []
    with path.open("rb") as source:
        tokens = tokenize.tokenize(source.readline)
        for token in tokens:
            if token.type != tokenize.STRING:
                continue
            try:
                value = ast.literal_eval(token.string)
            except (ValueError, SyntaxError):  # an f-string: not a literal
                continue
            if isinstance(value, str) and value in MACHINE_WORDS:
                found.append((token.start[0], value))
    return found


def server_sources() -> list[Path]:
    return sorted(p for p in SERVER.rglob("*.py") if MIGRATIONS not in p.parents)


def test_the_server_spells_no_status_or_state():
    offending = {}
    for path in server_sources():
        name = path.relative_to(ROOT).as_posix()
        allowed = WIRE_SCHEMA.get(name, frozenset())
        words = [(line, word) for line, word in machine_words_in(path) if word not in allowed]
        if words:
            offending[name] = words
    assert not offending, (
        "status or state spelled as a string (use state_machine.Status, State or the "
        f"machine's groups of them): {offending}"
    )


def test_the_allow_lists_name_files_that_need_them():
    """An entry that no longer excuses anything is stale: take it out."""
    for name, allowed in WIRE_SCHEMA.items():
        spelled = {word for _, word in machine_words_in(ROOT / name)}
        assert spelled == allowed, f"{name} spells {sorted(spelled)}, allowed {sorted(allowed)}"


def test_the_check_finds_string_literals_only(tmp_path):
    """The check reads tokens: a status in a string is found in any quoting; names,
    comments, f-strings and other words are not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "# a closed door\n"
        "status = 'queued'\n"
        'x = {"state": """dropped""", "presence": "available"}\n'
        "y = f'{status}' + 'newer' + b'closed'.decode()\n"
        "closed = Status.CLOSED\n",
        encoding="utf-8",
    )
    assert machine_words_in(sample) == [(2, "queued"), (3, "dropped")]


# --- refusals and HTTP ---------------------------------------------------------------


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
