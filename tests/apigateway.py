"""Requests as the deployed API Gateway REST API hands them to our Lambda, and its answers back.

``chalice local`` and ``chalice.test.Client`` build their own, lenient events. :class:`Gateway`
builds the one API Gateway sends a Lambda proxy integration (payload format 1.0), configured by
the packaged template (binary media types, stage, endpoint type, handler), and invokes the
handler with it. What it follows, from AWS's documentation and captures of real events:

- the body is base64 with ``isBase64Encoded: true`` when the request's media type (parameters
  such as ``;charset=UTF-8`` left out; no Content-Type counts as ``application/json``) matches a
  binary media type exactly, by ``type/*`` or by ``*/*``; any other body is handed over as UTF-8
  text, bytes that are not UTF-8 replaced: the corruption binary media types exist to prevent
  ("Binary media types for REST APIs"; "Request and response data mappings");
- the headers as sent, minus those API Gateway drops (``Content-Length`` is regenerated and never
  reaches the event), plus ``Host``, ``X-Forwarded-*`` and, on an edge-optimized API, CloudFront's;
  each once in ``headers`` and as a list in ``multiValueHeaders`` ("Amazon API Gateway important
  notes", header table);
- on the execute-api host the stage is the path's first segment: ``path`` has it stripped,
  ``requestContext.path`` keeps it; on a custom domain (an empty base path mapping onto the stage,
  as the README sets one up) ``path`` is the whole path; ``path`` and ``pathParameters`` keep their
  percent-encoding; query values are decoded, the last one winning in ``queryStringParameters``,
  both query maps ``None`` without a query ("Input format of a Lambda function for proxy
  integration");
- routing, by the template's paths, ignores a trailing slash; a path or method no route has, and
  a CORS preflight (a mock integration), never reach the Lambda; a path or method no route has is
  answered by the template's MISSING_AUTHENTICATION_TOKEN gateway response ("Gateway response
  types": "including the cases when the client attempts to invoke an unsupported API method or
  resource"), its status, its `gatewayresponse.header.*` values and its application/json template;
- an answer reaches the client as bytes only when the Lambda base64-encoded it and the request's
  first Accept value matches a binary media type; otherwise as the text the Lambda returned.

Not modelled: payload limits (10 MB, 6 MB of event), the other gateway responses, throttling,
CloudFront in front of an edge-optimized API (it refuses methods other than GET, HEAD, OPTIONS, PUT,
PATCH, POST and DELETE with its own 403 before API Gateway sees them: "HTTP 403 status code
(Invalid method)" in CloudFront's developer guide), and what API Gateway answers a path no route
has when the request carries an ``Authorization`` header (reported as a 403 about that header).
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from chalice.local import LambdaContext

from tests.conftest import Reply

# Request headers API Gateway does not pass to a Lambda integration (its header table).
DROPPED_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "content-md5",
        "expect",
        "max-forwards",
        "proxy-authenticate",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "www-authenticate",
    }
)
CLIENT_IP = "203.0.113.7"
EDGE_IP = "198.51.100.20"


class Unrouted(LookupError):
    """API Gateway answers the request itself, no Lambda runs: no route has it (the
    MISSING_AUTHENTICATION_TOKEN gateway response), or a mock integration does (CORS preflights)."""


class NoRoute(Unrouted):
    """No resource has the path, or the resource has no such method."""


def media_type(content_type: str | None) -> str:
    return (content_type or "application/json").split(";", 1)[0].strip().lower()


def is_binary(content_type: str | None, binary_media_types: tuple[str, ...]) -> bool:
    kind = media_type(content_type)
    for pattern in (p.lower() for p in binary_media_types):
        if pattern in ("*/*", kind) or (pattern.endswith("/*") and kind.startswith(pattern[:-1])):
            return True
    return False


def _route(routes: Mapping[str, Any], path: str) -> tuple[str, dict[str, str]] | None:
    """The resource a path is routed to, and its path parameters (still percent-encoded)."""
    segments = [s for s in path.split("/") if s]
    found: list[tuple[int, str, dict[str, str]]] = []
    for resource in routes:
        pattern = [s for s in resource.split("/") if s]
        if len(pattern) != len(segments):
            continue
        params: dict[str, str] = {}
        for expected, actual in zip(pattern, segments, strict=True):
            if expected.startswith("{") and expected.endswith("}"):
                params[expected[1:-1]] = actual
            elif expected != actual:
                break
        else:
            found.append((len(params), resource, params))
    if not found:
        return None
    _, resource, params = min(found, key=lambda f: f[0])  # the most specific route, as API Gateway picks
    return resource, params


@dataclass(frozen=True)
class Gateway:
    """One stage of the deployed REST API, in front of the Lambda handler."""

    binary_media_types: tuple[str, ...]
    stage: str
    edge: bool
    routes: Mapping[str, Mapping[str, str]]  # resource -> method -> integration type
    handler: Callable[[dict[str, Any], Any], dict[str, Any]]
    function_name: str
    memory_mb: int
    timeout_ms: int
    api_id: str = "a1b2c3d4e5"
    region: str = "us-east-1"
    gateway_responses: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # type -> Properties

    @classmethod
    def of(cls, template: dict[str, Any]) -> Gateway:
        """The API a packaged template (sam.json) deploys."""
        resources = template["Resources"]
        api = resources["RestAPI"]["Properties"]
        function = resources["APIHandler"]["Properties"]
        module, _, name = function["Handler"].rpartition(".")
        swagger = api["DefinitionBody"]
        return cls(
            binary_media_types=tuple(swagger["x-amazon-apigateway-binary-media-types"]),
            stage=api["StageName"],
            edge=api["EndpointConfiguration"] == "EDGE",
            routes={
                path: {method.upper(): op["x-amazon-apigateway-integration"]["type"] for method, op in methods.items()}
                for path, methods in swagger["paths"].items()
            },
            handler=getattr(importlib.import_module(module), name),
            function_name="APIHandler",
            memory_mb=int(function["MemorySize"]),
            timeout_ms=int(function["Timeout"]) * 1000,
            gateway_responses={
                resource["Properties"]["ResponseType"]: resource["Properties"]
                for resource in resources.values()
                if resource.get("Type") == "AWS::ApiGateway::GatewayResponse"
            },
        )

    @property
    def host(self) -> str:
        return f"{self.api_id}.execute-api.{self.region}.amazonaws.com"

    @property
    def url(self) -> str:
        """The stage's invoke URL, as the stack's EndpointURL output names it (without its slash)."""
        return f"https://{self.host}/{self.stage}"

    def event(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> dict[str, Any]:
        """The Lambda event for a request to ``url``; raises :class:`Unrouted` when none would run."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host == self.host:
            stage, _, rest = parts.path.lstrip("/").partition("/")
            if stage != self.stage:
                raise Unrouted(f"no stage {stage!r} on {host}")
            path = "/" + rest
        else:
            path = parts.path
        routed = _route(self.routes, path)
        if routed is None or method not in self.routes[routed[0]]:
            raise NoRoute(f"no route for {method} {path}")
        resource, path_params = routed
        if self.routes[resource][method] != "aws_proxy":
            raise Unrouted(f"{method} {resource} is answered by a {self.routes[resource][method]} integration")
        sent = {name: value for name, value in (headers or {}).items() if name.lower() not in DROPPED_HEADERS}
        content_type = next((v for k, v in sent.items() if k.lower() == "content-type"), None)
        now = dt.datetime.now(dt.UTC)
        request_id = str(uuid.uuid4())
        added = {
            "Host": host,
            "X-Amzn-Trace-Id": f"Root=1-{int(now.timestamp()):08x}-{uuid.uuid4().hex[:24]}",
            "X-Forwarded-For": f"{CLIENT_IP}, {EDGE_IP}" if self.edge else CLIENT_IP,
            "X-Forwarded-Port": "443",
            "X-Forwarded-Proto": "https",
        }
        if self.edge:
            added |= {
                "CloudFront-Forwarded-Proto": "https",
                "CloudFront-Is-Desktop-Viewer": "true",
                "CloudFront-Viewer-Country": "DE",
                "Via": f"1.1 {uuid.uuid4().hex[:16]}.cloudfront.net (CloudFront)",
                "X-Amz-Cf-Id": base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="),
            }
        all_headers = {**sent, **added}
        query = parse_qsl(parts.query, keep_blank_values=True)
        multi_query: dict[str, list[str]] = {}
        for name, value in query:
            multi_query.setdefault(name, []).append(value)
        if not body:
            encoded, body_field = False, None
        elif is_binary(content_type, self.binary_media_types):
            encoded, body_field = True, base64.b64encode(body).decode("ascii")
        else:
            encoded, body_field = False, body.decode("utf-8", "replace")
        user_agent = next((v for k, v in sent.items() if k.lower() == "user-agent"), None)
        return {
            "resource": resource,
            "path": path,
            "httpMethod": method,
            "headers": all_headers,
            "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
            "queryStringParameters": {name: values[-1] for name, values in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_params or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "x1y2z3",
                "resourcePath": resource,
                "httpMethod": method,
                "extendedRequestId": base64.b32encode(uuid.uuid4().bytes[:10]).decode(),
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "path": parts.path,
                "accountId": "123456789012",
                "protocol": "HTTP/1.1",
                "stage": self.stage,
                "domainPrefix": host.split(".")[0],
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "requestId": request_id,
                "identity": {"sourceIp": CLIENT_IP, "userAgent": user_agent, "accessKey": None, "user": None},
                "domainName": host,
                "deploymentId": "d3pl0y",
                "apiId": self.api_id,
            },
            "body": body_field,
            "isBase64Encoded": encoded,
        }

    def invoke(self, event: dict[str, Any]) -> Reply:
        """Run the handler on ``event``; the answer as the client receives it."""
        context = LambdaContext(self.function_name, self.memory_mb, max_runtime_ms=self.timeout_ms)
        # The Lambda runtime hands the handler the event as JSON decodes it.
        answer = self.handler(json.loads(json.dumps(event)), context)
        headers = {name.lower(): str(value) for name, value in (answer.get("headers") or {}).items()}
        for name, values in (answer.get("multiValueHeaders") or {}).items():
            headers[name.lower()] = ", ".join(str(v) for v in values)
        body = answer.get("body") or ""
        accept = next((v for k, v in event["headers"].items() if k.lower() == "accept"), "")
        first_accept = accept.split(",")[0].strip()
        if answer.get("isBase64Encoded") and first_accept and is_binary(first_accept, self.binary_media_types):
            data = base64.b64decode(body)
        else:
            data = body.encode("utf-8")
        return Reply(int(answer["statusCode"]), headers, data)

    def gateway_response(self, response_type: str, method: str) -> Reply:
        """What the template's gateway response of that type puts on the wire."""
        properties = self.gateway_responses[response_type]
        headers = {
            name.removeprefix("gatewayresponse.header.").lower(): value.strip("'")
            for name, value in properties.get("ResponseParameters", {}).items()
            if name.startswith("gatewayresponse.header.")
        }
        body = properties["ResponseTemplates"]["application/json"].encode()
        return Reply(int(properties["StatusCode"]), headers, b"" if method == "HEAD" else body)

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, body: bytes = b"") -> Reply:
        try:
            event = self.event(method, url, headers=headers, body=body)
        except NoRoute:
            return self.gateway_response("MISSING_AUTHENTICATION_TOKEN", method)
        return self.invoke(event)
