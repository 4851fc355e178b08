"""The DSN host's own entry point on AWS: a Lambda Function URL in front of the same ingestion routes.

API Gateway's REST API bills $3.50 a million requests, more than everything else an event costs
(``make bench``'s bill); a Function URL bills nothing per request. So on AWS the DSNs lead to a
Function URL of a second function built from the same bundle (``scripts/package.py`` adds it), and
this module turns its requests (Lambda's payload format 2.0) into the REST API's (format 1.0) for
the Chalice app, and the app's answer back. The app answers exactly as behind API Gateway:
the same routes, middleware, limits and bodies.

Only the two ingestion routes are served here; any other path gets the REST API's own 404. A
CORS preflight is answered here as API Gateway answers Chalice's routes (their OPTIONS never
reach the app there either). Only the DSN's routes live on this host, so the API's token routes
cannot be reached through it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from chalicelib import errors

INGEST_ROUTE = "/errortracking/api/v1/projects/api/{project_id}"
# A Sentry SDK posts to <DSN path>/api/<project id>/envelope/ (or /store/), with the trailing slash;
# API Gateway matches its resources with or without one, and so does this.
_INGEST_PATH = re.compile(r"\A/errortracking/api/v1/projects/api/(?P<project_id>[^/]+)/(?P<kind>envelope|store)/?\Z")


def _answer(status: int, body: str, headers: dict[str, str]) -> dict[str, Any]:
    return {"statusCode": status, "headers": headers, "body": body, "isBase64Encoded": False}


def _rest_event(event: dict[str, Any], resource: str, project_id: str) -> dict[str, Any]:
    """Payload format 2.0 as the REST API's 1.0, with what Chalice reads of it."""
    http = event.get("requestContext", {}).get("http", {})
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    query = parse_qs(event.get("rawQueryString") or "", keep_blank_values=True)
    context = event.get("requestContext", {})
    return {
        "resource": resource,
        "path": event.get("rawPath", ""),
        "httpMethod": http.get("method", ""),
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"project_id": unquote(project_id)},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": http.get("method", ""),
            "path": event.get("rawPath", ""),
            "requestId": context.get("requestId"),
            "domainName": context.get("domainName"),
            "stage": "$default",
            "identity": {"sourceIp": http.get("sourceIp"), "userAgent": http.get("userAgent")},
        },
        "body": event.get("body"),
        "isBase64Encoded": bool(event.get("isBase64Encoded")),
    }


def _url_answer(response: dict[str, Any]) -> dict[str, Any]:
    """Format 1.0's answer as 2.0's: one header value each (a repeated header joined, as HTTP allows)."""
    headers = dict(response.get("headers") or {})
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[name] = ", ".join(str(value) for value in values)
    return {
        "statusCode": response.get("statusCode", 500),
        "headers": headers,
        "body": response.get("body") or "",
        "isBase64Encoded": bool(response.get("isBase64Encoded")),
    }


def handle(
    app: Callable[[dict[str, Any], Any], dict[str, Any]],
    event: dict[str, Any],
    context: Any,
    preflight_headers: dict[str, str],
) -> dict[str, Any]:
    """Serve one Function URL request with ``app``; ``preflight_headers``: the CORS headers of the
    ingestion routes (app.py's SENTRY_CORS), for an OPTIONS request."""
    method = str(event.get("requestContext", {}).get("http", {}).get("method", "")).upper()
    found = _INGEST_PATH.match(str(event.get("rawPath", "")))
    if found is None or method not in ("POST", "OPTIONS"):
        missing = errors.route_not_found()  # the body and headers the REST API's gateway answers with
        return _answer(missing.status, json.dumps(missing.body), {**errors.JSON_HEADERS, **missing.headers})
    if method == "OPTIONS":
        return _answer(200, "", {**preflight_headers, "Access-Control-Allow-Methods": "POST,OPTIONS"})
    resource = f"{INGEST_ROUTE}/{found['kind']}"
    return _url_answer(app(_rest_event(event, resource, found["project_id"]), context))
