"""End to end with three official Sentry SDKs: the same program, written for each, against the real local server.

The program (tests/sdk_programs/) is a checkout that fails: it sets a user, a tag and two
breadcrumbs, captures a chained exception twice from one call site, captures a message, and ends
with an error nobody handles. It is written with sentry-sdk (run by this very interpreter), with
@sentry/node (run by ``node``) and for a page with @sentry/browser (the bundle `make js` builds,
in Debian's Chromium driven by Playwright, the page served from another origin). Each run gets a
fresh project of its own; what it sent is then read through the errors API, as the team would read
it, and every SDK must come out the same where the program did the same. Nothing is mocked.

Node and the browser need what `make test` installs (tests/js/node_modules, build/js/); without
node or chromium their tests skip with one line saying what is missing, unless
ERRORTRACKING_REQUIRE_SDK_TESTS is set (CI), where a missing one fails them.
"""

from __future__ import annotations

import html
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest
import sentry_sdk

from tests.ingest.test_e2e_sentry import Sink, new_sink
from tests.test_e2e import ROOT, Server, call, expect, server

__all__ = ["server"]  # the module-scoped server fixture: one server for this module

PROGRAMS = ROOT / "tests" / "sdk_programs"
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
BUNDLE = ROOT / "build" / "js" / "sentry-browser.js"
SCREENSHOT = ROOT / "build" / "screenshots" / "sdk-browser-page.png"
REQUIRED = "ERRORTRACKING_REQUIRE_SDK_TESTS"
JS_SDK_VERSION = "11.12.0"  # tests/js/package.json
RELEASE = "shop@2.0.0"
PROGRAM_TIMEOUT = 60.0
ARRIVAL_TIMEOUT = 15.0

# What the program raises, and the errors each SDK's run must be listed as: (title, type, count).
CHECKOUT = "CheckoutFailedError: checkout failed"
MESSAGE = "Inventory sync is lagging"
PAYMENT = "PaymentTimeoutError: payment timed out"
PROGRAM_ERRORS = [(CHECKOUT, "error", 2), (MESSAGE, "default", 1), (PAYMENT, "error", 1)]
USER = {"id": "42", "email": "ada@example.com", "username": "ada"}
# The browser program sets no address; sentry-sdk drops the one its program sets (its default
# scrubber's denylist), @sentry/node sends it.
NODE_USER = {**USER, "ip_address": "10.1.2.3"}
CART_CRUMBS = ["cart opened", "coupon applied"]

# Fake secrets in the page's URL (query and fragment) and its script's: nothing the team reads may show them.
PAGE_QUERY = "?session=s3cr3t-page-token&view=cart"
PAGE_FRAGMENT = "#frag-secret"
PAGE_SECRETS = ("s3cr3t-page-token", "s3cr3t-script-token", "frag-secret")

# sentry-sdk names itself after a web framework it finds installed (this environment has Flask and
# Chalice), whether the program uses it or not: sentry.python.flask here.
PYTHON_SDK_NAME = r"sentry\.python(\.\w+)?"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# What a run of the program left


@dataclass
class Run:
    sdk: str
    sink: Sink
    platform: str
    sdk_name: str  # a pattern
    sdk_version: str
    errors: list[dict[str, Any]]  # the project's unresolved errors once every event was in
    facts: dict[str, str] = field(default_factory=dict)  # what the runtime says of itself
    sent: list[str] = field(default_factory=list)  # the ids of the events the program says it sent

    def error(self, title: str) -> dict[str, Any]:
        matching = [error for error in self.errors if error["title"] == title]
        assert len(matching) == 1, f"{self.sdk}: errors titled {title!r}: {len(matching)}; listed: {titles(self)}"
        return matching[0]


def titles(run: Run) -> list[tuple[Any, Any, Any]]:
    return sorted((error["title"], error["type"], error["count"]) for error in run.errors)


def errors_path(sink: Sink, *rest: str) -> str:
    return "/".join([f"/projects/{sink.project.id}/error_tracking/errors", *rest])


def unresolved_errors(server: Server, sink: Sink) -> list[dict[str, Any]]:
    params = {"status": "unresolved", "limit": "100"}
    found: list[dict[str, Any]] = expect(call(server, "GET", errors_path(sink), sink.token, params=params), 200)
    return found


