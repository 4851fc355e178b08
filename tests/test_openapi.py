"""The OpenAPI document (chalicelib/openapi.json): it names exactly the routes app.py has, it is valid
OpenAPI, the service serves it, and the running service answers as it says.

Then schemathesis runs against the real local server (`make run`'s), with a Maintainer token, every
check on and a bounded number of examples per operation (about a minute and a half in all). Its
requests hit real handlers: the path ``id`` is a fresh project's, ``key_id``/``error_id`` name keys
and an error that exist, and ingestion carries an active client key of that project. Where validity
depends on something JSON Schema cannot say (stored state, an opaque cursor, DNS), the test supplies
values that make the documented promise checkable instead of skipping the operation; each such place
says why.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition

from chalicelib.ingest import tracked_errors
from tests.conftest import REPORTS, SUITE_SECRETS, Api, Scene, index_caught_up
from tests.hooks.receiver import Receiver
from tests.test_e2e import Server, new_project, new_user_token, server
from tests.test_e2e import index_caught_up as e2e_index_caught_up

__all__ = ["server"]  # the module-scoped fixture: one real local server for this module

DOCUMENT_PATH = Path(__file__).resolve().parent.parent / "chalicelib" / "openapi.json"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
HTTP_TIMEOUT = 30.0

# Fuzzed examples per operation (the examples and coverage phases add their own, a bounded set derived from the
# document). Fifteen operations; the whole schemathesis run takes about a minute and a half.
MAX_EXAMPLES = 15

# Sentry connections stored by the baseline and drawn by the fuzzer. Numeric hosts resolve without DNS
# (the tests run offline) and are public addresses, so the service accepts them; the baseline's host is
# never drawn, so a drawn connection always changes api_url (which is what the document's rule assumes).
BASELINE_API_HOST = "https://1.0.0.1"
BASELINE_SENTRY_TOKEN = "baseline-sentry-token"
SUITE_SECRETS[BASELINE_SENTRY_TOKEN] = "sentry token"  # sent to the local server, for the secrets scan
FUZZED_API_HOSTS = ["https://1.1.1.1", "http://8.8.8.8", "https://9.9.9.9:9443/sentry", "https://[2606:4700::1111]"]
CONNECTION_FIELDS = ("api_host", "organization_slug", "project_slug")
# Hooks the fuzzer adds lead to a real receiver on loopback (make run allows local receivers), so
# their tests reach it and answer 201.
HOOK_RECEIVER = Receiver().start()
FUZZED_HOOK_URLS = [HOOK_RECEIVER.url, HOOK_RECEIVER.url + "?from=fuzzer"]
# Fuzzed events carrying this fingerprint join the pinned error, so the errors API reads them back.
PINNED_FINGERPRINT = ["openapi-pinned-error"]


def load_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DOCUMENT_PATH.read_text("utf-8"))
    return document


def app_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every route in app.py, without the OPTIONS preflights Chalice adds for CORS."""
    from app import app

    return {(method, path) for path, methods in app.routes.items() for method in methods if method != "OPTIONS"}


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in document["paths"].items() for method in item if method in HTTP_METHODS
    }


# The document and app.py name the same routes


def test_every_route_of_the_app_is_documented() -> None:
    missing = app_routes() - documented_routes(load_document())
    assert not missing, f"routes in app.py that chalicelib/openapi.json does not describe: {sorted(missing)}"


def test_every_documented_route_exists_in_the_app() -> None:
    extra = documented_routes(load_document()) - app_routes()
    assert not extra, f"routes in chalicelib/openapi.json that app.py does not have: {sorted(extra)}"


def test_public_routes_and_only_they_need_no_token() -> None:
    from app import app

    document = load_document()
    assert document["security"], "the API's default is a token"
    for path, methods in app.routes.items():
        for method, entry in methods.items():
            if method == "OPTIONS":
                continue
            operation = document["paths"][path][method.lower()]
            public = getattr(entry.view_function, "requirement").public  # noqa: B009  (set by a decorator)
            assert (operation.get("security") == []) == public, f"{method} {path}: public={public}"


