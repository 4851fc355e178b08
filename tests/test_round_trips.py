"""The number of AWS calls each endpoint makes is part of its contract: exact, so asserted here."""

from __future__ import annotations

import json

import pytest

from chalicelib.ingest import tracked_errors
from tests.conftest import Api, Reply, Scene, index_caught_up

SETTINGS = "/api/v4/projects/{}/error_tracking/settings"
KEYS = "/api/v4/projects/{}/error_tracking/client_keys"
ERRORS = "/api/v4/projects/1/error_tracking/errors"


@pytest.fixture
def ready(api: Api, scene: Scene) -> tuple[Api, int]:
    project = scene.project("acme/shop")
    api.token = scene.maintainer(project)
    # A setting and a key already exist: the steady state every count below describes.
    assert api.put(SETTINGS.format(1), form={"active": "true", "integrated": "true"}).status == 200
    return api, int(project.project_id)


@pytest.mark.parametrize("ref", ["1", "acme%2Fshop"])
@pytest.mark.parametrize(
    ("method", "path", "form", "expected"),
    [
        ("GET", SETTINGS, None, 2),
        ("PUT", SETTINGS, {"active": "true", "integrated": "true"}, 3),
        ("PATCH", SETTINGS, {"active": "false"}, 3),
        ("GET", KEYS, None, 3),
        ("POST", KEYS, None, 4),
        ("DELETE", KEYS + "/1", None, 3),
        ("GET", "/api/v4/user", None, 2),
        ("GET", "/api/v4/version", None, 2),
    ],
)
def test_round_trips_per_endpoint(
    ready: tuple[Api, int],
    aws_calls: list[tuple[str, str]],
    ref: str,
    method: str,
    path: str,
    form: dict[str, str] | None,
    expected: int,
) -> None:
    api, _ = ready
    reply = api.call(method, path.format(ref), form=form)
    assert reply.status < 300, reply.body
    # A path id is resolved in the same BatchGetItem as the token: it costs nothing extra.
    assert len(aws_calls) == expected, aws_calls
    assert all(service == "dynamodb" for service, _ in aws_calls)
    assert not any(op == "Scan" for _, op in aws_calls)


def test_sentry_token_adds_one_kms_call(ready: tuple[Api, int], aws_calls: list[tuple[str, str]]) -> None:
    api, _ = ready
    reply = api.patch(
        SETTINGS.format(1),
        form={
            "active": "true",
            "api_host": "https://8.8.8.8",
            "organization_slug": "o",
            "project_slug": "p",
            "token": "sntrys_secret",
        },
    )
    assert reply.status == 200, reply.body
    assert aws_calls.count(("kms", "Encrypt")) == 1
    assert len(aws_calls) == 4


def test_first_put_creating_the_automatic_key(api: Api, scene: Scene, aws_calls: list[tuple[str, str]]) -> None:
    project = scene.project("acme/shop")
    api.token = scene.maintainer(project)
    aws_calls.clear()
    assert api.put(SETTINGS.format(1), form={"active": "true", "integrated": "true"}).status == 200
    # token, batch, key id sequence, one transaction (setting + key + public key claim + project).
    assert [op for _, op in aws_calls] == ["GetItem", "BatchGetItem", "UpdateItem", "TransactWriteItems"]


ENVELOPE = "/errortracking/api/v1/projects/api/1/envelope/"


def _envelope(event_id: str, value: str, exc_type: str = "KeyError") -> bytes:
    event = {
        "event_id": event_id,
        "platform": "python",
        "exception": {
            "values": [
                {
                    "type": exc_type,
                    "value": value,
                    "stacktrace": {
                        "frames": [{"function": "handler", "module": "shop.views", "in_app": True, "lineno": 3}]
                    },
                }
            ]
        },
    }
    payload = json.dumps(event).encode()
    header = json.dumps({"type": "event", "length": len(payload)}).encode()
    return json.dumps({"event_id": event_id}).encode() + b"\n" + header + b"\n" + payload + b"\n"


def _ingest(api: Api, public_key: str, event_id: str, exc_type: str = "KeyError") -> Reply:
    return api.call(
        "POST",
        ENVELOPE,
        token="",
        body=_envelope(event_id, "x", exc_type),
        headers={"X-Sentry-Auth": f"Sentry sentry_key={public_key}", "Content-Type": "application/x-sentry-envelope"},
    )


def test_one_ingested_event_is_one_read_and_one_write(ready: tuple[Api, int], aws_calls: list[tuple[str, str]]) -> None:
    api, _ = ready
    public_key = api.get(KEYS.format(1)).json[0]["public_key"]
    aws_calls.clear()
    assert _ingest(api, public_key, "a" * 32).status == 200
    # The key, the setting, the error and one shard in one read; the roll-up in one transaction.
    assert [op for _, op in aws_calls] == ["BatchGetItem", "TransactWriteItems"]


@pytest.mark.parametrize(
    ("method", "path", "form", "expected"),
    [
        ("GET", "/api/v4/projects/{}/error_tracking/errors", None, 3),
        ("GET", "/api/v4/projects/{}/error_tracking/errors?search=keyerror", None, 3),
        ("GET", "/api/v4/projects/{}/error_tracking/errors/{error_id}", None, 3),
        ("GET", "/api/v4/projects/{}/error_tracking/errors/{error_id}/events", None, 3),
        ("PUT", "/api/v4/projects/{}/error_tracking/errors/{error_id}", {"status": "resolved"}, 3),
        ("PATCH", "/api/v4/projects/{}/error_tracking/client_keys/1", {"name": "backend"}, 3),
    ],
)
def test_round_trips_of_the_errors_api(
    ready: tuple[Api, int],
    aws_calls: list[tuple[str, str]],
    method: str,
    path: str,
    form: dict[str, str] | None,
    expected: int,
) -> None:
    api, _ = ready
    public_key = api.get(KEYS.format(1)).json[0]["public_key"]
    assert _ingest(api, public_key, "b" * 32).status == 200
    index_caught_up()
    error_id = api.get("/api/v4/projects/1/error_tracking/errors").json[0]["id"]
    aws_calls.clear()
    reply = api.call(method, path.format(1, error_id=error_id), form=form)
    assert reply.status == 200, reply.body
    assert len(aws_calls) == expected, aws_calls


def test_a_search_reads_a_bounded_number_of_index_pages(
    ready: tuple[Api, int], aws_calls: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB filters after it reads: a search matching nothing would read the whole listing.
    It reads at most SEARCH_PAGES pages, then answers with a cursor that goes on from there."""
    api, _ = ready
    monkeypatch.setattr(tracked_errors, "SEARCH_PAGE_ITEMS", 4)  # 22 errors make 6 pages, the last of 2
    public_key = api.get(KEYS.format(1)).json[0]["public_key"]
    for n in range(22):
        assert _ingest(api, public_key, f"{n:032x}", exc_type=f"Distinct{n}Error").status == 200
    index_caught_up()

    aws_calls.clear()
    first = api.get(ERRORS + "?search=nothing-has-this&limit=3")
    assert first.status == 200, first.body
    assert first.json == []
    assert [op for _, op in aws_calls].count("Query") == tracked_errors.SEARCH_PAGES == 3
    assert "x-next-cursor" in first.headers, first.headers

    aws_calls.clear()
    second = api.get(ERRORS + "?search=nothing-has-this&limit=3&cursor=" + first.headers["x-next-cursor"])
    assert second.status == 200, second.body
    assert second.json == []
    # The last three pages, and the listing is over.
    assert [op for _, op in aws_calls].count("Query") == 3
    assert "x-next-cursor" not in second.headers
    assert "link" not in second.headers