def detail_of(server: Server, run: Run, title: str) -> dict[str, Any]:
    path = errors_path(run.sink, str(run.error(title)["id"]))
    found: dict[str, Any] = expect(call(server, "GET", path, run.sink.token), 200)
    return found


def events_of(server: Server, run: Run, title: str) -> list[dict[str, Any]]:
    path = errors_path(run.sink, str(run.error(title)["id"]), "events")
    found: list[dict[str, Any]] = expect(call(server, "GET", path, run.sink.token, params={"limit": "100"}), 200)
    return found


def latest_event(server: Server, run: Run, title: str) -> dict[str, Any]:
    latest = detail_of(server, run, title)["latest_event"]
    assert isinstance(latest, dict), f"{run.sdk}: the detail of {title!r} has no latest event"
    return latest


def shown(event: dict[str, Any], name: str) -> Any:
    """A field of the event entity, which must be there (even when null)."""
    assert name in event, f"the event entity has no {name!r} field; it has {sorted(event)}"
    return event[name]


def wait_for_events(server: Server, sink: Sink, count: int, explain: Callable[[], str]) -> list[dict[str, Any]]:
    """The project's errors once their counts add up to ``count`` events."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while True:
        errors = unresolved_errors(server, sink)
        if sum(int(error["count"]) for error in errors) >= count:
            return errors
        if time.monotonic() > deadline:
            listed = sorted((error["title"], error["count"]) for error in errors)
            raise AssertionError(
                f"{count} events expected within {ARRIVAL_TIMEOUT:.0f} s, listed: {listed}; {explain()}\n"
                f"server:\n{server.problems()}"
            )
        time.sleep(0.05)


# What a machine without Node or Chromium does


def node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node not found: the @sentry/node tests are skipped; install Node 20+ (make test installs the SDKs)"
    if not (NODE_MODULES / "@sentry" / "node" / "package.json").exists():
        return "tests/js/node_modules has no @sentry/node: the @sentry/node tests are skipped; run make js"
    return None


def browser_missing() -> str | None:
    if shutil.which("chromium") is None:
        return (
            "chromium not found: the @sentry/browser tests are skipped; "
            "install Debian's chromium (apt-get install chromium)"
        )
    if not BUNDLE.exists():
        return "build/js/sentry-browser.js not found: the @sentry/browser tests are skipped; run make js"
    return None


def skipped_if(missing: str | None) -> list[pytest.MarkDecorator]:
    """Skip marks, unless CI requires these tests (their fixtures then fail). A skip mark rather than
    a skip in the fixture, because pytest folds a mark's skips into one summary line for the file."""
    return [pytest.mark.skip(reason=missing)] if missing is not None and not os.environ.get(REQUIRED) else []


def unavailable(missing: str) -> NoReturn:
    """Skip with ``missing`` ("what: the tests are skipped; how to get it"), or fail where CI requires the tests."""
    if os.environ.get(REQUIRED):
        what, how = missing.partition(": ")[0], missing.rpartition("; ")[2]
        pytest.fail(f"{what}: {REQUIRED} is set, so these tests must run, not skip; {how}", pytrace=False)
    pytest.skip(missing)


NODE_MARKS = skipped_if(node_missing())
BROWSER_MARKS = skipped_if(browser_missing())
SDKS = [pytest.param("python"), pytest.param("node", marks=NODE_MARKS), pytest.param("browser", marks=BROWSER_MARKS)]


def program_env(sink: Sink, **extra: str) -> dict[str, str]:
    # A developer's own SENTRY_* settings (environment, debug, a DSN of theirs) must not reach the program.
    env = {name: value for name, value in os.environ.items() if not name.startswith("SENTRY_")}
    env.update({"SENTRY_DSN": sink.dsn, "SENTRY_RELEASE": RELEASE, **extra})
    return env


def run_program(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=PROGRAM_TIMEOUT, check=False
    )


