"""Sentry ingestion as an SDK and its user see it: what a DSN's endpoint answers, and what is stored.

Spec: sentry-ingestion.md, all of it; section 7 is the table of answers tested row by row here.
Everything goes through HTTP: events are posted to the ingestion routes with a client key, and
what was stored is read back through the errors API with a maintainer's token.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import importlib.util
import json
import os
import re
import secrets
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import brotli
import pytest
import sentry_sdk
from chalice.test import Client
from sentry_sdk.envelope import Envelope as SdkEnvelope
from sentry_sdk.envelope import Item as SdkItem
from sentry_sdk.envelope import PayloadRef
from sentry_sdk.transport import Transport
from sentry_sdk.utils import Dsn

from chalicelib.ingest import ingestion
from tests.conftest import PROJECT_DIR, Api, Reply, Scene, index_caught_up
from tests.table import as_text, raw_items
from tests.wire import (
    INACTIVE_KEY,
    NO_SENTRY_KEY,
    NO_SETTING,
    NOT_INTEGRATED,
    OTHER_PROJECTS_KEY,
    PAYLOAD_TOO_LARGE,
    RATE_LIMITED,
    TRACKING_DISABLED,
    UNKNOWN_KEY,
    UNKNOWN_PROJECT,
)

SETTINGS = "/api/v4/projects/{}/error_tracking/settings"
KEYS = "/api/v4/projects/{}/error_tracking/client_keys"
KEY = KEYS + "/{}"
ERRORS = "/api/v4/projects/{}/error_tracking/errors"
ERROR = ERRORS + "/{}"
INGEST = "/errortracking/api/v1/projects/api/{}/{}/"
ENVELOPE_TYPE = "application/x-sentry-envelope"
MB = 1024 * 1024


# Building what SDKs send


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def exception_event(
    exc_type: str = "ValueError",
    value: str = "invalid literal for int() with base 10: 'abc'",
    *,
    function: str = "checkout",
    module: str = "shop.views",
    event_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An event as sentry-sdk for Python builds it for a caught exception."""
    return {
        "event_id": event_id or uuid.uuid4().hex,
        "timestamp": now_iso(),
        "platform": "python",
        "level": "error",
        "environment": "production",
        "release": "shop@1.0.0",
        "exception": {
            "values": [
                {
                    "type": exc_type,
                    "value": value,
                    "module": None,
                    "mechanism": {"type": "generic", "handled": True},
                    "stacktrace": {
                        "frames": [
                            {
                                "function": "main",
                                "module": "shop.app",
                                "filename": "shop/app.py",
                                "abs_path": "/srv/shop/app.py",
                                "lineno": 10,
                                "in_app": True,
                                "pre_context": ["def main():"],
                                "context_line": "    checkout()",
                                "post_context": [""],
                            },
                            {
                                "function": function,
                                "module": module,
                                "filename": "shop/views.py",
                                "abs_path": "/srv/shop/views.py",
                                "lineno": 42,
                                "in_app": True,
                                "pre_context": [f"def {function}():", "    raw = 'abc'"],
                                "context_line": "    return int(raw)",
                                "post_context": ["", ""],
                                "vars": {"raw": "'abc'"},
                            },
                        ]
                    },
                }
            ]
        },
        **extra,
    }