# The document is valid OpenAPI


def test_document_is_valid_openapi() -> None:
    from openapi_spec_validator import validate

    document = load_document()
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_every_operation_documents_its_answers() -> None:
    """Each operation: a success with a JSON body, and every refusal the service can give it."""
    from app import app

    document = load_document()
    for method, path in documented_routes(document):
        operation = document["paths"][path][method.lower()]
        statuses = set(operation["responses"])
        assert any(status.startswith("2") for status in statuses), (method, path)
        assert "413" in statuses, (method, path)
        # 415 exactly where the route refuses some content type.
        assert ("415" in statuses) is (app.routes[path][method].content_types != ["*/*"]), (method, path)
        if operation.get("security") != []:
            assert {"401", "403", "503"} <= statuses, (method, path)
        if path.startswith("/api/v4/projects/"):
            assert "404" in statuses, (method, path)
        for status, response in operation["responses"].items():
            if "$ref" in response:
                response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
            # JSON, but for a 204 (GitLab's DELETE of a hook), which has no body at all.
            wanted = [] if status == "204" else ["application/json"]
            assert list(response.get("content", {})) == wanted, (method, path, status)


def test_every_component_is_used() -> None:
    document = load_document()
    text = json.dumps(document)
    for kind, items in document["components"].items():
        if kind != "securitySchemes":
            unused = [name for name in items if f'"#/components/{kind}/{name}"' not in text]
            assert not unused, f"components.{kind} nobody refers to: {unused}"


# The service serves it


def test_document_is_served_without_a_token(api: Api) -> None:
    reply = api.get("/api/v4/openapi.json")
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json == load_document()
    assert api.get("/api/v4/openapi.json").json == reply.json  # cached, still the same


# What schemathesis found, replayed


def body_is_valid(schema_name: str, body: Any) -> bool:
    """Whether ``body`` is valid by the document's ``components.schemas[schema_name]``."""
    import jsonschema_rs

    document = load_document()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    return bool(jsonschema_rs.Draft202012Validator(schema).is_valid(body))


def test_integral_json_numbers_are_integers(api: Api, scene: Scene) -> None:
    """schemathesis sent ``"rate_limit_count": 306162.0``: an integer by JSON Schema (and by Grape, which
    coerces it), so valid by the document, but the service answers 400 ``rate_limit_count is invalid``."""
    project = scene.project("openapi/numbers")
    api.token = scene.maintainer(project)
    keys = f"/api/v4/projects/{project.project_id}/error_tracking/client_keys"
    key = api.post(keys).json
    body = {"rate_limit_count": 60.0, "rate_limit_window": 60}
    assert body_is_valid("ClientKeyPatch", body)
    reply = api.patch(f"{keys}/{key['id']}", json_body=body)
    assert reply.status == 200, reply.body
    assert reply.json["rate_limit_count"] == 60


def test_a_frame_line_number_is_a_number(api: Api, scene: Scene) -> None:
    """schemathesis sent an event whose frame had ``"lineno": false``: the error's stack trace then says
    ``"lineno": false`` (a bool is an int to Python), where the document promises an integer or null."""
    project = scene.project("openapi/frames")
    api.token = scene.maintainer(project)
    base = f"/api/v4/projects/{project.project_id}/error_tracking"
    assert api.put(f"{base}/settings", json_body={"active": True, "integrated": True}).status == 200
    public_key = api.get(f"{base}/client_keys").json[0]["public_key"]
    frame = {"function": "handler", "module": "app", "lineno": False, "in_app": True}
    event = {"exception": {"values": [{"type": "OpenApiFrameError", "stacktrace": {"frames": [frame]}}]}}
    envelope = b"\n".join([b"{}", b'{"type":"event"}', json.dumps(event).encode()])
    sent = api.post(
        f"/errortracking/api/v1/projects/api/{project.project_id}/envelope/",
        headers={"Content-Type": "application/x-sentry-envelope", "X-Sentry-Auth": f"Sentry sentry_key={public_key}"},
        body=envelope,
    )
    assert sent.status == 200, sent.body
    index_caught_up()
    error_id = api.get(f"{base}/errors").json[0]["id"]
    detail = api.get(f"{base}/errors/{error_id}").json
    assert body_is_valid("ErrorDetail", detail), json.dumps(detail["stack_trace"])


