"""The deployed API as API Gateway runs it: events built as API Gateway REST builds them from the
packaged template (tests/apigateway.py), handed to the Lambda handler inside the moto store.

What only the deployed API does: base64 bodies (every body, under the template's binary media
types), the stage in the path of the execute-api host, a custom domain without it, the scheme
from X-Forwarded-Proto. Each test reads what a client reads: the answer, and the errors API.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from chalice.app import APIGateway
from sentry_sdk.utils import Dsn

from app import INGEST
from chalicelib import config, errors
from scripts.strict_store import StrictStore
from tests.apigateway import Gateway
from tests.conftest import Reply, Scene, index_caught_up
from tests.ingest.test_api_ingestion import compress, event_envelope, exception_event, header_encoding
from tests.test_e2e import SMOKE_CHECKS
from tests.wire import GATEWAY_METHODS, ROUTE_NOT_FOUND, UNROUTED_PATHS

ENCODINGS = ["identity", "gzip", "deflate", "br"]
# What SDKs and tools send: @sentry/node none, sentry-python the envelope type (and JSON to the
# legacy /store/), browsers text/plain, curl --data-binary a form type, others octet-stream.
SDK_CONTENT_TYPES = [
    None,
    "application/x-sentry-envelope",
    "application/json",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
]
# What the API had before */*: Chalice's default binary types and the envelope type.
OLD_BINARY_MEDIA_TYPES = (*APIGateway().default_binary_types, "application/x-sentry-envelope")
CUSTOM_DOMAIN = "https://errors.example.com"


def sentry_auth(public_key: str) -> str:
    return f"Sentry sentry_key={public_key}, sentry_version=7, sentry_client=sentry.python/2.75.0"


@dataclass
class Deployed:
    """Project "acme/shop" with error tracking on (set up through the gateway) and its key."""

    gateway: Gateway
    token: str
    project_id: int
    key_id: int = 0
    public_key: str = ""

    def api(self, method: str, path: str, *, base: str | None = None, **kw: Any) -> Reply:
        """A GitLab API call, ``path`` under /api/v4/projects/:id/error_tracking."""
        headers = {"PRIVATE-TOKEN": self.token, **kw.pop("headers", {})}
        url = f"{base or self.gateway.url}/api/v4/projects/{self.project_id}/error_tracking{path}"
        return self.gateway.request(method, url, headers=headers, **kw)

    def ingest_url(self, endpoint: str, base: str | None = None) -> str:
        # Where a Sentry SDK posts for this project's DSN: with the trailing slash it appends.
        return (base or self.gateway.url) + INGEST.format(project_id=self.project_id) + f"/{endpoint}/"

    def post_event(self, endpoint: str, body: bytes, *, content_type: str | None, encoding: str | None = None) -> Reply:
        headers = {"X-Sentry-Auth": sentry_auth(self.public_key), "User-Agent": "sentry.python/2.75.0"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        return self.gateway.request("POST", self.ingest_url(endpoint), headers=headers, body=body)

    def titles(self, base: str | None = None) -> dict[str, int]:
        """Every unresolved error listed, title -> count (a moment after what was sent)."""
        index_caught_up()
        reply = self.api("GET", "/errors?limit=100", base=base)
        assert reply.status == 200, reply.body
        return {error["title"]: error["count"] for error in reply.json}


@pytest.fixture
def gateway(packaged: Callable[[str], dict[str, Any]]) -> Gateway:
    return Gateway.of(packaged("dev"))


def set_up(gateway: Gateway, scene: Scene) -> Deployed:
    project = scene.project("acme/shop")
    deployed = Deployed(gateway, scene.maintainer(project), int(project.project_id))
    form = urlencode({"active": "true", "integrated": "true"}).encode()
    reply = deployed.api("PUT", "/settings", headers={"Content-Type": "application/x-www-form-urlencoded"}, body=form)
    assert reply.status == 200 and reply.json["integrated"] is True, reply.body
    keys = deployed.api("GET", "/client_keys")
    assert keys.status == 200 and len(keys.json) == 1, keys.body
    deployed.key_id, deployed.public_key = keys.json[0]["id"], keys.json[0]["public_key"]
    return deployed


@pytest.fixture
def deployed(gateway: Gateway, scene: Scene) -> Deployed:
    return set_up(gateway, scene)


def sdk_body(endpoint: str, event: dict[str, Any], encoding: str) -> bytes:
    raw = event_envelope(event) if endpoint == "envelope" else json.dumps(event).encode()
    return compress(raw, encoding)


# Bodies: every one an SDK sends arrives intact


@pytest.mark.parametrize("endpoint", ["envelope", "store"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_body_an_sdk_sends_is_read_whatever_its_content_type(
    deployed: Deployed, endpoint: str, encoding: str
) -> None:
    expected = {}
    for number, content_type in enumerate(SDK_CONTENT_TYPES):
        # Its own error each (grouped by type and culprit): a lost event cannot hide behind another.
        event = exception_event("ValueError", f"sent as {content_type}", function=f"checkout_{number}")
        reply = deployed.post_event(
            endpoint,
            sdk_body(endpoint, event, encoding),
            content_type=content_type,
            encoding=header_encoding(encoding),
        )
        assert reply.status == 200, (content_type, reply.body)
        assert reply.json == {"id": event["event_id"]}
        assert reply.headers["content-type"] == "application/json"
        expected[f"ValueError: sent as {content_type}"] = 1
    assert deployed.titles() == expected


@pytest.mark.parametrize("endpoint", ["envelope", "store"])
def test_the_old_binary_media_types_corrupted_gzip_sent_as_json(deployed: Deployed, endpoint: str) -> None:
    """What this suite would have caught: with Chalice's default binary types and the envelope type,
    API Gateway handed a gzip body sent as application/json over as UTF-8 text, and it was lost."""
    old = replace(deployed.gateway, binary_media_types=OLD_BINARY_MEDIA_TYPES)
    deployed.gateway = old
    lost = exception_event("ValueError", "gzip sent as application/json", function="lost")
    body = sdk_body(endpoint, lost, "gzip")
    headers = {
        "X-Sentry-Auth": sentry_auth(deployed.public_key),
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    event = old.event("POST", deployed.ingest_url(endpoint), headers=headers, body=body)
    assert event["isBase64Encoded"] is False and "\ufffd" in event["body"]
    reply = old.invoke(event)
    assert reply.status == 400, reply.body
    assert reply.json["message"].startswith("400 Bad request - the body could not be decompressed")
    # The one type that was binary came through, as it does now.
    kept = exception_event("ValueError", "gzip sent as an envelope", function="kept")
    reply = deployed.post_event(
        endpoint, sdk_body(endpoint, kept, "gzip"), content_type="application/x-sentry-envelope", encoding="gzip"
    )
    assert reply.status == 200, reply.body
    assert deployed.titles() == {"ValueError: gzip sent as an envelope": 1}


def multipart(fields: dict[str, str], boundary: str = "----errortracking7MA4YWxk") -> tuple[str, bytes]:
    """A multipart/form-data body as `curl -F` sends one: (its Content-Type, its bytes)."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    return f"multipart/form-data; boundary={boundary}", ("".join(parts) + f"--{boundary}--\r\n").encode()


