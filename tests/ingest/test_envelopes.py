"""Unit tests of chalicelib.ingest.envelopes: what Sentry SDKs put on the wire, and what we refuse.

No store is needed: bytes go in, bytes, envelopes or an EnvelopeError (400 or 413) come out.
Spec: shared/spec/sentry-ingestion.md sections 2 and 7; shared/notes/sentry-protocol.md section 2.
"""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import brotli
import pytest
import sentry_sdk
from sentry_sdk.attachments import Attachment
from sentry_sdk.envelope import Envelope as SdkEnvelope
from sentry_sdk.envelope import Item as SdkItem
from sentry_sdk.envelope import PayloadRef
from sentry_sdk.session import Session
from sentry_sdk.transport import HttpTransportCore

if TYPE_CHECKING:
    from sentry_sdk.consts import Experiments

from chalicelib.ingest.envelopes import (
    MAX_COMPRESSED,
    MAX_INFLATED,
    MAX_JSON_DEPTH,
    EnvelopeError,
    decode_body,
    parse_envelope,
    parse_store_body,
    sentry_key,
)

EVENT_ID = "89a9257b82ef44cb8054aa8cc033bfbf"
PUBLIC_KEY = "glet_0123456789abcdef0123456789abcdef"
DSN = f"http://{PUBLIC_KEY}@127.0.0.1:8765/errortracking/api/v1/projects/5"

# The zeros a bomb inflates to: five times the inflated limit.
BOMB_SIZE = 100 * 1024 * 1024
# What decoding a bomb may hold in memory at its peak: the 20 MB it may inflate, copies included,
# but never the whole bomb.
BOMB_MEMORY_CEILING = 3 * MAX_INFLATED


def _json_line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _item(item_type: str, payload: bytes, *, with_length: bool = True, **headers: Any) -> bytes:
    header: dict[str, Any] = {"type": item_type, **headers}
    if with_length:
        header["length"] = len(payload)
    return _json_line(header) + b"\n" + payload + b"\n"


def _event_payload() -> dict[str, Any]:
    """An event as sentry-sdk 2.x sends it (protocol notes 2.5), trimmed to what matters."""
    return {
        "level": "error",
        "exception": {
            "values": [
                {
                    "mechanism": {"type": "generic", "handled": True},
                    "module": None,
                    "type": "ZeroDivisionError",
                    "value": "division by zero",
                    "stacktrace": {
                        "frames": [
                            {
                                "filename": "app.py",
                                "abs_path": "/srv/app/app.py",
                                "function": "charge",
                                "module": "__main__",
                                "lineno": 6,
                                "context_line": "    return amount / 0",
                                "vars": {"amount": "10"},
                                "in_app": True,
                            }
                        ]
                    },
                }
            ]
        },
        "event_id": EVENT_ID,
        "timestamp": "2026-11-26T11:52:38.511737Z",
        "user": {"id": "42"},
        "breadcrumbs": {"values": []},
        "release": "myapp@1.2.3",
        "environment": "staging",
        "sdk": {"name": "sentry.python", "version": "2.75.0"},
        "platform": "python",
    }


def _envelope_header() -> dict[str, Any]:
    return {
        "event_id": EVENT_ID,
        "sent_at": "2026-11-26T11:52:38.517681Z",
        "trace": {
            "trace_id": "12ab90b649b241d2aeef2b9b1b2c78f2",
            "environment": "staging",
            "release": "myapp@1.2.3",
            "public_key": PUBLIC_KEY,
        },
    }


CLIENT_REPORT = {
    "timestamp": 1764157958.5,
    "discarded_events": [{"reason": "network_error", "category": "error", "quantity": 1}],
}
# Raw attachment bytes: newlines (a length-less reader would stop there), NUL and non-UTF-8 bytes.
ATTACHMENT = b"line one\nline two\r\n\x00\xff\xfe\x80\xc3(binary)\n\n\x1f\x8b not gzip\n"
UNKNOWN_PAYLOAD = b'{"not":"known"}\n{"type":"event","length":2}\n{}'