# Schemathesis against the running local server


def _json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    )
    return st.recursive(
        scalars | st.text(max_size=20),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
        max_leaves=8,
    )


def _frames() -> st.SearchStrategy[list[dict[str, Any]]]:
    frame = st.fixed_dictionaries(
        {},
        optional={
            "filename": st.text(max_size=30),
            "abs_path": st.text(max_size=40),
            "function": st.text(max_size=20),
            "module": st.text(max_size=20),
            "lineno": st.integers(0, 10**6) | st.none() | st.booleans() | st.text(max_size=4),
            "colno": st.integers(0, 500),
            "in_app": st.booleans(),
            "context_line": st.text(max_size=40),
            "pre_context": st.lists(st.text(max_size=20), max_size=3),
            "post_context": st.lists(st.text(max_size=20), max_size=3),
            "vars": st.dictionaries(st.text(max_size=8), _json_values(), max_size=3),
        },
    )
    return st.lists(frame, max_size=4)


def _events() -> st.SearchStrategy[dict[str, Any]]:
    """Event payloads as SDKs send them, with the loose corners SDKs differ on."""
    hex32 = st.uuids().map(lambda u: u.hex)
    exception = st.fixed_dictionaries(
        {"type": st.text(max_size=20), "value": st.text(max_size=40)},
        optional={
            "stacktrace": st.fixed_dictionaries({"frames": _frames()}),
            "mechanism": st.fixed_dictionaries(
                {},
                optional={
                    "type": _json_values(),
                    "handled": _json_values(),
                    "synthetic": st.booleans(),
                    "exception_id": st.integers(0, 3),
                    "parent_id": st.integers(0, 3),
                    "is_exception_group": st.booleans(),
                },
            ),
        },
    )
    exceptions = st.lists(exception, min_size=1, max_size=3)
    payloads = st.fixed_dictionaries(
        {},
        optional={
            "event_id": hex32 | st.uuids().map(str) | st.text(max_size=10),
            "timestamp": st.floats(0, 4e9)
            | st.integers(0, 4 * 10**9)
            | st.datetimes().map(lambda moment: moment.isoformat())
            | st.text(max_size=12),
            "level": st.sampled_from(["fatal", "error", "warning", "info", "debug"]) | _json_values(),
            "platform": st.sampled_from(["python", "javascript", "go", "php"]) | _json_values(),
            "environment": st.text(max_size=12) | _json_values(),
            "release": st.text(max_size=12) | _json_values(),
            "transaction": st.text(max_size=20) | _json_values(),
            "message": st.text(max_size=40)
            | st.fixed_dictionaries({}, optional={"formatted": st.text(max_size=40), "message": st.text(max_size=40)}),
            "exception": st.fixed_dictionaries({"values": exceptions}) | exceptions,  # Go sends a bare array
            "user": st.fixed_dictionaries({}, optional={"id": _json_values(), "email": st.text(max_size=20)})
            | _json_values(),
            "sdk": st.fixed_dictionaries({}, optional={"name": _json_values(), "version": _json_values()}),
            "tags": st.dictionaries(st.text(max_size=8), _json_values(), max_size=3)
            | st.lists(st.lists(st.text(max_size=8), min_size=2, max_size=2), max_size=3),
            "request": st.fixed_dictionaries(
                {},
                optional={
                    "url": st.text(max_size=30) | st.just("https://shop.example/cart?token=t&x=1#frag"),
                    "method": _json_values(),
                    "query_string": st.text(max_size=20) | _json_values(),
                    "headers": st.dictionaries(st.text(max_size=8), _json_values(), max_size=3)
                    | st.lists(st.lists(st.text(max_size=8), min_size=2, max_size=2), max_size=3),
                    "cookies": st.text(max_size=20) | _json_values(),
                    "data": _json_values(),
                },
            )
            | _json_values(),
            "contexts": st.dictionaries(st.sampled_from(["runtime", "os", "browser", "device", "app"]), _json_values()),
            "breadcrumbs": st.lists(
                st.dictionaries(
                    st.sampled_from(["message", "category", "timestamp", "data", "level", "type"]), _json_values()
                ),
                max_size=3,
            )
            | st.fixed_dictionaries({"values": st.lists(_json_values(), max_size=3)}),
            "fingerprint": st.lists(st.text(max_size=10), min_size=1, max_size=3),
            "extra": st.dictionaries(st.text(max_size=8), _json_values(), max_size=3),
        },
    )
    # Half of them join the pinned error, which the errors API fuzzes afterwards: what they carry is read back.
    return payloads | _pinned(payloads)


