"""End to end with a real Sentry SDK: a DSN the API made, the real sentry-sdk, the real local server.

The server is the one `make run` starts (the ``server`` fixture of tests/test_e2e.py, one for this
module). Every scenario makes its own project, with an active and integrated setting and the client
key that setting gets, and points ``sentry_sdk`` at that key's ``sentry_dsn``. What the server made
of each request is read from its log: one JSON line per request (method, route, status, ...). What
it stored is read back through the errors API with a maintainer's token, as a user would. What the
SDK made of each answer is read from the SDK's own log. Nothing is mocked.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import sentry_sdk
import sentry_sdk.utils
from sentry_sdk.envelope import Envelope, Item, PayloadRef

from tests.test_e2e import (
    HTTP_TIMEOUT,
    Project,
    Server,
    call,
    expect,
    index_caught_up,
    keys_path,
    new_project,
    new_user_token,
    server,
    settings_path,
)
from tests.wire import INACTIVE_KEY, RATE_LIMITED

__all__ = ["server"]  # the module-scoped server fixture: one server for this module

ENVELOPE_ROUTE = "/errortracking/api/v1/projects/api/{project_id}/envelope"
STORE_ROUTE = "/errortracking/api/v1/projects/api/{project_id}/store"
RELEASE = "shop@1.4.2"
SENT_ENVELOPE = re.compile(r"Sending envelope \[envelope with \d+ items \((?P<categories>[^)]*)\)\]")
EVENT_ID = re.compile(r"^[0-9a-f]{32}$")


# A project that takes events


@dataclass(frozen=True)
class Sink:
    project: Project
    token: str  # a maintainer's
    key_id: int
    public_key: str
    dsn: str

    def envelope_url(self, server: Server) -> str:
        return f"{server.url}/errortracking/api/v1/projects/api/{self.project.id}/envelope/"

    def store_url(self, server: Server) -> str:
        return f"{server.url}/errortracking/api/v1/projects/api/{self.project.id}/store/"

    def auth_header(self) -> dict[str, str]:
        return {"X-Sentry-Auth": f"Sentry sentry_key={self.public_key}, sentry_version=7, sentry_client=e2e/1.0"}


def new_sink(server: Server, scenario: str) -> Sink:
    """A fresh project whose maintainer turned integrated error tracking on, and its one client key."""
    project = new_project(server, scenario)
    token = new_user_token(server, project, "maintainer")
    form = {"active": "true", "integrated": "true"}
    expect(call(server, "PUT", settings_path(project.id), token, data=form), 200)
    keys = expect(call(server, "GET", keys_path(project.id), token), 200)
    assert len(keys) == 1, keys
    key = keys[0]
    assert key["active"] is True
    return Sink(project, token, int(key["id"]), str(key["public_key"]), str(key["sentry_dsn"]))


def update_key(server: Server, sink: Sink, **form: str) -> dict[str, Any]:
    path = f"{keys_path(sink.project.id)}/{sink.key_id}"
    body: dict[str, Any] = expect(call(server, "PATCH", path, sink.token, data=form), 200)
    return body


def list_errors(server: Server, sink: Sink, *, at_once: bool = False) -> list[dict[str, Any]]:
    """The project's errors, a moment after what was sent (``at_once``: without that moment)."""
    if not at_once:
        index_caught_up()
    path = f"/projects/{sink.project.id}/error_tracking/errors"
    found: list[dict[str, Any]] = expect(call(server, "GET", path, sink.token, params={"limit": "100"}), 200)
    return found


def get_error(server: Server, sink: Sink, error_id: int) -> dict[str, Any]:
    path = f"/projects/{sink.project.id}/error_tracking/errors/{error_id}"
    found: dict[str, Any] = expect(call(server, "GET", path, sink.token), 200)
    return found


def error_events(server: Server, sink: Sink, error_id: int) -> list[dict[str, Any]]:
    path = f"/projects/{sink.project.id}/error_tracking/errors/{error_id}/events"
    found: list[dict[str, Any]] = expect(call(server, "GET", path, sink.token, params={"limit": "100"}), 200)
    return found