def outcome(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit status {done.returncode}; stdout:\n{done.stdout}\nstderr:\n{done.stderr}"


# Python


@pytest.fixture(scope="module")
def python_run(server: Server) -> Run:
    sink = new_sink(server, "sdk-python")
    done = run_program([sys.executable, str(PROGRAMS / "checkout.py")], program_env(sink))
    # The program ends on its uncaught error: Python prints it and exits 1, after the SDK sent it.
    assert done.returncode == 1, outcome(done)
    assert f"\n{PAYMENT}\n" in done.stderr, outcome(done)
    errors = wait_for_events(server, sink, 4, lambda: outcome(done))
    return Run("python", sink, "python", PYTHON_SDK_NAME, sentry_sdk.VERSION, errors)


# Node


@pytest.fixture(scope="module")
def node_run(server: Server) -> Run:
    missing = node_missing()
    if missing is not None:
        unavailable(missing)
    node = str(shutil.which("node"))
    sink = new_sink(server, "sdk-node")
    done = run_program([node, str(PROGRAMS / "checkout.cjs")], program_env(sink, NODE_PATH=str(NODE_MODULES)))
    # The SDK's default for an unhandled rejection warns and lets the process go on to its flush.
    assert done.returncode == 0, outcome(done)
    errors = wait_for_events(server, sink, 4, lambda: outcome(done))
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return Run("node", sink, "node", r"sentry\.javascript\.node", JS_SDK_VERSION, errors, {"node": version})


# The browser


@dataclass
class PageLog:
    """What the page and the browser said while the program ran."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # what the page lists as sent
    state: str = ""

    def explain(self) -> str:
        return (
            f"page state {self.state!r}; console errors {self.console_errors}; uncaught {self.page_errors}; "
            f"failed requests {self.failed_requests}; the page listed as sent {self.sent}"
        )


def without_query(url: str) -> str:
    """A URL fit for a failure message: SDK requests carry the client key in their query string."""
    return urlsplit(url)._replace(query="", fragment="").geturl()


@contextmanager
def static_site(files: dict[str, tuple[bytes, str]]) -> Iterator[str]:
    """An HTTP server on a free port of its own serving ``files`` (path -> body, content type): another origin."""

    class Files(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = files.get(urlsplit(self.path).path)
            if found is None:
                self.send_error(404)
                return
            body, content_type = found
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the browser's own events say what went wrong; request lines would only be noise

    site = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    serving = threading.Thread(target=site.serve_forever, daemon=True)
    serving.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}"
    finally:
        site.shutdown()
        site.server_close()
        serving.join(timeout=10)


def page_files(sink: Sink) -> dict[str, tuple[bytes, str]]:
    page = (PROGRAMS / "checkout.html").read_text()
    page = page.replace("{{dsn}}", html.escape(sink.dsn)).replace("{{release}}", html.escape(RELEASE))
    return {
        "/checkout.html": (page.encode(), "text/html; charset=utf-8"),
        "/program.js": ((PROGRAMS / "checkout.js").read_bytes(), "text/javascript; charset=utf-8"),
        "/sentry-browser.js": (BUNDLE.read_bytes(), "text/javascript; charset=utf-8"),
    }


@pytest.fixture(scope="module")
def browser_run(server: Server) -> Run:
    missing = browser_missing()
    if missing is not None:
        unavailable(missing)
    from playwright.sync_api import ConsoleMessage, Error, Request, Response, sync_playwright

    sink = new_sink(server, "sdk-browser")
    log = PageLog()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            log.console_errors.append(message.text)

    def on_page_error(error: Error) -> None:
        log.page_errors.append(f"{error.name}: {error.message}")

    def on_failed(request: Request) -> None:
        log.failed_requests.append(f"{request.method} {without_query(request.url)}: {request.failure}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            log.failed_requests.append(f"{response.request.method} {without_query(response.url)}: {response.status}")

    with static_site(page_files(sink)) as site, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.on("console", on_console)
            page.on("pageerror", on_page_error)
            page.on("requestfailed", on_failed)
            page.on("response", on_response)
            assert urlsplit(site).netloc != urlsplit(server.url).netloc  # the page is of another origin
            page.goto(f"{site}/checkout.html{PAGE_QUERY}{PAGE_FRAGMENT}")
            page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=ARRIVAL_TIMEOUT * 1000)
            log.state = str(page.evaluate("document.body.dataset.state"))
            log.sent = [str(text) for text in page.locator("#sent li").all_inner_texts()]
            user_agent = str(page.evaluate("navigator.userAgent"))
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOT, full_page=True)
        finally:
            browser.close()
    assert log.state == "flushed", log.explain()
    errors = wait_for_events(server, sink, 4, log.explain)
    assert log.console_errors == [], log.explain()
    assert log.failed_requests == [], log.explain()
    assert log.page_errors == [PAYMENT], log.explain()  # the one error the program leaves uncaught
    facts = {"user_agent": user_agent}
    sent = [line.split()[-1] for line in log.sent]
    return Run("browser", sink, "javascript", r"sentry\.javascript\.browser", JS_SDK_VERSION, errors, facts, sent)


@pytest.fixture(params=SDKS)
def run(request: pytest.FixtureRequest) -> Run:
    found: Run = request.getfixturevalue(f"{request.param}_run")
    return found


@pytest.fixture(params=[pytest.param("browser", marks=BROWSER_MARKS)])
def page_run(request: pytest.FixtureRequest) -> Run:
    """The browser's run, for its own tests (a fixture's parameter, so that its skips fold into one line)."""
    found: Run = request.getfixturevalue("browser_run")
    return found


# The same program, the same errors


def test_each_sdk_run_is_listed_as_the_same_three_errors(run: Run) -> None:
    assert titles(run) == sorted(PROGRAM_ERRORS), f"{run.sdk}: {[e['title'] for e in run.errors]}"
    for error in run.errors:
        assert error["status"] == "unresolved", error
        assert error["project_id"] == run.sink.project.id, error
        assert error["user_count"] == 1, error  # the same user, Ada, every time


def test_the_detail_shows_where_each_error_was_raised(server: Server, run: Run) -> None:
    for title, function in ((CHECKOUT, "checkout"), (PAYMENT, "pay")):
        detail = detail_of(server, run, title)
        assert detail["count"] == run.error(title)["count"], title
        first = detail["stack_trace"][0]
        assert (first["function"], first["in_app"]) == (function, True), detail["stack_trace"]
        assert isinstance(first["lineno"], int), first
        if run.sdk != "browser":  # a page's SDK sends no source lines (Sentry fetches the script)
            code = {lineno: line for lineno, line in first["context"]}[first["lineno"]]
            assert ("raise " if run.sdk == "python" else "throw ") in code, first["context"]
        ids = {event["event_id"] for event in events_of(server, run, title)}
        assert detail["latest_event"]["event_id"] in ids, title


def test_the_chained_error_shows_each_exception_of_the_chain_with_its_own_stack_trace(server: Server, run: Run) -> None:
    event = latest_event(server, run, CHECKOUT)
    exceptions = shown(event, "exceptions")
    assert [(e["type"], e["value"]) for e in exceptions] == [
        ("CheckoutFailedError", "checkout failed"),
        ("LedgerUnavailableError", "ledger unreachable"),
    ], exceptions
    # Each with the frames of its own raise: the failed checkout where it was raised, its cause in the ledger.
    raised, cause = ([frame["function"] for frame in e["stack_trace"]] for e in exceptions)
    assert raised and cause, exceptions
    where = {"python": ("checkout", "read_ledger")}.get(run.sdk, ("checkout", "readLedger"))
    assert where[0] in raised[:2] and where[1] not in raised, raised
    assert where[1] in cause[:2], cause
    for exception in exceptions:
        for frame in exception["stack_trace"]:
            assert {"function", "lineno", "in_app"} <= set(frame), frame
    # The detail's own stack trace is still the raised exception's.
    detail = detail_of(server, run, CHECKOUT)
    assert detail["stack_trace"] == exceptions[0]["stack_trace"]


def test_the_event_shows_the_platform_the_sdk_the_tags_and_the_user(server: Server, run: Run) -> None:
    for title in (CHECKOUT, PAYMENT):  # the message's own test follows
        event = latest_event(server, run, title)
        assert shown(event, "platform") == run.platform, title
        sdk = shown(event, "sdk")
        assert set(sdk) == {"name", "version"} and sdk["version"] == run.sdk_version, (title, sdk)
        assert re.fullmatch(run.sdk_name, sdk["name"]), (title, sdk)
        assert shown(event, "tags").get("shop") == "eu", (title, event["tags"])
        user = shown(event, "user")
        if run.sdk == "browser":  # an address may be added: the one the browser sent from
            assert {name: user.get(name) for name in USER} == USER, (title, user)
        else:
            assert user == (NODE_USER if run.sdk == "node" else USER), title
        assert (event["release"], event["environment"]) == (RELEASE, "e2e"), title


def test_the_event_shows_the_breadcrumbs_oldest_first(server: Server, run: Run) -> None:
    for title in (CHECKOUT, PAYMENT):  # the message's own test follows
        breadcrumbs = shown(latest_event(server, run, title), "breadcrumbs")
        assert isinstance(breadcrumbs, list) and len(breadcrumbs) <= 100, breadcrumbs
        for crumb in breadcrumbs:
            assert set(crumb) == {"timestamp", "type", "category", "level", "message", "data"}, crumb
        cart = [crumb for crumb in breadcrumbs if crumb["category"] == "cart"]
        # The SDKs add their own (the events sent before, say); the program's two come in order.
        assert [crumb["message"] for crumb in cart] == CART_CRUMBS, (title, breadcrumbs)
        assert all(crumb["type"] == "default" and crumb["level"] == "info" for crumb in cart), cart
        assert cart[0]["timestamp"] <= cart[1]["timestamp"], cart
        stamps = [crumb["timestamp"] for crumb in breadcrumbs]
        assert stamps == sorted(stamps), f"{title}: not oldest first: {stamps}"


# How each error was caught
UNHANDLED_MECHANISM = {
    "python": "excepthook",
    "node": "auto.node.onunhandledrejection",
    "browser": "auto.browser.browserapierrors.setTimeout",  # the SDK wraps timers: it sees the throw first
}


def test_handled_is_true_for_what_the_program_captured_and_false_for_what_it_did_not(server: Server, run: Run) -> None:
    checkout_events = events_of(server, run, CHECKOUT)
    assert len(checkout_events) == 2
    for event in checkout_events:
        assert shown(event, "handled") is True, event.get("mechanism")
        assert shown(event, "mechanism")["handled"] is True, event["mechanism"]
    unhandled = latest_event(server, run, PAYMENT)
    assert shown(unhandled, "handled") is False, unhandled.get("mechanism")
    assert shown(unhandled, "mechanism")["type"] == UNHANDLED_MECHANISM[run.sdk], unhandled["mechanism"]
    assert [e["type"] for e in shown(unhandled, "exceptions")] == ["PaymentTimeoutError"]


def test_the_message_shows_its_level_the_user_the_tags_and_the_breadcrumbs(server: Server, run: Run) -> None:
    message = latest_event(server, run, MESSAGE)
    assert message["level"] == "warning"
    if run.sdk == "python":  # a message alone
        assert (shown(message, "handled"), shown(message, "mechanism")) == (None, None), message
    else:  # with a synthetic exception (its stack trace), captured
        assert shown(message, "handled") is True, message.get("mechanism")
        assert shown(message, "mechanism")["synthetic"] is True, message["mechanism"]
    assert shown(message, "tags").get("shop") == "eu", message["tags"]
    assert {name: shown(message, "user").get(name) for name in USER} == USER, message["user"]
    cart = [crumb["message"] for crumb in shown(message, "breadcrumbs") if crumb["category"] == "cart"]
    assert cart == CART_CRUMBS, message["breadcrumbs"]


def test_the_event_shows_the_runtime_it_ran_on(server: Server, run: Run) -> None:
    contexts = shown(latest_event(server, run, PAYMENT), "contexts")
    assert set(contexts) <= {"runtime", "os", "browser", "device"}, sorted(contexts)
    if run.sdk == "python":
        assert contexts["runtime"]["name"] == "CPython", contexts
        assert contexts["runtime"]["version"] == platform.python_version(), contexts
    elif run.sdk == "node":
        assert contexts["runtime"] == {"name": "node", "version": run.facts["node"]}, contexts
        assert contexts["os"]["name"], contexts
        assert contexts["os"]["kernel_version"] == platform.release(), contexts
    else:
        # The SDK sends only its User-Agent header; the browser is read from it, as Relay does.
        browser = contexts["browser"]
        assert "chrom" in str(browser["name"]).lower(), contexts
        major = run.facts["user_agent"].split("Chrome/", 1)[1].split(".", 1)[0]
        assert str(browser["version"]).split(".", 1)[0] == major, (contexts, run.facts["user_agent"])


def test_only_the_browser_event_has_a_request(server: Server, run: Run) -> None:
    request = shown(latest_event(server, run, PAYMENT), "request")
    if run.sdk != "browser":
        assert request is None, request
        return
    page = urlsplit(request["url"])
    assert (page.path, page.query, page.fragment) == ("/checkout.html", "", ""), request
    assert request["query_string"] == {"session": "[Filtered]", "view": "cart"}, request
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers.get("user-agent") == run.facts["user_agent"], request
    assert not {"cookie", "authorization"} & set(headers), request


# The browser's URLs carry secrets; what the team reads does not


def test_the_browser_errors_culprits_hold_no_query_string_fragment_or_secret(page_run: Run) -> None:
    for error in page_run.errors:
        culprit = str(error["culprit"])
        assert "?" not in culprit and "#" not in culprit, error
        assert not [secret for secret in PAGE_SECRETS if secret in culprit], error


def test_no_answer_about_the_browser_project_holds_the_pages_secrets(server: Server, page_run: Run) -> None:
    sink = page_run.sink
    listed = call(server, "GET", errors_path(sink), sink.token, params={"status": "unresolved", "limit": "100"})
    ids = [str(error["id"]) for error in expect(listed, 200)]
    details = [call(server, "GET", errors_path(sink, error_id), sink.token) for error_id in ids]
    events = [call(server, "GET", errors_path(sink, i, "events"), sink.token, params={"limit": "100"}) for i in ids]
    for answer in [listed, *details, *events]:
        assert answer.status_code == 200, answer.text
        leaked = [secret for secret in PAGE_SECRETS if secret in answer.text]
        assert not leaked, f"{without_query(answer.url)} shows {leaked}"
    # What was read is what the page sent, payloads included: their frames name the page's script.
    stored = [event for answer in events for event in answer.json()]
    assert sorted(event["event_id"] for event in stored) == sorted(page_run.sent)
    assert all("/program.js" in json.dumps(event["payload"]) for event in stored)


def test_the_browser_page_was_saved_as_a_screenshot(page_run: Run) -> None:
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG"), SCREENSHOT


# Python's exception groups, which only Python sends

# sentry-sdk sends a group's ``message`` as its value, not str() of it ("batch failed (2 sub-exceptions)").
GROUP_OF_TWO = "ExceptionGroup: batch failed"


@pytest.fixture(scope="module")
def groups_run(server: Server) -> Run:
    sink = new_sink(server, "sdk-python-groups")
    done = run_program([sys.executable, str(PROGRAMS / "exception_groups.py")], program_env(sink))
    assert done.returncode == 0, outcome(done)
    errors = wait_for_events(server, sink, 2, lambda: outcome(done))
    return Run("python", sink, "python", PYTHON_SDK_NAME, sentry_sdk.VERSION, errors)


def test_a_group_of_two_different_failures_is_titled_by_the_group(server: Server, groups_run: Run) -> None:
    error = groups_run.error(GROUP_OF_TWO)
    assert (error["type"], error["count"]) == ("error", 1), f"the other group counted in: {titles(groups_run)}"
    exceptions = shown(latest_event(server, groups_run, GROUP_OF_TWO), "exceptions")
    assert exceptions[0]["type"] == "ExceptionGroup", exceptions
    assert sorted((e["type"], e["value"]) for e in exceptions) == [
        ("ExceptionGroup", "batch failed"),
        ("TypeError", "bad type"),
        ("ValueError", "bad row"),
    ]
    for exception in exceptions:
        assert exception["stack_trace"], exception


def test_a_group_of_one_failure_twice_is_grouped_and_titled_by_that_failure(server: Server, groups_run: Run) -> None:
    # Raised from where the other group was: only what the group holds tells the two apart.
    assert titles(groups_run) == sorted([(GROUP_OF_TWO, "error", 1), ("ValueError: bad row", "error", 1)])
    exceptions = shown(latest_event(server, groups_run, "ValueError: bad row"), "exceptions")
    assert exceptions[0]["type"] == "ValueError", exceptions
    assert sorted(e["type"] for e in exceptions) == ["ExceptionGroup", "ValueError", "ValueError"], exceptions