def _pinned(payloads: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return payloads.map(lambda payload: {**payload, "fingerprint": PINNED_FINGERPRINT})


@st.composite
def _envelopes(draw: st.DrawFn) -> bytes:
    """Well-formed Sentry envelopes (JSON Schema cannot say what one is): a header, then items of every
    kind SDKs send, some with a length and some without."""
    header = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "event_id": st.uuids().map(lambda u: u.hex),
                "sent_at": st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
                "sdk": st.fixed_dictionaries({"name": st.just("sentry.python"), "version": st.just("2.0.0")}),
            },
        )
    )
    lines = [json.dumps(header).encode()]
    kinds = ["transaction", "client_report", "session", "sessions", "attachment", "check_in", "log", "x-new"]
    drawn = draw(st.lists(st.sampled_from(kinds), max_size=3))
    # An envelope carries one event (Sentry's protocol; more is a documented 400), anywhere among the
    # other items. It joins the pinned error: however few envelopes the fuzzer draws, the errors API
    # then reads back what they carried.
    drawn.insert(draw(st.integers(0, len(drawn))), "pinned event")
    for kind in drawn:
        if kind == "attachment":
            payload = draw(st.binary(max_size=64))
        elif kind == "pinned event":
            payload, kind = json.dumps(draw(_pinned(_events()))).encode(), "event"
        else:
            payload = json.dumps(draw(st.dictionaries(st.text(max_size=8), _json_values(), max_size=3))).encode()
        item: dict[str, Any] = {"type": kind}
        if b"\n" in payload or draw(st.booleans()):
            item["length"] = len(payload)
        lines += [json.dumps(item).encode(), payload]
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n"]))


schemathesis.openapi.media_type("application/x-sentry-envelope", _envelopes())
# api_host must resolve to a public address: the document says so in words, the fuzzer draws such hosts.
schemathesis.openapi.format("sentry-api-host", st.sampled_from(FUZZED_API_HOSTS))
# A hook URL must resolve (to a public address, or any under make run): the receiver's.
schemathesis.openapi.format("hook-url", st.sampled_from(FUZZED_HOOK_URLS))
# An opaque cursor: drawn as any text; positive cases get a real one in Target.prepare.
schemathesis.openapi.format("x-next-cursor", st.text(min_size=1, max_size=40))


@dataclass
class RollupBudget:
    """The roll-up tokens the pinned error has left, as far as this test can bound them from what it
    sends (the service keeps the bucket in the error item: tracked_errors.BURST tokens, refilled at
    REFILL_PER_SECOND). An event whose shard was rolled up less than ROLLUP_INTERVAL ago is stored
    only while the bucket has a token, else only counted; stored, every fuzzed event is read back
    by the errors API. Every event sent is counted against the pinned error, so the bound only
    errs low: the test may wait when it need not, never the other way.
    """

    tokens: float = float(tracked_errors.BURST)
    at: float = field(default_factory=time.monotonic)

    def spend(self, events: int) -> None:
        """Wait, if need be, until ``events`` roll-ups more are sure to find a token; count them spent."""
        refill = tracked_errors.REFILL_PER_SECOND
        self.tokens = min(float(tracked_errors.BURST), self.tokens + (time.monotonic() - self.at) * refill)
        # A token to spare: the service reads its clock a moment after this process does.
        short = events + 1 - self.tokens
        if short > 0:
            time.sleep(short / refill)
            self.tokens += short
        self.tokens -= events
        self.at = time.monotonic()