def titled(errors: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [error for error in errors if str(error["title"]).startswith(prefix)]


def the_error(errors: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    matching = titled(errors, prefix)
    assert len(matching) == 1, f"errors titled {prefix!r}: {matching}; all titles: {[e['title'] for e in errors]}"
    return matching[0]


def summary(errors: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((e["id"], e["title"], e["count"], e["last_seen"], e["status"]) for e in errors)


# The server's log


def log_mark(server: Server) -> int:
    """Where the server's log stands once every request answered so far has been logged.

    The server writes a request's line before it answers, but this process reads the log through a
    pipe, a moment later. So ask something (GET /user) and wait for that request's own line: every
    line written before it has been read by then.
    """
    start = len(server.output)
    expect(call(server, "GET", "/user", server.token), 200)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        lines = list(server.output)
        for index in range(start, len(lines)):
            if lines[index].startswith("{") and json.loads(lines[index])["route"] == "/api/v4/user":
                return index + 1
        time.sleep(0.01)
    raise AssertionError(f"the server did not log GET /api/v4/user within 10 s:\n{server.tail()}")


def logged_requests(server: Server, since: int, until: int) -> list[dict[str, Any]]:
    """The server's per-request JSON log lines between two marks."""
    return [json.loads(line) for line in list(server.output)[since:until] if line.startswith("{")]


def ingest_statuses(server: Server, since: int, route: str = ENVELOPE_ROUTE) -> list[int]:
    """Statuses of the ingest POSTs answered since the mark ``since``, in order."""
    until = log_mark(server)
    return [
        int(line["status"])
        for line in logged_requests(server, since, until)
        if line["method"] == "POST" and line["route"] == route
    ]


# The SDK


class SdkLog(logging.Handler):
    """What sentry-sdk says about its sends (its debug log), kept for assertions."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def clear(self) -> None:
        self.records.clear()

    def complaints(self) -> list[str]:
        """Warnings and errors: failed sends ('Unexpected status code: 403 ...'), rate limits."""
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]

    def sent_categories(self) -> list[list[str]]:
        """The data categories of each envelope the SDK sent, in order."""
        sent = []
        for record in self.records:
            match = SENT_ENVELOPE.search(record.getMessage())
            if match:
                sent.append([part.strip() for part in match["categories"].split(",")])
        return sent


@contextmanager
def sdk_log() -> Iterator[SdkLog]:
    """Listen to sentry-sdk's log; close the SDK's client at the end."""
    logger = sentry_sdk.utils.logger
    handler = SdkLog()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        sentry_sdk.get_client().close()
        logger.removeHandler(handler)
        logger.setLevel(level)


def start_sdk(dsn: str, **options: Any) -> None:
    """A new SDK client for ``dsn`` (the previous one closed), as an app without integrations sets it up."""
    sentry_sdk.get_client().close()
    sentry_sdk.init(
        dsn=dsn,
        default_integrations=False,
        auto_session_tracking=False,
        debug=True,
        release=RELEASE,
        environment="e2e",
        **options,
    )


def flush() -> None:
    sentry_sdk.flush(timeout=10)


# What the application raises


class CardDeclinedError(Exception):
    pass


class LedgerUnavailableError(Exception):
    pass


class CheckoutFailedError(Exception):
    pass


class ReceiptRenderError(Exception):
    pass


class DiscardedByAppError(Exception):
    pass


class FreshnessProbeError(Exception):
    pass


class KeyToggleError(Exception):
    pass


class QuotaProbeError(Exception):
    pass


def charge(card: str) -> None:
    raise CardDeclinedError(f"card {card} declined")


def read_ledger() -> None:
    raise LedgerUnavailableError("ledger unreachable")


def checkout() -> None:
    try:
        read_ledger()
    except LedgerUnavailableError as exc:
        raise CheckoutFailedError("checkout failed") from exc


def render_receipt() -> None:
    raise ReceiptRenderError("receipt template missing")


def discarded() -> None:
    raise DiscardedByAppError("the app's before_send drops this one")


def probe_freshness() -> None:
    raise FreshnessProbeError("how soon is it listed?")


def toggle_probe() -> None:
    raise KeyToggleError("sent while the key is switched")


def quota_probe() -> None:
    raise QuotaProbeError("one too many")


def capture(raising: Callable[[], None]) -> str:
    """Call ``raising``, capture what it raises with the SDK; the SDK's event id."""
    try:
        raising()
    except Exception as exc:
        event_id = sentry_sdk.capture_exception(exc)
        assert event_id is not None, "the SDK did not capture the exception"
        return event_id
    raise AssertionError(f"{raising.__name__} did not raise")


def send_envelope(envelope: Envelope) -> None:
    transport = sentry_sdk.get_client().transport
    assert transport is not None, "the SDK has no transport"
    transport.capture_envelope(envelope)


# Everything an SDK-using app sends, sent once for the module


@dataclass
class Scenario:
    complaints: list[str]  # the SDK's warnings and errors
    sent: list[list[str]]  # the data categories of each envelope the SDK sent, in order
    event_ids: list[str]
    statuses: list[int] = field(default_factory=list)  # the server's answers to those envelopes


@dataclass
class Delivery:
    sink: Sink
    scenarios: dict[str, Scenario]
    unexplained: list[int]  # statuses of ingest POSTs beyond the envelopes the SDK says it sent

    def errors(self, server: Server) -> list[dict[str, Any]]:
        return list_errors(server, self.sink)


COMPRESSIONS: dict[str, dict[str, Any]] = {
    "br": {"_experiments": {"transport_compression_algo": "br"}},
    "gzip": {"_experiments": {"transport_compression_algo": "gzip"}},
    "plain": {"_experiments": {"transport_compression_level": 0}},
}


def _drop_event(event: Any, hint: Any) -> None:
    return None  # the app decides not to send it: the SDK reports that in a client report


def _session_and_report() -> Envelope:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    session = {
        "sid": uuid.uuid4().hex,
        "did": "user-42",
        "init": True,
        "started": now,
        "timestamp": now,
        "status": "exited",
        "errors": 0,
        "duration": 1.5,
        "attrs": {"release": RELEASE, "environment": "e2e"},
    }
    report = {
        "timestamp": now,
        "discarded_events": [{"reason": "network_error", "category": "error", "quantity": 2}],
    }
    aggregates = {"attrs": {"release": RELEASE, "environment": "e2e"}, "aggregates": [{"started": now, "exited": 3}]}
    return Envelope(
        headers={},
        items=[
            Item(payload=PayloadRef(json=session), type="session"),
            Item(payload=PayloadRef(json=aggregates), type="sessions"),
            Item(payload=PayloadRef(json=report), type="client_report"),
        ],
    )


@pytest.fixture(scope="module")
def delivery(server: Server) -> Iterator[Delivery]:
    sink = new_sink(server, "sdk")
    scenarios: dict[str, Scenario] = {}
    # The scenarios run back to back, as an app sends; the server's log is read once at the end and
    # its answers matched, in order, to the envelopes the SDK says each scenario sent.
    mark = log_mark(server)
    with sdk_log() as log:

        def run(name: str, options: dict[str, Any], action: Callable[[], list[str]]) -> None:
            log.clear()
            start_sdk(sink.dsn, **options)
            event_ids = action()
            flush()
            scenarios[name] = Scenario(log.complaints(), log.sent_categories(), event_ids)

        for name, options in COMPRESSIONS.items():
            run(name, options, lambda: [capture(lambda: charge("4242"))])

        def message() -> list[str]:
            event_id = sentry_sdk.capture_message("Inventory sync is lagging", level="warning")
            assert event_id is not None, "the SDK did not capture the message"
            return [event_id]

        run("message", {}, message)
        run("chained", {}, lambda: [capture(checkout)])

        def with_attachment() -> list[str]:
            with sentry_sdk.new_scope() as scope:
                scope.add_attachment(bytes=b"order 42: 3 items, 57.10 EUR", filename="a.txt")
                return [capture(render_receipt)]

        run("attachment", {}, with_attachment)

        def session() -> list[str]:
            scope = sentry_sdk.get_isolation_scope()
            scope.start_session()
            scope.end_session()
            return []

        run("session", {}, session)

        def dropped() -> list[str]:
            try:
                discarded()
            except DiscardedByAppError as exc:
                assert sentry_sdk.capture_exception(exc) is None  # before_send dropped it
            return []

        run("client-report", {"before_send": _drop_event}, dropped)

        def envelopes() -> list[str]:
            send_envelope(_session_and_report())
            return []

        run("session-and-report-envelope", {}, envelopes)
    statuses = ingest_statuses(server, mark)
    for scenario in scenarios.values():
        scenario.statuses, statuses = statuses[: len(scenario.sent)], statuses[len(scenario.sent) :]
    yield Delivery(sink, scenarios, statuses)


SCENARIO_ITEMS = {
    "br": "error",
    "gzip": "error",
    "plain": "error",
    "message": "error",
    "chained": "error",
    "attachment": "attachment",
    "session": "session",
    "client-report": "internal",
    "session-and-report-envelope": "session",
}


@pytest.mark.parametrize("name", list(SCENARIO_ITEMS))
def test_every_envelope_the_sdk_sends_is_answered_200(server: Server, delivery: Delivery, name: str) -> None:
    scenario = delivery.scenarios[name]
    # The SDK really sent what the scenario is about.
    assert any(SCENARIO_ITEMS[name] in categories for categories in scenario.sent), scenario
    # The server answered every envelope POST with 200, and the SDK saw nothing to complain about.
    assert scenario.statuses, f"no envelope POST was logged; server output:\n{server.tail()}"
    assert scenario.statuses == [200] * len(scenario.statuses), f"{scenario}; server:\n{server.problems()}"
    assert len(scenario.statuses) == len(scenario.sent), scenario
    assert scenario.complaints == [], scenario
    assert delivery.unexplained == [], "the server logged more envelope POSTs than the SDK sent"


def test_the_sdk_sent_an_attachment_along_with_its_event(delivery: Delivery) -> None:
    assert ["error", "attachment"] in delivery.scenarios["attachment"].sent


def test_the_list_holds_one_error_per_exception_type_and_culprit_and_one_per_message(
    server: Server, delivery: Delivery
) -> None:
    errors = delivery.errors(server)
    titles = sorted(str(e["title"]) for e in errors)
    assert len(errors) == 4, titles  # the declined card (3 sends), the message, the chained, the receipt
    assert titled(errors, "DiscardedByAppError") == []  # the app's before_send dropped it
    assert titled(errors, "LedgerUnavailableError") == []  # a cause, not what was raised
    for error in errors:
        assert isinstance(error["count"], int) and isinstance(error["user_count"], int), error
        assert error["status"] == "unresolved", error
        assert error["project_id"] == delivery.sink.project.id, error


def test_one_exception_sent_br_gzip_and_plain_is_one_error_counted_three_times(
    server: Server, delivery: Delivery
) -> None:
    error = the_error(delivery.errors(server), "CardDeclinedError")
    assert error["count"] == 3, error
    assert error["type"] == "error"
    assert error["title"] == "CardDeclinedError: card 4242 declined"
    assert error["culprit"] == f"charge({__name__})"
    detail = get_error(server, delivery.sink, int(error["id"]))
    assert detail["count"] == 3, detail


def test_each_event_the_sdk_sent_is_kept_under_its_error(server: Server, delivery: Delivery) -> None:
    error = the_error(delivery.errors(server), "CardDeclinedError")
    sent = {event_id for name in COMPRESSIONS for event_id in delivery.scenarios[name].event_ids}
    assert len(sent) == 3
    stored = error_events(server, delivery.sink, int(error["id"]))
    assert {event["event_id"] for event in stored} == sent


def test_a_message_is_an_error_of_its_own_of_type_default(server: Server, delivery: Delivery) -> None:
    error = the_error(delivery.errors(server), "Inventory sync is lagging")
    assert error["type"] == "default"
    assert error["title"] == "Inventory sync is lagging"
    assert error["count"] == 1
    [event] = error_events(server, delivery.sink, int(error["id"]))
    assert event["event_id"] == delivery.scenarios["message"].event_ids[0]
    assert event["level"] == "warning"


def test_a_chained_exception_is_titled_by_the_one_raised(server: Server, delivery: Delivery) -> None:
    errors = delivery.errors(server)
    error = the_error(errors, "CheckoutFailedError")
    assert error["title"] == "CheckoutFailedError: checkout failed"
    assert error["type"] == "error"
    assert error["culprit"] == f"checkout({__name__})"
    assert error["count"] == 1
    detail = get_error(server, delivery.sink, int(error["id"]))
    assert detail["stack_trace"], detail
    assert detail["stack_trace"][0]["function"] == "checkout"  # where B was raised, not where A was


def test_the_detail_stack_trace_starts_at_the_function_that_raised(server: Server, delivery: Delivery) -> None:
    error = the_error(delivery.errors(server), "CardDeclinedError")
    detail = get_error(server, delivery.sink, int(error["id"]))
    assert detail["count"] == 3
    frames = detail["stack_trace"]
    assert [frame["function"] for frame in frames][:2] == ["charge", "<lambda>"], frames
    first = frames[0]
    assert first["module"] == __name__
    assert isinstance(first["lineno"], int)
    assert first["in_app"] is True
    assert any("raise CardDeclinedError" in str(line) for _, line in first["context"]), first["context"]
    sent = [event_id for name in COMPRESSIONS for event_id in delivery.scenarios[name].event_ids]
    assert detail["latest_event"]["event_id"] in sent


def test_an_event_with_an_attachment_is_stored(server: Server, delivery: Delivery) -> None:
    error = the_error(delivery.errors(server), "ReceiptRenderError")
    assert error["count"] == 1
    [event] = error_events(server, delivery.sink, int(error["id"]))
    assert event["event_id"] == delivery.scenarios["attachment"].event_ids[0]
    assert event["release"] == RELEASE
    assert event["environment"] == "e2e"


# Freshness


def test_an_exception_is_listed_within_a_second_of_flush(server: Server) -> None:
    sink = new_sink(server, "fresh")
    with sdk_log():
        start_sdk(sink.dsn)
        assert list_errors(server, sink) == []
        capture(probe_freshness)
        flush()
        flushed = time.monotonic()
        waited = 0.0
        while waited < 5.0:
            if titled(list_errors(server, sink, at_once=True), "FreshnessProbeError"):
                break
            time.sleep(0.01)
            waited = time.monotonic() - flushed
        waited = time.monotonic() - flushed
    assert titled(list_errors(server, sink), "FreshnessProbeError"), "not listed within 5 s"
    assert waited < 1.0, f"listed {waited:.3f} s after flush() returned"


def test_a_burst_of_one_exception_is_counted_in_full_in_the_list(server: Server) -> None:
    """An app failing in a loop: ten events of one error, sent back to back, are counted ten times."""
    sink = new_sink(server, "burst")
    mark = log_mark(server)
    with sdk_log() as log:
        start_sdk(sink.dsn)
        for _ in range(10):
            capture(lambda: charge("0000"))
        flush()
        assert log.complaints() == []
    assert ingest_statuses(server, mark) == [200] * 10
    error = the_error(list_errors(server, sink), "CardDeclinedError")
    detail = get_error(server, sink, int(error["id"]))
    assert (error["count"], detail["count"]) == (10, 10), "the list's count, the detail's count"


def _exception_envelope(function: str) -> bytes:
    """An envelope of one event, as an SDK sends it: an exception raised in ``function``."""
    event_id = uuid.uuid4().hex
    frame = {"function": function, "module": "shop.checkout", "filename": "shop/checkout.py", "lineno": 7}
    event = {
        "event_id": event_id,
        "timestamp": time.time(),
        "platform": "python",
        "level": "error",
        "user": {"id": "42"},
        "exception": {
            "values": [{"type": "CheckoutFailedError", "value": "checkout failed", "stacktrace": {"frames": [frame]}}]
        },
    }
    lines = [{"event_id": event_id}, {"type": "event"}, event]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def test_events_of_a_new_error_sent_at_the_same_moment_are_all_stored_and_counted(server: Server) -> None:
    """@sentry/node and @sentry/browser send each event on its own request, so two events of one new
    error arrive together. The second one's roll-up met the first one's transaction, read again at
    once, found the error still missing and met it again; after its last try it was only counted on
    a shard: not stored, and the list said 1 where the detail said 2."""
    sink = new_sink(server, "together")
    functions = [f"pay_{n}" for n in range(5)]  # five errors (one per culprit), two events each
    bodies = [_exception_envelope(function) for function in functions for _ in range(2)]
    start = threading.Barrier(len(bodies))

    def send(body: bytes) -> int:
        start.wait(timeout=HTTP_TIMEOUT)
        return requests.post(
            sink.envelope_url(server), data=body, headers=sink.auth_header(), timeout=HTTP_TIMEOUT
        ).status_code

    with ThreadPoolExecutor(len(bodies)) as pool:
        assert list(pool.map(send, bodies)) == [200] * len(bodies)
    errors = list_errors(server, sink)
    counted = {str(e["culprit"]): (e["count"], len(error_events(server, sink, int(e["id"])))) for e in errors}
    assert counted == {f"{function}(shop.checkout)": (2, 2) for function in functions}, "(listed count, stored events)"


# Key states


def test_a_deactivated_keys_events_are_refused_until_it_is_reactivated(server: Server) -> None:
    sink = new_sink(server, "deactivate")
    with sdk_log() as log:
        start_sdk(sink.dsn)
        mark = log_mark(server)
        capture(lambda: charge("1111"))
        flush()
        assert ingest_statuses(server, mark) == [200]
        before = list_errors(server, sink)
        assert [e["title"] for e in before] == ["CardDeclinedError: card 1111 declined"]

        assert update_key(server, sink, active="false")["active"] is False
        log.clear()
        mark = log_mark(server)
        capture(toggle_probe)
        flush()
        refused = ingest_statuses(server, mark)
        assert refused, f"no envelope POST was logged:\n{server.tail()}"
        assert refused == [403] * len(refused), refused  # the event (and the SDK's report of its loss)
        # The SDK logs the body of each refusal: the reason is what its user reads.
        told = f"Unexpected status code: 403 (body: {json.dumps(INACTIVE_KEY, separators=(',', ':')).encode()!r})"
        failed_sends = [m for m in log.complaints() if m.startswith("Unexpected status code")]
        assert failed_sends and set(failed_sends) == {told}, log.complaints()
        assert summary(list_errors(server, sink)) == summary(before)

        direct = requests.post(
            sink.envelope_url(server),
            data=b'{}\n{"type":"event"}\n{"message":"still refused"}\n',
            headers={"Content-Type": "application/x-sentry-envelope", **sink.auth_header()},
            timeout=HTTP_TIMEOUT,
        )
        assert (direct.status_code, direct.json()) == (403, INACTIVE_KEY), direct.text

        assert update_key(server, sink, active="true")["active"] is True
        log.clear()
        mark = log_mark(server)
        event_id = capture(toggle_probe)
        flush()
        accepted = ingest_statuses(server, mark)
        assert accepted and accepted == [200] * len(accepted), accepted
        assert not any("Unexpected status code" in m for m in log.complaints()), log.complaints()
    after = list_errors(server, sink)
    error = the_error(after, "KeyToggleError")
    assert error["count"] == 1  # only the event sent after the key was reactivated
    assert [event["event_id"] for event in error_events(server, sink, int(error["id"]))] == [event_id]
    assert len(after) == 2


def _fresh_window(window: int, margin: float = 10.0) -> None:
    """Start in a rate-limit window (aligned to multiples of ``window`` seconds) with time to spare."""
    left = window - time.time() % window
    if left < margin:
        time.sleep(left + 0.2)


def _rate_limited_key(server: Server, scenario: str) -> Sink:
    sink = new_sink(server, scenario)
    key = update_key(server, sink, rate_limit_count="1", rate_limit_window="60")
    assert (key["rate_limit_count"], key["rate_limit_window"]) == (1, 60)
    _fresh_window(60)
    return sink


def test_a_rate_limited_key_gets_429_with_retry_after_and_sentry_rate_limits(server: Server) -> None:
    sink = _rate_limited_key(server, "rate-limit")
    with sdk_log() as log:
        start_sdk(sink.dsn)
        mark = log_mark(server)
        capture(quota_probe)
        flush()
        capture(quota_probe)
        flush()
        assert ingest_statuses(server, mark) == [200, 429], server.tail()
        assert any("Rate-limited via x-sentry-rate-limits" in m for m in log.complaints()), log.complaints()

        mark = log_mark(server)
        direct = requests.post(
            sink.envelope_url(server),
            data=b'{}\n{"type":"event"}\n{"message":"over the limit"}\n',
            headers={"Content-Type": "application/x-sentry-envelope", **sink.auth_header()},
            timeout=HTTP_TIMEOUT,
        )
        assert (direct.status_code, direct.json()) == (429, RATE_LIMITED), direct.text
        retry_after = direct.headers.get("Retry-After", "")
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, direct.headers
        assert direct.headers.get("X-Sentry-Rate-Limits") == f"{retry_after}:error:key", direct.headers
        assert ingest_statuses(server, mark) == [429]

        # The SDK honours the answer: it holds further errors back instead of sending them to be refused.
        mark = log_mark(server)
        capture(quota_probe)
        flush()
        assert 429 not in ingest_statuses(server, mark), server.tail()
    error = the_error(list_errors(server, sink), "QuotaProbeError")
    assert error["count"] == 1
    assert len(list_errors(server, sink)) == 1


def test_a_browser_can_read_the_rate_limit_answer(server: Server) -> None:
    """Browser SDKs post cross-origin: the 429 must let them read Retry-After and X-Sentry-Rate-Limits."""
    sink = _rate_limited_key(server, "rate-limit-browser")
    url = f"{sink.envelope_url(server)}?sentry_key={sink.public_key}&sentry_version=7"
    headers = {"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://shop.example"}
    body = b'{}\n{"type":"event"}\n{"message":"from the browser"}\n'
    first = requests.post(url, data=body, headers=headers, timeout=HTTP_TIMEOUT)
    assert first.status_code == 200, first.text
    assert first.headers.get("Access-Control-Allow-Origin") == "*"
    refused = requests.post(url, data=body, headers=headers, timeout=HTTP_TIMEOUT)
    assert (refused.status_code, refused.json()) == (429, RATE_LIMITED), refused.text
    assert refused.headers.get("X-Sentry-Rate-Limits", "").endswith(":error:key"), refused.headers
    assert refused.headers.get("Access-Control-Allow-Origin") == "*", refused.headers
    exposed = {h.strip().lower() for h in refused.headers.get("Access-Control-Expose-Headers", "").split(",")}
    assert {"retry-after", "x-sentry-rate-limits"} <= exposed, refused.headers


# Raw requests, as other SDKs send them


def test_a_browser_style_envelope_with_the_key_in_the_query_string(server: Server) -> None:
    sink = new_sink(server, "browser")
    event_id = uuid.uuid4().hex
    event = {
        "event_id": event_id,
        "timestamp": time.time(),  # browser SDKs send epoch seconds
        "platform": "javascript",
        "level": "error",
        "transaction": "/checkout",
        "exception": {
            "values": [
                {
                    "type": "TypeError",
                    "value": "cart.items is undefined",
                    "stacktrace": {
                        "frames": [
                            {"filename": "app.js", "function": "onClick", "lineno": 10, "in_app": True},
                            {"filename": "cart.js", "function": "total", "lineno": 42, "in_app": True},
                        ]
                    },
                }
            ]
        },
    }
    # No length on the item: it ends at the newline. No X-Sentry-Auth: the key rides in the query.
    body = b"{}\n" + b'{"type":"event"}\n' + json.dumps(event).encode() + b"\n"
    mark = log_mark(server)
    response = requests.post(
        f"{sink.envelope_url(server)}?sentry_key={sink.public_key}&sentry_version=7&sentry_client=sentry.javascript.browser%2F8.0.0",
        data=body,
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://shop.example"},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"id": event_id}
    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    assert ingest_statuses(server, mark) == [200]
    error = the_error(list_errors(server, sink), "TypeError")
    assert error["title"] == "TypeError: cart.items is undefined"
    assert error["culprit"] == "/checkout"
    assert error["count"] == 1
    detail = get_error(server, sink, int(error["id"]))
    assert detail["stack_trace"][0]["function"] == "total"


def test_an_envelope_of_many_item_types_stores_its_event(server: Server) -> None:
    sink = new_sink(server, "many-items")
    event_id = uuid.uuid4().hex
    event = json.dumps(
        {
            "event_id": event_id,
            "timestamp": "2026-11-26T11:52:38Z",
            "platform": "go",
            "level": "error",
            "message": {"formatted": "queue is full"},
        }
    ).encode()
    attachment = b"\x00\x01binary\nwith newlines\n"
    report = json.dumps({"timestamp": time.time(), "discarded_events": []}).encode()
    unknown = b'{"whatever": "a future item type"}'
    parts = [
        json.dumps({"event_id": event_id, "sent_at": "2026-01-01T00:00:00Z"}).encode(),
        json.dumps({"type": "attachment", "length": len(attachment), "filename": "dump.bin"}).encode(),
        attachment,
        json.dumps({"type": "ufo_report", "length": len(unknown)}).encode(),
        unknown,
        json.dumps({"type": "event", "length": len(event)}).encode(),
        event,
        json.dumps({"type": "client_report", "length": len(report)}).encode(),
        report,
    ]
    body = b"\n".join(parts) + b"\n"
    encodings: dict[str, Callable[[bytes], bytes]] = {"deflate": zlib.compress, "gzip": gzip.compress}
    for encoding, compress in encodings.items():
        response = requests.post(
            sink.envelope_url(server),
            data=compress(body),
            headers={
                "Content-Type": "application/x-sentry-envelope",
                "Content-Encoding": encoding,
                **sink.auth_header(),
            },
            timeout=HTTP_TIMEOUT,
        )
        assert response.status_code == 200, f"{encoding}: {response.text}"
        assert response.json() == {"id": event_id}
    error = the_error(list_errors(server, sink), "queue is full")
    assert error["type"] == "default"
    assert error["count"] == 1  # the same event (same id and time) sent twice is counted once


def test_an_envelope_without_events_is_answered_200_and_stores_nothing(server: Server) -> None:
    sink = new_sink(server, "no-events")
    report = json.dumps({"timestamp": time.time(), "discarded_events": [{"reason": "x", "category": "error"}]})
    body = f'{{}}\n{{"type":"client_report"}}\n{report}\n'.encode()
    response = requests.post(
        sink.envelope_url(server),
        data=body,
        headers={"Content-Type": "application/x-sentry-envelope", **sink.auth_header()},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert EVENT_ID.match(str(response.json()["id"])), response.text
    assert list_errors(server, sink) == []


def test_a_legacy_store_request_is_stored(server: Server) -> None:
    sink = new_sink(server, "store")
    event_id = uuid.uuid4().hex
    event = {
        "event_id": event_id,
        "timestamp": "2026-11-26T11:52:38.511737Z",
        "platform": "php",
        "level": "error",
        "exception": {
            "values": [
                {
                    "type": "RuntimeException",
                    "value": "disk full",
                    "stacktrace": {"frames": [{"function": "save", "module": "Storage", "lineno": 7, "in_app": True}]},
                }
            ]
        },
    }
    mark = log_mark(server)
    auth = f"Sentry sentry_key={sink.public_key}, sentry_secret=ignored, sentry_version=7, sentry_client=raven-php/1.0"
    response = requests.post(
        sink.store_url(server),
        data=json.dumps(event),
        headers={"Content-Type": "application/json", "X-Sentry-Auth": auth},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"id": event_id}
    assert ingest_statuses(server, mark, route=STORE_ROUTE) == [200]
    error = the_error(list_errors(server, sink), "RuntimeException")
    assert error["title"] == "RuntimeException: disk full"
    assert error["culprit"] == "save(Storage)"
    [stored] = error_events(server, sink, int(error["id"]))
    assert stored["event_id"] == event_id
    assert stored["timestamp"].startswith("2026-11-26T11:52:38")
