"""When DynamoDB fails: what API clients and Sentry SDKs see, and what is left in the table.

Spec: error-tracking-api.md (every route; section 8: never a trace) and the authorizer's contract:
a store that fails for a while is answered 503 ``{"message":"503 Service Unavailable"}`` with a
``Retry-After`` header, never a 500, never a trace, and a write it interrupted leaves nothing half
done.

Faults are injected where DynamoDB's answer enters botocore: a ``before-send`` handler on the
models' own botocore client answers the chosen calls itself (HTTP 400 throttling, HTTP 500, an
HTTP 400 transaction cancellation) or raises the timeout botocore would raise, instead of letting
moto serve them. botocore then runs its real retry policy (only its waiting is skipped): a
persistent fault outlasts the retries ("unavailable"), a transient one (the first N calls) is
absorbed by them ("recovers").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import boto3
import botocore.endpoint
import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from moto.core.models import botocore_stubber

from chalicelib import budget, client_keys, config, crypto, errors, models
from chalicelib.ingest import ingestion
from tests.conftest import Api, Reply, Scene, index_caught_up
from tests.wire import UNAVAILABLE

SETTINGS = "/api/v4/projects/{}/error_tracking/settings"
KEYS = "/api/v4/projects/{}/error_tracking/client_keys"
KEY = KEYS + "/{}"
ERRORS = "/api/v4/projects/{}/error_tracking/errors"
INGEST = "/errortracking/api/v1/projects/api/{}/envelope/"

# The faults, as DynamoDB (or the network in front of it) produces them.
THROTTLED = "throttled"  # HTTP 400 ProvisionedThroughputExceededException
INTERNAL = "internal"  # HTTP 500 InternalServerError
READ_TIMEOUT = "read-timeout"  # no answer in time
CONNECT_TIMEOUT = "connect-timeout"  # no connection
TX_THROTTLED = "transaction-throttled"  # TransactionCanceledException, reason ThrottlingError
TX_CONFLICT = "transaction-conflict"  # TransactionCanceledException, reason TransactionConflict
KINDS = (THROTTLED, INTERNAL, READ_TIMEOUT, CONNECT_TIMEOUT)
TRANSACTION_KINDS = (TX_THROTTLED, TX_CONFLICT)
WRITES = ("TransactWriteItems", "PutItem", "UpdateItem")
DYNAMODB_PREFIX = "com.amazonaws.dynamodb.v20120810#"


# Injecting faults


class _Body:
    """A raw HTTP body as botocore reads it from urllib3."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def _error(request: AWSPreparedRequest, status: int, error_type: str, message: str, **extra: Any) -> AWSResponse:
    headers = HTTPHeaders()
    headers["Content-Type"] = "application/x-amz-json-1.0"
    headers["x-amzn-RequestId"] = uuid.uuid4().hex
    body = json.dumps({"__type": error_type, "message": message, **extra}).encode()
    return AWSResponse(request.url, status, headers, _Body(body))


def _cancelled(request: AWSPreparedRequest, code: str, message: str) -> AWSResponse:
    body = request.body if isinstance(request.body, bytes | str) else b"{}"
    items = json.loads(body or b"{}").get("TransactItems", [])
    reasons = [{"Code": code, "Message": message}] + [{"Code": "None"}] * max(0, len(items) - 1)
    return _error(
        request,
        400,
        DYNAMODB_PREFIX + "TransactionCanceledException",
        f"Transaction cancelled, please refer cancellation reasons for specific reasons [{code}]",
        CancellationReasons=reasons,
    )


@dataclass
class Fault:
    """Answer the calls to ``operations`` with ``kind``: every one, or the first ``times``."""

    kind: str
    operations: frozenset[str]
    times: int | None = None
    injected: int = 0
    calls: list[str] = field(default_factory=list)  # every operation sent, faulted or not

    def answer(self, operation: str, request: AWSPreparedRequest) -> AWSResponse | None:
        self.calls.append(operation)
        if operation not in self.operations or (self.times is not None and self.injected >= self.times):
            return None
        self.injected += 1
        if self.kind == THROTTLED:
            return _error(
                request,
                400,
                DYNAMODB_PREFIX + "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded.",
            )
        if self.kind == INTERNAL:
            return _error(request, 500, DYNAMODB_PREFIX + "InternalServerError", "Internal server error")
        if self.kind == READ_TIMEOUT:
            raise ReadTimeoutError(endpoint_url=request.url)
        if self.kind == CONNECT_TIMEOUT:
            raise ConnectTimeoutError(endpoint_url=request.url)
        if self.kind == TX_THROTTLED:
            return _cancelled(request, "ThrottlingError", "Throughput exceeds the current capacity of your table.")
        if self.kind == TX_CONFLICT:
            return _cancelled(request, "TransactionConflict", "Transaction is ongoing for the item")
        if self.kind == "kms-throttled":
            return _error(request, 400, "ThrottlingException", "Rate exceeded")
        raise AssertionError(f"unknown fault {self.kind}")


