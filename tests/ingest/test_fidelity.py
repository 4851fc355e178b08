"""An event reads as Sentry reads it, whichever SDK sent it (unit tests, no store).

The JavaScript payloads below are trimmed copies of what @sentry/node 11.12.0 sent for the calls
they are named after (captured on the wire); the Python ones are made by the real sentry-sdk,
through its Transport extension point. The end-to-end proof with all three real SDKs is
tests/ingest/test_e2e_sdks.py.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope as SdkEnvelope
from sentry_sdk.transport import Transport

from chalicelib import entities
from chalicelib.ingest import exceptions, frames, normalization, scrubbing
from chalicelib.ingest.events import Event, normalize
from chalicelib.models import StoredEvent

RECEIVED = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.UTC)
DSN = "http://glet_0123456789abcdef0123456789abcdef@127.0.0.1:8765/errortracking/api/v1/projects/5"


def norm(payload: dict[str, Any]) -> Event:
    return normalize(copy.deepcopy(payload), RECEIVED)


def node_frame(function: str, lineno: int, *, filename: str = "/srv/shop/checkout.mjs", in_app: bool = True) -> Any:
    return {
        "filename": filename,
        "module": "checkout",
        "function": function,
        "lineno": lineno,
        "colno": 9,
        "in_app": in_app,
    }


NODE_RUNTIME: list[dict[str, Any]] = [
    {
        "filename": "node:internal/modules/run_main",
        "module": "run_main",
        "function": "run",
        "lineno": 117,
        "in_app": False,
    },
]
# Sentry.captureMessage("Inventory sync is lagging", "warning")
NODE_MESSAGE: dict[str, Any] = {
    "event_id": "44345bce3fa64a2ab38daedbee3f7e98",
    "level": "warning",
    "platform": "node",
    "message": "Inventory sync is lagging",
    "exception": {
        "values": [
            {
                "value": "Inventory sync is lagging",
                "stacktrace": {"frames": [*NODE_RUNTIME, node_frame("?", 9)]},
                "mechanism": {"type": "generic", "handled": True, "synthetic": True},
            }
        ]
    },
    "sdk": {"name": "sentry.javascript.node", "version": "11.12.0"},
}
# Sentry.captureException(new CheckoutFailedError("checkout failed", {cause: new LedgerUnavailableError(...)}))
NODE_CHAIN: dict[str, Any] = {
    "event_id": "cfd8d8b40b3c41448901c935403a3ddf",
    "level": "error",
    "platform": "node",
    "exception": {
        "values": [
            {
                "type": "LedgerUnavailableError",
                "value": "ledger unreachable",
                "stacktrace": {"frames": [*NODE_RUNTIME, node_frame("readLedger", 4)]},
                "mechanism": {"handled": True, "type": "chained", "source": "cause", "exception_id": 1, "parent_id": 0},
            },
            {
                "type": "CheckoutFailedError",
                "value": "checkout failed",
                "stacktrace": {"frames": [*NODE_RUNTIME, node_frame("checkout", 8)]},
                "mechanism": {"handled": True, "type": "generic", "exception_id": 0},
            },
        ]
    },
    "contexts": {"runtime": {"name": "node", "version": "v20.20.2"}, "os": {"name": "Debian", "version": "12.11"}},
    "tags": {"shop": "eu"},
    "user": {"id": "42", "email": "ada@example.com"},
    "breadcrumbs": [{"timestamp": 1796162081.991, "message": "cart opened", "category": "cart"}],
    "sdk": {"name": "sentry.javascript.node", "version": "11.12.0"},
}


class _Capture(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: SdkEnvelope) -> None:
        self.events += [json.loads(item.get_bytes()) for item in envelope.items if item.type == "event"]


@pytest.fixture
def sdk() -> Iterator[_Capture]:
    capture = _Capture()
    client = sentry_sdk.Client(dsn=DSN, transport=capture, default_integrations=False)
    with sentry_sdk.isolation_scope() as scope:
        scope.set_client(client)
        yield capture
    client.close()


def _raise_group(*errors: Exception) -> None:
    raise ExceptionGroup("batch failed", list(errors))


def _bad_row() -> ValueError:
    """A ValueError raised (so with a stack trace of its own), always from the same line."""
    try:
        raise ValueError("bad row")
    except ValueError as exc:
        return exc


# Messages read the same from every SDK


def test_a_synthetic_exception_reads_as_the_message_it_carries(sdk: _Capture) -> None:
    sentry_sdk.capture_message("Inventory sync is lagging", level="warning")
    (python_message,) = sdk.events
    node, python = norm(NODE_MESSAGE), norm(python_message)
    assert (node.title, node.type, node.level, node.message) == (
        "Inventory sync is lagging",
        "default",
        "warning",
        "Inventory sync is lagging",
    )
    assert (node.title, node.type, node.level) == (python.title, python.type, python.level)
    # One message is one error whichever SDK sent it: grouped by its text, not the SDK's call site.
    assert node.error_id == python.error_id
    assert node.culprit == python.culprit == ""


def test_capture_exception_of_a_string_is_titled_by_the_string() -> None:
    payload = copy.deepcopy(NODE_MESSAGE)
    del payload["message"]
    payload["exception"]["values"][0]["type"] = "Error"
    payload["exception"]["values"][0]["value"] = "cart is empty"
    event = norm(payload)
    assert (event.title, event.type) == ("cart is empty", "default")


def test_a_synthetic_exception_keeps_its_stack_in_the_detail() -> None:
    body = entities.error_event(stored(NODE_MESSAGE))
    assert body["title"] == "Inventory sync is lagging"
    assert [frame["function"] for frame in body["stack_trace"]][:1] == ["?"]
    assert body["mechanism"] == {"type": "generic", "handled": True, "synthetic": True}


# Chains and groups


def test_a_javascript_cause_chain_is_titled_by_the_error_and_lists_every_exception() -> None:
    event = norm(NODE_CHAIN)
    assert (event.title, event.type, event.culprit) == (
        "CheckoutFailedError: checkout failed",
        "error",
        "checkout(checkout)",
    )
    body = entities.error_event(stored(NODE_CHAIN))
    assert [(e["type"], e["value"]) for e in body["exceptions"]] == [
        ("CheckoutFailedError", "checkout failed"),
        ("LedgerUnavailableError", "ledger unreachable"),
    ]
    assert [e["stack_trace"][0]["function"] for e in body["exceptions"]] == ["checkout", "readLedger"]
    assert body["exceptions"][1]["mechanism"]["source"] == "cause"


def test_the_cause_does_not_change_the_group() -> None:
    other = copy.deepcopy(NODE_CHAIN)
    other["exception"]["values"][0]["type"] = "TimeoutError"
    assert norm(other).error_id == norm(NODE_CHAIN).error_id


def test_an_exception_group_of_different_exceptions_is_titled_by_the_group(sdk: _Capture) -> None:
    try:
        _raise_group(ValueError("bad row"), TypeError("bad type"))
    except ExceptionGroup:
        sentry_sdk.capture_exception()
    (payload,) = sdk.events
    event = norm(payload)
    assert event.title == "ExceptionGroup: batch failed"  # the message sentry-sdk sends for the group
    body = entities.error_event(stored(payload))
    assert [e["type"] for e in body["exceptions"]] == ["ExceptionGroup", "ValueError", "TypeError"]
    assert all(e["stack_trace"] or e["type"] != "ExceptionGroup" for e in body["exceptions"])
    assert body["exceptions"][0]["mechanism"]["is_exception_group"] is True


def test_an_exception_group_of_one_distinct_exception_is_grouped_and_titled_by_it(sdk: _Capture) -> None:
    for _ in range(2):
        try:
            _raise_group(*[_bad_row() for _ in range(2)])
        except ExceptionGroup:
            sentry_sdk.capture_exception()
    try:
        raise _bad_row()
    except ValueError:
        sentry_sdk.capture_exception()
    grouped, again, alone = (norm(p) for p in sdk.events)
    assert (grouped.title, grouped.type) == ("ValueError: bad row", "error")
    assert grouped.error_id == again.error_id
    body = entities.error_event(stored(sdk.events[0]))
    # The ValueError it is titled by first, then the group that was raised, then its other member.
    assert [e["type"] for e in body["exceptions"]] == ["ValueError", "ExceptionGroup", "ValueError"]
    assert body["stack_trace"] == body["exceptions"][0]["stack_trace"] != []  # the ValueError's own
    assert alone.title == grouped.title


def test_an_exception_tree_that_is_not_well_formed_falls_back_to_the_last_exception() -> None:
    payload = copy.deepcopy(NODE_CHAIN)
    payload["exception"]["values"][0]["mechanism"]["exception_id"] = 0  # two roots
    assert norm(payload).title == "CheckoutFailedError: checkout failed"
    payload["exception"]["values"][0]["mechanism"]["parent_id"] = 0
    cyclic = copy.deepcopy(NODE_CHAIN)
    for value in cyclic["exception"]["values"]:
        value["mechanism"].update({"is_exception_group": True, "parent_id": 1 - value["mechanism"]["exception_id"]})
    assert exceptions.main_index(cyclic["exception"]["values"]) == 1


@pytest.mark.parametrize(
    ("given", "title", "type_"),
    [
        ({"value": "TypeError: x is undefined"}, "TypeError: x is undefined", "TypeError"),
        ({"value": "something broke"}, "Error: something broke", "Error"),
        ({"type": "ValueError", "value": "line one\nline two"}, "ValueError: line one", "ValueError"),
    ],
)
def test_titles_as_sentry_derives_them(given: dict[str, Any], title: str, type_: str) -> None:
    event = norm({"platform": "javascript", "exception": {"values": [given]}})
    assert event.title == title
    assert (
        event.error_id
        == norm({"platform": "javascript", "exception": {"values": [{"type": type_, "value": "x"}]}}).error_id
    )


# Culprits


def browser_frame(function: str, url: str, *, in_app: bool = True) -> dict[str, Any]:
    return {"filename": url, "function": function, "lineno": 3, "colno": 11, "in_app": in_app}


@pytest.mark.parametrize(
    ("url", "module"),
    [
        ("https://shop.example/static/js/app.3f2a9c1.min.js?v=s3cr3t#frag", "app"),
        ("https://shop.example/assets/checkout.js?token=abc", "assets/checkout"),
        ("http://127.0.0.1:8000/program.js?v=s3cr3t-script-token", "program"),
        ("https://shop.example/0123456789abcdef0123456789abcdef/cart/view.js", "cart/view"),
        ("https://shop.example/", "<unknown module>"),
    ],
)
def test_the_module_of_a_script_comes_from_its_path_alone(url: str, module: str) -> None:
    assert frames.module_from_url(url) == module


def test_a_browser_culprit_never_carries_the_query_string_or_the_fragment() -> None:
    payload: dict[str, Any] = {
        "platform": "javascript",
        "exception": {
            "values": [
                {
                    "type": "TypeError",
                    "value": "x",
                    "stacktrace": {
                        "frames": [
                            browser_frame("pay", "https://shop.example/app.js?session=s3cr3t#step-2"),
                        ]
                    },
                }
            ]
        },
    }
    event = norm(payload)
    assert event.culprit == "pay(app)"
    again = copy.deepcopy(payload)
    again["exception"]["values"][0]["stacktrace"]["frames"][0]["filename"] = "https://shop.example/app.js?session=other"
    assert norm(again).error_id == event.error_id
    stored_frame = json.loads(json.dumps(event.payload))["exception"]["values"][0]["stacktrace"]["frames"][0]
    assert stored_frame["filename"] == "https://shop.example/app.js"


@pytest.mark.parametrize(
    "sdk_frame",
    [
        browser_frame("sentryWrapped", "https://shop.example/app.js"),
        browser_frame("captureException", "https://shop.example/app.js"),
        browser_frame("e", "https://browser.sentry-cdn.com/11.12.0/bundle.min.js"),
        node_frame("wrap", 3, filename="/srv/shop/node_modules/@sentry/core/build/esm/client.js"),
        browser_frame("e", "https://cdn.jsdelivr.net/npm/lib@1/dist/lib.js"),
    ],
)
def test_frames_of_the_sdk_and_of_dependencies_are_not_the_culprit(sdk_frame: dict[str, Any]) -> None:
    payload = {
        "platform": "javascript",
        "exception": {
            "values": [
                {
                    "type": "TypeError",
                    "value": "x",
                    "stacktrace": {
                        "frames": [
                            browser_frame("pay", "https://shop.example/app.js"),
                            sdk_frame,
                        ]
                    },
                }
            ]
        },
    }
    assert norm(payload).culprit == "pay(app)"


# What is stored: scrubbed


CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36"
SENSITIVE: dict[str, Any] = {
    "request": {
        "url": "https://shop.example/cart?password=hunter2&view=cart#frag",
        "method": "post",
        "headers": {
            "Cookie": "sessionid=cookie-secret-1; theme=dark",
            "Authorization": "Basic auth-secret-2",
            "X-Api-Key": "header-secret-3",
            "X-Trace": "Bearer bearer-secret-4",
            "User-Agent": CHROME,
        },
        "data": {"card": "4111 1111 1111 1111", "password": "body-secret-5", "note": "ok"},
    },
    "user": {"id": "42", "email": "ada@example.com", "password_hash": "user-secret-6"},
    "extra": {"api_key": "extra-secret-7", "debug": "db url postgres://app:url-secret-8@db/shop"},
    "breadcrumbs": {"values": [{"message": "reset password to breadcrumb-secret-9", "category": "auth.flow"}]},
    "exception": {
        "values": [
            {
                "type": "ValueError",
                "value": "charge of card 5500 0000 0000 0004 failed",
                "stacktrace": {
                    "frames": [
                        {
                            "function": "pay",
                            "module": "shop",
                            "in_app": True,
                            "vars": {"secret": "vars-secret-10", "n": "1"},
                        }
                    ],
                },
            }
        ]
    },
}
SECRETS = [f"secret-{n}" for n in range(1, 11)] + ["hunter2", "4111 1111 1111 1111", "5500 0000 0000 0004"]


def test_sensitive_values_are_scrubbed_before_storage() -> None:
    event = norm({"platform": "python", **SENSITIVE})
    stored_text = json.dumps(event.payload)
    assert [secret for secret in SECRETS if secret in stored_text] == []
    assert event.raw is None  # the scrubbed payload is stored, not the bytes as received
    request = event.payload["request"]
    assert set(request["headers"]) == {"X-Api-Key", "X-Trace", "User-Agent"}
    assert request["cookies"] == {"sessionid": "[Filtered]", "theme": "[Filtered]"}
    assert request["query_string"] == {"password": "[Filtered]", "view": "cart"}
    assert request["url"] == "https://shop.example/cart"
    assert request["data"]["note"] == "ok"
    assert event.payload["user"]["email"] == "ada@example.com"
    assert event.title == "ValueError: charge of card [Filtered] failed"


def test_an_event_with_nothing_to_scrub_is_stored_as_it_came() -> None:
    raw = json.dumps({"platform": "python", "message": "hello", "user": {"id": "42"}}).encode()
    assert normalize(json.loads(raw), RECEIVED, raw=raw).raw == raw


@pytest.mark.parametrize(
    ("value", "scrubbed"),
    [
        ("nothing here", "nothing here"),
        ("my password is x", "[Filtered]"),
        ("Bearer abc.def", "Bearer [Filtered]"),
        ("ssn 123-45-6789", "ssn [Filtered]"),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----[Filtered]-----END PRIVATE KEY-----",
        ),
        ("true", "true"),
        (4111111111111111, "[Filtered]"),
        (
            {"Secret-Thing": {"a": 1}, "nested": [{"token": "t"}]},
            {"Secret-Thing": "[Filtered]", "nested": [{"token": "[Filtered]"}]},
        ),
    ],
)
def test_scrubbing_rules(value: Any, scrubbed: Any) -> None:
    assert scrubbing.scrub(value) == scrubbed


# What a person reads


def stored(payload: dict[str, Any]) -> StoredEvent:
    event = norm(payload)
    item = StoredEvent("events#1#1", f"{event.timestamp.isoformat()}#{event.event_id}")
    item.event_id, item.error_id, item.timestamp, item.received_at = event.event_id, 1, "t", "t"
    item.title, item.level, item.trimmed = event.title, event.level, False
    item.payload = zlib.compress(json.dumps(event.payload).encode())
    return item


def test_the_event_shows_what_the_sdk_said_about_the_user_request_and_environment() -> None:
    body = entities.error_event(stored({**NODE_CHAIN, **{k: SENSITIVE[k] for k in ("request",)}}))
    assert body["platform"] == "node"
    assert body["sdk"] == {"name": "sentry.javascript.node", "version": "11.12.0"}
    assert body["handled"] is True
    assert body["mechanism"] == {"handled": True, "type": "generic", "exception_id": 0}
    assert body["tags"] == {"shop": "eu"}
    assert body["user"] == {"id": "42", "email": "ada@example.com"}
    assert body["request"]["url"] == "https://shop.example/cart"
    assert body["request"]["method"] == "POST"
    assert "Cookie" not in body["request"]["headers"] and "Authorization" not in body["request"]["headers"]
    assert body["contexts"]["runtime"] == {"name": "node", "version": "v20.20.2"}
    assert body["contexts"]["os"] == {"name": "Debian", "version": "12.11"}  # sent by the SDK: not inferred
    assert body["contexts"]["browser"] == {"name": "Chrome", "version": "150.0.0.0"}  # from the User-Agent
    assert [c["message"] for c in body["breadcrumbs"]] == ["cart opened"]
    assert list(body)[:9] == [
        "event_id",
        "error_id",
        "timestamp",
        "received_at",
        "level",
        "environment",
        "release",
        "title",
        "trimmed",
    ]


def test_only_the_newest_hundred_breadcrumbs_are_kept() -> None:
    crumbs = [{"message": f"step {n}", "timestamp": n} for n in range(250)]
    event = norm({"platform": "python", "message": "m", "breadcrumbs": {"values": crumbs}})
    assert [c["message"] for c in event.payload["breadcrumbs"]] == [f"step {n}" for n in range(150, 250)]


@pytest.mark.parametrize(
    ("agent", "browser", "os"),
    [
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/150.0.7871.100 Safari/537.36",
            {"name": "Chrome Headless", "version": "150.0.7871.100"},
            {"name": "Linux"},
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
            {"name": "Firefox", "version": "128.0"},
            {"name": "Windows", "version": "10.0"},
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.4 Mobile/15E148 Safari/604.1",
            {"name": "Safari", "version": "17.4"},
            {"name": "iOS", "version": "17.4"},
        ),
    ],
)
def test_browser_and_os_are_read_from_the_user_agent(agent: str, browser: dict[str, str], os: dict[str, str]) -> None:
    payload: dict[str, Any] = {"platform": "javascript", "request": {"headers": {"User-Agent": agent}}}
    assert normalization.infer_browser_contexts(payload)
    assert payload["contexts"] == {"browser": browser, "os": os}


@pytest.mark.parametrize(
    "hostile",
    [
        {"request": "GET /", "user": ["x"], "tags": "x", "contexts": [], "breadcrumbs": 3, "sdk": "node"},
        {"request": {"headers": [["Cookie"], ["a", "b", "c"], 5], "cookies": 7, "query_string": [[1, 2]], "url": 3}},
        {"exception": {"values": [{"type": "E", "mechanism": {"exception_id": 0, "parent_id": 0}}]}},
        {"breadcrumbs": {"values": [None, "x", {"message": {"nested": True}, "data": [1]}]}},
        {"exception": {"values": [{"type": "E", "stacktrace": {"frames": [{"filename": "http://[::1/x?y"}]}}]}},
        {"request": {"url": "http://[bad?q=1", "headers": {"User-Agent": 5}}},
    ],
)
def test_hostile_shapes_are_read_without_failing(hostile: dict[str, Any]) -> None:
    body = entities.error_event(stored(hostile))
    assert isinstance(body["exceptions"], list)