def test_api_bodies_arriving_base64_are_read(deployed: Deployed) -> None:
    """JSON, form and multipart bodies to the GitLab API: base64 too under */*, and read as sent."""
    bodies = [
        ("application/json; charset=utf-8", json.dumps({"active": False, "integrated": True}).encode(), False),
        ("application/x-www-form-urlencoded", urlencode({"active": "true", "integrated": "true"}).encode(), True),
        (*multipart({"active": "false", "integrated": "true"}), False),
    ]
    for content_type, body, active in bodies:
        event = deployed.gateway.event(
            "PUT",
            f"{deployed.gateway.url}/api/v4/projects/{deployed.project_id}/error_tracking/settings",
            headers={"PRIVATE-TOKEN": deployed.token, "Content-Type": content_type},
            body=body,
        )
        assert event["isBase64Encoded"] is True
        reply = deployed.gateway.invoke(event)
        assert reply.status == 200, (content_type, reply.body)
        assert (reply.json["active"], reply.json["integrated"]) == (active, True), content_type
    key = deployed.api(
        "PATCH",
        f"/client_keys/{deployed.key_id}",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"name": "Kasse Zürich ☕"}, ensure_ascii=False).encode(),
    )
    assert key.status == 200 and key.json["name"] == "Kasse Zürich ☕", key.body