AnyFault = TypeVar("AnyFault", bound=Fault)


def dynamodb_client() -> Any:
    """The botocore client every model shares."""
    return models.connection().client


@contextlib.contextmanager
def store_faults(fault: AnyFault, client: Any = None) -> Iterator[AnyFault]:
    """Let ``fault`` answer ``client``'s calls first; moto answers the rest, as before."""
    client = client if client is not None else dynamodb_client()
    events = client.meta.events
    service = client.meta.service_model.service_id.hyphenize()

    def before_send(event_name: str, request: AWSPreparedRequest, **kwargs: Any) -> AWSResponse | None:
        answer = fault.answer(event_name.rsplit(".", 1)[-1], request)
        if answer is not None:
            return answer
        response: AWSResponse | None = botocore_stubber(event_name=event_name, request=request, **kwargs)
        return response

    # moto is itself a before-send handler, and every handler runs: take it out while the fault
    # is in, so a faulted call never reaches the store behind it.
    events.unregister("before-send", botocore_stubber)
    events.register_first(f"before-send.{service}", before_send)
    try:
        yield fault
    finally:
        events.unregister(f"before-send.{service}", before_send)
        events.register("before-send", botocore_stubber)


def _fresh_retry_quota(client: Any) -> None:
    """botocore's retry policy for ``client`` anew, with its quota full as in a new container.

    The quota (500 units, 5 or 14 per retry) is per client, and the models' client lives for the
    whole session: without this, faults in one test would leave later ones without retries.
    """
    budget.install_retries(client)


@pytest.fixture(autouse=True)
def retries_without_waiting(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """botocore retries as configured, without sleeping its backoff (up to 7 s per throttled call)."""
    waits: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=waits.append))
    _fresh_retry_quota(dynamodb_client())
    yield waits
    _fresh_retry_quota(dynamodb_client())


# Reading the raw table


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return type(value)(_plain(v) for v in value)
    return value


def scan_table() -> dict[tuple[str, str], dict[str, Any]]:
    """Every item of the table, straight from DynamoDB (no model involved)."""
    client = boto3.client("dynamodb", region_name=config.region())
    deserializer = TypeDeserializer()
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for page in client.get_paginator("scan").paginate(TableName=models.Entity.Meta.table_name, ConsistentRead=True):
        for raw in page["Items"]:
            item = {name: _plain(deserializer.deserialize(value)) for name, value in raw.items()}
            items[(item["pk"], item["sk"])] = item
    return items


