"""The local server `make run` serves with (scripts/local_server.py's request handler on `chalice
local`), in this process on the moto store, spoken to over a raw socket: what it answers itself,
before any route runs, must be what the deployed API answers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib import errors
from tests.apigateway import Gateway
from tests.conftest import PROJECT_DIR, Scene
from tests.ingest.test_e2e_transport import Answer, Connection, request_head
from tests.wire import (
    CORS_EXPOSED_HEADERS,
    CORS_REQUEST_HEADERS,
    GATEWAY_METHODS,
    ROUTE_NOT_FOUND,
    UNROUTED_PATHS,
    cors_list,
)

# Methods no handler of the server has, the standard library's (501) until now.
UNKNOWN_METHODS = ["TRACE", "CONNECT", "QUERY", "PROPFIND", "MKCOL", "LOCK", "BREW"]


@dataclass
class Local:
    port: int

    def connect(self) -> Connection:
        return Connection(self)  # type: ignore[arg-type]  # it reads .port only

    def send(self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Answer:
        connection = self.connect()
        try:
            sent = {**(headers or {}), **({"Content-Length": str(len(body))} if body else {})}
            connection.send(request_head(method, target, sent) + body)
            return connection.answer(to_head=method == "HEAD")
        finally:
            connection.close()


@pytest.fixture
def local(store: None) -> Iterator[Local]:
    from chalice.config import Config

    from app import app
    from scripts import local_server

    app_class = app.__class__  # chalice local makes the app's request thread-local by changing its class
    server = local_server.create_server(
        app, Config.create(chalice_stage="dev", project_dir=PROJECT_DIR), "127.0.0.1", 0
    )
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Local(server.server.server_address[1])
    finally:
        server.shutdown()
        server.server.server_close()
        thread.join(timeout=10)
        app.__class__ = app_class


def gitlab_headers(answer: Answer) -> dict[str, str]:
    """The headers a client reads of an error answer (not the server's Date, Server, framing)."""
    return {k: v for k, v in answer.headers.items() if k == "content-type" or k.startswith("access-control-")}


def assert_route_not_found(answer: Answer, method: str, target: str) -> None:
    expected = errors.route_not_found()
    assert answer.status == 404, (method, target, answer)
    if method != "HEAD":
        assert answer.json == ROUTE_NOT_FOUND, (method, target, answer.body)
    assert gitlab_headers(answer) == {"content-type": "application/json", "access-control-allow-origin": "*"}
    assert gitlab_headers(answer) == {k.lower(): v for k, v in expected.to_response().headers.items()}


def test_a_path_no_route_has_gets_gitlabs_404_whatever_the_method(local: Local) -> None:
    connection = local.connect()
    try:
        for path in UNROUTED_PATHS:
            for method in GATEWAY_METHODS:
                # A token changes nothing (chalice local answered a different 403 to an Authorization header).
                for headers in ({}, {"PRIVATE-TOKEN": "glpat-x"}, {"Authorization": "Bearer glpat-x"}):
                    connection.send(request_head(method, path, headers))
                    assert_route_not_found(connection.answer(to_head=method == "HEAD"), method, path)
        # Each answered on the same kept-alive connection, which still serves the next request.
        connection.send(request_head("GET", "/api/v4/user", {}))
        assert connection.answer().status == 401
    finally:
        connection.close()


@pytest.mark.parametrize("method", UNKNOWN_METHODS)
def test_a_method_the_server_has_no_handler_for_gets_the_same_404(local: Local, method: str) -> None:
    for target in ("/api/v4/user", "/api/v4/projects/1/error_tracking/settings", "/api/v4/nope", "*"):
        connection = local.connect()
        try:
            connection.send(request_head(method, target, {"Content-Length": "5"}) + b"hello")
            answer = connection.answer()
            assert_route_not_found(answer, method, target)
            # Its body was not read, so the connection cannot carry another request.
            assert answer.headers.get("connection") == "close"
            assert connection.closed_by_server()
        finally:
            connection.close()


def test_the_local_server_and_the_deployed_gateway_answer_unrouted_requests_alike(
    local: Local, packaged: Callable[[str], dict[str, Any]]
) -> None:
    gateway = Gateway.of(packaged("dev"))
    for path in UNROUTED_PATHS:
        for method in GATEWAY_METHODS:
            deployed = gateway.request(method, gateway.url + path)
            here = local.send(method, path)
            assert (here.status, gitlab_headers(here)) == (deployed.status, deployed.headers), (method, path)
            assert (here.json if here.body else None) == (deployed.json if deployed.body else None), (method, path)


def test_a_page_on_another_origin_may_call_the_api_with_a_token(local: Local, scene: Scene) -> None:
    project = scene.project("acme/shop")
    token = scene.maintainer(project)
    settings = f"/api/v4/projects/{project.project_id}/error_tracking/settings"
    origin = {"Origin": "https://dashboard.example"}
    preflight = local.send(
        "OPTIONS",
        settings,
        {
            **origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "private-token,content-type",
        },
    )
    assert preflight.status == 200, preflight
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert cors_list(preflight.headers, "access-control-allow-methods") >= {"get", "put", "patch"}
    assert cors_list(preflight.headers, "access-control-allow-headers") >= CORS_REQUEST_HEADERS
    body = b"active=true&integrated=true"
    saved = local.send(
        "PUT", settings, {**origin, "PRIVATE-TOKEN": token, "Content-Type": "application/x-www-form-urlencoded"}, body
    )
    keys = local.send(
        "GET", f"/api/v4/projects/{project.project_id}/error_tracking/client_keys", {**origin, "PRIVATE-TOKEN": token}
    )
    refused = local.send("GET", settings, origin)
    for answer, status in ((saved, 200), (keys, 200), (refused, 401)):
        assert answer.status == status, answer
        assert answer.headers["access-control-allow-origin"] == "*", answer.headers
        assert cors_list(answer.headers, "access-control-expose-headers") >= CORS_EXPOSED_HEADERS
    for answer in (preflight, saved, keys, refused):
        assert "access-control-allow-credentials" not in answer.headers, answer.headers
    assert len(keys.json) == 1 and keys.headers["x-total"] == "1"
