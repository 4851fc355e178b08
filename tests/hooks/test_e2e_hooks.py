"""Webhooks end to end: the server `make run` starts, a hook added with python-gitlab, errors sent
by the real sentry-sdk, and real HTTP receivers on loopback (`make run` allows local receivers).

The server's stream pump reads the embedded store's stream every half second and calls the same
handler the deployed stack runs; a notification arrives within seconds of the event.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator
from typing import Any

import gitlab
import gitlab.exceptions
import pytest

from tests.conftest import SUITE_SECRETS
from tests.hooks.receiver import Receiver, closed_port_url
from tests.ingest.test_e2e_sentry import Sink, flush, new_sink, sdk_log, start_sdk
from tests.test_e2e import Server, call, expect, server

__all__ = ["server"]

# Receivers answer within the test: a hanging one is given up on after 2 s a try.
SERVER_ENV = {"ERRORTRACKING_HOOK_TIMEOUT": "2"}
NOTIFIED_WITHIN = 15.0  # seconds, with room for a loaded machine; the pump polls every 0.5 s

HOOK_HEADERS = {
    "content-type",
    "user-agent",
    "x-gitlab-event",
    "x-gitlab-instance",
    "x-gitlab-webhook-uuid",
    "x-gitlab-event-uuid",
    "idempotency-key",
    "x-gitlab-token",
    "x-errortracking-signature",
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def gl(server: Server, token: str) -> gitlab.Gitlab:
    return gitlab.Gitlab(server.url, private_token=token, timeout=30)


def secret() -> str:
    value = "hooksecret-" + uuid.uuid4().hex
    SUITE_SECRETS[value] = "hook secret"
    return value


def raise_and_capture(exc_type: str, message: str) -> None:
    error = type(exc_type, (Exception,), {})
    import sentry_sdk

    try:
        raise error(message)
    except Exception as exc:
        sentry_sdk.capture_exception(exc)


def send_errors(sink: Sink, *errors: tuple[str, str]) -> None:
    with sdk_log():
        start_sdk(sink.dsn)
        for exc_type, message in errors:
            raise_and_capture(exc_type, message)
        flush()


def by_trigger(receiver: Receiver, trigger: str, title_part: str) -> list[Any]:
    return [
        r
        for r in receiver.received
        if r.json.get("trigger") == trigger and title_part in r.json["object_attributes"]["title"]
    ]


def wait_for(receiver: Receiver, trigger: str, title_part: str, count: int = 1) -> list[Any]:
    deadline = time.monotonic() + NOTIFIED_WITHIN
    while time.monotonic() < deadline:
        found = by_trigger(receiver, trigger, title_part)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {trigger} notification for {title_part!r}: got {[r.json for r in receiver.received]}")


def test_python_gitlab_manages_hooks_and_a_new_error_is_notified_signed(server: Server, receiver: Receiver) -> None:
    sink = new_sink(server, "hooks-new")
    token = secret()
    project = gl(server, sink.token).projects.get(sink.project.id, lazy=True)
    hook = project.hooks.create({"url": receiver.url, "token": token, "name": "on-call"})
    assert [h.id for h in project.hooks.list()] == [hook.id]
    assert project.hooks.get(hook.id).name == "on-call"
    assert "token" not in hook.attributes and token not in str(project.hooks.list(get_all=True))

    send_errors(sink, ("PaymentGatewayTimeout", "gateway did not answer"))
    (got,) = wait_for(receiver, "new", "PaymentGatewayTimeout")
    assert set(got.headers) >= HOOK_HEADERS
    assert got.headers["x-gitlab-event"] == "Error Tracking Hook"
    assert got.headers["x-gitlab-token"] == token
    assert got.headers["idempotency-key"] == got.headers["x-gitlab-event-uuid"]
    expected = "sha256=" + hmac.new(token.encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers["x-errortracking-signature"], expected)
    body = got.json
    assert body["object_kind"] == "error_tracking" and body["project"]["id"] == sink.project.id
    error = body["object_attributes"]
    assert error["count"] == 1 and error["status"] == "unresolved" and error["environment"] == "e2e"
    assert error["release"] == "shop@1.4.2" and error["level"] == "error"
    detail = expect(
        call(server, "GET", f"/projects/{sink.project.id}/error_tracking/errors/{error['id']}", sink.token), 200
    )
    assert detail["title"] == error["title"]
    assert error["url"].endswith(f"/api/v4/projects/{sink.project.id}/error_tracking/errors/{error['id']}")

    # The same error again: nothing new to tell.
    send_errors(sink, ("PaymentGatewayTimeout", "gateway did not answer"))
    time.sleep(2)
    assert len(by_trigger(receiver, "new", "PaymentGatewayTimeout")) == 1

    hook.delete()
    assert project.hooks.list() == []
    with pytest.raises(gitlab.exceptions.GitlabGetError) as missing:
        project.hooks.get(hook.id)
    assert missing.value.response_code == 404


def test_a_resolved_error_that_happens_again_is_a_regression(server: Server, receiver: Receiver) -> None:
    sink = new_sink(server, "hooks-regression")
    expect(call(server, "POST", f"/projects/{sink.project.id}/hooks", sink.token, json={"url": receiver.url}), 201)
    send_errors(sink, ("InventoryDrift", "stock below zero"))
    (new,) = wait_for(receiver, "new", "InventoryDrift")
    error_id = new.json["object_attributes"]["id"]
    path = f"/projects/{sink.project.id}/error_tracking/errors/{error_id}"
    expect(call(server, "PUT", path, sink.token, json={"status": "resolved"}), 200)
    send_errors(sink, ("InventoryDrift", "stock below zero"))
    (regression,) = wait_for(receiver, "regression", "InventoryDrift")
    assert regression.json["object_attributes"]["status"] == "unresolved"
    assert regression.json["object_attributes"]["count"] == 2
    assert regression.headers["idempotency-key"] != new.headers["idempotency-key"]


def test_thirty_events_in_a_minute_over_a_threshold_of_twenty_alert_once(server: Server, receiver: Receiver) -> None:
    sink = new_sink(server, "hooks-frequency")
    form = {"url": receiver.url, "frequency_threshold": 20, "frequency_window": 1}
    expect(call(server, "POST", f"/projects/{sink.project.id}/hooks", sink.token, json=form), 201)
    send_errors(sink, *[("CartOverflow", "too many items")] * 30)
    (alert,) = wait_for(receiver, "frequency", "CartOverflow")
    counted = alert.json["frequency"]
    assert counted["window_minutes"] == 1 and 20 < counted["events"] <= 30, counted
    time.sleep(2)
    assert len(by_trigger(receiver, "frequency", "CartOverflow")) == 1
    assert len(by_trigger(receiver, "new", "CartOverflow")) == 1


@pytest.mark.parametrize("failure", ["answers-500", "hangs", "refuses-connections"])
def test_a_failing_receiver_is_retried_then_disabled_and_others_are_still_told(
    server: Server, receiver: Receiver, failure: str
) -> None:
    sink = new_sink(server, f"hooks-{failure}")
    bad = Receiver(answer=500 if failure == "answers-500" else "hang", hang_seconds=3).start()
    try:
        bad_url = closed_port_url() if failure == "refuses-connections" else bad.url
        hooks = f"/projects/{sink.project.id}/hooks"
        failing = expect(call(server, "POST", hooks, sink.token, json={"url": bad_url}), 201)
        expect(call(server, "POST", hooks, sink.token, json={"url": receiver.url}), 201)
        for n in range(4):  # GitLab disables a hook after more than 3 failures in a row
            send_errors(sink, (f"Failure{n}{failure.replace('-', '')}", "boom"))
            wait_for(receiver, "new", f"Failure{n}")
            deadline = time.monotonic() + NOTIFIED_WITHIN
            while time.monotonic() < deadline:
                seen = expect(call(server, "GET", f"{hooks}/{failing['id']}", sink.token), 200)
                if failure == "refuses-connections" or len(bad.received) >= 3 * (n + 1):
                    break
                time.sleep(0.2)
        if failure != "refuses-connections":
            assert len(bad.received) == 3 * 4, "each notification is tried three times"
        deadline = time.monotonic() + NOTIFIED_WITHIN
        while time.monotonic() < deadline:
            seen = expect(call(server, "GET", f"{hooks}/{failing['id']}", sink.token), 200)
            if seen["alert_status"] != "executable":
                break
            time.sleep(0.2)
        assert seen["alert_status"] == "temporarily_disabled", seen
        assert seen["disabled_until"] is not None
        # A test that succeeds is what enables it again: here it fails, and says why.
        test = call(server, "POST", f"{hooks}/{failing['id']}/test/error_tracking_events", sink.token)
        assert test.status_code == 422 and test.json()["message"].startswith("Hook execution failed: ")
    finally:
        bad.stop()