def _sdk_shaped_envelope() -> bytes:
    return (
        _json_line(_envelope_header())
        + b"\n"
        + _item("event", _json_line(_event_payload()), content_type="application/json")
        + _item("client_report", _json_line(CLIENT_REPORT))
        + _item("attachment", ATTACHMENT, filename="core.dump", content_type="application/octet-stream")
        + _item("a_type_from_the_future", UNKNOWN_PAYLOAD)
    )


def _nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode("ascii")


def _deep_dict(depth: int) -> bytes:
    return ('{"a":' * depth + "1" + "}" * depth).encode("ascii")


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def _status(call: Callable[[], object]) -> int:
    """The status of the EnvelopeError that ``call`` raises (and nothing else may escape)."""
    with pytest.raises(EnvelopeError) as caught:
        call()
    return caught.value.status


# decode_body: what arrives

PLAIN = _sdk_shaped_envelope()


@pytest.mark.parametrize("encoding", [None, "identity", "", "UTF-8", "utf-8", "  "])
def test_decode_body_plain_and_bogus_encodings_are_identity(encoding: str | None) -> None:
    assert decode_body(PLAIN, encoding) == PLAIN


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", " gzip ", "x-gzip"])
def test_decode_body_gzip(encoding: str) -> None:
    assert decode_body(gzip.compress(PLAIN), encoding) == PLAIN


@pytest.mark.parametrize("encoding", [None, "", "identity", "UTF-8", "deflate", "br", "text/plain"])
def test_decode_body_gzip_magic_bytes_win_over_the_header(encoding: str | None) -> None:
    assert decode_body(gzip.compress(PLAIN), encoding) == PLAIN


def test_decode_body_deflate_zlib_wrapped() -> None:
    assert decode_body(zlib.compress(PLAIN), "deflate") == PLAIN


def test_decode_body_deflate_raw() -> None:
    assert decode_body(_raw_deflate(PLAIN), "deflate") == PLAIN


@pytest.mark.parametrize("quality", [0, 4, 11])
@pytest.mark.parametrize("encoding", ["br", "BR"])
def test_decode_body_brotli(quality: int, encoding: str) -> None:
    assert decode_body(brotli.compress(PLAIN, quality=quality), encoding) == PLAIN


def test_decode_body_empty_plain_body_is_returned_as_is() -> None:
    # Whether empty is acceptable is the parser's call (a 400 there).
    assert decode_body(b"", None) == b""


def test_decode_body_exactly_one_megabyte_compressed_is_read() -> None:
    body = b"x" * MAX_COMPRESSED
    assert decode_body(body, None) == body


def test_decode_body_exactly_the_inflated_limit_is_read() -> None:
    body = bytes(MAX_INFLATED)
    assert decode_body(gzip.compress(body), "gzip") == body
    assert decode_body(brotli.compress(body, quality=1), "br") == body


@pytest.mark.parametrize(
    ("compress", "encoding"),
    [
        (gzip.compress, "gzip"),
        (zlib.compress, "deflate"),
        (_raw_deflate, "deflate"),
        (lambda data: brotli.compress(data, quality=1), "br"),
    ],
    ids=["gzip", "deflate", "raw-deflate", "br"],
)
def test_decode_body_one_byte_over_the_inflated_limit_is_413(compress: Callable[[bytes], bytes], encoding: str) -> None:
    assert _status(lambda: decode_body(compress(bytes(MAX_INFLATED + 1)), encoding)) == 413


# decode_body: refusals


@pytest.mark.parametrize("encoding", [None, "gzip", "deflate", "br"])
def test_decode_body_over_one_megabyte_compressed_is_413(encoding: str | None) -> None:
    # Random bytes: the limit applies before any decoding is tried.
    assert _status(lambda: decode_body(os.urandom(MAX_COMPRESSED + 1), encoding)) == 413