def consistency_problems(items: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """What is wrong in the table: keys without their claim or the other way round, copies that
    disagree, a project's count of active keys that is not the count of its active keys."""
    problems: list[str] = []
    keys = [item for item in items.values() if item.get("kind") == "clientkey"]
    claims = {item["pk"]: item for item in items.values() if item.get("kind") == "publickey"}
    projects = {int(item["project_id"]): item for item in items.values() if item.get("kind") == "project"}
    copied = ("project_id", "key_id", "active", "rate_limit_count", "rate_limit_window")
    for key in keys:
        claim = claims.get(f"publickey#{key['public_key']}")
        if claim is None:
            problems.append(f"client key {key['key_id']} has no public key claim")
            continue
        for name in copied:
            if claim.get(name) != key.get(name):
                problems.append(
                    f"client key {key['key_id']}: {name} is {key.get(name)!r}, its claim says {claim.get(name)!r}"
                )
    by_id = {(int(key["project_id"]), int(key["key_id"])): key for key in keys}
    for pk, claim in claims.items():
        owner = by_id.get((int(claim["project_id"]), int(claim["key_id"])))
        if owner is None or f"publickey#{owner['public_key']}" != pk:
            problems.append(
                f"claim {pk} names key {claim['key_id']} of project {claim['project_id']}, which is not there"
            )
    for project_id, project in projects.items():
        active = sum(1 for key in keys if int(key["project_id"]) == project_id and key.get("active"))
        if int(project.get("active_keys", 0)) != active:
            problems.append(f"project {project_id} counts {project.get('active_keys')} active keys, it has {active}")
    for item in items.values():
        if item.get("kind") == "clientkey" and int(item["project_id"]) not in projects:
            problems.append(f"client key {item['key_id']} belongs to no project")
        if item.get("kind") == "setting" and int(item["project_id"]) not in projects:
            problems.append(f"setting of missing project {item['project_id']}")
    return problems


def durable(items: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The items a failed request must leave untouched: all but id counters and rate-limit windows
    (an id used up, or an event counted against a limit, by a request that then failed is harmless)."""
    return {k: v for k, v in items.items() if not k[0].startswith(("counter#", "ratelimit#"))}


def assert_consistent() -> dict[tuple[str, str], dict[str, Any]]:
    items = scan_table()
    assert consistency_problems(items) == []
    return items


# The scene and the routes


@dataclass
class Ctx:
    """Project "acme/shop" set up for error tracking: its first key (rate-limited, so that ingestion
    counts against a window) and a second one; and "acme/fresh", with neither setting nor key."""

    api: Api
    token: str
    project_id: int
    fresh_project_id: int
    setting: dict[str, Any]
    first_key: dict[str, Any]
    second_key: dict[str, Any]

    def list_keys(self, project_id: int | None = None) -> list[dict[str, Any]]:
        reply = self.api.get(KEYS.format(project_id or self.project_id) + "?per_page=100", token=self.token)
        assert reply.status == 200, reply.body
        keys: list[dict[str, Any]] = reply.json
        return keys

    def settings(self, project_id: int | None = None) -> Reply:
        return self.api.get(SETTINGS.format(project_id or self.project_id), token=self.token)


@pytest.fixture
def ctx(api: Api, scene: Scene, monkeypatch: pytest.MonkeyPatch) -> Ctx:
    # Keys over their limit are remembered per Lambda instance; ids start again in every test.
    monkeypatch.setattr(ingestion, "_blocked_until", {})
    project = scene.project("acme/shop")
    fresh = scene.project("acme/fresh")
    token = scene.maintainer(project)
    scene.member(fresh, "maintainer", "maintainer")
    project_id = int(project.project_id)
    setting = api.put(SETTINGS.format(project_id), token=token, form={"active": "true", "integrated": "true"})
    assert setting.status == 200, setting.body
    listed = api.get(KEYS.format(project_id), token=token)
    assert listed.status == 200 and len(listed.json) == 1, listed.body
    first = api.patch(
        KEY.format(project_id, listed.json[0]["id"]),
        token=token,
        form={"rate_limit_count": "1000", "rate_limit_window": "3600"},
    )
    assert first.status == 200, first.body
    second = api.post(KEYS.format(project_id), token=token)
    assert second.status == 201, second.body
    return Ctx(api, token, project_id, int(fresh.project_id), setting.json, first.json, second.json)


def _event() -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "platform": "python",
        "level": "error",
        "exception": {"values": [{"type": "StoreFaultProbe", "value": "while the store was failing"}]},
    }


def ingest(ctx: Ctx, event: dict[str, Any] | None = None) -> Reply:
    event = event or _event()
    payload = json.dumps(event).encode()
    body = b"\n".join(
        [
            json.dumps({"event_id": event["event_id"], "sent_at": dt.datetime.now(dt.UTC).isoformat()}).encode(),
            json.dumps({"type": "event", "length": len(payload)}).encode(),
            payload,
        ]
    )
    headers = {
        "Content-Type": "application/x-sentry-envelope",
        "X-Sentry-Auth": f"Sentry sentry_key={ctx.first_key['public_key']}, sentry_version=7, sentry_client=probe/1.0",
    }
    return ctx.api.call("POST", INGEST.format(ctx.project_id), headers=headers, body=body)


def _setting_of(reply: Reply) -> dict[str, Any]:
    assert reply.status == 200, reply.body
    entity: dict[str, Any] = reply.json
    return entity


@dataclass(frozen=True)
class Route:
    name: str
    operations: tuple[str, ...]  # the DynamoDB calls it makes, in order, when all goes well
    status: int  # its answer when all goes well
    call: Callable[[Ctx], Reply]
    verify: Callable[[Ctx, Reply], None]  # what a success must have done

    def __str__(self) -> str:
        return self.name


AUTH = ("GetItem", "BatchGetItem")  # the token; then user, project, membership and preloads


def _verify_user(ctx: Ctx, reply: Reply) -> None:
    assert reply.json["username"] == "maintainer"


def _verify_settings(ctx: Ctx, reply: Reply) -> None:
    assert reply.json == ctx.setting


def _put(ctx: Ctx) -> Reply:
    form = {"active": "false", "integrated": "true", "project_name": "Renamed"}
    return ctx.api.put(SETTINGS.format(ctx.project_id), token=ctx.token, form=form)


def _verify_put(ctx: Ctx, reply: Reply) -> None:
    expected = {**ctx.setting, "active": False, "project_name": "Renamed"}
    assert reply.json == expected
    assert _setting_of(ctx.settings()) == expected


def _put_first(ctx: Ctx) -> Reply:
    return ctx.api.put(SETTINGS.format(ctx.fresh_project_id), token=ctx.token, form={"active": "1", "integrated": "1"})


def _verify_put_first(ctx: Ctx, reply: Reply) -> None:
    expected = {"active": True, "project_name": None, "sentry_external_url": None, "api_url": None, "integrated": True}
    assert reply.json == expected
    assert _setting_of(ctx.settings(ctx.fresh_project_id)) == expected
    keys = ctx.list_keys(ctx.fresh_project_id)
    assert [key["active"] for key in keys] == [True]  # the automatic first key, once


def _patch(ctx: Ctx) -> Reply:
    return ctx.api.patch(SETTINGS.format(ctx.project_id), token=ctx.token, form={"active": "false"})


def _verify_patch(ctx: Ctx, reply: Reply) -> None:
    expected = {**ctx.setting, "active": False}
    assert reply.json == expected
    assert _setting_of(ctx.settings()) == expected


def _verify_list(ctx: Ctx, reply: Reply) -> None:
    assert [key["id"] for key in reply.json] == [ctx.first_key["id"], ctx.second_key["id"]]
    assert reply.headers["x-total"] == "2"


def _create(ctx: Ctx) -> Reply:
    return ctx.api.post(KEYS.format(ctx.project_id), token=ctx.token)


def _verify_create(ctx: Ctx, reply: Reply) -> None:
    assert reply.json["active"] is True
    ids = [key["id"] for key in ctx.list_keys()]
    assert ids == [ctx.first_key["id"], ctx.second_key["id"], reply.json["id"]]


def _delete(ctx: Ctx) -> Reply:
    return ctx.api.delete(KEY.format(ctx.project_id, ctx.second_key["id"]), token=ctx.token)


def _verify_delete(ctx: Ctx, reply: Reply) -> None:
    assert reply.json == ctx.second_key
    assert [key["id"] for key in ctx.list_keys()] == [ctx.first_key["id"]]


def _update_key(ctx: Ctx) -> Reply:
    form = {"active": "false", "name": "paused"}
    return ctx.api.patch(KEY.format(ctx.project_id, ctx.second_key["id"]), token=ctx.token, form=form)


def _verify_update_key(ctx: Ctx, reply: Reply) -> None:
    expected = {**ctx.second_key, "active": False, "name": "paused"}
    assert reply.json == expected
    assert ctx.list_keys()[1] == expected


def _verify_errors(ctx: Ctx, reply: Reply) -> None:
    assert reply.json == []


def _verify_ingest(ctx: Ctx, reply: Reply) -> None:
    assert set(reply.json) == {"id"}
    index_caught_up()
    listed = ctx.api.get(ERRORS.format(ctx.project_id), token=ctx.token)
    assert [error["title"] for error in listed.json] == ["StoreFaultProbe: while the store was failing"]


ROUTES = (
    Route(
        "GET user",
        ("GetItem", "GetItem"),  # the token, then its user
        200,
        lambda ctx: ctx.api.get("/api/v4/user", token=ctx.token),
        _verify_user,
    ),
    Route("GET settings", AUTH, 200, lambda ctx: ctx.settings(), _verify_settings),
    Route("PUT settings", (*AUTH, "PutItem"), 200, _put, _verify_put),
    Route("PUT first settings", (*AUTH, "UpdateItem", "TransactWriteItems"), 200, _put_first, _verify_put_first),
    Route("PATCH settings", (*AUTH, "PutItem"), 200, _patch, _verify_patch),
    Route(
        "GET client_keys",
        (*AUTH, "Query"),
        200,
        lambda ctx: ctx.api.get(KEYS.format(ctx.project_id), token=ctx.token),
        _verify_list,
    ),
    Route("POST client_keys", (*AUTH, "UpdateItem", "TransactWriteItems"), 201, _create, _verify_create),
    Route("DELETE client_key", (*AUTH, "TransactWriteItems"), 200, _delete, _verify_delete),
    Route("PATCH client_key", (*AUTH, "TransactWriteItems"), 200, _update_key, _verify_update_key),
    Route(
        "GET errors",
        (*AUTH, "Query"),
        200,
        lambda ctx: ctx.api.get(ERRORS.format(ctx.project_id), token=ctx.token),
        _verify_errors,
    ),
    Route("POST envelope", ("BatchGetItem", "UpdateItem", "TransactWriteItems"), 200, ingest, _verify_ingest),
)


# The authorizer's two reads are the same code on every route: faulted one by one on three routes
# (no preload, the setting's, a client key's); test_every_call_failing_at_once... covers the rest.
AUTH_SAMPLED = ("GET user", "GET settings", "DELETE client_key")
CALLS = [
    (route, operation)
    for route in ROUTES
    for operation in dict.fromkeys(route.operations)
    if operation not in AUTH or route.name in AUTH_SAMPLED
]


def _kinds(route: Route, operation: str) -> tuple[str, ...]:
    if operation != "TransactWriteItems":
        return KINDS
    # A persistent transaction conflict on ingestion is not an outage: see the test for it below.
    return KINDS + ((TX_THROTTLED,) if route.name == "POST envelope" else TRANSACTION_KINDS)


def assert_unavailable(reply: Reply) -> None:
    """A 503 in GitLab's shape, with Retry-After, and nothing else: no trace, no detail."""
    assert (reply.status, reply.json) == (503, UNAVAILABLE), reply.body[:2000]
    assert reply.headers.get("retry-after", "").isdigit(), reply.headers
    assert int(reply.headers["retry-after"]) >= 1
    assert reply.headers["content-type"] == "application/json"


# Every route, every call it makes


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_the_route_table_names_every_call_each_route_makes(ctx: Ctx, route: Route) -> None:
    """The matrix below faults each of these calls; a route making another would escape it."""
    with store_faults(Fault(THROTTLED, frozenset())) as fault:
        reply = route.call(ctx)
    assert reply.status == route.status, reply.body
    assert tuple(fault.calls) == route.operations
    route.verify(ctx, reply)
    assert_consistent()


def _store_call(operation: str, project: models.Project) -> Callable[[], object]:
    """One call of the service's own code that sends ``operation`` first."""
    if operation == "GetItem":
        return lambda: models.fetch([models.Project.key(int(project.project_id))])
    if operation == "BatchGetItem":
        return lambda: models.fetch([models.Project.key(int(project.project_id)), models.Counter.key("client_key")])
    if operation == "Query":
        return lambda: client_keys.list_keys(int(project.project_id))
    if operation == "PutItem":
        return lambda: models.build(models.Counter, models.Counter.key("probe"), value=1).save()
    if operation == "UpdateItem":
        return lambda: models.next_id("probe")
    assert operation == "TransactWriteItems"
    return lambda: client_keys.create_key(project)


@pytest.mark.parametrize(
    "operation", ["GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem", "TransactWriteItems"]
)
def test_every_persistent_store_fault_is_read_as_unavailable(scene: Scene, operation: str) -> None:
    """What the middleware decides on: the exception the service's store call ends with."""
    project = scene.project("acme/shop")
    kinds = KINDS + (TRANSACTION_KINDS if operation == "TransactWriteItems" else ())
    misread = []
    for kind in kinds:
        with store_faults(Fault(kind, frozenset({operation}))), pytest.raises(Exception) as raised:
            _store_call(operation, project)()
        if isinstance(raised.value, errors.ApiError):
            misread.append(f"{kind}: {raised.value.status} {raised.value.body}")
        elif not models.unavailable(raised.value):
            misread.append(f"{kind}: {type(raised.value).__name__}: {raised.value}")
    # (client_keys.create_key answers a persistent conflict itself, with its own 503.)
    misread = [m for m in misread if not m.startswith(f"{TX_CONFLICT}: 503 ")]
    assert misread == [], "\n".join(misread)


@pytest.mark.parametrize(("route", "operation"), [pytest.param(r, op, id=f"{r}-{op}") for r, op in CALLS])
def test_a_persistent_store_fault_answers_503_and_changes_nothing(ctx: Ctx, route: Route, operation: str) -> None:
    before = durable(scan_table())
    problems = []
    for kind in _kinds(route, operation):
        with store_faults(Fault(kind, frozenset({operation}))) as fault:
            reply = route.call(ctx)
        assert fault.injected >= 1, kind
        try:
            assert_unavailable(reply)
        except AssertionError:
            problems.append(f"{kind}: answered {reply.status} {reply.body[:300]!r}")
        # Nothing half done, nothing done at all: no key created, deleted or changed, no setting saved.
        after = scan_table()
        problems += [f"{kind}: {problem}" for problem in consistency_problems(after)]
        if durable(after) != before:
            changed = sorted(k for k in durable(after).keys() | before.keys() if durable(after).get(k) != before.get(k))
            problems.append(f"{kind}: the failed request changed {changed}")
            before = durable(after)
    assert problems == [], "\n".join(problems)
    # Once the store is back, the client's retry gets the normal answer.
    retried = route.call(ctx)
    assert retried.status == route.status, retried.body
    route.verify(ctx, retried)
    assert_consistent()


@pytest.mark.parametrize(
    ("route", "operation", "kind"),
    [
        pytest.param(route, operation, KINDS[i % len(KINDS)], id=f"{route.name}-{operation}-{KINDS[i % len(KINDS)]}")
        for i, (route, operation) in enumerate(CALLS)
    ],
)
def test_a_transient_store_fault_is_absorbed_by_retries(ctx: Ctx, route: Route, operation: str, kind: str) -> None:
    # DynamoDB's client makes four attempts: three failures in a row are still absorbed.
    with store_faults(Fault(kind, frozenset({operation}), times=3)) as fault:
        reply = route.call(ctx)
    assert fault.injected == 3
    assert reply.status == route.status, reply.body
    route.verify(ctx, reply)  # done exactly once
    assert_consistent()


@pytest.mark.parametrize("kind", KINDS)
def test_every_call_failing_at_once_answers_503_on_every_route(ctx: Ctx, kind: str) -> None:
    every = frozenset(op for route in ROUTES for op in route.operations)
    before = durable(scan_table())
    problems = []
    for route in ROUTES:
        with store_faults(Fault(kind, every)):
            reply = route.call(ctx)
        try:
            assert_unavailable(reply)
        except AssertionError:
            problems.append(f"{route}: answered {reply.status} {reply.body[:300]!r}")
    assert problems == [], "\n".join(problems)
    assert durable(assert_consistent()) == before


def test_ingestion_under_persistent_transaction_conflicts_still_takes_the_event(ctx: Ctx) -> None:
    """A hot error whose roll-up keeps losing races: the event is counted, not refused."""
    with store_faults(Fault(TX_CONFLICT, frozenset({"TransactWriteItems"}))) as fault:
        reply = ingest(ctx)
    assert fault.injected >= 1
    assert reply.status == 200, reply.body
    assert set(reply.json) == {"id"}
    assert_consistent()


def test_a_kms_fault_while_saving_a_sentry_token_answers_503_and_stores_nothing(ctx: Ctx) -> None:
    form = {
        "active": "true",
        "integrated": "false",
        "api_host": "https://8.8.8.8",
        "organization_slug": "acme",
        "project_slug": "shop",
        "token": "sntrys_" + uuid.uuid4().hex,
    }
    before = durable(scan_table())
    with store_faults(Fault("kms-throttled", frozenset({"Encrypt"})), client=crypto.kms_client()) as fault:
        reply = ctx.api.put(SETTINGS.format(ctx.project_id), token=ctx.token, form=form)
    assert fault.injected >= 1
    assert_unavailable(reply)
    assert durable(assert_consistent()) == before
    assert _setting_of(ctx.settings()) == ctx.setting
    retried = ctx.api.put(SETTINGS.format(ctx.project_id), token=ctx.token, form=form)
    assert retried.status == 200, retried.body
    assert retried.json["api_url"] == "https://8.8.8.8/api/0/projects/acme/shop/"


# The time budget: a request answers before Lambda's timeout, however slow the store is


def test_a_request_ends_before_the_lambda_timeout_of_every_stage() -> None:
    chalice_config = json.loads((Path(__file__).parent.parent / ".chalice" / "config.json").read_text())
    worst = budget.BUDGET + budget.CONNECT_TIMEOUT + budget.READ_TIMEOUT
    for stage, stage_config in chalice_config["stages"].items():
        timeout = stage_config.get("lambda_timeout", chalice_config["lambda_timeout"])
        assert worst + 1 <= timeout, f"{stage}: {worst} s of store time leaves under 1 s of {timeout} s"
    for client in (dynamodb_client(), crypto.kms_client()):
        botocore_config: Any = client.meta.config
        timeouts = (botocore_config.connect_timeout, botocore_config.read_timeout)
        assert timeouts == (budget.CONNECT_TIMEOUT, budget.READ_TIMEOUT)
        assert botocore_config.retries["total_max_attempts"] == budget.MAX_ATTEMPTS


MakeSlowStore = Callable[..., "SlowStore"]


@dataclass
class SlowStore(Fault):
    """A store whose every attempt takes ``seconds`` of simulated time, faulted or not."""

    seconds: float = 0.0
    now: float = 0.0
    starts: list[float] = field(default_factory=list)  # when each attempt was sent

    def answer(self, operation: str, request: AWSPreparedRequest) -> AWSResponse | None:
        self.starts.append(self.now)
        self.now += self.seconds
        return super().answer(operation, request)


@pytest.fixture
def slow_store(monkeypatch: pytest.MonkeyPatch) -> MakeSlowStore:
    """Simulated time: the budget's clock reads it, attempts and botocore's backoff advance it."""

    def make(kind: str | None, seconds: float, operations: frozenset[str] | None = None) -> SlowStore:
        every = frozenset(op for route in ROUTES for op in route.operations) if kind else frozenset()
        store = SlowStore(kind or THROTTLED, every if operations is None else operations, seconds=seconds)

        def sleep(wait: float) -> None:
            store.now += wait

        monkeypatch.setattr(budget, "clock", lambda: store.now)
        monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=sleep))
        return store

    return make