def item(kind: str, payload: bytes | dict[str, Any], *, length: bool = True, **headers: Any) -> bytes:
    """One envelope item: its header line, then its payload."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    header: dict[str, Any] = {"type": kind, **headers}
    if length:
        header["length"] = len(data)
    return json.dumps(header).encode() + b"\n" + data + b"\n"


def envelope(*items: bytes, header: dict[str, Any] | None = None) -> bytes:
    return json.dumps({} if header is None else header).encode() + b"\n" + b"".join(items)


def event_envelope(event: dict[str, Any]) -> bytes:
    return envelope(item("event", event), header={"event_id": event["event_id"], "sent_at": now_iso()})


def compress(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "deflate":  # zlib-wrapped, as RFC 9110 says
        return zlib.compress(data)
    if encoding == "raw-deflate":  # what some clients send under "deflate"
        deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return deflater.compress(data) + deflater.flush()
    if encoding == "br":
        return bytes(brotli.compress(data))
    assert encoding == "identity"
    return data


def header_encoding(encoding: str) -> str | None:
    return {"identity": None, "raw-deflate": "deflate"}.get(encoding, encoding)


CLIENT_REPORT = {
    "timestamp": 1_700_000_000.0,
    "discarded_events": [{"reason": "network_error", "category": "error", "quantity": 1}],
}
SESSION = {
    "sid": uuid.uuid4().hex,
    "init": True,
    "started": now_iso(),
    "status": "ok",
    "errors": 0,
    "attrs": {"release": "shop@1.0.0", "environment": "production"},
}


@dataclass
class Ctx:
    """Project 1 "acme/shop", set up for integrated error tracking, with its first client key."""

    api: Api
    scene: Scene
    token: str
    project_id: int
    key_id: int
    public_key: str

    def send(
        self,
        body: bytes,
        *,
        key: str | None = "",
        encoding: str | None = None,
        endpoint: str = "envelope",
        project: int | str | None = None,
        query: str = "",
        content_type: str | None = ENVELOPE_TYPE,
        auth: str | None = None,
    ) -> Reply:
        """POST ``body`` as an SDK does; ``key`` "" means this context's key, None means no key;
        ``content_type`` None sends none."""
        headers = {} if content_type is None else {"Content-Type": content_type}
        use = self.public_key if key == "" else key
        if auth is not None:
            headers["X-Sentry-Auth"] = auth
        elif use is not None:
            headers["X-Sentry-Auth"] = f"Sentry sentry_key={use}, sentry_version=7, sentry_client=sentry.python/2.75.0"
        if encoding:
            headers["Content-Encoding"] = encoding
        path = INGEST.format(self.project_id if project is None else project, endpoint) + query
        return self.api.call("POST", path, headers=headers, body=body)

    def send_event(self, event: dict[str, Any], **kw: Any) -> Reply:
        reply = self.send(event_envelope(event), **kw)
        return reply

    def ok(self, event: dict[str, Any]) -> None:
        reply = self.send_event(event)
        assert reply.status == 200, reply.body
        assert reply.json == {"id": event["event_id"]}

    def errors(self, query: str = "") -> list[dict[str, Any]]:
        index_caught_up()
        reply = self.api.get(ERRORS.format(self.project_id) + query, token=self.token)
        assert reply.status == 200, reply.body
        listed: list[dict[str, Any]] = reply.json
        return listed

    def all_errors(self, project_id: int | None = None) -> list[dict[str, Any]]:
        """Every error in every status."""
        index_caught_up()
        found = []
        for status in ("unresolved", "resolved", "ignored"):
            reply = self.api.get(
                ERRORS.format(project_id or self.project_id) + f"?status={status}&limit=100", token=self.token
            )
            assert reply.status == 200, reply.body
            found += reply.json
        return found

    def error(self, error_id: int) -> dict[str, Any]:
        reply = self.api.get(ERROR.format(self.project_id, error_id), token=self.token)
        assert reply.status == 200, reply.body
        detail: dict[str, Any] = reply.json
        return detail

    def events(self, error_id: int) -> list[dict[str, Any]]:
        reply = self.api.get(ERROR.format(self.project_id, error_id) + "/events?limit=100", token=self.token)
        assert reply.status == 200, reply.body
        listed: list[dict[str, Any]] = reply.json
        return listed

    def count(self, error_id: int) -> int:
        """The exact count, from the detail view (the list may lag for a busy error; see tracked_errors)."""
        return int(self.error(error_id)["count"])

    def counts(self) -> list[int]:
        return sorted(self.count(e["id"]) for e in self.all_errors())

    def only_error(self) -> dict[str, Any]:
        listed = self.all_errors()
        assert len(listed) == 1, listed
        return listed[0]

    def patch_key(self, form: dict[str, str], key_id: int | None = None) -> dict[str, Any]:
        reply = self.api.patch(KEY.format(self.project_id, key_id or self.key_id), form=form, token=self.token)
        assert reply.status == 200, reply.body
        entity: dict[str, Any] = reply.json
        return entity


# No test here waits between two events of one error: each is stored and counted at once while the
# error's roll-up token bucket lasts (tracked_errors: BURST roll-ups, REFILL_PER_SECOND more a
# second), and only the noisy-error tests send more than a handful of one error.


def set_up_project(api: Api, scene: Scene, token: str, project_id: int) -> tuple[int, str]:
    """PUT an active, integrated setting; returns the automatic key (id, public key)."""
    reply = api.put(SETTINGS.format(project_id), form={"active": "true", "integrated": "true"}, token=token)
    assert reply.status == 200, reply.body
    keys = api.get(KEYS.format(project_id), token=token)
    assert keys.status == 200 and len(keys.json) == 1, keys.body
    return int(keys.json[0]["id"]), str(keys.json[0]["public_key"])


@pytest.fixture
def ctx(api: Api, scene: Scene) -> Ctx:
    project = scene.project("acme/shop")
    token = scene.maintainer(project)
    key_id, public_key = set_up_project(api, scene, token, int(project.project_id))
    return Ctx(api, scene, token, int(project.project_id), key_id, public_key)


# Every kind of item ingestion writes: errors, their shards, events, event-id claims, and the
# rate-limit windows of keys.
INGESTED_KINDS = ("error", "errorshard", "event", "eventid", "ratewindow")


def ingested() -> list[dict[str, Any]]:
    """The items of INGESTED_KINDS as DynamoDB holds them, in key order: what the errors API shows
    is only part of it (a shard's pending count, a claimed event id or a spent rate limit is not)."""
    items = [item for item in raw_items() if item.get("kind") in INGESTED_KINDS]
    return sorted(items, key=lambda item: (str(item["pk"]), str(item["sk"])))


def assert_nothing_stored(ctx: Ctx, before: list[dict[str, Any]] | None = None) -> None:
    """Nothing of the refused requests reached the table: its ingested items are those of
    ``before`` (taken with :func:`ingested` before them), or none at all."""
    assert ingested() == (before or [])
    if not before:
        assert ctx.all_errors() == []


# 200: what is accepted


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate", "raw-deflate", "br"])
def test_event_envelope_is_answered_with_its_id_and_stored(ctx: Ctx, encoding: str) -> None:
    event = exception_event()
    reply = ctx.send(compress(event_envelope(event), encoding), encoding=header_encoding(encoding))
    assert reply.status == 200, reply.body
    assert reply.json == {"id": event["event_id"]}
    assert reply.headers["content-type"].startswith("application/json")
    error = ctx.only_error()
    assert error["title"] == "ValueError: invalid literal for int() with base 10: 'abc'"
    assert error["count"] == 1
    assert error["culprit"] == "checkout(shop.views)"
    events = ctx.events(error["id"])
    assert [e["event_id"] for e in events] == [event["event_id"]]
    assert events[0]["payload"]["exception"] == event["exception"]
    assert events[0]["environment"] == "production"
    assert events[0]["release"] == "shop@1.0.0"


def test_gzip_body_is_read_without_a_content_encoding_header(ctx: Ctx) -> None:
    event = exception_event()
    reply = ctx.send(gzip.compress(event_envelope(event)))
    assert reply.status == 200, reply.body
    assert ctx.only_error()["count"] == 1


def test_envelope_serialized_by_sentry_sdk_with_a_client_report_riding_along(ctx: Ctx) -> None:
    event = exception_event()
    sdk_envelope = SdkEnvelope(headers={"event_id": event["event_id"], "sent_at": now_iso()})
    sdk_envelope.add_item(SdkItem(payload=PayloadRef(json=event), type="event"))
    sdk_envelope.add_item(SdkItem(payload=PayloadRef(json=CLIENT_REPORT), type="client_report"))
    reply = ctx.send(gzip.compress(sdk_envelope.serialize()), encoding="gzip")
    assert reply.status == 200, reply.body
    assert reply.json == {"id": event["event_id"]}
    assert ctx.only_error()["count"] == 1


def test_a_real_sentry_sdk_client_configured_with_the_dsn_gets_its_errors_stored(ctx: Ctx) -> None:
    keys = ctx.api.get(KEYS.format(ctx.project_id), token=ctx.token).json
    dsn = keys[0]["sentry_dsn"]
    auth = Dsn(dsn).to_auth()
    url = urlsplit(auth.get_api_url())
    # The SDK's own URL for the DSN is the ingestion route.
    assert url.path == INGEST.format(ctx.project_id, "envelope")
    replies: list[Reply] = []

    class TestClientTransport(Transport):
        """sentry-sdk's HTTP transport, minus the network: same envelope, same auth, gzip."""

        def capture_envelope(self, envelope: SdkEnvelope) -> None:
            replies.append(
                ctx.api.call(
                    "POST",
                    url.path,
                    headers={
                        "X-Sentry-Auth": auth.to_header(),
                        "Content-Type": ENVELOPE_TYPE,
                        "Content-Encoding": "gzip",
                    },
                    body=gzip.compress(envelope.serialize()),
                )
            )

    client = sentry_sdk.Client(dsn=dsn, transport=TestClientTransport, default_integrations=False)
    with sentry_sdk.isolation_scope() as scope:
        scope.set_client(client)
        try:
            int("not a number")
        except ValueError as exc:
            event_id = scope.capture_exception(exc)
        message_id = scope.capture_message("payment provider slow")
    client.flush(timeout=2)
    client.close()
    assert [r.status for r in replies] == [200, 200], [r.body for r in replies]
    assert [r.json["id"] for r in replies] == [event_id, message_id]
    titles = {e["title"]: e for e in ctx.all_errors()}
    assert set(titles) == {
        "ValueError: invalid literal for int() with base 10: 'not a number'",
        "payment provider slow",
    }
    assert titles["payment provider slow"]["type"] == "default"
    assert titles["ValueError: invalid literal for int() with base 10: 'not a number'"]["type"] == "error"


def test_envelope_with_an_empty_header_and_items_without_length(ctx: Ctx) -> None:
    event = exception_event()
    reply = ctx.send(envelope(item("event", event, length=False)))
    assert reply.status == 200, reply.body
    assert reply.json == {"id": event["event_id"]}
    assert ctx.only_error()["count"] == 1


NON_EVENT_ITEMS: dict[str, list[bytes]] = {
    "session": [item("session", SESSION)],
    "sessions": [item("sessions", {"aggregates": [{"started": now_iso(), "exited": 3}]})],
    "client_report": [item("client_report", CLIENT_REPORT)],
    "attachment": [item("attachment", secrets.token_bytes(2048), filename="dump.bin", content_type="application/x")],
    "transaction": [item("transaction", {"type": "transaction", "transaction": "/checkout", "spans": []})],
    "check_in": [item("check_in", {"check_in_id": uuid.uuid4().hex, "status": "ok"})],
    "unknown": [item("some_future_type", b"\x00\x01 not json\n\n{")],
    "several": [item("profile", b"{}"), item("log", {"items": []}), item("replay_event", {}), item("user_report", {})],
}


def test_envelopes_without_events_are_accepted_and_store_nothing(ctx: Ctx) -> None:
    for case, items in NON_EVENT_ITEMS.items():
        for with_event_id in (True, False):
            header_id = uuid.uuid4().hex
            body = envelope(*items, header={"event_id": header_id} if with_event_id else {})
            for encoding in ("identity", "gzip"):
                reply = ctx.send(compress(body, encoding), encoding=header_encoding(encoding))
                assert reply.status == 200, (case, with_event_id, encoding, reply.body)
                assert list(reply.json) == ["id"], case
                if with_event_id:
                    assert reply.json["id"] == header_id, case
                else:
                    assert len(reply.json["id"]) == 32 and int(reply.json["id"], 16) >= 0, (case, reply.json)
    assert_nothing_stored(ctx)


def test_unknown_items_are_skipped_by_length_and_the_event_after_them_is_stored(ctx: Ctx) -> None:
    event = exception_event()
    junk = b'{"type":"event"}\n\nnot json at all\n' * 5
    reply = ctx.send(envelope(item("mystery", junk), item("attachment", junk), item("event", event)))
    assert reply.status == 200, reply.body
    assert reply.json == {"id": event["event_id"]}
    assert ctx.only_error()["count"] == 1


def test_store_endpoint_takes_one_json_event(ctx: Ctx) -> None:
    event = exception_event("KeyError", "'sku'")
    reply = ctx.send(json.dumps(event).encode(), endpoint="store", content_type="application/json")
    assert reply.status == 200, reply.body
    assert reply.json == {"id": event["event_id"]}
    error = ctx.only_error()
    assert error["title"] == "KeyError: 'sku'"


def test_store_endpoint_with_gzip_and_go_style_exception_array_and_epoch_timestamp(ctx: Ctx) -> None:
    event = {
        "event_id": uuid.uuid4().hex,
        "timestamp": time.time(),
        "platform": "go",
        "exception": [{"type": "*errors.errorString", "value": "boom", "stacktrace": {"frames": []}}],
    }
    body = gzip.compress(json.dumps(event).encode())
    reply = ctx.send(body, endpoint="store", content_type="application/json", encoding="gzip")
    assert reply.status == 200, reply.body
    assert reply.json == {"id": event["event_id"]}
    assert ctx.only_error()["title"] == "*errors.errorString: boom"


def test_event_times_in_every_form_sdks_send(ctx: Ctx) -> None:
    moment = dt.datetime(2024, 5, 17, 8, 30, 15, 250000, tzinfo=dt.UTC)
    forms = [moment.isoformat(), moment.isoformat().replace("+00:00", "Z"), moment.timestamp(), str(moment.timestamp())]
    for form in forms:
        ctx.ok(exception_event(timestamp=form))
    (error,) = ctx.all_errors()
    times = {dt.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) for e in ctx.events(error["id"])}
    assert times == {moment}
    assert ctx.count(error["id"]) == 4


