"""Rules about the shape of server/'s source, checked by reading it.

Dependencies through their public API only: nothing under server/ reads, replaces or
patches a private attribute of uvicorn, websockets, Starlette or any other dependency
(the websocket path once did, and every upgrade of either meant rewriting it). Two
checks: the private internals /ws once used, by the code that reaches them; and, more
generally, any `X._name` (or getattr/setattr/hasattr/delattr of a "_name") where X is
not `self`, `cls` or a module of ours, and any import from a dependency's private
module. The few exceptions are listed below, each with its reason.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "server"
OURS = ("server", "channels", "state_machine")

# Internals of uvicorn 0.54 and websockets 17 that /ws used to reach, as code (comments
# and strings are not read).
KNOWN_PRIVATE = {
    r"__self__": "a bound method's owner: the server's protocol behind ASGI `send`",
    r"\bprotocol\.transport\b": "the transport of uvicorn's protocol",
    r"\bprotocol\.writable\b": "uvicorn's flow-control event",
    r"\bprotocol\.(?:request|response)\b": "uvicorn's handshake request and response",
    r"\bprotocol\.queue\b": "uvicorn's inbound asyncio.Queue",
    r"\bprotocol\.close_sent\b": "uvicorn's close flag",
    r"getattr\([^)]*[\"']close_sent[\"']": "uvicorn's close flag, by name",
    r"\.conn\.|\bprotocol\.conn\b": "uvicorn's websockets ServerProtocol (`protocol.conn`)",
    r"\breader\.buffer\b": "websockets' StreamReader buffer",
    r"\.parser\s*=(?!=)": "websockets' parser generator, replaced",
    r"\bProtocol\.parse\b": "websockets' parser generator",
    r"\._send\b|\._receive\b": "Starlette's WebSocket internals",
}

# X._name that is fine, each with why: by the whole expression, or by the name alone.
ALLOWED_EXPRESSIONS = {
    "os._exit": "a documented function of the standard library",
    "logging._srcfile": "the logging HOWTO's own advice (Optimization): no caller lookup",
    # Ours, not a dependency's: one class of this package reaching into another's
    # attribute. Left to the owners of those modules.
    "self._bus._subscriptions": "ours (server/bus)",
    "window._insert": "ours (server/live/windows.py)",
}
ALLOWED_NAMES = {
    "_mapping": "SQLAlchemy's Row._mapping, public API (underscored so no column shadows it)",
}


@dataclass(frozen=True)
class Finding:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def code_only(source: str) -> str:
    """The source with its comments and docstrings (a string alone on its line)
    blanked, line numbers kept; other strings stay: `getattr(x, "__self__")` is code."""
    lines = source.splitlines()
    statement_start = True
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT or (token.type == tokenize.STRING and statement_start):
            (row, col), (end_row, end_col) = token.start, token.end
            for number in range(row, end_row + 1):
                line = lines[number - 1]
                first = col if number == row else 0
                last = end_col if number == end_row else len(line)
                lines[number - 1] = line[:first] + " " * (last - first) + line[last:]
        if token.type not in (tokenize.NL, tokenize.COMMENT):
            statement_start = token.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    return "\n".join(lines)


def known_private(source: str, where: str) -> list[Finding]:
    code = code_only(source)
    found = []
    for number, line in enumerate(code.splitlines(), 1):
        for pattern, what in KNOWN_PRIVATE.items():
            if re.search(pattern, line):
                found.append(Finding(f"{where}:{number}", f"{what} ({line.strip()})"))
    return found


def _our_modules(tree: ast.Module) -> set[str]:
    """Names that the module binds to modules of ours."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in OURS:
                    names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in OURS:
                for alias in node.names:
                    module = ROOT / Path(*node.module.split("."), alias.name)
                    if module.with_suffix(".py").exists() or (module / "__init__.py").exists():
                        names.add(alias.asname or alias.name)
    return names


def private_access(source: str, where: str) -> list[Finding]:
    tree = ast.parse(source)
    ours = _our_modules(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name, owner = node.attr, node.value
            if not _private(name):
                continue
            if isinstance(owner, ast.Name) and (owner.id in ("self", "cls") or owner.id in ours):
                continue
            expression = f"{ast.unparse(owner)}.{name}"
            if expression in ALLOWED_EXPRESSIONS or name in ALLOWED_NAMES:
                continue
            found.append(Finding(f"{where}:{node.lineno}", f"private attribute {expression}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and not (isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "cls"))
        ):
            what = f"{node.func.id}({ast.unparse(node.args[0])}, {node.args[1].value!r})"
            found.append(Finding(f"{where}:{node.lineno}", f"private attribute by name: {what}"))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif node.level or (node.module or "").split(".")[0] in OURS:
                continue
            else:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                if name.split(".")[0] not in OURS and any(map(_private, name.split("."))):
                    found.append(Finding(f"{where}:{node.lineno}", f"private module {name}"))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def server_sources():
    for path in sorted(SERVER.rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), path.read_text()


def test_nothing_under_server_touches_the_private_internals_ws_once_used():
    found = [f for where, source in server_sources() for f in known_private(source, where)]
    assert not found, "\n".join(map(str, found))


def test_nothing_under_server_reads_a_private_attribute_of_a_dependency():
    found = [f for where, source in server_sources() for f in private_access(source, where)]
    assert not found, "\n".join(map(str, found))


def test_the_checks_catch_what_they_are_for():
    """Each way /ws once reached into uvicorn or websockets is caught, and what is
    allowed is not."""
    old_ws = """
protocol = getattr(send, "__self__", None)
transport = protocol.transport
ready = protocol.writable.is_set() and not getattr(protocol, "close_sent", False)
protocol.request = None
parser = protocol.conn
if not parser.reader.buffer:
    parser.parser = WebsocketsProtocol.parse(parser)
protocol.queue = Inbox()
"""
    caught = known_private(old_ws, "old")
    assert {f.where for f in caught} == {f"old:{n}" for n in range(2, 10)}, caught
    documented = '"""send.__self__, in a docstring"""\nx = 1  # protocol.queue, in a comment\n'
    assert known_private(documented, "x") == []

    private = """
from __future__ import annotations
import os
import uvicorn._types
from server.live import windows
from starlette import _utils
send = websocket._send
hidden = getattr(conn, "_receive")
row._mapping
os._exit(1)
windows._private_helper()
self._mine
"""
    caught = private_access(private, "p")
    assert sorted(f"{f.where} {f.what}" for f in caught) == [
        "p:4 private module uvicorn._types",
        "p:6 private module starlette._utils",
        "p:7 private attribute websocket._send",
        "p:8 private attribute by name: getattr(conn, '_receive')",
    ]