def test_decode_body_over_one_megabyte_of_real_gzip_is_413() -> None:
    incompressible = os.urandom(MAX_COMPRESSED).hex().encode("ascii")
    body = gzip.compress(incompressible)
    assert len(body) > MAX_COMPRESSED
    assert _status(lambda: decode_body(body, "gzip")) == 413


def _zeros_compressed(compressor: Any, flush: Callable[[], bytes]) -> bytes:
    chunk = bytes(4 * 1024 * 1024)
    parts = [compressor(chunk) for _ in range(BOMB_SIZE // len(chunk))]
    return b"".join(parts) + flush()


@pytest.fixture(scope="module")
def bombs() -> dict[str, tuple[bytes, str]]:
    """100 MB of zeros, compressed each way a client may send it (built without holding 100 MB)."""
    gzipper = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zlibber = zlib.compressobj(9)
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    brotlier = brotli.Compressor(quality=4)
    return {
        "gzip": (_zeros_compressed(gzipper.compress, gzipper.flush), "gzip"),
        "deflate": (_zeros_compressed(zlibber.compress, zlibber.flush), "deflate"),
        "raw-deflate": (_zeros_compressed(raw.compress, raw.flush), "deflate"),
        "br": (_zeros_compressed(brotlier.process, brotlier.finish), "br"),
    }


@pytest.mark.parametrize("kind", ["gzip", "deflate", "raw-deflate", "br"])
def test_decode_body_bomb_is_413_without_inflating_everything(bombs: dict[str, tuple[bytes, str]], kind: str) -> None:
    body, encoding = bombs[kind]
    assert len(body) <= MAX_COMPRESSED  # small enough on the wire: only inflating reveals it
    tracemalloc.start()
    try:
        status = _status(lambda: decode_body(body, encoding))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413
    # Bounded: the decoder stops soon after 20 MB, it does not inflate the 100 MB and then complain.
    assert peak < BOMB_MEMORY_CEILING, f"decoding a {kind} bomb held {peak // 2**20} MB at its peak"


def test_decode_body_gzip_bomb_without_a_content_encoding_is_413(bombs: dict[str, tuple[bytes, str]]) -> None:
    body, _ = bombs["gzip"]
    assert _status(lambda: decode_body(body, None)) == 413


def _compressible_random_text() -> bytes:
    return _sdk_shaped_envelope() + os.urandom(20_000).hex().encode("ascii")


@pytest.mark.parametrize("cut", [1, 4, 8, 100])
def test_decode_body_truncated_gzip_is_400(cut: int) -> None:
    body = gzip.compress(_compressible_random_text())
    assert _status(lambda: decode_body(body[:-cut], "gzip")) == 400


def test_decode_body_gzip_cut_to_its_header_is_400() -> None:
    assert _status(lambda: decode_body(gzip.compress(PLAIN)[:10], "gzip")) == 400


def test_decode_body_gzip_with_a_wrong_checksum_is_400() -> None:
    body = bytearray(gzip.compress(PLAIN))
    body[-8] ^= 0xFF  # the CRC32 of the trailer
    assert _status(lambda: decode_body(bytes(body), "gzip")) == 400


@pytest.mark.parametrize("cut", [1, 10, 1000])
def test_decode_body_truncated_brotli_is_400(cut: int) -> None:
    body = brotli.compress(_compressible_random_text(), quality=4)
    assert _status(lambda: decode_body(body[:-cut], "br")) == 400


@pytest.mark.parametrize("cut", [1, 1000])
def test_decode_body_truncated_deflate_is_400(cut: int) -> None:
    text = _compressible_random_text()
    assert _status(lambda: decode_body(zlib.compress(text)[:-cut], "deflate")) == 400
    assert _status(lambda: decode_body(_raw_deflate(text)[:-cut], "deflate")) == 400


GARBAGE = [
    b"this is not compressed at all",
    b'{"event_id":"89a9257b82ef44cb8054aa8cc033bfbf"}\n',
    b"\x1f\x8b\x08\x00garbage after a gzip magic",
    b"\xff" * 64,
]


@pytest.mark.parametrize("body", GARBAGE)
@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_decode_body_garbage_under_a_compressed_encoding_is_400(body: bytes, encoding: str) -> None:
    assert _status(lambda: decode_body(body, encoding)) == 400


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_decode_body_empty_body_under_a_compressed_encoding_is_400(encoding: str) -> None:
    assert _status(lambda: decode_body(b"", encoding)) == 400


def test_decode_body_random_bytes_under_brotli_are_400() -> None:
    for _ in range(20):
        body = os.urandom(2048)
        if body[:2] == b"\x1f\x8b":
            continue
        assert _status(partial(decode_body, body, "br")) == 400


# decode_body with what the real sentry-sdk transport sends


@pytest.fixture
def sdk_client() -> Iterator[Callable[[Experiments], HttpTransportCore]]:
    clients: list[sentry_sdk.Client] = []

    def transport(experiments: Experiments) -> HttpTransportCore:
        client = sentry_sdk.Client(dsn=DSN, default_integrations=False, _experiments=experiments)
        clients.append(client)
        assert isinstance(client.transport, HttpTransportCore)
        return client.transport

    yield transport
    for client in clients:
        client.close()


@pytest.mark.parametrize(
    ("experiments", "expected_encoding"),
    [
        ({"transport_compression_algo": "br"}, "br"),
        ({"transport_compression_algo": "gzip"}, "gzip"),
        ({"transport_compression_level": 0}, None),
    ],
    ids=["br", "gzip", "uncompressed"],
)
def test_decode_body_reads_what_the_sentry_sdk_transport_sends(
    sdk_client: Callable[[Experiments], HttpTransportCore],
    experiments: Experiments,
    expected_encoding: str | None,
) -> None:
    transport = sdk_client(experiments)
    envelope = SdkEnvelope(headers=_envelope_header())
    envelope.add_event(_event_payload())  # type: ignore[arg-type]
    encoding, body = transport._serialize_envelope(envelope)
    assert encoding == expected_encoding
    decoded = decode_body(body.getvalue(), encoding)
    assert decoded == envelope.serialize()
    parsed = parse_envelope(decoded)
    assert parsed.headers["event_id"] == EVENT_ID
    assert [item.type for item in parsed.items] == ["event"]
    assert parsed.items[0].json() == _event_payload()


# parse_envelope: what it reads


def test_parse_envelope_sdk_shaped_envelope_yields_every_item() -> None:
    envelope = parse_envelope(_sdk_shaped_envelope())
    assert envelope.headers == _envelope_header()
    assert [item.type for item in envelope.items] == ["event", "client_report", "attachment", "a_type_from_the_future"]
    event, report, attachment, unknown = envelope.items
    assert event.json() == _event_payload()
    assert event.headers["content_type"] == "application/json"
    assert report.json() == CLIENT_REPORT
    assert attachment.payload == ATTACHMENT
    assert attachment.headers["filename"] == "core.dump"
    assert unknown.payload == UNKNOWN_PAYLOAD


def test_parse_envelope_the_sample_captured_from_sentry_sdk() -> None:
    # Protocol notes 2.5: header, then one event item whose length is given.
    event = _json_line(_event_payload())
    body = _json_line(_envelope_header()) + b"\n" + _item("event", event, content_type="application/json")
    envelope = parse_envelope(body)
    assert envelope.headers["event_id"] == EVENT_ID
    assert len(envelope.items) == 1
    assert envelope.items[0].payload == event


def test_parse_envelope_items_without_length_end_at_the_newline() -> None:
    event = _json_line(_event_payload())
    report = _json_line(CLIENT_REPORT)
    body = b"{}\n" + _item("event", event, with_length=False) + _item("client_report", report, with_length=False)
    envelope = parse_envelope(body)
    assert [item.type for item in envelope.items] == ["event", "client_report"]
    assert envelope.items[0].json() == _event_payload()
    assert envelope.items[1].payload == report


def test_parse_envelope_mixes_items_with_and_without_length() -> None:
    body = (
        b"{}\n"
        + _item("attachment", ATTACHMENT)
        + _item("event", b'{"message":"hi"}', with_length=False)
        + _item("session", b'{"sid":"x"}')
    )
    envelope = parse_envelope(body)
    assert [item.payload for item in envelope.items] == [ATTACHMENT, b'{"message":"hi"}', b'{"sid":"x"}']


def test_parse_envelope_header_may_be_empty_object() -> None:
    envelope = parse_envelope(b'{}\n{"type":"sessions","length":2}\n{}\n')
    assert envelope.headers == {}
    assert [(item.type, item.payload) for item in envelope.items] == [("sessions", b"{}")]


@pytest.mark.parametrize("body", [b"{}", b"{}\n", b'{"event_id":"89a9257b82ef44cb8054aa8cc033bfbf"}\n\n'])
def test_parse_envelope_header_alone_has_no_items(body: bytes) -> None:
    assert parse_envelope(body).items == ()


def test_parse_envelope_blank_lines_between_items_are_tolerated() -> None:
    body = b'{}\n\n{"type":"event","length":2}\n{}\n\n\n{"type":"client_report"}\n{"discarded_events":[]}\n\n'
    envelope = parse_envelope(body)
    assert [(item.type, item.payload) for item in envelope.items] == [
        ("event", b"{}"),
        ("client_report", b'{"discarded_events":[]}'),
    ]


def test_parse_envelope_last_item_without_trailing_newline() -> None:
    with_length = b'{}\n{"type":"event","length":16}\n{"message":"hi"}'
    without_length = b'{}\n{"type":"event"}\n{"message":"hi"}'
    for body in (with_length, without_length):
        (item,) = parse_envelope(body).items
        assert item.json() == {"message": "hi"}


def test_parse_envelope_zero_length_item() -> None:
    envelope = parse_envelope(b'{}\n{"type":"attachment","length":0}\n\n{"type":"event","length":2}\n{}')
    assert [(item.type, item.payload) for item in envelope.items] == [("attachment", b""), ("event", b"{}")]


def test_parse_envelope_length_counts_bytes_not_characters() -> None:
    payload = json.dumps({"message": "naïve café ☕ 🚀"}, ensure_ascii=False).encode("utf-8")
    envelope = parse_envelope(b"{}\n" + _item("event", payload) + _item("client_report", b"{}"))
    assert envelope.items[0].json() == {"message": "naïve café ☕ 🚀"}
    assert envelope.items[1].type == "client_report"


def test_parse_envelope_unknown_types_are_skipped_by_length_even_when_their_payload_looks_like_items() -> None:
    sneaky = b'{"type":"event","length":2}\n{}\n{"type":"event","length":2}\n{}'
    envelope = parse_envelope(b"{}\n" + _item("replay_recording", sneaky) + _item("event", b'{"message":"real"}'))
    assert [item.type for item in envelope.items] == ["replay_recording", "event"]
    assert envelope.items[1].json() == {"message": "real"}


def test_parse_envelope_every_known_item_type_is_kept() -> None:
    types = [
        "event",
        "transaction",
        "attachment",
        "session",
        "sessions",
        "check_in",
        "log",
        "client_report",
        "profile",
        "profile_chunk",
        "span",
        "replay_event",
        "replay_recording",
        "user_report",
        "statsd",
    ]
    body = b"{}\n" + b"".join(_item(t, b'{"n":1}') for t in types)
    assert [item.type for item in parse_envelope(body).items] == types


# parse_envelope: what it refuses, always with a 400


def _refused(body: bytes) -> int:
    return _status(lambda: parse_envelope(body))


@pytest.mark.parametrize("body", [b"", b"\n", b"  \n\n \t\n"])
def test_parse_envelope_empty_body_is_400(body: bytes) -> None:
    assert _refused(body) == 400


@pytest.mark.parametrize("header", [b"not json", b"{", b"{'event_id': 1}", b"\x1f\x8b\x08\x00"])
def test_parse_envelope_header_not_json_is_400(header: bytes) -> None:
    assert _refused(header + b'\n{"type":"event","length":2}\n{}\n') == 400


@pytest.mark.parametrize("header", [b"[]", b'"event"', b"42", b"null", b"true", b'[{"event_id":"x"}]'])
def test_parse_envelope_header_not_an_object_is_400(header: bytes) -> None:
    assert _refused(header + b'\n{"type":"event","length":2}\n{}\n') == 400


@pytest.mark.parametrize(
    "item_header",
    [
        b'{"length":2}',
        b'{"type":null,"length":2}',
        b'{"type":7,"length":2}',
        b'{"type":["event"],"length":2}',
        b"[]",
        b'"event"',
        b"not json",
    ],
)
def test_parse_envelope_item_header_without_type_is_400(item_header: bytes) -> None:
    assert _refused(b"{}\n" + item_header + b"\n{}\n") == 400


@pytest.mark.parametrize("length", ["-1", "-100", '"2"', "2.0", "1.5", "true", "false", "[2]", '{"n":2}', "1e400"])
def test_parse_envelope_invalid_length_is_400(length: str) -> None:
    assert _refused(b'{}\n{"type":"event","length":' + length.encode() + b"}\n{}\n") == 400


@pytest.mark.parametrize("length", [3, 100, 10**30])
def test_parse_envelope_length_past_the_end_is_400(length: int) -> None:
    assert _refused(b'{}\n{"type":"event","length":' + str(length).encode() + b"}\n{}") == 400


def test_parse_envelope_truncated_real_envelope_is_400() -> None:
    body = _sdk_shaped_envelope()
    # Cut inside the attachment, after its item header.
    cut = body.index(ATTACHMENT) + 5
    assert _refused(body[:cut]) == 400


def test_parse_envelope_non_utf8_in_the_envelope_header_is_400() -> None:
    assert _refused(b'{"event_id":"\xff\xfe"}\n{"type":"event","length":2}\n{}\n') == 400


def test_parse_envelope_non_utf8_in_an_item_header_is_400() -> None:
    assert _refused(b'{}\n{"type":"ev\xc3\x28nt","length":2}\n{}\n') == 400


def test_parse_envelope_non_utf8_in_an_event_payload_is_400_when_read() -> None:
    (item,) = parse_envelope(b"{}\n" + _item("event", b'{"message":"\xff\xfe\x80"}')).items
    assert _status(item.json) == 400


def test_parse_envelope_event_payload_not_json_is_400_when_read() -> None:
    (item,) = parse_envelope(b"{}\n" + _item("event", b"{this is not json")).items
    assert _status(item.json) == 400


HOSTILE_DEPTH = 100_000


@pytest.mark.parametrize("nested", [_nested(HOSTILE_DEPTH), _nested(HOSTILE_DEPTH, "[", ""), _deep_dict(HOSTILE_DEPTH)])
def test_parse_envelope_very_deep_json_header_is_400(nested: bytes) -> None:
    assert _refused(nested + b'\n{"type":"event","length":2}\n{}\n') == 400


@pytest.mark.parametrize("nested", [_nested(HOSTILE_DEPTH), _deep_dict(HOSTILE_DEPTH)])
def test_parse_envelope_very_deep_json_item_header_is_400(nested: bytes) -> None:
    assert _refused(b"{}\n" + nested + b"\n{}\n") == 400


@pytest.mark.parametrize("nested", [_nested(HOSTILE_DEPTH), _deep_dict(HOSTILE_DEPTH)])
def test_parse_envelope_very_deep_json_event_is_400_when_read(nested: bytes) -> None:
    payload = b'{"exception":' + nested + b"}"
    (item,) = parse_envelope(b"{}\n" + _item("event", payload)).items
    assert _status(item.json) == 400


def test_json_just_past_the_depth_limit_is_400() -> None:
    # Shallow enough for Python's own parser, too deep for us.
    (item,) = parse_envelope(b"{}\n" + _item("event", _nested(MAX_JSON_DEPTH + 1))).items
    assert _status(item.json) == 400
    assert _refused(_nested(MAX_JSON_DEPTH + 1) + b"\n") == 400
    assert _status(lambda: parse_store_body(_nested(MAX_JSON_DEPTH + 1))) == 400


def test_json_at_the_depth_limit_is_read() -> None:
    (item,) = parse_envelope(b"{}\n" + _item("event", _nested(MAX_JSON_DEPTH))).items
    value = item.json()
    for _ in range(MAX_JSON_DEPTH - 1):
        assert isinstance(value, list)
        (value,) = value
    assert value == []


def test_a_real_event_is_well_within_the_depth_limit() -> None:
    event = _event_payload()
    event["contexts"] = {"a": {"b": {"c": {"d": {"e": [[["deep but normal"]]]}}}}}
    assert parse_store_body(_json_line(event)) == event


# The real sentry-sdk's envelope serializer


def test_parse_envelope_reads_back_every_item_serialized_by_sentry_sdk() -> None:
    event = _event_payload()
    envelope = SdkEnvelope(headers=_envelope_header())
    envelope.add_event(event)  # type: ignore[arg-type]
    session = Session(release="myapp@1.2.3", environment="staging", errors=1)
    envelope.add_session(session)
    envelope.add_item(SdkItem(payload=PayloadRef(json=CLIENT_REPORT), type="client_report"))
    envelope.add_item(Attachment(bytes=ATTACHMENT, filename="core.dump").to_envelope_item())
    envelope.add_item(Attachment(bytes=b"plain text log\n", filename="app.log").to_envelope_item())
    envelope.add_checkin({"check_in_id": "c" * 32, "monitor_slug": "nightly", "status": "ok"})
    envelope.add_item(SdkItem(payload=UNKNOWN_PAYLOAD, type="a_type_from_the_future"))

    parsed = parse_envelope(envelope.serialize())

    assert parsed.headers == _envelope_header()
    assert [item.type for item in parsed.items] == [
        "event",
        "session",
        "client_report",
        "attachment",
        "attachment",
        "check_in",
        "a_type_from_the_future",
    ]
    for ours, theirs in zip(parsed.items, envelope.items, strict=True):
        assert ours.payload == theirs.get_bytes()
        assert ours.headers["type"] == theirs.type
    event_item, session_item, report_item, dump, log, check_in, unknown = parsed.items
    assert event_item.json() == event
    assert session_item.json() == session.to_json()
    assert report_item.json() == CLIENT_REPORT
    assert dump.payload == ATTACHMENT
    assert dump.headers["filename"] == "core.dump"
    assert log.payload == b"plain text log\n"
    assert log.headers["filename"] == "app.log"
    assert check_in.json()["monitor_slug"] == "nightly"
    assert unknown.payload == UNKNOWN_PAYLOAD


def test_parse_envelope_reads_sentry_sdk_sessions_envelope_with_empty_header() -> None:
    envelope = SdkEnvelope()
    aggregates = {"attrs": {"release": "myapp@1.2.3", "environment": "staging"}, "aggregates": [{"crashed": 1}]}
    envelope.add_sessions(aggregates)
    parsed = parse_envelope(envelope.serialize())
    assert parsed.headers == {}
    assert [(item.type, item.json()) for item in parsed.items] == [("sessions", aggregates)]


def test_parse_envelope_reads_sentry_sdk_envelopes_after_compression() -> None:
    envelope = SdkEnvelope(headers=_envelope_header())
    envelope.add_event(_event_payload())  # type: ignore[arg-type]
    envelope.add_item(Attachment(bytes=ATTACHMENT, filename="core.dump").to_envelope_item())
    raw = envelope.serialize()
    for body, encoding in [(gzip.compress(raw), "gzip"), (brotli.compress(raw, quality=4), "br"), (raw, None)]:
        parsed = parse_envelope(decode_body(body, encoding))
        assert [item.type for item in parsed.items] == ["event", "attachment"]
        assert parsed.items[1].payload == ATTACHMENT


# parse_store_body: the legacy /store/ endpoint


def test_parse_store_body_reads_one_event_object() -> None:
    assert parse_store_body(_json_line(_event_payload())) == _event_payload()


def test_parse_store_body_with_surrounding_whitespace() -> None:
    assert parse_store_body(b'\n  {"message":"hi"}  \n') == {"message": "hi"}


@pytest.mark.parametrize("body", [b"", b"   ", b"\n\n"])
def test_parse_store_body_empty_is_400(body: bytes) -> None:
    assert _status(lambda: parse_store_body(body)) == 400


@pytest.mark.parametrize("body", [b"[]", b'[{"message":"hi"}]', b'"hi"', b"42", b"null", b"true"])
def test_parse_store_body_not_an_object_is_400(body: bytes) -> None:
    assert _status(lambda: parse_store_body(body)) == 400


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"not json",
        b'{"message":"\xff"}',
        b'{}\n{"type":"event"}',
        _nested(HOSTILE_DEPTH),
        _deep_dict(HOSTILE_DEPTH),
    ],
)
def test_parse_store_body_unreadable_is_400(body: bytes) -> None:
    assert _status(lambda: parse_store_body(body)) == 400


