"""Properties over inputs nobody wrote down: whatever a client sends, the answer is one the
contract names, and never a crash.

Spec: error-tracking-api.md sections 3 (the ``:id``), 4 (booleans), 6 (pagination) and 8;
sentry-ingestion.md sections 2 and 7 (what ingestion reads, and its 400/413 answers).
Hypothesis generates the inputs; examples are bounded so that the file runs in well under a minute.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import random
import re
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote, urlencode

import brotli
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chalicelib import errors
from chalicelib.authorizer import parse_key_id, parse_project_id
from chalicelib.config import parse_bool
from chalicelib.ingest import events, ingestion
from chalicelib.ingest.envelopes import EnvelopeError, decode_body, parse_envelope
from chalicelib.pagination import page_params, page_size
from tests.conftest import Api, Reply, Scene

# The spec's lists (error-tracking-api.md section 4), copied from it rather than from the code.
SPEC_TRUE = ["1", "on", "On", "ON", "t", "true", "True", "TRUE", "T", "y", "yes", "Yes", "YES", "Y"]
SPEC_FALSE = ["0", "off", "Off", "OFF", "f", "false", "False", "FALSE", "F", "n", "no", "No", "NO", "N"]
ASCII_DIGITS = re.compile(r"\A[0-9]+\Z")
SETTINGS = "/api/v4/projects/{}/error_tracking/settings"
KEYS = "/api/v4/projects/{}/error_tracking/client_keys"
INGEST = "/errortracking/api/v1/projects/api/{}/envelope/"

UNIT = settings(max_examples=300, deadline=None, database=None, derandomize=True)
SLOW_UNIT = settings(max_examples=40, deadline=None, database=None, derandomize=True)
THROUGH_API = settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text that can travel in a URL or a form: anything but lone surrogates.
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # Python's json reads NaN and Infinity too
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(texts, children, max_size=5),
    max_leaves=25,
)


# Booleans (section 4)


def _near_misses(word: str) -> list[str]:
    return [f" {word}", f"{word} ", f"{word}\n", word.swapcase(), word.capitalize(), word * 2, f"'{word}'"]


@UNIT
@given(
    st.one_of(
        st.sampled_from(SPEC_TRUE + SPEC_FALSE),
        st.sampled_from(SPEC_TRUE + SPEC_FALSE).flatmap(lambda w: st.sampled_from(_near_misses(w))),
        texts,
        json_values,
    )
)
@example("\uff11")  # a full-width digit one
@example("yES")
@example(1.0)
def test_parse_bool_never_raises_and_accepts_exactly_the_spec_lists(value: Any) -> None:
    result = parse_bool(value)
    if isinstance(value, bool):
        assert result is value
    elif isinstance(value, str):
        assert result is (True if value in SPEC_TRUE else False if value in SPEC_FALSE else None)
    elif isinstance(value, int):
        # Grape reads a JSON number by its text: only 1 and 0 are booleans.
        assert result is (True if value == 1 else False if value == 0 else None)
    else:
        assert result is None


# The :id and :key_id path parameters (section 3)

project_refs = st.one_of(
    texts,
    st.text("0123456789", min_size=1, max_size=30),
    st.text(st.characters(categories=["Nd"]), min_size=1, max_size=6),  # digits of every script
    st.builds(lambda s: quote(s, safe=""), texts),
    st.builds(lambda s: quote(quote(s, safe=""), safe=""), texts),
    st.builds(lambda a, b: f"{a}%2F{b}", texts, texts),
    st.builds(lambda a, b: f"{a}/{b}", texts, texts),
)


@UNIT
@given(project_refs)
@example("9" * 4301)  # digits only, more than Python's int() reads by default
@example("%39" * 4301)
@example("12\n")
@example("١٢")  # Arabic-Indic digits: not ASCII digits
@example("%2531")  # "%31" once decoded: decoded exactly once, so not 1
def test_parse_project_id_never_raises_and_reads_only_ascii_digits_as_ids(raw: str) -> None:
    result = parse_project_id(raw)
    assert result is None or type(result) in (int, str)
    if isinstance(result, int):
        source = raw if ASCII_DIGITS.match(raw) else unquote(raw)
        assert ASCII_DIGITS.match(source), (raw, result)
        assert result == int(source)
    elif isinstance(result, str):
        assert result == unquote(raw)
        assert "/" in result
    else:  # neither an id nor a path; an id too long to be any project's is no id either
        for candidate in (raw, unquote(raw)):
            assert not ASCII_DIGITS.match(candidate) or len(candidate) > 18, raw


@UNIT
@given(st.one_of(st.none(), texts, st.text("0123456789", max_size=40), st.text(st.characters(categories=["Nd"]))))
@example("9" * 5000)
@example("0" * 12)
def test_parse_key_id_never_raises_and_reads_only_short_ascii_digits(raw: str | None) -> None:
    result = parse_key_id(raw)
    assert result is None or type(result) is int
    if result is not None:
        assert raw is not None and ASCII_DIGITS.match(raw) and len(raw) <= 12
        assert result == int(raw)


# Pagination (section 6)

page_values = st.one_of(
    json_scalars,
    st.from_regex(r"\A\s*[+-]?[0-9]{1,5}\s*\Z"),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(texts, st.integers(), max_size=3),
)


def _canonical(value: Any) -> int | None:
    """The number a value plainly is: an int, or decimal digits with an optional sign."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,18}", value):
        return int(value)
    return None