def test_answers_do_not_depend_on_an_accept_header(ctx: Ctx) -> None:
    event = exception_event()
    reply = ctx.api.call(
        "POST",
        INGEST.format(ctx.project_id, "envelope"),
        headers={
            "X-Sentry-Auth": f"Sentry sentry_key={ctx.public_key}, sentry_version=7",
            "Content-Type": ENVELOPE_TYPE,
            "Accept": "text/html",
        },
        body=event_envelope(event),
    )
    assert reply.status == 200, reply.body
    assert reply.json == {"id": event["event_id"]}


def test_key_in_the_query_string_as_browser_sdks_send_it(ctx: Ctx) -> None:
    event = exception_event("TypeError", "x is undefined", module="app.js")
    reply = ctx.send(
        event_envelope(event),
        key=None,
        query=f"?sentry_key={ctx.public_key}&sentry_version=7&sentry_client=sentry.javascript.browser%2F8.0.0",
        content_type="text/plain;charset=UTF-8",
    )
    assert reply.status == 200, reply.body
    assert reply.json == {"id": event["event_id"]}
    assert ctx.only_error()["count"] == 1


@pytest.mark.parametrize(
    "content_type",
    [
        None,  # @sentry/node
        "application/x-www-form-urlencoded",  # curl --data-binary
        "text/plain;charset=UTF-8",  # browsers
        "application/octet-stream",
        "multipart/form-data; boundary=x",
        "application/vnd.anything+json",
    ],
)
@pytest.mark.parametrize("endpoint", ["envelope", "store"])
def test_either_route_takes_any_content_type_or_none_as_sentry_does(
    ctx: Ctx, content_type: str | None, endpoint: str
) -> None:
    event = exception_event("TypeError", f"sent as {content_type} to {endpoint}")
    body = event_envelope(event) if endpoint == "envelope" else json.dumps(event).encode()
    reply = ctx.send(gzip.compress(body), encoding="gzip", endpoint=endpoint, content_type=content_type)
    assert reply.status == 200, reply.body
    assert reply.json == {"id": event["event_id"]}
    assert ctx.only_error()["title"] == f"TypeError: sent as {content_type} to {endpoint}"


