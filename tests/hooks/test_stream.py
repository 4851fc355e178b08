"""The webhooks' stream handler on the in-process store: the embedded store's stream read as `make run`
reads it (scripts/stream_pump.py), handed to app.deliver_hooks, real receivers on loopback.

What the end-to-end tests (test_e2e_hooks.py) cannot show cheaply is here: a batch handled twice,
a crash between claim and send, a URL that turns private after it was saved, the Slack limits
with hostile titles, GitLab's disabling numbers, and what the handler costs in round trips.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import models
from chalicelib.hooks import delivery, disabling, payloads
from chalicelib.models import HookDelivery, ProjectHook
from scripts.stream_pump import StreamPump
from tests.conftest import SUITE_SECRETS
from tests.hooks.receiver import Receiver, closed_port_url
from tests.ingest.test_api_ingestion import ERROR, Ctx, ctx, exception_event

__all__ = ["ctx"]

HOOKS = "/api/v4/projects/{}/hooks"


class Recorded:
    """The stream as the pump reads it, every record kept, so a batch can be handed over again."""

    def __init__(self) -> None:
        from app import deliver_hooks

        self.batches: list[dict[str, Any]] = []

        def keep(event: dict[str, Any], context: Any) -> None:
            self.batches.append(json.loads(json.dumps(event, default=str)))
            deliver_hooks(event, context)

        self.pump = StreamPump(models.Entity.Meta.table_name, keep)
        self.pump.poll_once()  # from the stream's end, as deployed

    def poll(self) -> None:
        self.pump.poll_once()


@pytest.fixture
def pumped(ctx: Ctx) -> Recorded:
    return Recorded()


def add_hook(ctx: Ctx, **fields: Any) -> dict[str, Any]:
    reply = ctx.api.post(HOOKS.format(ctx.project_id), json_body=fields, token=ctx.token)
    assert reply.status == 201, reply.body
    body: dict[str, Any] = reply.json
    return body


def hook_item(ctx: Ctx, hook_id: int) -> ProjectHook:
    found = models.fetch([ProjectHook.key(ctx.project_id, hook_id)])[ProjectHook.key(ctx.project_id, hook_id)]
    assert isinstance(found, ProjectHook)
    return found


@pytest.fixture
def second() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def test_a_new_error_is_told_once_signed_even_when_its_batch_is_handled_twice(
    ctx: Ctx, pumped: Recorded, receiver: Receiver
) -> None:
    from app import deliver_hooks

    token = "hook-secret-" + "7" * 20
    SUITE_SECRETS[token] = "hook secret"
    add_hook(ctx, url=receiver.url, token=token, custom_headers=[{"key": "X-Team", "value": "payments"}])
    ctx.ok(exception_event("KeyError", "'sku'"))
    pumped.poll()
    (got,) = receiver.received
    assert got.json["trigger"] == "new" and got.json["object_attributes"]["title"] == "KeyError: 'sku'"
    assert got.headers["x-team"] == "payments" and got.headers["x-gitlab-token"] == token
    signed = "sha256=" + hmac.new(token.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-errortracking-signature"] == signed
    # Lambda hands a batch over again after a timeout or a crash: nobody is told twice.
    for batch in pumped.batches:
        deliver_hooks(batch, None)
    assert len(receiver.received) == 1


def test_a_crash_between_claim_and_send_sends_again_with_the_same_idempotency_key(
    ctx: Ctx, pumped: Recorded, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import deliver_hooks

    add_hook(ctx, url=receiver.url)
    sent = delivery.post

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise SystemExit("the Lambda ran out of time right after claiming")

    monkeypatch.setattr(delivery, "post", crash)
    ctx.ok(exception_event("TimeoutError", "upstream"))
    with pytest.raises(SystemExit):
        pumped.poll()
    assert receiver.received == []
    monkeypatch.setattr(delivery, "post", sent)
    deliver_hooks(pumped.batches[-1], None)
    deliver_hooks(pumped.batches[-1], None)
    (got,) = receiver.received
    claims = [i for i in _items() if i.get("kind") == "hookdelivery"]
    assert len(claims) == 1 and claims[0]["state"] == "sent"
    assert got.headers["idempotency-key"] == claims[0]["uuid"]


def _items() -> list[dict[str, Any]]:
    from tests.table import raw_items

    return raw_items()


def test_reopening_by_hand_is_no_regression_and_an_event_of_a_resolved_error_is(
    ctx: Ctx, pumped: Recorded, receiver: Receiver
) -> None:
    add_hook(ctx, url=receiver.url)
    event = exception_event("ZeroDivisionError", "division by zero")
    ctx.ok(event)
    pumped.poll()
    error_id = receiver.received[0].json["object_attributes"]["id"]
    for status in ("resolved", "unresolved", "resolved"):
        reply = ctx.api.put(ERROR.format(ctx.project_id, error_id), json_body={"status": status}, token=ctx.token)
        assert reply.status == 200, reply.body
    pumped.poll()
    assert [r.json["trigger"] for r in receiver.received] == ["new"]
    ctx.ok(exception_event("ZeroDivisionError", "division by zero"))
    pumped.poll()
    assert [r.json["trigger"] for r in receiver.received] == ["new", "regression"]


def test_frequency_is_told_once_per_window(ctx: Ctx, pumped: Recorded, receiver: Receiver) -> None:
    add_hook(ctx, url=receiver.url, frequency_threshold=5, frequency_window=60, error_tracking_events=True)
    for _ in range(12):
        ctx.ok(exception_event("OverflowError", "too big"))
    pumped.poll()
    triggers = [r.json["trigger"] for r in receiver.received]
    assert triggers == ["new", "frequency"]
    assert receiver.received[1].json["frequency"] == {"events": 6, "window_minutes": 60}


def test_a_hook_that_is_switched_off_or_disabled_is_not_told(ctx: Ctx, pumped: Recorded, receiver: Receiver) -> None:
    add_hook(ctx, url=receiver.url, error_tracking_events=False)
    disabled = add_hook(ctx, url=receiver.url)
    hook_item(ctx, disabled["id"]).update(
        actions=[
            ProjectHook.recent_failures.set(4),
            ProjectHook.disabled_until.set(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)),
        ]
    )
    listed = ctx.api.get(HOOKS.format(ctx.project_id), token=ctx.token).json
    assert [h["alert_status"] for h in listed] == ["executable", "temporarily_disabled"]
    ctx.ok(exception_event("RecursionError", "deep"))
    pumped.poll()
    assert receiver.received == []
    # Saving the hook enables it again, as in GitLab.
    reply = ctx.api.put(
        HOOKS.format(ctx.project_id) + f"/{disabled['id']}", json_body={"name": "back"}, token=ctx.token
    )
    assert (reply.json["alert_status"], reply.json["disabled_until"]) == ("executable", None)


def test_failures_disable_a_hook_and_a_successful_test_enables_it(
    ctx: Ctx, pumped: Recorded, receiver: Receiver, second: Receiver
) -> None:
    failing = Receiver(answer=500).start()
    try:
        hook = add_hook(ctx, url=failing.url)
        add_hook(ctx, url=second.url)
        for n in range(4):
            ctx.ok(exception_event(f"Failure{n}Error", "boom"))
            pumped.poll()
        assert len(failing.received) == 4 * 3  # each notification tried three times
        assert len(second.received) == 4  # the other hook was told every time
        seen = ctx.api.get(HOOKS.format(ctx.project_id) + f"/{hook['id']}", token=ctx.token).json
        assert seen["alert_status"] == "temporarily_disabled"
        until = dt.datetime.fromisoformat(seen["disabled_until"].replace("Z", "+00:00"))
        # GitLab's back-off after the 4th failure: a minute (it doubles from there).
        assert dt.timedelta(seconds=40) < until - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=1)
        test = ctx.api.post(HOOKS.format(ctx.project_id) + f"/{hook['id']}/test/error_tracking_events", token=ctx.token)
        assert (test.status, test.json) == (422, {"message": "Hook execution failed: answered 500"})
        failing.answer = 200
        test = ctx.api.post(HOOKS.format(ctx.project_id) + f"/{hook['id']}/test/error_tracking_events", token=ctx.token)
        assert (test.status, test.json) == (201, {"message": "201 Created"})
        assert failing.received[-1].json["trigger"] == "test"
        seen = ctx.api.get(HOOKS.format(ctx.project_id) + f"/{hook['id']}", token=ctx.token).json
        assert (seen["alert_status"], seen["disabled_until"]) == ("executable", None)
    finally:
        failing.stop()


def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    ctx: Ctx, pumped: Recorded, receiver: Receiver, second: Receiver
) -> None:
    second.answer, second.redirect_to = 302, receiver.url
    hook = add_hook(ctx, url=second.url)
    ctx.ok(exception_event("LookupError", "moved"))
    pumped.poll()
    assert len(second.received) == 1 and receiver.received == []
    assert int(hook_item(ctx, hook["id"]).recent_failures) == 1


def test_a_refused_connection_is_a_failure_and_stops_nothing(ctx: Ctx, pumped: Recorded, receiver: Receiver) -> None:
    hook = add_hook(ctx, url=closed_port_url())
    add_hook(ctx, url=receiver.url)
    ctx.ok(exception_event("ConnectionError", "refused"))
    pumped.poll()
    assert len(receiver.received) == 1
    assert int(hook_item(ctx, hook["id"]).recent_failures) == 1


def test_a_private_address_is_refused_at_save_and_again_at_delivery(
    ctx: Ctx, pumped: Recorded, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = add_hook(ctx, url=receiver.url)  # allowed while ERRORTRACKING_ALLOW_LOCAL_HOOKS is on
    monkeypatch.setenv("ERRORTRACKING_ALLOW_LOCAL_HOOKS", "false")
    from chalicelib import config

    config.get_config.cache_clear()
    for url in (receiver.url, "http://169.254.169.254/latest/meta-data/", "http://[::1]:80/", "http://10.1.2.3/"):
        reply = ctx.api.post(HOOKS.format(ctx.project_id), json_body={"url": url}, token=ctx.token)
        assert reply.status == 422, reply.body
        assert reply.json == {
            "message": "Invalid url given: url resolves to a local or private address, which is not allowed"
        }
    ctx.ok(exception_event("PermissionError", "no"))
    pumped.poll()
    assert receiver.received == []
    claims = [i for i in _items() if i.get("kind") == "hookdelivery"]
    assert [c["state"] for c in claims] == ["failed"]
    assert int(hook_item(ctx, hook["id"]).recent_failures) == 1
    listed = ctx.api.get(HOOKS.format(ctx.project_id), token=ctx.token).json
    assert [h["id"] for h in listed] == [hook["id"]]


def test_the_slack_body_keeps_to_slacks_limits_with_hostile_text(
    ctx: Ctx, pumped: Recorded, receiver: Receiver
) -> None:
    add_hook(ctx, url=receiver.url, payload_format="slack")
    hostile = "<!channel> <https://evil.example|click> & " + "é🙂" * 3000
    ctx.ok(exception_event("ValueError", hostile, environment="<!here>" * 100, release="&" * 500))
    pumped.poll()
    (got,) = receiver.received
    body = got.json
    assert set(body) == {"text", "blocks"}
    assert len(body["text"]) <= payloads.SLACK_TEXT_MAX
    header, section, context = body["blocks"]
    assert header["type"] == "header" and len(header["text"]["text"]) <= payloads.SLACK_HEADER_MAX
    assert len(section["text"]["text"]) <= payloads.SLACK_SECTION_MAX
    assert len(context["elements"]) <= 10 and all(
        len(e["text"]) <= payloads.SLACK_CONTEXT_MAX for e in context["elements"]
    )
    everything = json.dumps(body, ensure_ascii=False)
    assert "<!channel>" not in everything and "<!here>" not in everything and "|click>" not in everything
    assert "&lt;!channel&gt;" in section["text"]["text"] and section["text"]["text"].count("<") == 1  # our link only
    # Cut at whole characters and whole escapes: no broken surrogate, no "&am" left dangling.
    assert "\ufffd" not in everything
    for text in (body["text"], section["text"]["text"], context["elements"][0]["text"]):
        assert all(text[i:].startswith(("&amp;", "&lt;", "&gt;")) for i, c in enumerate(text) if c == "&")


def test_disabling_follows_gitlabs_numbers() -> None:
    hook = models.build(ProjectHook, ProjectHook.key(1, 1))
    now = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    seen = []
    for _ in range(42):
        hook.recent_failures, hook.disabled_until = disabling.after_failure(hook, now)
        seen.append((int(hook.recent_failures), hook.disabled_until - now if hook.disabled_until else None))
    assert seen[:3] == [(1, None), (2, None), (3, None)]
    assert seen[3:6] == [(4, dt.timedelta(minutes=1)), (5, dt.timedelta(minutes=2)), (6, dt.timedelta(minutes=4))]
    assert seen[20] == (21, dt.timedelta(days=1))
    assert seen[-1][0] == 40 and disabling.permanently_disabled(hook)
    assert disabling.alert_status(hook, now) == "disabled"
    hook.recent_failures, hook.disabled_until = 4, now + dt.timedelta(minutes=2)
    assert disabling.alert_status(hook, now) == "temporarily_disabled"
    assert disabling.alert_status(hook, now + dt.timedelta(minutes=3)) == "executable"


def test_only_error_items_reach_the_handler_and_ingestion_pays_nothing_for_hooks(
    ctx: Ctx, pumped: Recorded, receiver: Receiver, aws_calls: list[tuple[str, str]]
) -> None:
    add_hook(ctx, url=receiver.url)
    aws_calls.clear()
    ctx.ok(exception_event("MemoryError", "full"))
    # The event's request: the same two round trips as without hooks (tests/test_round_trips.py).
    assert [op for _, op in aws_calls] == ["BatchGetItem", "TransactWriteItems"]
    aws_calls.clear()
    pumped.poll()
    records = [r for batch in pumped.batches for r in batch["Records"]]
    assert records and all(r["dynamodb"]["Keys"]["sk"]["S"] == "error" for r in records)
    # The handler's own: the hooks Query, one read of project and newest event, a claim and its outcome.
    handler_calls = [op for service, op in aws_calls if service == "dynamodb"]
    assert handler_calls == ["Query", "GetItem", "GetItem", "PutItem", "UpdateItem"], handler_calls
    assert HookDelivery.Meta.table_name == models.Entity.Meta.table_name


def test_a_store_made_before_webhooks_gets_its_stream(store: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept `make run` data folder holds a table without a stream: starting again adds it."""
    from chalicelib import bootstrap

    client = models.connection().client
    table = models.Entity.Meta.table_name
    models.Entity.delete_table()
    monkeypatch.delattr(models.Entity.Meta, "stream_view_type")
    models.Entity.create_table(wait=True)  # as the service made it before webhooks
    monkeypatch.undo()
    assert not client.describe_table(TableName=table)["Table"].get("StreamSpecification", {}).get("StreamEnabled")
    assert bootstrap.ensure_table() is False  # not created: the table and its items stay
    described = client.describe_table(TableName=table)["Table"]
    assert described["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}


def test_a_receiver_that_answers_a_byte_at_a_time_is_cut_off_at_the_deadline(
    ctx: Ctx, pumped: Recorded, receiver: Receiver, second: Receiver
) -> None:
    second.answer, second.trickle_seconds = "trickle", 8.0  # the try's deadline is 1 s (conftest)
    hook = add_hook(ctx, url=second.url)
    add_hook(ctx, url=receiver.url)
    ctx.ok(exception_event("SlowLorisError", "drip"))
    pumped.poll()
    assert len(receiver.received) == 1
    assert len(second.received) == 3  # three tries, each ended at its deadline, not by the receiver
    assert int(hook_item(ctx, hook["id"]).recent_failures) == 1


def test_a_hook_whose_secrets_no_longer_decrypt_fails_alone(
    ctx: Ctx, pumped: Recorded, receiver: Receiver, second: Receiver
) -> None:
    broken = add_hook(ctx, url=second.url, token="will-not-decrypt")
    add_hook(ctx, url=receiver.url)
    hook_item(ctx, broken["id"]).update(actions=[ProjectHook.encrypted_token.set(b"not a ciphertext")])
    ctx.ok(exception_event("KeyRotationError", "gone"))
    pumped.poll()  # the batch does not fail: Lambda would retry it for everyone, then give it up
    assert len(receiver.received) == 1 and second.received == []
    assert int(hook_item(ctx, broken["id"]).recent_failures) == 1
    states = sorted(i["state"] for i in _items() if i.get("kind") == "hookdelivery")
    assert states == ["failed", "sent"]


def test_a_batch_reads_more_than_a_hundred_keys(ctx: Ctx, pumped: Recorded, receiver: Receiver) -> None:
    """Frequency windows are read per hook and error: 2 hooks x 60 errors is 120 keys and a project."""
    for _ in range(2):
        add_hook(ctx, url=receiver.url, frequency_threshold=1000)
    for n in range(60):
        ctx.ok(exception_event(f"Many{n}Error", "one of many"))
    pumped.poll()
    assert sorted(r.json["trigger"] for r in receiver.received) == ["new"] * 120


def test_addresses_that_are_not_public_are_refused() -> None:
    from chalicelib.urlsafety import special_address

    for address in (
        "127.0.0.1",
        "10.0.0.1",
        "100.64.0.1",  # shared address space (carrier NAT)
        "169.254.169.254",
        "::1",
        "fe80::1%eth0",
        "::ffff:169.254.169.254",
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "224.0.0.1",
        "0.0.0.0",
    ):
        assert special_address(address), address
    for address in ("1.1.1.1", "8.8.8.8", "2606:4700::1111"):
        assert not special_address(address), address