@UNIT
@given(st.dictionaries(st.sampled_from(["page", "per_page", "other"]), page_values))
@example({"page": "9" * 5000, "per_page": "9" * 5000})
@example({"page": float("nan"), "per_page": float("inf")})
def test_page_params_are_always_in_range_and_follow_the_spec(params: dict[str, Any]) -> None:
    page, per_page = page_params(params)
    assert type(page) is int and page >= 1
    assert type(per_page) is int and 1 <= per_page <= 100
    asked_page, asked_size = _canonical(params.get("page")), _canonical(params.get("per_page"))
    if asked_page is not None:
        assert page == (asked_page if asked_page > 0 else 1)
    elif "page" not in params:
        assert page == 1
    if asked_size is not None:
        assert per_page == (min(asked_size, 100) if asked_size > 0 else 20)
    elif "per_page" not in params:
        assert per_page == 20


@UNIT
@given(page_values)
def test_page_size_is_always_in_range(value: Any) -> None:
    assert 1 <= page_size(value) <= 100


# What ingestion reads (sentry-ingestion.md sections 2 and 7)

ENCODINGS = [None, "", "identity", "gzip", "x-gzip", "deflate", "br", "UTF-8", " GZIP ", "compress"]
ITEM_TYPES = ["event", "transaction", "attachment", "session", "client_report", "check_in", "log", "whatever"]


def _raw_deflate(data: bytes) -> bytes:
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return deflater.compress(data) + deflater.flush()


COMPRESSIONS: dict[str, tuple[Callable[[bytes], bytes], str | None]] = {
    "identity": (lambda data: data, None),
    "gzip": (gzip.compress, "gzip"),
    "deflate": (zlib.compress, "deflate"),
    "raw-deflate": (_raw_deflate, "deflate"),
    "br": (lambda data: bytes(brotli.compress(data)), "br"),
}


