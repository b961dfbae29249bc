"""docs/api.md, written from the code: the HTTP reference from the OpenAPI document
(server/openapi), the websocket protocol from its frames (server/wire/protocol.py), the
error codes from server/edge/errors.py and the configuration from
server/core/settings.py. The prose around them (how the live windows behave, a walk
through a subscription) is the template below.

    python -m server.edge.reference    # writes docs/api.md

tests/test_api_reference.py fails while the committed docs/api.md differs from what
this writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from server.core.auth import ROLES
from server.core.settings import ENVIRONMENT
from server.edge.errors import ERRORS
from server.openapi.document import openapi_document
from server.openapi.websocket import client_frame, server_frame
from server.wire.protocol import (
    CLIENT_FRAMES,
    CLOSE_CODES,
    MAX_FRAME_BYTES,
    PATH,
    SERVER_FRAMES,
    SUBPROTOCOL_FRAMES,
)

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "api.md"
COMMAND = "python -m server.edge.reference"

# --- the template: hand-written prose, and where the generated parts go ---------------------

TEMPLATE = f"""# Switchboard's API

<!-- Written by `{COMMAND}` from the code; edit the code (or the
template in server/edge/reference.py) and run it again, not this file. -->

Everything a client of Switchboard uses: the [HTTP API](#http), the
[websocket](#websocket) that carries live views, popups and wallboards, the
[error codes](#error-codes), the [configuration](#configuration) and the
[objects](#objects) they exchange. The same document is served as OpenAPI at
`GET /openapi.json` (the websocket under `x-websocket` and the `ClientFrame` and
`ServerFrame` schemas).

JSON is the default body format; every body may also be sent and asked for as
msgpack (`Content-Type` / `Accept: application/msgpack`) with the same keys. A
request carries a bearer token (`Authorization: Bearer T`) naming its tenant, its
user (`sub`), its role and an expiry, signed by the server's secret
(`switchboard token --tenant T --role R --user U` mints one). The roles are
<!-- roles -->. Nothing of one tenant is ever visible to another.

An error is `{{"error": {{"code", "message", ...}}}}` with the status of its code
(the [table](#error-codes)); a refused field is named by `field`. Bad input is
never answered with a 500.

<a id="http"></a>
## HTTP

<!-- http -->

<a id="websocket"></a>
## The websocket `{PATH}`

The handshake carries the token in `Authorization: Bearer T`, or `?token=T` for
programs; the pages use `?ticket=K` with a single-use ticket from
`POST /api/v1/ws-tickets` (good once, for 30 seconds, as the token that asked for it),
so that no token is in a URL. A missing, bad, used or expired token or ticket is
refused with HTTP 401. A handshake
with an `Origin` header is refused (403) unless the origin is the server's own or
listed in `SWITCHBOARD_ALLOWED_ORIGINS`; one without (a program) is judged by its
token alone.

<!-- subprotocols -->

Every frame is a map with a `type`. A client frame may carry a `ref`, a string or
a number: the frame that answers it echoes it (a `ref` of another kind is
dropped). A frame that cannot be read, or is refused, is answered
by an `error` frame and the socket stays open; a frame larger than
<!-- max frame --> closes it with 1009.

What a client holds is a set of *subscriptions*; each is a *window* over a view:
the first W rows of the view in its order, where W is the subscribe's `limit`
plus the `limit` of every `fetch` since. The server keeps the window exact: a row
that enters the view within the first W is upserted with all its columns and the
row pushed below W is removed; a row that leaves the view, or moves below W, is
removed and the row that moves up into the window is upserted; `total` counts the
whole view.

### A walk through a subscription

A supervisor watches unanswered WhatsApp conversations, newest first, 2 rows:

```
→ {{"type":"subscribe","ref":"1","limit":2,
   "view":{{"filters":[{{"field":"channel","op":"in","value":["whatsapp"]}},
                      {{"field":"state","op":"is_empty"}}],
           "columns":["id","customer_name","status"]}}}}
← {{"type":"snapshot","ref":"1","sub":"s7","view":{{...}},
   "columns":["id","customer_name","status"],
   "rows":[{{"id":"c9","version":3,"customer_name":"Ana","status":"queued",
            "created_at":"2026-11-24T10:05:00.000Z"}},
           {{"id":"c4","version":2,"customer_name":"Tom","status":"new",
            "created_at":"2026-11-24T10:01:00.000Z"}}],
   "total":5,"seq":0}}
```

Every row carries `id`, `version` and the view's sort keys (`created_at` here,
and `id`), shown or not, so the client can place it.

A new WhatsApp conversation arrives. It sorts first, so it enters the window with
all its columns, and `c4` is pushed out:

```
← {{"type":"delta","sub":"s7","seq":1,
   "upsert":[{{"id":"c12","version":1,"customer_name":"Lea","status":"new",
              "created_at":"2026-11-24T10:07:00.000Z"}}],
   "remove":["c4"],"total":6}}
```

`c9` is offered to an agent: only what changed comes, with id, version and
sort keys:

```
← {{"type":"delta","sub":"s7","seq":2,
   "upsert":[{{"id":"c9","version":4,"created_at":"2026-11-24T10:05:00.000Z",
              "status":"offered"}}],
   "remove":[],"total":6}}
```

The agent accepts: `state` becomes `customer_answered`, so `c9` leaves the view,
and the next row moves up into the window:

```
← {{"type":"delta","sub":"s7","seq":3,
   "upsert":[{{"id":"c4","version":2,"customer_name":"Tom","status":"new",
              "created_at":"2026-11-24T10:01:00.000Z"}}],
   "remove":["c9"],"total":5}}
```

The supervisor scrolls: `fetch` the next 2 rows. The `page` answers with the rows
after the window, which from then on belong to it (W is now 4); `seq` is
unchanged, a page is not a delta:

```
→ {{"type":"fetch","ref":"2","sub":"s7","limit":2}}
← {{"type":"page","ref":"2","sub":"s7","seq":3,"rows":[{{...}},{{...}}]}}
```

### Applying frames

```
rows = {{}}                                   # id -> row
on snapshot: rows = {{r.id: r for r in f.rows}}; seq = 0; total = f.total
on page:     for r in f.rows: rows[r.id] = r
on delta:    if f.seq != seq + 1: resubscribe (something was lost)
             seq = f.seq
             for id in f.remove: del rows[id]
             for r in f.upsert: rows[r.id] = {{**rows.get(r.id, {{}}), **r}}
             total = f.total
on resync:   subscribe again
show:        rows sorted by the view's sort keys, then id
```

### Guarantees

* For one subscription, `seq` goes up by exactly one per `delta`. A gap means
  loss: the client subscribes again (the bundled pages do this by themselves).
* Applying the snapshot, then every page and delta in order, gives exactly what
  a fresh snapshot with limit W would give at that moment (same membership, same
  column values, same versions).
* A row's `version` never goes down in what one client receives.
* Several changes to a row within one push interval
  (`SWITCHBOARD_PUSH_INTERVAL_MS`) may be merged into one upsert; a row new to the
  window, or one whose intermediate version the client missed, comes whole. A
  change is pushed as soon as it is committed when the server is quiet; under
  load, deltas go out at most once per push interval, so rows per frame grow
  instead of frames.
* `limit: 0` subscribes to the count alone (for a list of views): deltas carry
  only `total`, and only when it moves.
* A client that cannot keep up does not grow the server's memory: its pending
  frames are dropped and its subscriptions end with `resync`; if it falls behind
  again before it caught up, the socket is closed with 1013. No other client
  notices.

### Client frames

<!-- client frames -->

### Server frames

<!-- server frames -->

### Close codes

<!-- close codes -->

<a id="error-codes"></a>
## Error codes

<!-- errors -->

A websocket `error` frame carries the same codes, and `unknown_type` for a frame
type the server does not know.

<a id="configuration"></a>
## Configuration

Environment variables, each with an embedded default, so that a fresh machine
needs none:

<!-- configuration -->

<a id="objects"></a>
## Objects

The schemas the requests, answers and frames above name, as the OpenAPI
document's components.

<!-- objects -->
"""


# --- schemas as text -----------------------------------------------------------------------


def cell(text: str) -> str:
    """Text that fits in a table cell."""
    return prose(" ".join(str(text).split()).replace("|", "\\|"))


def prose(text: str) -> str:
    """Text as it reads, not as HTML (`<audio src>`)."""
    return text.replace("<", "&lt;")


def link(name: str) -> str:
    if name.startswith(("ClientFrame.", "ServerFrame.")):
        return f"[`{name.split('.', 1)[1]}`](#{name})"
    return f"[{name}](#{name})"


def code(value: Any) -> str:
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def kind(schema: dict) -> str:
    """A schema in a few words: its type and bounds."""
    if "$ref" in schema:
        return link(schema["$ref"].rsplit("/", 1)[1])
    if "const" in schema:
        return code(schema["const"])
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(kind(branch) for branch in schema[key])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    null = "null" in types and len(types) > 1
    types = [t for t in types if t != "null"]
    values = [v for v in schema.get("enum", ()) if v is not None]
    if len(values) == 1:
        text = code(values[0])
    elif values:
        text = "one of " + ", ".join(code(v) for v in values)
    elif types == ["integer"] or types == ["number"]:
        text = ("integer" if types == ["integer"] else "number") + bounds(
            schema.get("minimum"), schema.get("maximum")
        )
    elif types == ["string"]:
        low, high = schema.get("minLength"), schema.get("maxLength")
        text = "non-empty text" if low == 1 and high is None else "text"
        if text == "text":
            text += bounds(low, high, " characters")
        if "format" in schema:
            text = FORMATS.get(schema["format"], f"{text} ({schema['format']})")
        if "pattern" in schema:
            text += f" matching `{schema['pattern']}`"
    elif types == ["boolean"]:
        text = "true or false"
    elif types == ["array"]:
        text = "list of " + kind(schema.get("items", {}))
        if "maxItems" in schema:
            text += f", at most {schema['maxItems']}"
    elif types == ["object"]:
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not schema.get("properties"):
            text = "map of " + kind(extra)
        else:
            text = "object"
    elif types:
        text = " or ".join(types)
    else:
        text = "any"
    if null:
        text += ", or null"
    if "default" in schema:
        text += f"; default {code(schema['default'])}"
    return text


FORMATS = {"date-time": "RFC 3339 instant", "date": "date (YYYY-MM-DD)", "binary": "bytes"}


def bounds(low, high, unit: str = "") -> str:
    if low is not None and high is not None:
        return f", {low} to {high}{unit}" if low != high else f", {low}"
    if low is not None:
        return f", at least {low}{unit}"
    if high is not None:
        return f", at most {high}{unit}"
    return ""


def field_rows(schema: dict, prefix: str = "") -> list[tuple[str, bool, str, str]]:
    """(field, required, kind, description) of an object's properties, and of those of
    the objects written inline in it (`numbers[].team`)."""
    rows = []
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        rows.append((prefix + name, name in required, kind(prop), prop.get("description", "")))
        inner, mark = prop, "."
        if prop.get("type") in ("array", ["array", "null"]):
            inner, mark = prop.get("items", {}), "[]."
        if inner.get("properties"):
            rows.extend(field_rows(inner, f"{prefix}{name}{mark}"))
    return rows


def fields_table(schema: dict, what: str = "field", open_note: str = "") -> list[str]:
    """The object's fields as a table; `open_note`: what to say of an object that may
    carry other keys."""
    rows = field_rows(schema)
    if not rows:
        return []
    lines = [f"| {what} | required | type | |", "|---|---|---|---|"]
    for name, required, text, description in rows:
        lines.append(
            f"| `{name}` | {'yes' if required else ''} | {cell(text)} | {cell(description)} |"
        )
    if open_note and schema.get("additionalProperties") is not False:
        lines += ["", open_note]
    return lines


# --- HTTP -------------------------------------------------------------------------------------


TAGS = {
    "api": "events and conversations",
    "views": "views",
    "admin": "set-up (admin)",
    "routing": "routing",
    "pages": "pages",
    "webchat": "web chat",
    "webhooks": "providers' callbacks",
    "health": "operations",
}


def http(document: dict) -> list[str]:
    operations = [
        (op.get("tags", ["api"])[0], path, method, op)
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    ]
    tags = sorted({tag for tag, *_ in operations}, key=lambda tag: list(TAGS).index(tag))
    lines = [
        "Every operation, by concern: "
        + ", ".join(f"[{TAGS[tag]}](#http-{tag})" for tag in tags)
        + ". An answer not listed with an operation is an [error](#error-codes) of the "
        "status given."
    ]
    for tag in tags:
        lines += ["", f'<a id="http-{tag}"></a>', f"### {TAGS[tag].capitalize()}"]
        for _, path, method, op in (o for o in operations if o[0] == tag):
            lines += ["", *operation(document, path, method, op)]
    return lines


def operation(document: dict, path: str, method: str, op: dict) -> list[str]:
    lines = [f"#### `{method.upper()} {path}`", "", prose(op["summary"]) + "."]
    if op.get("security") == []:
        lines += ["", "No token."]
    elif "description" in op:
        lines += ["", prose(op["description"])]
    parameters = op.get("parameters", [])
    if parameters:
        lines += ["", "| parameter | in | required | type | |", "|---|---|---|---|---|"]
        for p in parameters:
            lines.append(
                f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else ''} | "
                f"{cell(kind(p['schema']))} | {cell(p.get('description', ''))} |"
            )
    body = op.get("requestBody")
    if body:
        schema = next(iter(body["content"].values()))["schema"]
        resolved = resolve(document, schema)
        about = " ".join(filter(None, (body.get("description"), resolved.get("description"))))
        lines += ["", prose(f"Body: {kind(schema)}. {about}".rstrip())]
        table = fields_table(resolved)
        if table:
            lines += ["", *table]
    answers, errors = [], []
    for status, response in sorted(op["responses"].items()):
        if "$ref" in response:  # an error as every operation answers it
            errors.append(status)
            continue
        what = response["description"]
        media = response.get("content", {})
        schemas = [m["schema"] for m in media.values() if "schema" in m]
        if schemas and "$ref" in schemas[0]:
            what += f": {kind(schemas[0])}"
        elif media and not any(t.startswith("application/") for t in media):
            what += f" ({', '.join(media)})"
        answers.append(f"| {status} | {cell(what)} |")
    lines += ["", "| answer | |", "|---|---|", *answers]
    if errors:
        lines += ["", f"Errors: {', '.join(errors)}."]
    return lines


def resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


# --- the websocket ---------------------------------------------------------------------------


def subprotocols() -> list[str]:
    lines = ["Subprotocols:", ""]
    for name, frames in SUBPROTOCOL_FRAMES.items():
        lines.append(f"* `{name}`: {frames}.")
    return lines


def frames(document: dict, table: dict, name) -> list[str]:
    schemas = document["components"]["schemas"]
    lines = []
    for type_, frame in table.items():
        schema = schemas[name(type_)]
        lines += [f'<a id="{name(type_)}"></a>', f"#### `{type_}`", "", prose(frame.description)]
        if frame.roles:
            lines[-1] += f" Roles: {frame.roles}."
        if frame.answer:
            lines[-1] += f" Answered by: {frame.answer}."
        if frame.result:
            lines[-1] += f" The `ok` carries the keys of {link(frame.result)}."
        if frame.body:
            lines[-1] += f" Its other keys are those of {link(frame.body)}."
        rows = {k: v for k, v in schema["properties"].items() if k != "type"}
        note = OPEN_NOTES[table is CLIENT_FRAMES]
        table_lines = fields_table({**schema, "properties": rows}, "key", note)
        lines += ["", *table_lines, ""] if table_lines else [""]
    return lines[:-1]


OPEN_NOTES = {
    True: "The server does not read other keys.",
    False: "Other keys may come along: a client ignores them.",
}


def close_codes() -> list[str]:
    lines = ["| code | |", "|---|---|"]
    for number, meaning in CLOSE_CODES.items():
        lines.append(f"| {number} | {cell(meaning)} |")
    return lines


# --- errors, configuration, objects ----------------------------------------------------------


def errors() -> list[str]:
    lines = ["| code | status | when |", "|---|---|---|"]
    for name, (status, when) in sorted(ERRORS.items(), key=lambda item: item[1][0]):
        lines.append(f"| `{name}` | {status} | {cell(when)} |")
    return lines


def configuration() -> list[str]:
    lines = ["| variable | default | |", "|---|---|---|"]
    for variable in ENVIRONMENT.values():
        default = f"`{variable.default}`" if variable.default else "none"
        lines.append(f"| `{variable.name}` | {cell(default)} | {cell(variable.about)} |")
    return lines


def objects(document: dict) -> list[str]:
    """Every component schema but the frames (above) and the events' envelopes (one
    table for all, under Event)."""
    schemas = document["components"]["schemas"]
    lines = []
    for name, schema in schemas.items():
        if name.startswith(("ClientFrame", "ServerFrame", "Event.")):
            continue
        lines += [f'<a id="{name}"></a>', f"### {name}", ""]
        if schema.get("description"):
            lines += [prose(schema["description"]), ""]
        if name == "Event":
            lines += event_envelope(schemas)
        elif "properties" in schema:
            lines += fields_table(schema) or ["No fields."]
        elif any("properties" in branch for branch in schema.get("oneOf", ())):
            for branch in schema["oneOf"]:  # each a table of its own
                lines += [f"{branch.get('title', 'Or')}:", "", *fields_table(branch), ""]
            lines.pop()
        else:
            lines.append(kind(schema) + ".")
        lines.append("")
    return lines[:-1]


def event_envelope(schemas: dict) -> list[str]:
    """One table for every event type's envelope: the same keys, `type` and `data`
    aside."""
    envelopes = [schema for name, schema in schemas.items() if name.startswith("Event.")]
    first = envelopes[0]
    properties = {
        **first["properties"],
        "type": {"$ref": "#/components/schemas/EventType"},
        "data": {
            "type": "object",
            "description": "EventData.<type>: "
            + ", ".join(
                link(branch["properties"]["data"]["$ref"].rsplit("/", 1)[1]) for branch in envelopes
            ),
        },
    }
    return fields_table({**first, "properties": properties})


# --- the document ------------------------------------------------------------------------------


def render() -> str:
    document = json.loads(json.dumps(openapi_document()))
    parts = {
        "roles": ", ".join(f"`{role}`" for role in ROLES),
        "http": "\n".join(http(document)),
        "subprotocols": "\n".join(subprotocols()),
        "max frame": f"{MAX_FRAME_BYTES // 1024} KiB",
        "client frames": "\n".join(frames(document, CLIENT_FRAMES, client_frame)),
        "server frames": "\n".join(frames(document, SERVER_FRAMES, server_frame)),
        "close codes": "\n".join(close_codes()),
        "errors": "\n".join(errors()),
        "configuration": "\n".join(configuration()),
        "objects": "\n".join(objects(document)),
    }
    text = TEMPLATE
    for marker, part in parts.items():
        text = text.replace(f"<!-- {marker} -->", part)
    return text


def main() -> int:
    DOCUMENT.write_text(render())
    print(f"wrote {DOCUMENT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
