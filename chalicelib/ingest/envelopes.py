"""Reading what Sentry SDKs send: compressed bodies, envelopes and legacy store bodies.

Everything here handles untrusted bytes, so every failure is an :class:`EnvelopeError` (a 400 or
413 for the caller), never anything else, and the work is bounded: at most 1 MB is read
compressed and 20 MB inflated, whatever the body claims.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chalicelib.params import MAX_BODY_BYTES

MAX_COMPRESSED = MAX_BODY_BYTES
MAX_INFLATED = 20 * 1024 * 1024
MAX_JSON_DEPTH = 64
_CHUNK = 64 * 1024


class EnvelopeError(ValueError):
    """Bytes we cannot accept; ``status`` is 400 (unreadable) or 413 (too large)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _too_large() -> EnvelopeError:
    return EnvelopeError("Payload Too Large", 413)


def _inflate_zlib(body: bytes, wbits: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = bytearray()
    data = body
    try:
        while data:
            out += inflater.decompress(data, MAX_INFLATED + 1 - len(out))
            if len(out) > MAX_INFLATED:
                raise _too_large()
            data = inflater.unconsumed_tail
            if inflater.eof:
                break
        out += inflater.flush()
    except zlib.error as exc:
        raise EnvelopeError(f"the body could not be decompressed: {exc}") from exc
    if len(out) > MAX_INFLATED:
        raise _too_large()
    if not inflater.eof:
        raise EnvelopeError("the compressed body is truncated")
    return bytes(out)


def _inflate_brotli(body: bytes) -> bytes:
    import brotli

    inflater = brotli.Decompressor()
    try:
        # Inflate in bounded steps: a few hundred bytes of brotli can hold gigabytes.
        out = bytearray(inflater.process(body, output_buffer_limit=_CHUNK))
        while not inflater.is_finished():
            if len(out) > MAX_INFLATED:
                raise _too_large()
            chunk = inflater.process(b"", output_buffer_limit=_CHUNK)
            if not chunk and inflater.can_accept_more_data() and not inflater.is_finished():
                break  # it wants input there is no more of: truncated
            out += chunk
        if len(out) > MAX_INFLATED:
            raise _too_large()
        finished = inflater.is_finished()
    except brotli.error as exc:
        raise EnvelopeError(f"the body could not be decompressed: {exc}") from exc
    if not finished:
        raise EnvelopeError("the compressed body is truncated")
    return bytes(out)


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """The body as sent before compression. Trusts the magic bytes over the header for gzip."""
    if len(body) > MAX_COMPRESSED:
        raise _too_large()
    encoding = (content_encoding or "").strip().lower()
    if body[:2] == b"\x1f\x8b" or encoding in ("gzip", "x-gzip"):
        return _inflate_zlib(body, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        # RFC 9110 says zlib-wrapped; some clients send raw deflate.
        return _inflate_zlib(body, zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS)
    if encoding == "br":
        return _inflate_brotli(body)
    # identity, and the bogus "" / "UTF-8" some SDKs send.
    return body


def _depth_ok(value: Any) -> bool:
    """Nesting within MAX_JSON_DEPTH, checked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def parse_json(data: bytes, what: str) -> Any:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EnvelopeError(f"{what} is not valid JSON") from exc
    if not _depth_ok(value):
        raise EnvelopeError(f"{what} is nested too deeply")
    return value


@dataclass(frozen=True)
class Item:
    type: str
    headers: dict[str, Any]
    payload: bytes

    def json(self) -> Any:
        return parse_json(self.payload, f"the {self.type} item")


@dataclass(frozen=True)
class Envelope:
    headers: dict[str, Any]
    items: tuple[Item, ...]


def _line(data: bytes, start: int) -> tuple[bytes, int]:
    end = data.find(b"\n", start)
    if end < 0:
        return data[start:], len(data)
    return data[start:end], end + 1


def _items(data: bytes, position: int) -> Iterator[Item]:
    while position < len(data):
        raw_header, position = _line(data, position)
        if not raw_header.strip():
            continue  # blank lines between items are tolerated
        header = parse_json(raw_header, "an item header")
        if not isinstance(header, dict) or not isinstance(header.get("type"), str):
            raise EnvelopeError("an item header has no type")
        length = header.get("length")
        if length is None:
            payload, position = _line(data, position)
        else:
            if not isinstance(length, int) or isinstance(length, bool) or length < 0:
                raise EnvelopeError("an item header has an invalid length")
            if position + length > len(data):
                raise EnvelopeError("the envelope is truncated: an item is shorter than its length")
            payload = data[position : position + length]
            position += length
            if data[position : position + 1] == b"\n":
                position += 1
        yield Item(header["type"], header, payload)


def parse_envelope(data: bytes) -> Envelope:
    """Split an envelope into its header and items (every item, whatever its type)."""
    if not data.strip():
        raise EnvelopeError("the body is empty")
    raw_header, position = _line(data, 0)
    headers = parse_json(raw_header, "the envelope header")
    if not isinstance(headers, dict):
        raise EnvelopeError("the envelope header is not a JSON object")
    return Envelope(headers, tuple(_items(data, position)))


def parse_store_body(data: bytes) -> dict[str, Any]:
    """The legacy /store/ body: one JSON event."""
    if not data.strip():
        raise EnvelopeError("the body is empty")
    event = parse_json(data, "the event")
    if not isinstance(event, dict):
        raise EnvelopeError("the event is not a JSON object")
    return event


def sentry_key(auth_header: str | None, query_key: str | None) -> str | None:
    """The public key: ``sentry_key`` query parameter first (GitLab's order), else X-Sentry-Auth."""
    if query_key:
        return query_key
    if not auth_header:
        return None
    text = auth_header.strip()
    if text.lower().startswith("sentry "):
        text = text[7:]
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip() == "sentry_key" and value.strip():
            return value.strip()
    return None