@st.composite
def envelopes(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A well-formed envelope, compressed as an SDK would, then maybe damaged in transit."""
    header = draw(st.one_of(st.just({}), st.fixed_dictionaries({"event_id": st.uuids().map(lambda u: u.hex)})))
    lines = [json.dumps(header).encode()]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(ITEM_TYPES))
        payload = json.dumps(draw(json_values if kind != "event" else st.dictionaries(texts, json_values))).encode()
        if kind == "attachment":
            payload = draw(st.binary(max_size=64))
        length: Any = len(payload)
        if draw(st.booleans()):  # a length that lies, or is no number at all
            length = draw(st.one_of(st.integers(-3, len(payload) + 50), st.floats(), texts, st.booleans(), st.none()))
        item_header: dict[str, Any] = {"type": kind}
        if draw(st.booleans()) or b"\n" in payload:
            item_header["length"] = length
        lines += [json.dumps(item_header).encode(), payload]
    body = b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\n\n"]))
    compress, encoding = COMPRESSIONS[draw(st.sampled_from(sorted(COMPRESSIONS)))]
    data = bytearray(compress(body))
    damage = draw(st.sampled_from(["none", "truncate", "flip", "insert", "delete"]))
    if damage == "truncate":
        del data[draw(st.integers(0, len(data))) :]
    elif damage == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif damage == "insert":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=8))
    elif damage == "delete" and data:
        at = draw(st.integers(0, len(data) - 1))
        del data[at : at + draw(st.integers(1, 8))]
    if draw(st.booleans()):  # the header may say something else than what was done
        encoding = draw(st.sampled_from(ENCODINGS))
    return bytes(data), encoding


def _read_everything(body: bytes, encoding: str | None) -> None:
    """Read ``body`` every way ingestion does; only a 400 or a 413 may come out of it."""
    try:
        data = decode_body(body, encoding)
        envelope = parse_envelope(data)
        for item in envelope.items:
            if item.type == "event":
                item.json()
    except EnvelopeError as exc:
        assert exc.status in (400, 413)
    for legacy_store in (False, True):
        try:
            submission = ingestion.read_submission(body, encoding, legacy_store=legacy_store)
        except errors.ApiError as exc:
            assert exc.status in (400, 413)
            expected = "413 Payload Too Large" if exc.status == 413 else "400 Bad request - "
            assert exc.body["message"].startswith(expected)
            continue
        now = dt.datetime.now(dt.UTC)
        if submission.event is not None:
            payload, raw = submission.event
            assert isinstance(payload, dict)
            events.normalize(payload, now, submission.header_event_id, raw)


@SLOW_UNIT
@given(st.binary(max_size=512), st.sampled_from(ENCODINGS))
@example(b"\x1f\x8b", None)
@example(b"{}\n" + b'{"type":"event","length":1e400}\n{}', None)
@example(b"{}\n" + b'{"type":"event"}\n' + b"[" * 100_000, None)
@example(b"{}\n" + b'{"type":"event"}\n' + b'{"n":' + b"9" * 5000 + b"}", None)
def test_arbitrary_bytes_are_read_or_refused_with_400_or_413(body: bytes, encoding: str | None) -> None:
    _read_everything(body, encoding)


@settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(envelopes())
def test_damaged_envelopes_are_read_or_refused_with_400_or_413(sent: tuple[bytes, str | None]) -> None:
    _read_everything(*sent)


# Events: normalizing and storing them

FRAME_KEYS = ["function", "module", "filename", "abs_path", "lineno", "colno", "in_app", "context_line", "vars"]
frames = st.one_of(json_values, st.fixed_dictionaries({}, optional={k: json_values for k in FRAME_KEYS}))
stacktraces = st.one_of(json_values, st.fixed_dictionaries({}, optional={"frames": st.lists(frames, max_size=4)}))
exception_values = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"type": json_values, "value": json_values, "stacktrace": stacktraces}),
)
EVENT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.one_of(json_values, st.uuids().map(str), st.uuids().map(lambda u: u.hex.upper())),
    "timestamp": st.one_of(
        json_values,
        st.floats(),
        st.integers(-(10**20), 10**20),
        st.datetimes().map(lambda d: d.isoformat()),
        st.sampled_from(["2024-02-30T00:00:00Z", "9" * 30, "1e400", "1700000000.5", "-1", "nan"]),
    ),
    "exception": st.one_of(
        json_values,
        st.lists(exception_values, max_size=3),
        st.fixed_dictionaries({"values": st.lists(exception_values, max_size=3)}),
    ),
    "message": st.one_of(
        json_values, st.fixed_dictionaries({}, optional={"formatted": json_values, "message": json_values})
    ),
    "logentry": st.one_of(
        json_values, st.fixed_dictionaries({}, optional={"formatted": json_values, "message": json_values})
    ),
    "fingerprint": st.one_of(
        json_values, st.lists(st.one_of(texts, st.just("{{ default }}"), st.integers(), st.floats()))
    ),
    "user": st.one_of(
        json_values, st.dictionaries(st.sampled_from(["id", "email", "username", "ip_address"]), json_values)
    ),
    "threads": st.one_of(
        json_values,
        st.fixed_dictionaries({"values": st.lists(st.fixed_dictionaries({}, optional={"stacktrace": stacktraces}))}),
    ),
    **{
        name: json_values
        for name in ["platform", "level", "environment", "release", "transaction", "stacktrace", "breadcrumbs", "extra"]
    },
}
event_payloads = st.one_of(
    st.dictionaries(texts, json_values),
    st.fixed_dictionaries({}, optional=EVENT_FIELDS),
)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(event_payloads, json_values)
def test_normalize_never_raises_and_keeps_every_field_within_its_limits(
    payload: dict[str, Any], envelope_id: Any
) -> None:
    received = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    event = events.normalize(payload, received, envelope_id, json.dumps(payload).encode())
    assert re.fullmatch(r"[0-9a-f]{32}", event.event_id)
    assert 1 <= event.error_id < 2**53
    assert event.timestamp.tzinfo is not None
    assert len(event.title) <= 255 and event.title
    assert len(event.message) <= 1024
    assert len(event.culprit) <= 255
    assert 0 < len(event.platform) <= 64
    assert 0 < len(event.level) <= 32
    assert event.type in ("error", "default")


def _random_text(rng: random.Random, alphabet: str, size: int) -> str:
    if alphabet == "hex":
        return rng.randbytes(size // 2 + 1).hex()[:size]
    if alphabet == "base64":
        return base64.b64encode(rng.randbytes(size)).decode()[:size]
    if alphabet == "words":
        return " ".join(rng.choice(["error", "at", "in", "user", "id", "null", "0x1f"]) for _ in range(size // 4))[
            :size
        ]
    return "".join(map(chr, rng.choices(range(0x100, 0x3000), k=size)))


@st.composite
def big_events(draw: st.DrawFn) -> dict[str, Any]:
    """Events of every size up to what ingestion lets in (1 MB compressed), many frames, long fields."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    alphabet = draw(st.sampled_from(["hex", "base64", "words", "unicode"]))
    size = draw(st.integers(0, 400))

    def text() -> str:
        return _random_text(rng, alphabet, size)

    def frame() -> dict[str, Any]:
        return {key: text() for key in FRAME_KEYS if key != "vars"} | {"vars": {"local": text()}}

    exceptions = [
        {"type": text(), "value": text(), "stacktrace": {"frames": [frame() for _ in range(draw(st.integers(0, 80)))]}}
        for _ in range(draw(st.integers(0, 8)))
    ]
    return {
        "event_id": rng.randbytes(16).hex(),
        "message": text(),
        "exception": {"values": exceptions},
        "breadcrumbs": {"values": [{"message": text()} for _ in range(draw(st.integers(0, 100)))]},
        "extra": {"blob": _random_text(rng, alphabet, draw(st.integers(0, 300_000)))},
        "tags": {text()[:32]: text() for _ in range(draw(st.integers(0, 20)))},
    }


def _worst_case() -> dict[str, Any]:
    """Five exceptions of 50 frames whose every kept field is 255 random characters: what the
    last-resort trimming keeps is this big, whatever it drops."""
    rng = random.Random(7)
    frame_keys = [k for k in FRAME_KEYS if k != "vars"]

    def exception() -> dict[str, Any]:
        frames = [{k: _random_text(rng, "base64", 255) for k in frame_keys} for _ in range(50)]
        return {
            "type": _random_text(rng, "base64", 255),
            "value": _random_text(rng, "base64", 1024),
            "stacktrace": {"frames": frames},
        }

    return {"event_id": rng.randbytes(16).hex(), "exception": {"values": [exception() for _ in range(5)]}}


@settings(max_examples=25, deadline=None, database=None, derandomize=True)
@given(st.one_of(event_payloads, big_events()), st.booleans())
@example(_worst_case(), False)
@example(_worst_case(), True)
def test_fit_for_storage_always_fits_one_item(payload: dict[str, Any], with_raw: bool) -> None:
    raw = json.dumps(payload).encode() if with_raw else None
    stored, trimmed = events.fit_for_storage(payload, raw)
    assert len(stored) <= events.MAX_STORED_BYTES, f"{len(stored)} bytes stored, trimmed={trimmed}"
    kept = events.load_stored(stored)
    assert isinstance(kept, dict)
    assert kept.get("_trimmed", False) is trimmed


# Through the API: whatever the values, never a 5xx

SETTING_PARAMS = [
    "active",
    "integrated",
    "api_host",
    "organization_slug",
    "project_slug",
    "organization_name",
    "project_name",
    "token",
    "page",
    "unknown",
]
param_values = st.one_of(
    texts,
    st.sampled_from(SPEC_TRUE + SPEC_FALSE),
    st.sampled_from(
        [
            "",
            " ",
            "null",
            "https://8.8.8.8",
            "http://8.8.8.8:9000/sentry/",
            "https://8.8.8.8/x?y#z",
            "https://user:pw@8.8.8.8",
            "http://127.0.0.1",
            "http://[::1]",
            "http://localhost",
            "ftp://8.8.8.8",
            "https://8.8.8.8:99999",
            "https://8.8.8.8:-1",
            "acme",
            "acme/../x",
            "x" * 256,
            "x" * 4097,
        ]
    ),
)


@pytest.fixture
def maintained(api: Api, scene: Scene) -> tuple[Api, str, int]:
    project = scene.project("acme/shop")
    token = scene.maintainer(project)
    return api, token, int(project.project_id)


def _no_server_error(reply: Reply, what: str) -> None:
    assert reply.status < 500, f"{what}: {reply.status} {reply.body[:300]!r}"
    assert reply.headers.get("content-type") == "application/json", what
    assert isinstance(reply.json, dict | list), what


@THROUGH_API
@given(
    st.sampled_from(["PUT", "PATCH"]),
    st.dictionaries(st.sampled_from(SETTING_PARAMS), param_values, max_size=4),
    st.dictionaries(st.sampled_from(SETTING_PARAMS), param_values, max_size=6),
)
def test_settings_with_any_query_and_form_values_never_answer_5xx(
    maintained: tuple[Api, str, int], method: str, query: dict[str, str], form: dict[str, str]
) -> None:
    api, token, project_id = maintained
    path = SETTINGS.format(project_id) + ("?" + urlencode(query) if query else "")
    reply = api.call(method, path, token=token, form=form)
    _no_server_error(reply, f"{method} {path} {form}")
    if reply.status == 200:
        assert list(reply.json) == ["active", "project_name", "sentry_external_url", "api_url", "integrated"]
        sent_token = form.get("token", "")
        assert len(sent_token) < 12 or sent_token not in reply.body.decode()  # write-only


@THROUGH_API
@given(st.sampled_from(["PUT", "PATCH"]), st.dictionaries(st.sampled_from(SETTING_PARAMS), json_values, max_size=6))
def test_settings_with_any_json_values_never_answer_5xx(
    maintained: tuple[Api, str, int], method: str, body: dict[str, Any]
) -> None:
    api, token, project_id = maintained
    reply = api.call(method, SETTINGS.format(project_id), token=token, json_body=body)
    _no_server_error(reply, f"{method} {body}")


@THROUGH_API
@given(st.dictionaries(st.sampled_from(["page", "per_page", "sort", "private_token"]), param_values, max_size=3))
@example({"page": "9" * 5000})
@example({"per_page": "1_0", "page": "٣"})
def test_client_key_pagination_with_any_values_never_answers_5xx(
    maintained: tuple[Api, str, int], query: dict[str, str]
) -> None:
    api, token, project_id = maintained
    if not api.get(KEYS.format(project_id), token=token).json:
        for _ in range(3):
            assert api.post(KEYS.format(project_id), token=token).status == 201
    path = KEYS.format(project_id) + "?" + urlencode(query)
    reply = api.get(path, token=token)
    _no_server_error(reply, path)
    if "private_token" in query:
        return  # another credential than the header's: 401 is the answer
    assert reply.status == 200, reply.body
    page, per_page = int(reply.headers["x-page"]), int(reply.headers["x-per-page"])
    assert page >= 1 and 1 <= per_page <= 100
    assert len(reply.json) <= per_page
    assert int(reply.headers["x-total-pages"]) >= 1
    assert 'rel="first"' in reply.headers["link"] and 'rel="last"' in reply.headers["link"]


@THROUGH_API
@given(project_refs)
@example("9" * 4301)
@example("9" * 5000)
def test_any_project_id_in_the_path_never_answers_5xx(maintained: tuple[Api, str, int], raw: str) -> None:
    api, token, _ = maintained
    segment = quote(raw, safe="%") if raw else "x"
    headers = {
        "Content-Type": "application/x-sentry-envelope",
        "X-Sentry-Auth": "Sentry sentry_key=glet_0123456789abcdef0123456789abcdef, sentry_version=7",
    }
    replies = {
        "GET settings": api.get(SETTINGS.format(segment), token=token),
        "POST envelope": api.call("POST", INGEST.format(segment), headers=headers, body=b'{}\n{"type":"event"}\n{}\n'),
    }
    server_errors = [
        f"{route}: {reply.status} {reply.body[:100]!r}" for route, reply in replies.items() if reply.status >= 500
    ]
    assert server_errors == [], f"project id {raw[:20]!r}... ({len(raw)} characters): " + "; ".join(server_errors)
    for route, reply in replies.items():
        _no_server_error(reply, route)
