"""What moto forgives and DynamoDB does not, each as a caller would meet it.

The suite runs on the strict layer (scripts/strict_store.py). Each test here failed before the fix it
names, on the strict layer, where plain moto let it pass: an oversized key is a ValidationException
on every DynamoDB operation (moto checks writes only), BatchGetItem may leave keys unprocessed (moto
never does), and indexes show a write a moment after it (moto's at once).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib import budget, models
from scripts.strict_store import StrictStore
from tests.conftest import Api, Scene
from tests.table import raw_items
from tests.test_api_auth import (
    ERROR,
    EVENTS,
    KEY,
    PROJECT_ROUTES,
    SETTING_ON,
    UPDATE_ERROR,
    Route,
    route_params,
)
from tests.wire import (
    ERROR_NOT_FOUND,
    KEY_NOT_FOUND,
    PROJECT_NOT_FOUND,
    UNAUTHORIZED,
    UNAVAILABLE,
    UNKNOWN_KEY,
)

# Past DynamoDB's 2,048 bytes for a partition key once prefixed; still a well-formed path.
LONG_PATH = "acme%2F" + "a" * 3000
NEVER_ISSUED = "glpat-" + "Zq3" * 10


def _tracking_errors(api: Api, scene: Scene) -> tuple[Any, str]:
    """Project "acme/shop" with integrated error tracking on (and so its first key), and its
    maintainer's token."""
    project = scene.project("acme/shop")
    token = scene.maintainer(project)
    path = f"/api/v4/projects/{project.project_id}/error_tracking/settings"
    assert api.put(path, token=token, json_body={"active": True, "integrated": True}).status == 200
    return project, token


def _call(api: Api, route: Route, ref: str | int, token: str, *, key_id: Any = 1, error_id: Any = 1) -> Any:
    reply = api.call(
        route.method,
        route.template.format(id=ref, key_id=key_id, error_id=error_id, hook_id=1, trigger="error_tracking_events"),
        token=token,
        json_body=route.body,
    )
    return reply.status, reply.json


@pytest.mark.parametrize("route", route_params(PROJECT_ROUTES))
def test_an_over_long_project_path_is_401_for_a_bad_token_and_404_for_a_good_one(
    api: Api, scene: Scene, route: Route
) -> None:
    """Was a 500 for anyone on the internet: the path's claim went into the token's BatchGetItem."""
    project = scene.project("acme/shop")
    token = scene.maintainer(project)
    assert _call(api, route, LONG_PATH, NEVER_ISSUED) == (401, UNAUTHORIZED)
    assert _call(api, route, LONG_PATH, token) == (404, PROJECT_NOT_FOUND)


@pytest.mark.parametrize(
    ("route", "name", "answer"),
    [
        (Route("delete-client-key", "DELETE", KEY, None), "key_id", KEY_NOT_FOUND),
        (Route("patch-client-key", "PATCH", KEY, {"name": "x"}), "key_id", KEY_NOT_FOUND),
        (Route("get-error", "GET", ERROR, None), "error_id", ERROR_NOT_FOUND),
        (Route("list-error-events", "GET", EVENTS, None), "error_id", ERROR_NOT_FOUND),
        (UPDATE_ERROR, "error_id", ERROR_NOT_FOUND),
    ],
    ids=lambda v: v.name if isinstance(v, Route) else str(v) if isinstance(v, str) else "",
)
def test_an_over_long_key_or_error_id_is_not_found(
    api: Api, scene: Scene, route: Route, name: str, answer: dict[str, str]
) -> None:
    project, token = _tracking_errors(api, scene)
    assert _call(api, route, int(project.project_id), token, **{name: "9" * 3000}) == (404, answer)


@pytest.mark.parametrize("endpoint", ["envelope", "store"])
def test_an_over_long_sentry_key_is_403_unknown_client_key(api: Api, scene: Scene, endpoint: str) -> None:
    """Was a 500: the key's claim went into the ingestion's BatchGetItem. DSNs are public, so anyone
    could keep the 5xx alarm firing."""
    project, _ = _tracking_errors(api, scene)
    before = raw_items()
    event = json.dumps({"message": "from a forged key"}).encode()
    body = b"{}\n" + json.dumps({"type": "event"}).encode() + b"\n" + event if endpoint == "envelope" else event
    reply = api.post(
        f"/errortracking/api/v1/projects/api/{project.project_id}/{endpoint}/",
        headers={"X-Sentry-Auth": f"Sentry sentry_key={'a' * 3000}, sentry_version=7"},
        body=body,
    )
    assert (reply.status, reply.json) == (403, UNKNOWN_KEY)
    assert raw_items() == before


def test_keys_left_unprocessed_are_asked_for_again(
    api: Api, scene: Scene, strict: StrictStore, aws_calls: list[tuple[str, str]]
) -> None:
    """DynamoDB may answer a BatchGetItem with some keys unprocessed: half the keys of every batch
    are left here, and every answer is still whole."""
    project, token = _tracking_errors(api, scene)
    path = f"/api/v4/projects/{project.project_id}/error_tracking/settings"
    strict.unprocessed_rate = 0.5
    aws_calls.clear()
    answers = [api.get(path, token=token) for _ in range(20)]
    assert [(r.status, r.json) for r in answers] == [(200, SETTING_ON)] * 20
    # One BatchGetItem per request when everything comes back at once; these asked again.
    assert aws_calls.count(("dynamodb", "BatchGetItem")) > 20
    keys = api.get(f"/api/v4/projects/{project.project_id}/error_tracking/client_keys", token=token)
    assert keys.status == 200 and len(keys.json) == 1, keys.body


def test_a_key_just_created_is_listed_at_once(api: Api, scene: Scene, strict: StrictStore) -> None:
    """The list of client keys is read from the table, not from an index that lags."""
    project = scene.project("acme/shop")
    token = scene.maintainer(project)
    keys = f"/api/v4/projects/{project.project_id}/error_tracking/client_keys"
    created = [api.post(keys, token=token).json["id"] for _ in range(3)]
    assert [key["id"] for key in api.get(keys, token=token).json] == created
    api.delete(f"{keys}/{created[1]}", token=token)
    assert [key["id"] for key in api.get(keys, token=token).json] == [created[0], created[2]]


def test_keys_never_processed_end_in_503_after_spaced_tries(
    api: Api, scene: Scene, strict: StrictStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PynamoDB's batch read asked again at once, in a loop with no end, while DynamoDB was saying
    it had no room: now each try waits a jittered backoff, and a read that never completes is a 503
    within the request's budget."""
    project, token = _tracking_errors(api, scene)
    path = f"/api/v4/projects/{project.project_id}/error_tracking/settings"
    waits: list[float] = []
    monkeypatch.setattr("chalicelib.budget.time.sleep", waits.append)
    strict.unprocessed_rate = 1.0
    reply = api.get(path, token=token)
    assert (reply.status, reply.json) == (503, UNAVAILABLE)
    assert len(waits) == models.BATCH_GET_ATTEMPTS - 1
    assert all(0 <= wait <= budget.BACKOFF_CAP for wait in waits)
