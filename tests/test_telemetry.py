"""One JSON log line per request: what an operator reads, and what it must never hold."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Api, Scene


def _lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_one_line_per_request_with_route_status_calls_and_user(
    api: Api, scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    project = scene.project("acme/shop")
    token = scene.maintainer(project)
    user_id = 1
    capsys.readouterr()
    api.get("/api/v4/projects/1/error_tracking/settings", token=token)
    api.get("/api/v4/projects/1/error_tracking/settings", token="glpat-not-a-token")
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
    api.put(
        "/api/v4/projects/1/error_tracking/settings",
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
    api.post("/api/v4/projects/1/error_tracking/client_keys", token=token)
    keys = api.get("/api/v4/projects/1/error_tracking/client_keys", token=token).json
    assert len(keys) == 1
    api.get(f"/api/v4/projects/1/error_tracking/client_keys?private_token={token}")
    api.get("/api/v4/user", headers={"Authorization": f"Bearer {token}"})
    out, err = capfd.readouterr()
    for secret in [token, "sntrys_do_not_log_me", *(k["public_key"] for k in keys)]:
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