# How long each faulted attempt takes: a timeout waits its limit out; throttling answers at once,
# here after a slow read, so that botocore's backoff and the attempts both use up the budget.
ATTEMPT_SECONDS = {READ_TIMEOUT: budget.READ_TIMEOUT, CONNECT_TIMEOUT: budget.CONNECT_TIMEOUT, THROTTLED: 2.0}


@pytest.mark.parametrize("kind", list(ATTEMPT_SECONDS))
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_a_failing_store_is_given_up_within_the_budget(
    ctx: Ctx, slow_store: MakeSlowStore, route: Route, kind: str
) -> None:
    """No attempt starts after the budget, no backoff is slept that would end after it, and the 503
    comes within the budget and one more attempt."""
    before = durable(scan_table())
    with store_faults(slow_store(kind, ATTEMPT_SECONDS[kind])) as store:
        reply = route.call(ctx)
    assert_unavailable(reply)
    assert max(store.starts) < budget.BUDGET, store.starts
    assert store.now <= budget.BUDGET + budget.CONNECT_TIMEOUT + budget.READ_TIMEOUT
    if kind == READ_TIMEOUT:  # nor did it give up early: the attempts filled the budget
        assert len(store.starts) == 3, store.starts
    assert durable(assert_consistent()) == before


def test_a_hanging_kms_is_given_up_within_the_budget(ctx: Ctx, slow_store: MakeSlowStore) -> None:
    kms = crypto.kms_client()
    budget.install_retries(kms)  # a full retry quota, whatever earlier tests spent
    form = {"active": "true", "integrated": "false", "api_host": "https://8.8.8.8", "token": "sntrys_slow"}
    form |= {"organization_slug": "acme", "project_slug": "shop"}
    before = durable(scan_table())
    with store_faults(slow_store(READ_TIMEOUT, budget.READ_TIMEOUT, frozenset({"Encrypt"})), client=kms) as store:
        reply = ctx.api.put(SETTINGS.format(ctx.project_id), token=ctx.token, form=form)
    assert_unavailable(reply)
    assert store.calls == ["Encrypt"] * 3 and max(store.starts) < budget.BUDGET, store.starts
    assert durable(assert_consistent()) == before