def test_sensitive_values_an_event_carries_never_reach_the_table(ctx: Ctx) -> None:
    """What Relay's default data scrubbing removes is not stored: every item of the table, event
    payloads decompressed, is searched for each secret the event carried."""
    from tests.ingest.test_fidelity import SECRETS, SENSITIVE

    event = {"event_id": uuid.uuid4().hex, "platform": "python", **SENSITIVE}
    reply = ctx.send(gzip.compress(event_envelope(event)), encoding="gzip")
    assert reply.status == 200, reply.body
    texts = []
    for item in raw_items():
        if item.get("kind") == "event":
            texts.append(zlib.decompress(item.pop("payload").value).decode())
        texts.append(as_text(item))
    stored = "\n".join(texts)
    assert "charge of card" in stored  # the event is there
    assert [secret for secret in SECRETS if secret in stored] == []


def test_a_secret_part_in_the_auth_header_is_ignored(ctx: Ctx) -> None:
    event = exception_event()
    auth = f"Sentry sentry_version=7, sentry_key={ctx.public_key}, sentry_secret=whatever, sentry_client=go/0.1"
    reply = ctx.send(event_envelope(event), auth=auth)
    assert (reply.status, reply.json) == (200, {"id": event["event_id"]}), reply.body


# 400

# A body that fails to decompress is told so, followed by the decompressor's own words.
UNDECOMPRESSABLE = re.compile(r"400 Bad request - the body could not be decompressed: \S.*")


def bad_request_cases() -> list[tuple[str, dict[str, Any], bytes | None, str | re.Pattern[str]]]:
    """(what is wrong, how it is sent, the body: None for a good event envelope, the message)."""
    event_bytes = json.dumps(exception_event()).encode()
    header = b'{"event_id":"' + uuid.uuid4().hex.encode() + b'"}\n'
    truncated = header + b'{"type":"event","length":' + str(len(event_bytes) + 50).encode() + b"}\n" + event_bytes
    bad = "400 Bad request - "
    return [
        ("no-key", {"key": None}, b"", NO_SENTRY_KEY["message"]),
        (
            "auth-without-key",
            {"key": None, "auth": "Sentry sentry_version=7, sentry_client=x"},
            None,
            NO_SENTRY_KEY["message"],
        ),
        ("empty-body", {}, b"", bad + "the body is empty"),
        ("blank-body", {}, b"\n\n", bad + "the body is empty"),
        ("truncated-envelope", {}, truncated, bad + "the envelope is truncated: an item is shorter than its length"),
        ("non-json-header", {}, b"this is not json\n", bad + "the envelope header is not valid JSON"),
        (
            "non-json-event",
            {},
            header + b'{"type":"event"}\n{"exception": broken\n',
            bad + "the event item is not valid JSON",
        ),
        (
            "event-not-an-object",
            {},
            header + b'{"type":"event","length":2}\n[]\n',
            bad + "an event item is not a JSON object",
        ),
        ("item-header-not-an-object", {}, header + b"[1,2]\n{}\n", bad + "an item header has no type"),
        (
            "nested-too-deeply",
            {},
            header + item("event", b'{"a":' * 100 + b"1" + b"}" * 100),
            bad + "the event item is nested too deeply",
        ),
        ("bad-gzip", {"encoding": "gzip"}, b"\x1f\x8b\x08\x00garbage that is not gzip", UNDECOMPRESSABLE),
        (
            "truncated-gzip",
            {"encoding": "gzip"},
            gzip.compress(header + event_bytes)[:-30],
            bad + "the compressed body is truncated",
        ),
        ("bad-brotli", {"encoding": "br"}, b"definitely not brotli", UNDECOMPRESSABLE),
        ("bad-deflate", {"encoding": "deflate"}, b"\x78\x9cnot deflate", UNDECOMPRESSABLE),
        ("store-empty", {"endpoint": "store", "content_type": "application/json"}, b"", bad + "the body is empty"),
        (
            "store-non-json",
            {"endpoint": "store", "content_type": "application/json"},
            b"{not json",
            bad + "the event is not valid JSON",
        ),
        (
            "event-not-utf8",
            {},
            header + item("event", b'{"message": "caf\xe9"}'),
            bad + "the event item is not valid JSON",
        ),
        (
            "store-not-object",
            {"endpoint": "store", "content_type": "application/json"},
            b"[1]",
            bad + "the event is not a JSON object",
        ),
    ]


