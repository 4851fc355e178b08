"""The number of AWS calls each endpoint makes is part of its contract: exact, so asserted here."""

from __future__ import annotations

import pytest

from tests.conftest import Api, Scene

SETTINGS = "/api/v4/projects/{}/error_tracking/settings"
KEYS = "/api/v4/projects/{}/error_tracking/client_keys"


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