def test_installing_the_retry_policy_again_replaces_it() -> None:
    """The test fixtures install it for every test: nothing may pile up on the shared client."""
    client = dynamodb_client()
    emitter = client.meta.events._emitter  # botocore's own registry (no public way to count)

    def handlers() -> dict[str, int]:
        events = ("after-call", "needs-retry", "request-created", "before-call")
        return {event: len(list(emitter._handlers.prefix_search(f"{event}.dynamodb.GetItem"))) for event in events}

    before = handlers()
    for _ in range(3):
        budget.install_retries(client)
        models.connection()  # instruments the client, if it were new
    assert handlers() == before


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_a_slow_store_is_waited_for_until_the_budget_and_leaves_nothing_half_done(
    ctx: Ctx, slow_store: MakeSlowStore, route: Route
) -> None:
    """Each answer takes 2.5 s: routes of up to three calls still answer; longer ones get a 503
    instead of the call that would start after the budget, and whatever they wrote is whole."""
    with store_faults(slow_store(None, 2.5)) as store:
        reply = route.call(ctx)
    if len(route.operations) <= 3:
        assert reply.status == route.status, reply.body
        route.verify(ctx, reply)
    else:
        assert_unavailable(reply)
    assert max(store.starts) < budget.BUDGET, store.starts
    assert_consistent()