def test_unreadable_requests_are_400_saying_what_is_wrong(ctx: Ctx) -> None:
    # A limit on the key: a request refused before the rate check must not spend any of it either.
    ctx.patch_key({"rate_limit_count": "100", "rate_limit_window": "60"})
    actual: dict[str, tuple[int, Any]] = {}
    expected: dict[str, tuple[int, Any]] = {}
    for name, kw, body, message in bad_request_cases():
        reply = ctx.send(event_envelope(exception_event()) if body is None else body, **kw)
        actual[name] = (reply.status, reply.json)
        if isinstance(message, re.Pattern):
            told = reply.json.get("message") if isinstance(reply.json, dict) else None
            message = told if isinstance(told, str) and message.fullmatch(told) else message.pattern
        expected[name] = (400, {"message": message})
    assert actual == expected
    assert_nothing_stored(ctx)


def test_deeply_nested_json_is_400_not_a_crash(ctx: Ctx) -> None:
    # Deeper than the JSON decoder's recursion limit.
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    reply = ctx.send(envelope(item("event", deep)))
    assert reply.status == 400, reply.body
    assert list(reply.json) == ["message"], reply.body
    assert_nothing_stored(ctx)


@pytest.mark.xfail(
    strict=True,
    reason="JSON nested deeper than the decoder's recursion limit (about 1,000 levels) is answered "
    "'the event item is not valid JSON' (envelopes.parse_json turns the RecursionError into that), "
    "though it is valid JSON; 65 to about 1,000 levels are told 'nested too deeply'",
)
def test_json_nested_deeper_than_the_decoder_goes_is_told_it_is_nested_too_deeply(ctx: Ctx) -> None:
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    reply = ctx.send(envelope(item("event", deep)))
    assert (reply.status, reply.json) == (400, {"message": "400 Bad request - the event item is nested too deeply"})


# 403


def assert_refused(reply: Reply, status: int, body: dict[str, str]) -> None:
    """The exact answer: its body is the reason the SDK logs for its user."""
    assert (reply.status, reply.json) == (status, body), (reply.status, reply.body)
    assert reply.headers["content-type"] == "application/json", reply.headers


def test_unknown_key_is_403(ctx: Ctx) -> None:
    assert_refused(ctx.send_event(exception_event(), key="glet_" + "0" * 32), 403, UNKNOWN_KEY)
    assert_refused(ctx.send_event(exception_event(), key=None, query="?sentry_key=nonsense"), 403, UNKNOWN_KEY)
    assert_nothing_stored(ctx)


def test_deactivated_key_is_refused_at_once_and_accepted_again_when_reactivated(ctx: Ctx) -> None:
    ctx.ok(exception_event())
    # A limit on the key: the refusal comes before the rate check and must not spend any of it.
    ctx.patch_key({"rate_limit_count": "100", "rate_limit_window": "60"})
    assert ctx.patch_key({"active": "false"})["active"] is False
    before = ingested()
    assert_refused(ctx.send_event(exception_event()), 403, INACTIVE_KEY)
    assert_nothing_stored(ctx, before)
    assert ctx.only_error()["count"] == 1
    assert ctx.patch_key({"active": "true"})["active"] is True
    ctx.ok(exception_event())
    assert ctx.only_error()["count"] == 2


def test_deleted_key_is_refused(ctx: Ctx) -> None:
    reply = ctx.api.delete(KEY.format(ctx.project_id, ctx.key_id), token=ctx.token)
    assert reply.status == 200, reply.body
    # Deleting a key deletes the claim of its public key: it is unknown from then on.
    assert_refused(ctx.send_event(exception_event()), 403, UNKNOWN_KEY)
    assert_nothing_stored(ctx)


def test_key_of_another_project_is_403_and_stores_nothing_in_either(ctx: Ctx) -> None:
    other = ctx.scene.project("other/app")
    ctx.scene.member(other, "maintainer", "maintainer")
    _, other_key = set_up_project(ctx.api, ctx.scene, ctx.token, int(other.project_id))
    assert_refused(ctx.send_event(exception_event(), key=other_key), 403, OTHER_PROJECTS_KEY)
    assert_refused(ctx.send_event(exception_event(), project=int(other.project_id)), 403, OTHER_PROJECTS_KEY)
    assert_nothing_stored(ctx)  # the table holds the items of both projects
    assert ctx.all_errors(int(other.project_id)) == []


def test_project_without_a_setting_is_403(ctx: Ctx) -> None:
    other = ctx.scene.project("other/app")
    ctx.scene.member(other, "maintainer", "maintainer")
    created = ctx.api.post(KEYS.format(int(other.project_id)), token=ctx.token)  # no setting needed for keys
    assert created.status == 201, created.body
    reply = ctx.send_event(exception_event(), key=created.json["public_key"], project=int(other.project_id))
    assert_refused(reply, 403, NO_SETTING)
    assert_nothing_stored(ctx)
    assert ctx.all_errors(int(other.project_id)) == []


def test_inactive_setting_is_403_and_active_again_is_200(ctx: Ctx) -> None:
    reply = ctx.api.patch(SETTINGS.format(ctx.project_id), form={"active": "false"}, token=ctx.token)
    assert reply.status == 200, reply.body
    assert_refused(ctx.send_event(exception_event()), 403, TRACKING_DISABLED)
    assert_nothing_stored(ctx)
    reply = ctx.api.patch(SETTINGS.format(ctx.project_id), form={"active": "true"}, token=ctx.token)
    assert reply.status == 200, reply.body
    ctx.ok(exception_event())


def test_setting_not_integrated_is_403(ctx: Ctx) -> None:
    # Active but backed by a Sentry server instead: events belong there, not here.
    reply = ctx.api.patch(
        SETTINGS.format(ctx.project_id),
        form={
            "active": "true",
            "integrated": "false",
            "api_host": "https://8.8.8.8",
            "organization_slug": "acme",
            "project_slug": "shop",
            "token": "sntrys_secret",
        },
        token=ctx.token,
    )
    assert reply.status == 200, reply.body
    assert reply.json["integrated"] is False
    assert_refused(ctx.send_event(exception_event()), 403, NOT_INTEGRATED)
    assert_nothing_stored(ctx)