def events_sent(case: schemathesis.Case[Any]) -> int:
    """At most how many events the ingestion request ``case`` carries (see _envelopes)."""
    if case.operation.path.endswith("/envelope") and isinstance(case.body, bytes):
        return max(1, case.body.count(b'{"type": "event"'))
    return 1


@dataclass
class Target:
    """A fresh project on the local server, with what the fuzzer's requests point at."""

    server: Server
    project_id: int
    token: str
    ingest_key: str  # public key of an active client key nobody fuzzes
    patch_key_id: int  # the key PATCH is fuzzed on
    delete_key_id: int  # the key DELETE is fuzzed on (deleted by the first successful call)
    error_id: int
    session: requests.Session = field(default_factory=requests.Session)
    connection_changed: bool = False  # a settings write sent api_host, organization_slug or project_slug
    setting_changed: bool = False  # a settings write was sent
    rollups: RollupBudget = field(default_factory=RollupBudget)  # of the pinned error

    def url(self, path: str) -> str:
        return f"{self.server.url}/api/v4/projects/{self.project_id}/error_tracking{path}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"PRIVATE-TOKEN": self.token, **kwargs.pop("headers", {})}
        return self.session.request(method, self.url(path), headers=headers, timeout=HTTP_TIMEOUT, **kwargs)

    def baseline_setting(self) -> None:
        """Active, integrated, with a Sentry connection and token stored.

        Whether a settings save succeeds depends on what is stored (a connection, a token): the
        document states the rule relative to this state, so settings requests start from it (it is put
        back whenever a request may have changed it). Ingestion needs the setting active and integrated.
        """
        body = {
            "active": True,
            "integrated": True,
            "api_host": BASELINE_API_HOST,
            "organization_slug": "baseline-org",
            "project_slug": "baseline-project",
            "token": BASELINE_SENTRY_TOKEN,
        }
        answer = self.call("PUT", "/settings", json=body)
        assert answer.status_code == 200, answer.text

    def real_cursor(self, path: str, query: dict[str, Any]) -> str | None:
        """The cursor of the second page of this very list, or None when it has a single page."""
        params = {k: v for k, v in query.items() if k not in ("cursor", "limit", "private_token")}
        answer = self.call("GET", path, params={**params, "limit": "1"})
        if answer.status_code == 404:
            return None  # an error id the stateful phase drew, not a linked one: no list to page
        assert answer.status_code == 200, answer.text
        return answer.headers.get("X-Next-Cursor")

    def prepare(self, case: schemathesis.Case[Any]) -> None:
        """Put the service in the state the document's rules are stated against."""
        path = case.operation.path
        settings_write = path.endswith("/settings") and case.method in ("PUT", "PATCH")
        # Only a change of connection can drop the stored token (a settings rule depends on it); any
        # settings write can switch the setting off (ingestion depends on it).
        if (settings_write and self.connection_changed) or (
            path.startswith("/errortracking/") and self.setting_changed
        ):
            self.baseline_setting()
            self.connection_changed = self.setting_changed = False
        if path.startswith("/errortracking/"):
            self.rollups.spend(events_sent(case))
        if settings_write:
            self.setting_changed = True
            sent = case.body if isinstance(case.body, dict) else {}
            self.connection_changed |= any(name in sent for name in CONNECTION_FIELDS)
        positive = case.meta is not None and case.meta.generation.mode.is_positive
        body = case.body
        host = body.get("api_host") if isinstance(body, dict) else None
        if positive and isinstance(body, dict) and isinstance(host, str) and host not in FUZZED_API_HOSTS:
            # A host that matches the document's pattern but does not resolve to a public address is
            # refused, as the document says in words; draw one that does (the fuzzing phase already does,
            # through the sentry-api-host format, but the coverage phase builds values from the pattern).
            body["api_host"] = FUZZED_API_HOSTS[len(host) % len(FUZZED_API_HOSTS)]
        if path.endswith("/hooks") and case.method == "POST":
            # A project holds at most 100 hooks (a documented 422): the fuzzer's are cleared near it.
            hooks_url = f"{self.server.url}/api/v4/projects/{self.project_id}/hooks"
            auth = {"PRIVATE-TOKEN": self.token}
            hooks = self.session.get(hooks_url, params={"per_page": "100"}, headers=auth, timeout=HTTP_TIMEOUT).json()
            if len(hooks) >= 99:
                for hook in hooks:
                    self.session.delete(f"{hooks_url}/{hook['id']}", headers=auth, timeout=HTTP_TIMEOUT)
        url = body.get("url") if isinstance(body, dict) else None
        if positive and isinstance(body, dict) and isinstance(url, str) and url not in FUZZED_HOOK_URLS:
            body["url"] = FUZZED_HOOK_URLS[len(url) % len(FUZZED_HOOK_URLS)]  # as for api_host above
        if positive and isinstance(case.query, dict) and "cursor" in case.query:
            listed = path.removeprefix("/api/v4/projects/{id}/error_tracking")
            error_id = (case.path_parameters or {}).get("error_id", self.error_id)
            listed = listed.replace("{error_id}", str(error_id))
            cursor = self.real_cursor(listed, case.query)
            if cursor is None:
                del case.query["cursor"]
            else:
                case.query["cursor"] = cursor


