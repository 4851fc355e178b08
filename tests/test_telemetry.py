"""One JSON log line per request: what an operator reads, and what it must never hold."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Api, Scene
from tests.wire import SETTING_NOT_FOUND, UNAUTHORIZED

SETTINGS = "/api/v4/projects/1/error_tracking/settings"
KEYS = "/api/v4/projects/1/error_tracking/client_keys"


def _lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_one_line_per_request_with_route_status_calls_and_user(
    api: Api, scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    project = scene.project("acme/shop")
    token = scene.maintainer(project)
    user_id = 1
    capsys.readouterr()
    reply = api.get(SETTINGS, token=token)
    assert (reply.status, reply.json) == (404, SETTING_NOT_FOUND)
    reply = api.get(SETTINGS, token="glpat-not-a-token")
    assert (reply.status, reply.json) == (401, UNAUTHORIZED)
    lines = _lines(capsys.readouterr().out)
    assert len(lines) == 2
    found, refused = lines
    assert list(found) == ["request_id", "method", "route", "status", "latency_ms", "aws_calls", "user_id"]
    assert found["route"] == "/api/v4/projects/{id}/error_tracking/settings"
    assert (found["method"], found["status"], found["aws_calls"], found["user_id"]) == ("GET", 404, 2, user_id)
    assert (refused["status"], refused["aws_calls"], refused["user_id"]) == (401, 1, None)
    assert isinstance(found["latency_ms"], float)


def test_no_secret_reaches_the_log(api: Api, scene: Scene, capfd: pytest.CaptureFixture[str]) -> None:
    project = scene.project("acme/shop")
    token = scene.maintainer(project)
    capfd.readouterr()
    saved = api.put(
        SETTINGS,
        token=token,
        form={
            "active": "true",
            "integrated": "false",
            "api_host": "https://8.8.8.8",
            "organization_slug": "o",
            "project_slug": "p",
            "token": "sntrys_do_not_log_me",
        },
    )
    # Refused, the Sentry token would never reach the code that encrypts and stores it, whose
    # logging is what this test scans.
    assert (saved.status, saved.json) == (
        200,
        {
            "active": True,
            "project_name": "P",
            "sentry_external_url": "https://8.8.8.8/o/p/",
            "api_url": "https://8.8.8.8/api/0/projects/o/p/",
            "integrated": False,
        },
    )
    created = api.post(KEYS, token=token)
    assert created.status == 201, created.body
    listed = api.get(KEYS, token=token)
    assert (listed.status, listed.json) == (200, [created.json])
    # The token in the query string and in a Bearer header: each must have authenticated the request.
    by_query = api.get(f"{KEYS}?private_token={token}")
    assert (by_query.status, by_query.json) == (200, [created.json])
    me = api.get("/api/v4/user", headers={"Authorization": f"Bearer {token}"})
    assert (me.status, me.json["username"]) == (200, "maintainer")
    out, err = capfd.readouterr()
    # Every request was logged where this test looks, or finding no secret there would prove nothing.
    assert [(line["method"], line["status"]) for line in _lines(out)] == [
        ("PUT", 200),
        ("POST", 201),
        ("GET", 200),
        ("GET", 200),
        ("GET", 200),
    ]
    for secret in [token, "sntrys_do_not_log_me", created.json["public_key"]]:
        assert secret not in out
        assert secret not in err


def test_every_route_declares_who_may_call_it() -> None:
    from app import app
    from chalicelib.authorizer import undeclared_routes

    assert list(app.routes), "no routes?"
    assert undeclared_routes(app) == []


def test_a_route_without_a_declaration_is_refused(api: Api, scene: Scene) -> None:
    from app import app

    @app.route("/api/v4/undeclared-for-test", methods=["GET"])
    def undeclared() -> dict[str, str]:
        return {"secret": "data"}

    try:
        token = scene.token(scene.user("someone").username)
        reply = api.get("/api/v4/undeclared-for-test", token=token)
        assert reply.status == 403 and reply.json == {"message": "403 Forbidden"}
    finally:
        del app.routes["/api/v4/undeclared-for-test"]