# sentry_key: who sends


SDK_AUTH = f"Sentry sentry_key={PUBLIC_KEY}, sentry_version=7, sentry_client=sentry.python/2.75.0"


def test_sentry_key_from_the_sdk_header() -> None:
    assert sentry_key(SDK_AUTH, None) == PUBLIC_KEY


def test_sentry_key_query_parameter_comes_first() -> None:
    assert sentry_key(SDK_AUTH, "glet_fromquery") == "glet_fromquery"
    assert sentry_key(None, "glet_fromquery") == "glet_fromquery"


def test_sentry_key_empty_query_parameter_falls_back_to_the_header() -> None:
    assert sentry_key(SDK_AUTH, "") == PUBLIC_KEY


@pytest.mark.parametrize(
    "header",
    [
        f"sentry_key={PUBLIC_KEY}, sentry_version=7",
        f"sentry_key={PUBLIC_KEY}",
        f"sentry_version=7,sentry_key={PUBLIC_KEY},sentry_client=raven-go/1.0",
        f"sentry sentry_key={PUBLIC_KEY}, sentry_version=7",
        f"SENTRY sentry_key={PUBLIC_KEY}",
        f"  Sentry   sentry_key = {PUBLIC_KEY} ,  sentry_version = 7  ",
        f"Sentry sentry_version=7, sentry_key={PUBLIC_KEY}, sentry_secret=s3cr3t",
        f"Sentry sentry_key={PUBLIC_KEY}, sentry_secret=s3cr3t, sentry_version=7",
        f"Sentry sentry_secret=s3cr3t,sentry_key={PUBLIC_KEY}",
    ],
)
def test_sentry_key_header_variants(header: str) -> None:
    assert sentry_key(header, None) == PUBLIC_KEY


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Sentry",
        "Sentry sentry_version=7, sentry_client=sentry.python/2.75.0",
        "Sentry sentry_secret=s3cr3t",
        "Sentry sentry_key=, sentry_version=7",
        "Sentry sentry_key=   ",
        "Sentry sentry_keys=abc",
        "Bearer glet_0123456789abcdef0123456789abcdef",
    ],
)
def test_sentry_key_missing(header: str | None) -> None:
    assert sentry_key(header, None) is None
    assert sentry_key(header, "") is None