def _ingest(server: Server, project_id: int, public_key: str, event: dict[str, Any]) -> str:
    body = b"\n".join([b"{}", json.dumps({"type": "event"}).encode(), json.dumps(event).encode()])
    answer = requests.post(
        f"{server.url}/errortracking/api/v1/projects/api/{project_id}/envelope/",
        data=body,
        headers={
            "Content-Type": "application/x-sentry-envelope",
            "X-Sentry-Auth": f"Sentry sentry_key={public_key}, sentry_version=7",
        },
        timeout=HTTP_TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    event_id: str = answer.json()["id"]
    return event_id


@pytest.fixture(scope="module")
def target(server: Server) -> Iterator[Target]:
    project = new_project(server, "openapi")
    token = new_user_token(server, project, "maintainer")
    scene = Target(server, project.id, token, "", 0, 0, 0)
    scene.baseline_setting()  # active and integrated: the project gets its first key
    keys = scene.call("GET", "/client_keys").json()
    assert len(keys) == 1, keys
    scene.ingest_key = keys[0]["public_key"]
    scene.patch_key_id = int(scene.call("POST", "/client_keys").json()["id"])
    scene.delete_key_id = int(scene.call("POST", "/client_keys").json()["id"])
    # The pinned error, with two events so that its events list has a second page (a real cursor).
    for n in range(2):
        event = {
            "event_id": uuid.uuid4().hex,
            "timestamp": time.time() - 60 + n,
            "fingerprint": PINNED_FINGERPRINT,
            "exception": {"values": [{"type": "OpenApiError", "value": f"pinned {n}"}]},
        }
        scene.rollups.spend(1)
        _ingest(server, project.id, scene.ingest_key, event)
    e2e_index_caught_up()
    errors = scene.call("GET", "/errors", params={"search": "OpenApiError"}).json()
    assert len(errors) == 1, errors
    scene.error_id = int(errors[0]["id"])
    # A second error, so that the errors list has a second page too.
    _ingest(server, project.id, scene.ingest_key, {"message": "openapi second error"})
    yield scene
    scene.session.close()


@pytest.fixture(scope="module")
def api_schema(target: Target) -> Any:
    """The document as schemathesis reads it, aimed at the running server and at the target's ids.

    Fixed values (``parameters``) are never drawn nor negated: requests reach the real handlers.
    """
    project_id = str(target.project_id)
    key_path = "/api/v4/projects/{id}/error_tracking/client_keys/{key_id}"
    config = schemathesis.Config.from_dict(
        {
            "base-url": target.server.url,
            "seed": 1,  # with derandomize: the same requests on every run
            "cache": {"enabled": False},
            "auth": {"openapi": {"privateToken": {"api_key": target.token}}},
            # Credentials come from the test (a Maintainer token), never drawn: a drawn private_token would
            # win over it and turn the request into a 401 that exercises nothing.
            "generation": {"database": "none", "with-security-parameters": False},
            "parameters": {
                "path.id": project_id,
                "path.project_id": project_id,
                "path.error_id": target.error_id,
                # Ingestion reads the key from the header or the query: the header always names a good one.
                "header.X-Sentry-Auth": f"Sentry sentry_key={target.ingest_key}, sentry_version=7",
            },
            "operations": [
                {"include-name": f"PATCH {key_path}", "parameters": {"path.key_id": target.patch_key_id}},
                {"include-name": f"DELETE {key_path}", "parameters": {"path.key_id": target.delete_key_id}},
            ],
            # Undeclared methods must answer 405 with Allow. TRACE and QUERY are left out: the local server
            # answers them itself, as a route that does not exist (404, tests/test_local_server.py), before
            # the app sees the request, and API Gateway does not route them either.
            "phases": {"coverage": {"unexpected-methods": ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]}},
        }
    )
    return schemathesis.openapi.from_path(DOCUMENT_PATH, config=config)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis' lazy schemas (4.32) read ``node._nodeid``, which pytest 9.2 no longer has: give it one."""
    if not hasattr(request.node, "_nodeid"):
        setattr(request.node, "_nodeid", request.node.nodeid)  # noqa: B010