def test_integrated_error_tracking_switched_off_for_the_deployment_is_403(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib import config

    monkeypatch.setenv("ERRORTRACKING_INTEGRATED", "false")
    config.get_config.cache_clear()
    assert_refused(ctx.send_event(exception_event()), 403, NOT_INTEGRATED)
    assert_nothing_stored(ctx)


def test_unknown_project_is_403(ctx: Ctx) -> None:
    # A number is a project id however unknown, and the key (project 1's) is checked against it
    # first; anything else names no project at all.
    answers = {
        "999": OTHER_PROJECTS_KEY,
        "abc": UNKNOWN_PROJECT,
        "0x1": UNKNOWN_PROJECT,
        "1.0": UNKNOWN_PROJECT,
        "%31": UNKNOWN_PROJECT,  # handed over undecoded by the test client
    }
    actual: dict[str, tuple[int, Any]] = {}
    for project in answers:
        reply = ctx.send_event(exception_event(), project=project)
        actual[project] = (reply.status, reply.json)
    assert actual == {project: (403, body) for project, body in answers.items()}
    assert_nothing_stored(ctx)


# 413


def test_body_over_one_megabyte_is_413(ctx: Ctx) -> None:
    event = exception_event(extra={"blob": secrets.token_hex(MB // 2 + 1024)})
    body = event_envelope(event)
    assert len(body) > MB
    reply = ctx.send(body)
    assert reply.status == 413, reply.body
    assert reply.json == PAYLOAD_TOO_LARGE
    assert_nothing_stored(ctx)


def test_compressed_body_over_one_megabyte_is_413(ctx: Ctx) -> None:
    body = gzip.compress(secrets.token_bytes(MB + 4096))
    assert len(body) > MB
    reply = ctx.send(body, encoding="gzip")
    assert reply.status == 413, reply.body
    assert reply.json == PAYLOAD_TOO_LARGE


def test_compression_bomb_inflating_over_twenty_megabytes_is_413(ctx: Ctx) -> None:
    inflated = event_envelope(exception_event(extra={"padding": "0" * (21 * MB)}))
    for encoding in ("gzip", "deflate", "raw-deflate", "br"):
        body = compress(inflated, encoding)
        assert len(body) < MB
        reply = ctx.send(body, encoding=header_encoding(encoding))
        assert reply.status == 413, (encoding, reply.body)
        assert reply.json == PAYLOAD_TOO_LARGE
    assert_nothing_stored(ctx)


# 429


def wait_for_room_in_the_minute(margin: int = 4) -> None:
    """Windows are aligned on multiples of their length: keep a test's sends inside one minute."""
    into = time.time() % 60
    if into > 60 - margin:
        time.sleep(60 - into + 0.05)


def test_over_the_key_rate_limit_is_429_with_sentry_rate_limit_headers(ctx: Ctx) -> None:
    key = ctx.patch_key({"rate_limit_count": "2", "rate_limit_window": "60"})
    assert (key["rate_limit_count"], key["rate_limit_window"]) == (2, 60)
    wait_for_room_in_the_minute()
    ctx.ok(exception_event("ValueError"))
    ctx.ok(exception_event("KeyError"))
    before = ingested()
    for _ in range(2):  # the first refusal, then the remembered one
        reply = ctx.send_event(exception_event("TypeError"))
        assert_refused(reply, 429, RATE_LIMITED)
        retry_after = reply.headers["retry-after"]
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, retry_after
        assert reply.headers["x-sentry-rate-limits"] == f"{retry_after}:error:key"
    assert_nothing_stored(ctx, before)  # the window's count included: a refusal spends nothing
    # Envelopes without an event item are not counted and never refused.
    for items in (item("client_report", CLIENT_REPORT), item("session", SESSION)):
        header_id = uuid.uuid4().hex
        reply = ctx.send(envelope(items, header={"event_id": header_id}))
        assert (reply.status, reply.json) == (200, {"id": header_id}), reply.body
    listed = ctx.all_errors()
    assert sorted((e["title"].split(":")[0], e["count"]) for e in listed) == [("KeyError", 1), ("ValueError", 1)]


def test_rate_limit_of_one_key_leaves_another_key_alone(ctx: Ctx) -> None:
    second = ctx.api.post(KEYS.format(ctx.project_id), token=ctx.token)
    assert second.status == 201, second.body
    ctx.patch_key({"rate_limit_count": "1", "rate_limit_window": "60"})
    wait_for_room_in_the_minute()
    ctx.ok(exception_event())
    assert_refused(ctx.send_event(exception_event()), 429, RATE_LIMITED)
    event = exception_event()
    reply = ctx.send_event(event, key=second.json["public_key"])
    assert (reply.status, reply.json) == (200, {"id": event["event_id"]}), reply.body


def test_removing_the_rate_limit_lifts_the_refusal(ctx: Ctx) -> None:
    ctx.patch_key({"rate_limit_count": "1", "rate_limit_window": "60"})
    wait_for_room_in_the_minute()
    ctx.ok(exception_event())
    assert_refused(ctx.send_event(exception_event()), 429, RATE_LIMITED)
    key = ctx.patch_key({"rate_limit_count": "", "rate_limit_window": ""})
    assert (key["rate_limit_count"], key["rate_limit_window"]) == (None, None)
    ctx.ok(exception_event())


# Duplicates and grouping


@pytest.mark.parametrize("with_timestamp", [True, False])
def test_the_same_event_sent_twice_is_stored_once(ctx: Ctx, with_timestamp: bool) -> None:
    event = exception_event()
    if not with_timestamp:
        del event["timestamp"]
    body = gzip.compress(event_envelope(event))
    for _ in range(2):  # the SDK (or a relay) sending it again a little later
        reply = ctx.send(body, encoding="gzip")
        assert reply.status == 200, reply.body
        assert reply.json == {"id": event["event_id"]}
    error = ctx.only_error()
    assert error["count"] == 1
    assert ctx.error(error["id"])["count"] == 1
    assert [e["event_id"] for e in ctx.events(error["id"])] == [event["event_id"]]


def test_the_same_event_delivered_in_a_burst_is_counted_once(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relay or a retrying proxy delivering one event many times within the same instant.

    The clock ingestion reads is held still (the seam it offers for replaying a second), so that
    every delivery lands inside the same roll-up interval, as a burst of real deliveries would.
    """
    frozen = dt.datetime.now(dt.UTC)
    monkeypatch.setattr(ingestion, "clock", lambda: frozen)
    event = exception_event()
    body = event_envelope(event)
    for _ in range(25):
        reply = ctx.send(body)
        assert reply.status == 200, reply.body
        assert reply.json == {"id": event["event_id"]}
    error = ctx.only_error()
    assert ctx.count(error["id"]) == 1
    assert [e["event_id"] for e in ctx.events(error["id"])] == [event["event_id"]]


def test_event_id_with_dashes_is_normalized(ctx: Ctx) -> None:
    event_id = uuid.uuid4()
    event = exception_event(event_id=str(event_id))
    reply = ctx.send_event(event)
    assert reply.status == 200, reply.body
    assert reply.json == {"id": event_id.hex}


def test_same_type_and_culprit_with_different_values_is_one_error(ctx: Ctx) -> None:
    ctx.ok(exception_event("LookupError", "<Order object at 0x7f3a1c2d>"))
    ctx.ok(exception_event("LookupError", "<Order object at 0x7f99ffee>"))
    error = ctx.only_error()
    assert error["count"] == 2
    assert error["type"] == "error"
    assert error["title"] == "LookupError: <Order object at 0x7f99ffee>"  # the latest event's words


@pytest.mark.parametrize("events", [2, 3, 150])
def test_an_envelope_of_more_than_one_event_is_refused_whole(ctx: Ctx, events: int) -> None:
    """Sentry's protocol allows one event item per envelope, and every SDK sends one: more is a 400
    that says why, and nothing of it is stored (150 events once cost 128 transactions and a 503)."""
    items = [item("event", exception_event("LookupError", str(n))) for n in range(events)]
    reply = ctx.send(envelope(items[0], item("client_report", CLIENT_REPORT), *items[1:]))
    assert (reply.status, reply.json) == (
        400,
        {"message": f"400 Bad request - an envelope carries at most one event item, this one carries {events}"},
    )
    assert_nothing_stored(ctx)


def test_one_event_among_other_items_is_stored(ctx: Ctx) -> None:
    event = exception_event("LookupError", "a")
    reply = ctx.send(envelope(item("client_report", CLIENT_REPORT), item("event", event), item("session", SESSION)))
    assert reply.status == 200, reply.body
    assert reply.json == {"id": event["event_id"]}
    assert ctx.only_error()["count"] == 1


def test_different_types_or_culprits_are_different_errors(ctx: Ctx) -> None:
    ctx.ok(exception_event("LookupError", "a"))
    ctx.ok(exception_event("KeyError", "a"))
    ctx.ok(exception_event("LookupError", "a", function="refund"))
    assert ctx.counts() == [1, 1, 1]


def test_the_raised_exception_names_the_error_not_its_cause(ctx: Ctx) -> None:
    event = exception_event("RuntimeError", "checkout failed")
    cause = json.loads(json.dumps(event["exception"]["values"][0]))
    cause.update(type="ConnectionError", value="db down")
    event["exception"]["values"].insert(0, cause)  # cause first, the raised one last
    ctx.ok(event)
    assert ctx.only_error()["title"] == "RuntimeError: checkout failed"


def test_a_resolved_error_that_happens_again_is_unresolved_again(ctx: Ctx) -> None:
    ctx.ok(exception_event())
    error_id = ctx.only_error()["id"]
    reply = ctx.api.put(ERROR.format(ctx.project_id, error_id), form={"status": "resolved"}, token=ctx.token)
    assert reply.status == 200, reply.body
    assert ctx.errors() == []
    ctx.ok(exception_event())
    listed = ctx.errors()
    assert [(e["id"], e["status"], e["count"]) for e in listed] == [(error_id, "unresolved", 2)]
    assert ctx.errors("?status=resolved") == []


def test_an_ignored_error_that_happens_again_stays_ignored(ctx: Ctx) -> None:
    ctx.ok(exception_event())
    error_id = ctx.only_error()["id"]
    reply = ctx.api.put(ERROR.format(ctx.project_id, error_id), form={"status": "ignored"}, token=ctx.token)
    assert reply.status == 200, reply.body
    ctx.ok(exception_event())
    assert ctx.errors() == []
    assert [(e["id"], e["count"]) for e in ctx.errors("?status=ignored")] == [(error_id, 2)]


def test_an_sdk_fingerprint_groups_different_exceptions_together(ctx: Ctx) -> None:
    ctx.ok(exception_event("ValueError", "a", fingerprint=["payment-provider"]))
    ctx.ok(exception_event("TimeoutError", "b", function="pay", fingerprint=["payment-provider"]))
    ctx.ok(exception_event("TimeoutError", "b", function="pay"))  # no fingerprint: its own group
    assert ctx.counts() == [1, 2]


def test_a_default_fingerprint_marker_expands_to_the_usual_grouping(ctx: Ctx) -> None:
    ctx.ok(exception_event("ValueError", "a", fingerprint=["{{ default }}", "tenant-1"]))
    ctx.ok(exception_event("ValueError", "b", fingerprint=["{{ default }}", "tenant-1"]))
    ctx.ok(exception_event("ValueError", "c", fingerprint=["{{ default }}", "tenant-2"]))
    assert ctx.counts() == [1, 2]


def test_a_message_only_event_is_listed_with_type_default(ctx: Ctx) -> None:
    for user in ("alice", "bob"):
        event = {
            "event_id": uuid.uuid4().hex,
            "timestamp": now_iso(),
            "platform": "python",
            "level": "warning",
            "logentry": {"message": "Payment for %s took too long", "formatted": f"Payment for {user} took too long"},
        }
        ctx.ok(event)
    error = ctx.only_error()
    assert error["type"] == "default"
    assert ctx.count(error["id"]) == 2  # grouped by the message template
    assert error["title"] == "Payment for bob took too long"


def test_a_plain_string_message_event_is_stored(ctx: Ctx) -> None:
    ctx.ok({"event_id": uuid.uuid4().hex, "message": "cron job finished with warnings", "level": "info"})
    error = ctx.only_error()
    assert (error["type"], error["title"]) == ("default", "cron job finished with warnings")


# Volume


NOISY = 60


def test_every_event_of_a_noisy_error_is_counted(ctx: Ctx) -> None:
    body = [gzip.compress(event_envelope(exception_event("ValueError", f"id {n}"))) for n in range(NOISY)]
    for data in body:
        reply = ctx.send(data, encoding="gzip")
        assert reply.status == 200, reply.body
    error = ctx.only_error()
    assert ctx.error(error["id"])["count"] == NOISY


def _fresh_app() -> Any:
    """Another instance of the app (its own Chalice object), as another Lambda container has."""
    path = os.path.join(PROJECT_DIR, "app.py")
    spec = importlib.util.spec_from_file_location(f"app_instance_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def test_every_event_of_a_noisy_error_sent_through_four_app_instances_is_counted(ctx: Ctx) -> None:
    """Four Lambda instances (each its own app and its own memory) taking turns on one error.

    Interleaved rather than threaded: moto's in-process DynamoDB is not thread-safe.
    """
    instances = 4
    project_dir = PROJECT_DIR
    headers = {
        "X-Sentry-Auth": f"Sentry sentry_key={ctx.public_key}, sentry_version=7",
        "Content-Type": ENVELOPE_TYPE,
        "Content-Encoding": "gzip",
    }
    bodies = [gzip.compress(event_envelope(exception_event())) for _ in range(NOISY)]
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(Client(_fresh_app(), stage_name="dev", project_dir=project_dir))
            for _ in range(instances)
        ]
        statuses = [
            clients[n % instances]
            .http.request("POST", INGEST.format(ctx.project_id, "envelope"), headers=headers, body=data)
            .status_code
            for n, data in enumerate(bodies)
        ]
    assert statuses == [200] * NOISY, statuses
    error = ctx.only_error()
    assert ctx.error(error["id"])["count"] == NOISY


def test_a_huge_event_is_stored_trimmed_and_answered_200(ctx: Ctx) -> None:
    event = exception_event()
    frames = event["exception"]["values"][0]["stacktrace"]["frames"]
    frames[-1]["vars"] = {f"buffer_{n}": secrets.token_hex(100_000) for n in range(8)}  # 1.6 MB of random hex
    body = gzip.compress(event_envelope(event))
    assert MB // 2 < len(body) < MB
    reply = ctx.send(body, encoding="gzip")
    assert reply.status == 200, reply.body
    assert reply.json == {"id": event["event_id"]}
    error = ctx.only_error()
    detail = ctx.error(error["id"])
    assert detail["latest_event"]["event_id"] == event["event_id"]
    assert detail["latest_event"]["trimmed"] is True
    assert [f["function"] for f in detail["stack_trace"]] == ["checkout", "main"]
    (stored,) = ctx.events(error["id"])
    assert stored["trimmed"] is True
    stored_frames = stored["payload"]["exception"]["values"][0]["stacktrace"]["frames"]
    assert [f["function"] for f in stored_frames] == ["main", "checkout"]
    assert "vars" not in stored_frames[-1]


def test_a_huge_but_compressible_event_is_accepted(ctx: Ctx) -> None:
    crumb = {"type": "http", "category": "httplib", "data": {"url": "https://api.example.test/items", "status": 200}}
    event = exception_event(breadcrumbs={"values": [{**crumb, "message": f"GET {n}"} for n in range(60_000)]})
    inflated = event_envelope(event)
    assert len(inflated) > 7 * MB
    reply = ctx.send(gzip.compress(inflated), encoding="gzip")
    assert reply.status == 200, reply.body
    error = ctx.only_error()
    assert ctx.error(error["id"])["latest_event"]["event_id"] == event["event_id"]


# Round trips


def test_one_event_of_a_quiet_error_costs_two_round_trips(ctx: Ctx, aws_calls: list[tuple[str, str]]) -> None:
    body = event_envelope(exception_event())
    aws_calls.clear()
    reply = ctx.send(body)
    assert reply.status == 200, reply.body
    assert aws_calls == [("dynamodb", "BatchGetItem"), ("dynamodb", "TransactWriteItems")]
    event = exception_event()
    aws_calls.clear()
    # The same error again at once is stored too (a fresh shard, or a token of the error's roll-up
    # bucket): still two.
    reply = ctx.send(event_envelope(event))
    assert (reply.status, reply.json) == (200, {"id": event["event_id"]})
    assert [op for _, op in aws_calls] == ["BatchGetItem", "TransactWriteItems"]


def test_one_event_with_a_rate_limited_key_costs_three(ctx: Ctx, aws_calls: list[tuple[str, str]]) -> None:
    ctx.patch_key({"rate_limit_count": "100", "rate_limit_window": "60"})
    body = event_envelope(exception_event())
    aws_calls.clear()
    reply = ctx.send(body)
    assert reply.status == 200, reply.body
    assert len(aws_calls) == 3, aws_calls
    assert [op for _, op in aws_calls] == ["BatchGetItem", "UpdateItem", "TransactWriteItems"]


def test_a_refused_request_costs_at_most_one_round_trip(ctx: Ctx, aws_calls: list[tuple[str, str]]) -> None:
    aws_calls.clear()
    assert_refused(ctx.send(b""), 400, {"message": "400 Bad request - the body is empty"})
    assert_refused(ctx.send_event(exception_event(), key=None), 400, NO_SENTRY_KEY)
    assert aws_calls == []
    assert_refused(ctx.send_event(exception_event(), key="glet_" + "1" * 32), 403, UNKNOWN_KEY)
    assert aws_calls == [("dynamodb", "BatchGetItem")]
