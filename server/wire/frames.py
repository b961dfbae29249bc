"""Websocket frames in the connection's format (JSON text or msgpack binary), as bytes.

A delta's body is encoded once per column set and format and shared by every
subscriber; each subscriber's frame is a small header with its own `sub` and `seq`
followed by that body. The two go to the socket as two buffers (one writev), so the
body is never copied per subscriber.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

import msgpack

JSON = "json"
MSGPACK = "msgpack"


def _default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# One encoder and one packer for the process: json.dumps and msgpack.packb build a
# new one per call, which costs more than a frame header (a few µs per subscriber).
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_default).encode
_pack = msgpack.Packer(datetime=True).pack
_TYPE, _SUB, _SEQ = _pack("type"), _pack("sub"), _pack("seq")


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: a number JSON writes, no float holds
        raise ValueError(f"{text[:40]} is out of range")
    return value


# One decoder for the process: json.loads with options builds one per call.
_strict = json.JSONDecoder(parse_constant=_constant, parse_float=_finite)


def decode_json(text: str | bytes) -> Any:
    """A JSON frame or body, strictly: NaN, Infinity and numbers no float holds (which
    Python's json takes) raise ValueError, so that no answer echoes them as bare
    NaN, which is not JSON. Bytes are decoded as json.loads decodes them."""
    if isinstance(text, bytes | bytearray):
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    return _strict.decode(text)


def encode(format: str, frame: dict[str, Any]) -> bytes:
    """A whole frame's payload: msgpack, or JSON as UTF-8."""
    if format == MSGPACK:
        return _pack(frame)
    return _json(frame).encode()


@dataclass(frozen=True, slots=True)
class Encoded:
    """The keys after `type`, `sub` and `seq`, encoded once."""

    format: str
    body: bytes
    count: int  # how many keys the body holds

    def frame(self, type_: str, sub: str, seq: int) -> tuple[bytes, bytes]:
        """The payload as (this subscriber's header, the shared body)."""
        if self.format == MSGPACK:
            size = 3 + self.count
            header = bytes([0x80 | size]) if size < 16 else b"\xde" + size.to_bytes(2, "big")
            return (
                b"".join((header, _TYPE, _pack(type_), _SUB, _pack(sub), _SEQ, _pack(seq))),
                self.body,
            )
        head = f'{{"type":{encode_basestring(type_)},"sub":{encode_basestring(sub)},"seq":{seq},'
        return head.encode(), self.body


def encode_body(format: str, keys: dict[str, Any]) -> Encoded:
    if format == MSGPACK:
        body = b"".join(_pack(key) + _pack(value) for key, value in keys.items())
        return Encoded(format, body, len(keys))
    return Encoded(format, _json(keys)[1:].encode(), len(keys))