schema = schemathesis.pytest.from_fixture("api_schema")


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@schema.parametrize()
def test_the_service_answers_as_documented(case: schemathesis.Case[Any], target: Target) -> None:
    target.prepare(case)
    case.call_and_validate(session=target.session)


def test_schemathesis_reached_every_operation(target: Target) -> None:
    """The fuzzer's requests reached the handlers: they left traces an ordinary client can see."""
    keys = target.call("GET", "/client_keys", params={"per_page": "100"}).json()
    assert len(keys) > 3, "POST client_keys never succeeded"
    assert target.delete_key_id not in {key["id"] for key in keys}, "DELETE never deleted its key"
    events = target.call("GET", f"/errors/{target.error_id}/events", params={"limit": "100"}).json()
    assert len(events) > 2, "no fuzzed event joined the pinned error"


# The stateful phase: chains of requests that follow the document's links (a created or listed
# key's id to its PATCH and DELETE, a listed error's id to its detail, events and PUT), on make
# run's own demo project with the admin token it printed: the world a newcomer starts from.

STATEFUL_SCENARIOS = 40
MAX_SCENARIOS = 1000
# What a link must carry to a successful call: without links, a drawn key_id or error_id is a 404.
LINKED_OPERATIONS = {
    "PATCH /api/v4/projects/{id}/error_tracking/client_keys/{key_id}",
    "DELETE /api/v4/projects/{id}/error_tracking/client_keys/{key_id}",
    "GET /api/v4/projects/{id}/error_tracking/errors/{error_id}",
    "PUT /api/v4/projects/{id}/error_tracking/errors/{error_id}",
    "GET /api/v4/projects/{id}/error_tracking/errors/{error_id}/events",
}


@pytest.fixture(scope="module")
def demo(server: Server) -> Target:
    """make run's demo project, as its admin sees it: the key it was born with ingests (and is kept
    away from the fuzzer), and two errors are there to be reached."""
    world = Target(server, server.project_id, server.token, "", 0, 0, 0)
    world.baseline_setting()
    keys = world.call("GET", "/client_keys").json()
    world.ingest_key, world.patch_key_id = keys[0]["public_key"], int(keys[0]["id"])
    # An error in each status, so that a list filtered by any status has an id to link from.
    for status in ("unresolved", "resolved", "ignored"):
        world.rollups.spend(1)
        _ingest(server, world.project_id, world.ingest_key, {"message": f"stateful {status} error"})
        e2e_index_caught_up()
        error_id = int(world.call("GET", "/errors", params={"search": f"stateful {status}"}).json()[0]["id"])
        assert world.call("PUT", f"/errors/{error_id}", json={"status": status}).status_code == 200
    e2e_index_caught_up()
    world.error_id = int(world.call("GET", "/errors").json()[0]["id"])
    return world


