"""The DSN host on AWS: a Lambda Function URL (payload format 2.0) in front of the same ingestion.

Events here are shaped as Lambda's documentation shows a Function URL request ("Invoking Lambda
function URLs", request payload): lowercase headers, a raw query string, the body base64 whenever
its type is not text. Each test sends what an SDK sends and reads the result back through the
REST API, as a person would.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest

import app as app_module
from chalicelib import config
from tests.ingest.test_api_errors import Ctx, ctx, envelope, exception_event

__all__ = ["ctx"]  # the ingestion tests' project, its maintainer and its key

TEXT_TYPES = ("text/", "application/json")  # what Lambda hands over as text; the rest base64


def url_event(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, query: str = ""
) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    text = headers.get("content-type", "").startswith(TEXT_TYPES) and "content-encoding" not in headers
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"host": "abc123.lambda-url.us-east-1.on.aws", "user-agent": "sentry.python/2.19.0", **headers},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abc123",
            "domainName": "abc123.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "sentry.python/2.19.0",
            },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "02/Dec/2026:12:00:00 +0000",
            "timeEpoch": 1796212800000,
        },
        "body": body.decode() if text else base64.b64encode(body).decode(),
        "isBase64Encoded": not text,
    }


def call(event: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = app_module.ingest_handler(event, None)
    return answer


def ingest_path(ctx: Ctx, kind: str = "envelope") -> str:
    return f"/errortracking/api/v1/projects/api/{ctx.project_id}/{kind}/"


def test_a_gzip_envelope_posted_to_the_url_is_stored_and_listed(ctx: Ctx) -> None:
    event = exception_event("KeyError", "boom")
    answer = call(
        url_event(
            "POST",
            ingest_path(ctx),
            gzip.compress(envelope(event)),
            {
                "Content-Type": "application/x-sentry-envelope",
                "Content-Encoding": "gzip",
                "X-Sentry-Auth": f"Sentry sentry_key={ctx.public_key}, sentry_version=7",
            },
        )
    )
    assert (answer["statusCode"], json.loads(answer["body"])) == (200, {"id": event["event_id"]})
    assert answer["isBase64Encoded"] is False
    assert answer["headers"]["Access-Control-Allow-Origin"] == "*"  # browsers read the answer
    (listed,) = ctx.ok_list()
    assert (listed["title"], listed["count"]) == ("KeyError: boom", 1)


def test_a_browser_sdks_text_body_with_the_key_in_the_query_is_stored(ctx: Ctx) -> None:
    event = exception_event("TypeError", "boom")
    answer = call(
        url_event(
            "POST",
            ingest_path(ctx).rstrip("/"),  # with or without the trailing slash, as API Gateway matches
            envelope(event),
            {"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://shop.example"},
            query=f"sentry_key={ctx.public_key}&sentry_version=7&sentry_client=sentry.javascript.browser%2F8.0.0",
        )
    )
    assert answer["statusCode"] == 200, answer
    assert ctx.titles() == ["TypeError: boom"]


def test_the_legacy_store_endpoint_takes_a_json_event(ctx: Ctx) -> None:
    event = exception_event("ValueError", "boom")
    answer = call(
        url_event(
            "POST",
            ingest_path(ctx, "store"),
            json.dumps(event).encode(),
            {"Content-Type": "application/json", "X-Sentry-Auth": f"Sentry sentry_key={ctx.public_key}"},
        )
    )
    assert answer["statusCode"] == 200, answer
    assert ctx.titles() == ["ValueError: boom"]


def test_an_unknown_key_is_refused_as_behind_api_gateway(ctx: Ctx) -> None:
    body = envelope(exception_event())
    headers = {"Content-Type": "application/x-sentry-envelope", "X-Sentry-Auth": "Sentry sentry_key=glet_" + "0" * 32}
    through_url = call(url_event("POST", ingest_path(ctx), body, headers))
    through_rest = ctx.api.call("POST", ingest_path(ctx), headers=headers, body=body, token="")
    assert through_url["statusCode"] == through_rest.status == 403
    assert json.loads(through_url["body"]) == through_rest.json


def test_the_url_serves_only_ingestion(ctx: Ctx) -> None:
    """A token route through the DSN host is a missing route: 404, as API Gateway answers one."""
    token = {"PRIVATE-TOKEN": str(ctx.api.token)}
    for method, path in (
        ("GET", f"/api/v4/projects/{ctx.project_id}/error_tracking/settings"),
        ("GET", f"/api/v4/projects/{ctx.project_id}/error_tracking/client_keys"),
        ("GET", ingest_path(ctx)),
        ("PUT", ingest_path(ctx)),
        ("POST", "/errortracking/api/v1/projects/api/1/envelope/extra"),
    ):
        answer = call(url_event(method, path, b"", token))
        assert answer["statusCode"] == 404, (method, path)
        assert json.loads(answer["body"]) == {"error": "404 Not Found"}, (method, path)


def test_a_browser_preflight_is_answered_as_the_rest_api_answers_it(packaged: Callable[[str], dict[str, Any]]) -> None:
    """API Gateway answers Chalice's preflights itself, from the template (a mock integration);
    the URL answers with the same headers."""
    headers = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    answer = call(url_event("OPTIONS", "/errortracking/api/v1/projects/api/1/envelope/", b"", headers))
    paths = packaged("prod")["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"]
    for kind in ("envelope", "store"):
        mock = paths[f"{app_module.INGEST}/{kind}"]["options"]["x-amazon-apigateway-integration"]
        deployed = {
            name.removeprefix("method.response.header."): value.strip("'")
            for name, value in mock["responses"]["default"]["responseParameters"].items()
        }
        assert answer["statusCode"] == 200
        assert {k: v for k, v in answer["headers"].items() if k.startswith("Access-Control-")} == deployed, kind
    assert "X-Sentry-Auth" in answer["headers"]["Access-Control-Allow-Headers"]


def test_dsns_lead_to_the_ingest_url_and_links_stay_on_the_api(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERRORTRACKING_INGEST_URL", "https://abc123.lambda-url.us-east-1.on.aws/")
    config.get_config.cache_clear()
    reply = ctx.api.get(f"/api/v4/projects/{ctx.project_id}/error_tracking/client_keys?per_page=1")
    (key,) = reply.json
    assert key["sentry_dsn"] == (
        f"https://{ctx.public_key}@abc123.lambda-url.us-east-1.on.aws/errortracking/api/v1/projects/{ctx.project_id}"
    )
    assert "lambda-url" not in reply.headers.get("link", "")