# Many writes, each with a fault, and what the API says afterwards


@dataclass
class Model:
    """What the API's successful answers said: the keys (id -> active) and the setting."""

    keys: dict[int, bool]
    setting: dict[str, Any]


def _observe(ctx: Ctx) -> tuple[dict[int, bool], dict[str, Any]]:
    return {key["id"]: key["active"] for key in ctx.list_keys()}, _setting_of(ctx.settings())


@pytest.mark.parametrize("seed", range(2))
def test_a_run_of_faulted_writes_leaves_the_store_as_the_answers_said(ctx: Ctx, seed: int) -> None:
    rng = random.Random(seed)
    model = Model(*_observe(ctx))
    wrong: list[str] = []
    for _step in range(20):
        action = rng.choice(["create", "delete", "toggle", "put", "patch"])
        kind = rng.choice((*KINDS, TX_THROTTLED))
        operations = frozenset(rng.sample(WRITES, rng.randint(1, len(WRITES))))
        if kind == TX_THROTTLED:  # only a transaction is cancelled
            operations = frozenset({"TransactWriteItems"})
        times = rng.choice([None, None, 1, 2, 3])
        key_id = rng.choice(sorted(model.keys)) if model.keys else None
        if key_id is None and action in ("delete", "toggle"):
            action = "create"
        with store_faults(Fault(kind, operations, times=times)):
            if action == "create":
                reply = ctx.api.post(KEYS.format(ctx.project_id), token=ctx.token)
            elif action == "delete":
                reply = ctx.api.delete(KEY.format(ctx.project_id, key_id), token=ctx.token)
            elif action == "toggle":
                assert key_id is not None
                active = "false" if model.keys[key_id] else "true"
                reply = ctx.api.patch(KEY.format(ctx.project_id, key_id), token=ctx.token, form={"active": active})
            elif action == "patch":
                active = rng.choice(["true", "false"])
                reply = ctx.api.patch(SETTINGS.format(ctx.project_id), token=ctx.token, form={"active": active})
            else:
                form = {"active": rng.choice(["true", "false"]), "integrated": "true"}
                reply = ctx.api.put(SETTINGS.format(ctx.project_id), token=ctx.token, form=form)
        step = f"step {_step}: {action} key={key_id} under {kind} on {sorted(operations)} times={times}"
        if reply.status not in (200, 201):
            try:
                assert_unavailable(reply)
            except AssertionError:
                wrong.append(f"{step}: answered {reply.status} {reply.body[:300]!r}")
            # Refused: what the answer said is what is stored, as before (a 500 is checked the same way).
        elif action == "create":
            model.keys[reply.json["id"]] = True
        elif action == "delete":
            assert key_id is not None
            del model.keys[key_id]
        elif action == "toggle":
            assert key_id is not None
            model.keys[key_id] = reply.json["active"]
        else:
            model.setting = reply.json
        keys, setting = _observe(ctx)
        if reply.status == 200 and action in ("put", "patch"):
            # A save that leaves the setting active and integrated with no active key adds one.
            added = set(keys) - set(model.keys)
            if model.setting["active"] and model.setting["integrated"] and not any(model.keys.values()):
                assert len(added) == 1, step
                model.keys[added.pop()] = True
        assert (keys, setting) == (model.keys, model.setting), step
        assert consistency_problems(scan_table()) == [], step
    assert wrong == [], "\n".join(wrong)