def test_stateful_links_reach_every_operation(demo: Target) -> None:
    config = schemathesis.Config.from_dict(
        {
            "base-url": demo.server.url,
            "seed": 1,
            "cache": {"enabled": False},
            "auth": {"openapi": {"privateToken": {"api_key": demo.token}}},
            # Valid requests only: a link carries an id from a successful answer to the next call, which
            # a request drawn to be refused never makes (the fuzzing phase above sends those). With
            # both, most chains broke at their first call, and a linked PUT was reached by luck.
            "generation": {"database": "none", "with-security-parameters": False, "mode": "positive"},
            "parameters": {
                "path.id": str(demo.project_id),
                "path.project_id": str(demo.project_id),
                "header.X-Sentry-Auth": f"Sentry sentry_key={demo.ingest_key}, sentry_version=7",
            },
            "phases": {"stateful": {"max-steps": 8, "inference": {"algorithms": []}}},
        }
    )
    schema = schemathesis.openapi.from_path(DOCUMENT_PATH, config=config)
    calls: Counter[str] = Counter()
    linked: Counter[str] = Counter()  # successful calls whose ids came through a link
    scenarios = [0]

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def step(self, input: Any) -> Any:
            case = input.case
            if (case.path_parameters or {}).get("key_id") == demo.patch_key_id:
                # The ingestion key stays as it is: a deactivated one would refuse every valid event.
                case.path_parameters["key_id"] = int(demo.call("POST", "/client_keys").json()["id"])
            output = super().step(input)
            name = f"{case.method} {case.operation.path}"
            calls[name] += 1
            if input.transition is not None and input.is_applied and output.response.status_code < 300:
                linked[name] += 1
            return output

        def before_call(self, case: schemathesis.Case[Any]) -> None:
            if case.operation.path.endswith("/errors") and isinstance(case.query, dict):
                # A drawn search matches none of the errors, and an empty list links nowhere; the
                # fuzzing phase sends searches, this one follows links from what the list shows.
                case.query.pop("search", None)
            demo.prepare(case)

        def teardown(self) -> None:
            scenarios[0] += 1
            super().teardown()

        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"session": demo.session}

    # Which link a step can follow depends on what the server answered before, so a replayed
    # scenario can draw differently, which Hypothesis reports as a flaky strategy. Like
    # schemathesis's own runner, go on fuzzing in a fresh run then, for the scenarios left.
    # Runs go on, a batch of scenarios at a time, until every linked operation was reached (the
    # draws are random: one batch may miss a chain of three steps) or the budget is spent.
    restarts = 0
    while scenarios[0] < STATEFUL_SCENARIOS or (not set(linked) >= LINKED_OPERATIONS and scenarios[0] < MAX_SCENARIOS):
        try:
            Machine.run(
                settings=settings(
                    max_examples=STATEFUL_SCENARIOS,
                    stateful_step_count=8,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
            )
        except FlakyStrategyDefinition:
            restarts += 1
            assert restarts <= 20, "every run of the state machine was cut short"
    documented = {f"{method} {path}" for method, path in documented_routes(load_document())}
    report = (
        f"schemathesis stateful phase: {len(calls)} of {len(documented)} operations called "
        f"({sum(calls.values())} calls in {scenarios[0]} scenarios, {restarts} restarts), "
        f"{len(linked)} reached through links ({sum(linked.values())} calls): "
        + ", ".join(f"{name} x{count}" for name, count in sorted(linked.items()))
    )
    REPORTS.append(report)
    assert set(linked) >= LINKED_OPERATIONS, report