def test_the_event_is_shaped_as_api_gateway_sends_it(deployed: Deployed) -> None:
    """The helper itself, against AWS's documented and captured events, on what our code reads."""
    url = f"{deployed.gateway.url}/api/v4/projects/acme%2Fshop/error_tracking/errors?sort=first_seen&limit=1&limit=2"
    event = deployed.gateway.event(
        "GET", url, headers={"PRIVATE-TOKEN": deployed.token, "Content-Length": "0", "Connection": "keep-alive"}
    )
    assert event["path"] == "/api/v4/projects/acme%2Fshop/error_tracking/errors"
    assert event["requestContext"]["path"] == "/api/api/v4/projects/acme%2Fshop/error_tracking/errors"
    assert event["resource"] == event["requestContext"]["resourcePath"] == "/api/v4/projects/{id}/error_tracking/errors"
    assert event["pathParameters"] == {"id": "acme%2Fshop"}
    assert event["queryStringParameters"] == {"sort": "first_seen", "limit": "2"}
    assert event["multiValueQueryStringParameters"] == {"sort": ["first_seen"], "limit": ["1", "2"]}
    assert event["requestContext"]["stage"] == "api"
    assert event["requestContext"]["domainName"] == event["headers"]["Host"] == deployed.gateway.host
    assert event["headers"]["X-Forwarded-Proto"] == "https"
    assert not {"Content-Length", "Connection"} & set(event["headers"])
    assert event["multiValueHeaders"]["PRIVATE-TOKEN"] == [deployed.token]
    assert (event["body"], event["isBase64Encoded"]) == (None, False)
    bare = deployed.gateway.event("GET", deployed.gateway.url + "/api/v4/user")
    assert bare["queryStringParameters"] is bare["multiValueQueryStringParameters"] is None
    assert bare["pathParameters"] is None
    reply = deployed.gateway.invoke(event)
    assert reply.status == 200 and reply.json == [], reply.body


# What no route has: GitLab's 404, from the gateway's own responses


def test_a_path_no_route_has_gets_gitlabs_404_whatever_the_method(gateway: Gateway) -> None:
    # A method a resource lacks is answered the same way ("unsupported API method or resource").
    lacking = [("DELETE", "/api/v4/user"), ("GET", INGEST.format(project_id=1) + "/envelope/")]
    requests = [(method, path) for path in UNROUTED_PATHS for method in GATEWAY_METHODS] + lacking
    for base in (gateway.url, CUSTOM_DOMAIN):
        for method, path in requests:
            reply = gateway.request(method, base + path, headers={"Origin": "https://app.example"})
            assert reply.status == 404, (method, path)
            assert (json.loads(reply.body) if reply.body else None) == (None if method == "HEAD" else ROUTE_NOT_FOUND)
            assert reply.headers == {"content-type": "application/json", "access-control-allow-origin": "*"}
    # The template and the local server (chalicelib/errors.py) answer alike.
    local = errors.route_not_found()
    assert (local.status, local.body) == (404, ROUTE_NOT_FOUND)
    assert {k.lower(): v for k, v in local.to_response().headers.items()} == reply.headers


# Deployed without ERRORTRACKING_PUBLIC_URL: URLs are the ones the client called


@pytest.fixture
def no_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERRORTRACKING_PUBLIC_URL")
    config.get_config.cache_clear()


@pytest.mark.usefixtures("no_public_url")
@pytest.mark.parametrize("base", ["execute-api", CUSTOM_DOMAIN])
def test_a_dsn_handed_out_leads_an_sdk_back_to_ingestion(gateway: Gateway, scene: Scene, base: str) -> None:
    """On the execute-api host the stage is part of every URL the client uses, so of the DSN; on a
    custom domain (an empty base path mapping) it is not. Either way, the URL a Sentry SDK makes of
    the DSN is routed to the ingestion route, and the event is stored."""
    deployed = set_up(gateway, scene)
    called = gateway.url if base == "execute-api" else base
    host = urlsplit(called).hostname
    reply = deployed.api("POST", "/client_keys", base=called)
    assert reply.status == 201, reply.body
    dsn = reply.json["sentry_dsn"]
    prefix = "/api" if base == "execute-api" else ""
    assert (
        dsn == f"https://{reply.json['public_key']}@{host}{prefix}/errortracking/api/v1/projects/{deployed.project_id}"
    )
    listed = deployed.api("GET", "/client_keys", base=called)
    assert [key["sentry_dsn"] for key in listed.json] == [
        f"https://{key['public_key']}@{host}{prefix}/errortracking/api/v1/projects/{deployed.project_id}"
        for key in listed.json
    ]
    auth = Dsn(dsn).to_auth()
    event = exception_event()
    sdk_event = gateway.event(
        "POST",
        auth.get_api_url(),
        headers={"X-Sentry-Auth": auth.to_header(), "Content-Encoding": "gzip"},
        body=gzip.compress(event_envelope(event)),
    )
    assert sdk_event["resource"] == INGEST + "/envelope"
    answer = gateway.invoke(sdk_event)
    assert answer.status == 200 and answer.json == {"id": event["event_id"]}, answer.body
    assert deployed.titles(base=called) == {"ValueError: invalid literal for int() with base 10: 'abc'": 1}


@pytest.mark.usefixtures("no_public_url")
@pytest.mark.parametrize("base", ["execute-api", CUSTOM_DOMAIN])
def test_pagination_links_lead_back_through_the_gateway(gateway: Gateway, scene: Scene, base: str) -> None:
    deployed = set_up(gateway, scene)
    called = gateway.url if base == "execute-api" else base
    keys = deployed.api("GET", "/client_keys?per_page=1", base=called)
    assert keys.status == 200, keys.body
    list_url = f"{called}/api/v4/projects/{deployed.project_id}/error_tracking/client_keys"
    assert keys.headers["link"] == (
        f'<{list_url}?page=1&per_page=1>; rel="first", <{list_url}?page=1&per_page=1>; rel="last"'
    )
    for number in range(2):
        event = exception_event("ValueError", f"error {number}", function=f"checkout_{number}")
        reply = deployed.post_event("envelope", event_envelope(event), content_type="application/x-sentry-envelope")
        assert reply.status == 200, reply.body
    index_caught_up()
    first = deployed.api("GET", "/errors?limit=1", base=called)
    assert first.status == 200 and len(first.json) == 1, first.body
    link = first.headers["link"]
    errors_url = f"{called}/api/v4/projects/{deployed.project_id}/error_tracking/errors"
    assert link.startswith(f"<{errors_url}?limit=1&cursor=") and link.endswith('>; rel="next"')
    second = gateway.request("GET", link[1 : link.index(">")], headers={"PRIVATE-TOKEN": deployed.token})
    assert second.status == 200, second.body
    assert {e["title"] for e in first.json + second.json} == {"ValueError: error 0", "ValueError: error 1"}


@pytest.mark.usefixtures("no_public_url")
def test_the_scheme_is_the_one_x_forwarded_proto_names(gateway: Gateway, scene: Scene) -> None:
    """The Lambda never sees TLS: API Gateway says the client used https in X-Forwarded-Proto."""
    deployed = set_up(gateway, scene)
    event = gateway.event(
        "GET",
        f"{gateway.url}/api/v4/projects/{deployed.project_id}/error_tracking/client_keys",
        headers={"PRIVATE-TOKEN": deployed.token},
    )
    assert gateway.invoke(event).json[0]["sentry_dsn"].startswith("https://")
    # Not what API Gateway sends (its endpoints are https only), but what decides: the header.
    event["headers"]["X-Forwarded-Proto"] = event["multiValueHeaders"]["X-Forwarded-Proto"][0] = "http"
    assert gateway.invoke(event).json[0]["sentry_dsn"].startswith("http://")


def test_a_configured_public_url_wins_over_the_host_called(deployed: Deployed) -> None:
    keys = deployed.api("GET", "/client_keys")
    assert keys.status == 200, keys.body
    dsn = f"http://{deployed.public_key}@errors.example.test/errortracking/api/v1/projects/{deployed.project_id}"
    assert keys.json[0]["sentry_dsn"] == dsn  # conftest's ERRORTRACKING_PUBLIC_URL


@pytest.mark.usefixtures("no_public_url")
def test_the_smoke_script_passes_against_the_deployed_api(
    gateway: Gateway, scene: Scene, strict: StrictStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/smoke.py as run after `make deploy`, on the execute-api URL: its event goes to the
    DSN's URL (stage included), and it waits for the errors list, whose index lags (here by the
    strict store's second of real time, as on DynamoDB)."""
    from scripts import smoke

    looks: list[str] = []

    def send(method: str, url: str, headers: dict[str, str], data: bytes | None = None) -> smoke.Answer:
        if method == "GET" and "/error_tracking/errors?" in url:
            looks.append(url)
        reply = gateway.request(method, url, headers=headers, body=data or b"")
        return smoke.Answer(reply.status, reply.headers, reply.json if reply.body else None)

    monkeypatch.setattr(smoke, "send", send)
    strict.time_source = time.monotonic  # the script waits in real time
    scene.user("root", admin=True)
    project = scene.project("smoke/errors")
    results = smoke.run(gateway.url, scene.token("root"), project.path_with_namespace)
    assert [(name, passed) for name, passed, _ in results] == [(name, True) for name in SMOKE_CHECKS], results
    assert len(looks) > 1, looks  # not listed at the first look: it waited for the index
