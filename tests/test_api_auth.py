"""Who may call what, as a client sees it: spec sections 1 (authentication), 2 (the Maintainer rule and
the order of checks), 3 (the ``:id`` path parameter) and 8 (JSON everywhere, no secrets on the wire),
and the same rules on the routes this service adds: the errors API (Reporters read, Developers triage)
and ``PATCH client_keys/:key_id`` (Maintainers).

Every case asserts the exact status and the exact JSON body, that the answer is ``application/json``
without a trace, and that it carries none of the caller's token. Most tests are a matrix over every
route that takes a token; inside one test, each caller's answer is collected as ``(status, body)`` and
the whole table is compared at once, so a failure shows every cell that differs from the spec.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib import accounts, config, models
from tests.conftest import PROJECT_DIR, Api, Reply, Scene, index_caught_up
from tests.hooks.receiver import Receiver
from tests.wire import (
    BLOCKED,
    CORS_EXPOSED_HEADERS,
    CORS_REQUEST_HEADERS,
    ERROR_NOT_FOUND,
    EXPIRED,
    FORBIDDEN,
    INSUFFICIENT_SCOPE,
    KEY_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    NO_SENTRY_KEY,
    OTHER_PROJECTS_KEY,
    PROJECT_NOT_FOUND,
    REVOKED,
    SETTING_NOT_FOUND,
    UNAUTHORIZED,
    UNKNOWN_KEY,
    UNKNOWN_PROJECT,
    cors_list,
    not_json,
)

SETTINGS = "/api/v4/projects/{id}/error_tracking/settings"
KEYS = "/api/v4/projects/{id}/error_tracking/client_keys"
KEY = "/api/v4/projects/{id}/error_tracking/client_keys/{key_id}"
ERRORS = "/api/v4/projects/{id}/error_tracking/errors"
ERROR = ERRORS + "/{error_id}"
EVENTS = ERROR + "/events"
HOOKS = "/api/v4/projects/{id}/hooks"
HOOK = HOOKS + "/{hook_id}"
USER = "/api/v4/user"
VERSION = "/api/v4/version"
INGEST = "/errortracking/api/v1/projects/api/{id}/{endpoint}"
OPENAPI = "/api/v4/openapi.json"
# Routes that take no GitLab token: Sentry SDKs authenticate with a client key, and the API's description.
PUBLIC_ROUTES = [
    ("POST", "/errortracking/api/v1/projects/api/{project_id}/envelope"),
    ("POST", "/errortracking/api/v1/projects/api/{project_id}/store"),
    ("GET", OPENAPI),
]

NOT_FOUND = {"message": "404 Not Found"}

SETTING_ON = {"active": True, "project_name": None, "sentry_external_url": None, "api_url": None, "integrated": True}
SETTING_OFF = {**SETTING_ON, "active": False}
# GitLab's UserBasic keys in its order, then User's created_at and the admin flag.
USER_KEYS = ["id", "username", "name", "state", "locked", "avatar_url", "web_url", "created_at", "is_admin"]

# A token of the right shape that was never issued, and one of no recognisable shape.
NEVER_ISSUED = "glpat-" + "Zq3" * 10
MALFORMED = "not-even-a-glpat"

TRANSPORTS = ["private-token-header", "bearer-header", "query-parameter"]
VISIBILITIES = ["private", "internal", "public"]

Outcome = tuple[Any, ...]


# The routes, each with a request the project's maintainer can make successfully.

# The spec's access levels, written out here rather than taken from the code under test.
ROLE_LEVELS = {"guest": 10, "reporter": 20, "developer": 30, "maintainer": 40, "owner": 50}


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    template: str
    body: dict[str, Any] | None
    role: str = "maintainer"  # the least role that may call it

    @property
    def writes(self) -> bool:
        return self.method != "GET"

    def path(self, ref: str | int, key_id: int, error_id: int = 0, hook_id: int = 0) -> str:
        return self.template.format(
            id=ref, key_id=key_id, error_id=error_id, hook_id=hook_id, trigger="error_tracking_events"
        )


GET_SETTINGS = Route("get-settings", "GET", SETTINGS, None)
PUT_SETTINGS = Route("put-settings", "PUT", SETTINGS, {"active": True, "integrated": True})
PATCH_SETTINGS = Route("patch-settings", "PATCH", SETTINGS, {"active": False})
LIST_KEYS = Route("list-client-keys", "GET", KEYS, None)
CREATE_KEY = Route("create-client-key", "POST", KEYS, None)
DELETE_KEY = Route("delete-client-key", "DELETE", KEY, None)
PATCH_KEY = Route("patch-client-key", "PATCH", KEY, {"name": "renamed"})
LIST_ERRORS = Route("list-errors", "GET", ERRORS, None, role="reporter")
GET_ERROR = Route("get-error", "GET", ERROR, None, role="reporter")
LIST_EVENTS = Route("list-error-events", "GET", EVENTS, None, role="reporter")
UPDATE_ERROR = Route("update-error", "PUT", ERROR, {"status": "resolved"}, role="developer")
# Hooks: the world's hook tells a receiver on loopback (RECEIVER), which answers 200.
RECEIVER = Receiver()
LIST_HOOKS = Route("list-hooks", "GET", HOOKS, None)
CREATE_HOOK = Route("create-hook", "POST", HOOKS, {"url": "(the receiver's)"})
GET_HOOK = Route("get-hook", "GET", HOOK, None)
UPDATE_HOOK = Route("update-hook", "PUT", HOOK, {"name": "renamed"})
DELETE_HOOK = Route("delete-hook", "DELETE", HOOK, None)
TEST_HOOK = Route("test-hook", "POST", HOOK + "/test/{trigger}", None)
HOOK_ROUTES = [LIST_HOOKS, CREATE_HOOK, GET_HOOK, UPDATE_HOOK, DELETE_HOOK, TEST_HOOK]
# GitLab's six routes, whose answers the spec fixes to the byte.
ROUTES = [GET_SETTINGS, PUT_SETTINGS, PATCH_SETTINGS, LIST_KEYS, CREATE_KEY, DELETE_KEY]
# Every route that takes a token and names a project; a test checks this against app.py.
PROJECT_ROUTES = [*ROUTES, PATCH_KEY, LIST_ERRORS, GET_ERROR, LIST_EVENTS, UPDATE_ERROR, *HOOK_ROUTES]
WRITE_ROUTES = [route for route in PROJECT_ROUTES if route.writes]


def route_params(routes: list[Route]) -> list[Any]:
    return [pytest.param(route, id=route.name) for route in routes]


@dataclass(frozen=True)
class World:
    """A project with an active, integrated setting, exactly one client key and one tracked error."""

    project_id: int
    path: str
    key_id: int
    public_key: str
    error_id: int
    keeper: str  # an api token of the project's own maintainer, used to look without touching
    hook_id: int = 0

    @property
    def untouched(self) -> Outcome:
        return (
            SETTING_ON,
            [(self.key_id, True, None)],
            [(self.error_id, "unresolved", 1)],
            [(self.hook_id, None, "executable")],
        )


def ingest(api: Api, project_id: int | str, public_key: str, exc_type: str, *, endpoint: str = "envelope") -> Reply:
    """Report one exception with the project's Sentry key, the way an SDK does."""
    event = {"event_id": uuid.uuid4().hex, "platform": "python", "exception": {"values": [{"type": exc_type}]}}
    data = json.dumps(event).encode()
    if endpoint == "envelope":
        data = b"{}\n" + json.dumps({"type": "event", "length": len(data)}).encode() + b"\n" + data
    headers = {"X-Sentry-Auth": f"Sentry sentry_key={public_key}, sentry_version=7"}
    return api.post(INGEST.format(id=project_id, endpoint=endpoint), headers=headers, body=data)


def make_world(api: Api, scene: Scene, *, visibility: str = "private", path: str = "acme/shop") -> World:
    project = scene.project(path, visibility=visibility)
    keeper = scene.maintainer(project, "keeper-" + path.replace("/", "-"))
    project_id = int(project.project_id)
    put = api.put(SETTINGS.format(id=project_id), token=keeper, json_body={"active": True, "integrated": True})
    assert (put.status, put.json) == (200, SETTING_ON), put.body
    keys = api.get(KEYS.format(id=project_id), token=keeper)
    assert keys.status == 200 and len(keys.json) == 1, keys.body
    key_id, public_key = int(keys.json[0]["id"]), str(keys.json[0]["public_key"])
    # Error ids derive from the grouping: an exception type of this project's own keeps them apart.
    sent = ingest(api, project_id, public_key, "Error_" + path.replace("/", "_"))
    assert sent.status == 200, sent.body
    index_caught_up()
    errors = api.get(ERRORS.format(id=project_id), token=keeper)
    assert errors.status == 200 and len(errors.json) == 1, errors.body
    error_id = int(errors.json[0]["id"])
    hook = api.post(HOOKS.format(id=project_id), token=keeper, json_body={"url": receiver_url()})
    assert hook.status == 201, hook.body
    return World(project_id, path, key_id, public_key, error_id, keeper, int(hook.json["id"]))


def receiver_url() -> str:
    if RECEIVER.server is None:
        RECEIVER.start()
    return RECEIVER.url


@pytest.fixture(autouse=True)
def local_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The world's hook leads to a receiver on this machine, as `make run` allows."""
    monkeypatch.setenv("ERRORTRACKING_ALLOW_LOCAL_HOOKS", "true")
    config.get_config.cache_clear()


@pytest.fixture
def world(api: Api, scene: Scene) -> World:
    return make_world(api, scene)


def state(api: Api, world: World) -> Outcome:
    """What the project's maintainer sees: the setting, the keys as (id, active, name), the errors as
    (id, status, count) in any status."""
    setting = api.get(SETTINGS.format(id=world.project_id), token=world.keeper)
    keys = api.get(KEYS.format(id=world.project_id), token=world.keeper)
    assert setting.status == 200 and keys.status == 200, (setting.body, keys.body)
    errors = []
    index_caught_up()
    for status in ("unresolved", "resolved", "ignored"):
        listed = api.get(ERRORS.format(id=world.project_id) + f"?status={status}", token=world.keeper)
        assert listed.status == 200, listed.body
        errors += [(error["id"], error["status"], error["count"]) for error in listed.json]
    hooks = api.get(HOOKS.format(id=world.project_id), token=world.keeper)
    assert hooks.status == 200, hooks.body
    return (
        setting.json,
        [(key["id"], key["active"], key["name"]) for key in keys.json],
        errors,
        [(hook["id"], hook["name"], hook["alert_status"]) for hook in hooks.json],
    )


def fresh_hook(api: Api, world: World) -> int:
    """Another hook for the project, for a DELETE that is expected to succeed."""
    reply = api.post(HOOKS.format(id=world.project_id), token=world.keeper, json_body={"url": receiver_url()})
    assert reply.status == 201, reply.body
    return int(reply.json["id"])


def fresh_key(api: Api, world: World) -> int:
    """Another key for the project, for a DELETE that is expected to succeed."""
    reply = api.post(KEYS.format(id=world.project_id), token=world.keeper)
    assert reply.status == 201, reply.body
    return int(reply.json["id"])


# Sending requests and reading answers.


def auth_headers(token: str | None, transport: str) -> dict[str, str]:
    if token is None or transport == "query-parameter":
        return {}
    if transport == "private-token-header":
        return {"PRIVATE-TOKEN": token}
    assert transport == "bearer-header"
    return {"Authorization": f"Bearer {token}"}


def with_token(path: str, token: str | None, transport: str) -> str:
    if token is None or transport != "query-parameter":
        return path
    return f"{path}{'&' if '?' in path else '?'}private_token={token}"


def send(
    api: Api,
    route: Route,
    world: World,
    token: str | None,
    *,
    ref: str | int | None = None,
    transport: str = "private-token-header",
    key_id: int | None = None,
    error_id: int | None = None,
    hook_id: int | None = None,
) -> Reply:
    path = route.path(
        world.project_id if ref is None else ref,
        world.key_id if key_id is None else key_id,
        world.error_id if error_id is None else error_id,
        world.hook_id if hook_id is None else hook_id,
    )
    body = {"url": receiver_url()} if route is CREATE_HOOK else route.body
    return api.call(
        route.method, with_token(path, token, transport), headers=auth_headers(token, transport), json_body=body
    )


def hygiene(reply: Reply, *secrets: str | None) -> list[str]:
    """What is wrong with the answer's form: not JSON, a trace, or one of ``secrets`` in it."""
    problems = []
    content_type = reply.headers.get("content-type", "").split(";")[0].strip()
    no_content = reply.status == 204 and not reply.body  # GitLab's DELETE of a hook: nothing to type
    if content_type != "application/json" and not no_content:
        problems.append(f"content-type {content_type!r}")
    text = reply.body.decode("utf-8", "replace")
    if "Traceback" in text:
        problems.append("trace in body")
    for secret in secrets:
        if secret and secret in text:
            problems.append("token in body")
        if secret and any(secret in value for value in reply.headers.values()):
            problems.append("token in headers")
    return problems


def assert_clean(reply: Reply, *secrets: str | None) -> None:
    assert hygiene(reply, *secrets) == [], (reply.headers, reply.body)


def assert_error(reply: Reply, status: int, body: dict[str, Any], *secrets: str | None) -> None:
    assert (reply.status, reply.json) == (status, body), (reply.status, reply.body)
    assert_clean(reply, *secrets)


def summary(route: Route, reply: Reply) -> Any:
    """A body reduced to what the spec fixes: errors whole, successes by what they did."""
    try:
        body = reply.json
    except ValueError:
        return reply.body
    if reply.status >= 300 or not isinstance(body, dict | list):
        return body
    if route is LIST_KEYS and isinstance(body, list):
        return {"ids": [key.get("id") for key in body]}
    if route is CREATE_KEY and isinstance(body, dict):
        return "created" if body.get("active") is True and isinstance(body.get("id"), int) else body
    if route is DELETE_KEY and isinstance(body, dict):
        return {"deleted": body.get("id")}
    if route is PATCH_KEY and isinstance(body, dict):
        return {"key": body.get("id"), "name": body.get("name"), "active": body.get("active")}
    if route is LIST_ERRORS and isinstance(body, list):
        return {"errors": [error.get("id") for error in body]}
    if route in (GET_ERROR, UPDATE_ERROR) and isinstance(body, dict):
        return {"error": body.get("id"), "status": body.get("status")}
    if route is LIST_EVENTS and isinstance(body, list):
        return {"events": len(body)}
    if route is LIST_HOOKS and isinstance(body, list):
        return {"hooks": [hook.get("id") for hook in body]}
    if route is CREATE_HOOK and isinstance(body, dict):
        return "created" if isinstance(body.get("id"), int) and body.get("url") == receiver_url() else body
    if route in (GET_HOOK, UPDATE_HOOK) and isinstance(body, dict):
        return {"hook": body.get("id"), "name": body.get("name")}
    return body


def observe(route: Route, reply: Reply, *secrets: str | None) -> Outcome:
    problems = hygiene(reply, *secrets)
    return (reply.status, summary(route, reply), *([problems] if problems else []))


def success(route: Route, world: World, key_id: int) -> Outcome:
    """What the maintainer's request answers on a project in the state make_world leaves it."""
    return {
        GET_SETTINGS.name: (200, SETTING_ON),
        PUT_SETTINGS.name: (200, SETTING_ON),
        PATCH_SETTINGS.name: (200, SETTING_OFF),
        LIST_KEYS.name: (200, {"ids": [world.key_id]}),
        CREATE_KEY.name: (201, "created"),
        DELETE_KEY.name: (200, {"deleted": key_id}),
        PATCH_KEY.name: (200, {"key": world.key_id, "name": "renamed", "active": True}),
        LIST_ERRORS.name: (200, {"errors": [world.error_id]}),
        GET_ERROR.name: (200, {"error": world.error_id, "status": "unresolved"}),
        LIST_EVENTS.name: (200, {"events": 1}),
        UPDATE_ERROR.name: (200, {"error": world.error_id, "status": "resolved"}),
        LIST_HOOKS.name: (200, {"hooks": [world.hook_id]}),
        CREATE_HOOK.name: (201, "created"),
        GET_HOOK.name: (200, {"hook": world.hook_id, "name": None}),
        UPDATE_HOOK.name: (200, {"hook": world.hook_id, "name": "renamed"}),
        DELETE_HOOK.name: (204, b""),
        TEST_HOOK.name: (201, {"message": "201 Created"}),
    }[route.name]


def try_allowed(api: Api, route: Route, world: World, token: str, **kw: Any) -> tuple[Outcome, Outcome]:
    """(actual, expected) for a caller who may: DELETE targets a key made for it."""
    key_id = fresh_key(api, world) if route is DELETE_KEY else world.key_id
    hook_id = fresh_hook(api, world) if route is DELETE_HOOK else world.hook_id
    reply = send(api, route, world, token, key_id=key_id, hook_id=hook_id, **kw)
    return observe(route, reply, token), success(route, world, key_id)


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def member_token(
    scene: Scene,
    world: World,
    username: str,
    role: str,
    *,
    scopes: list[str] | None = None,
    expires_at: str | None = None,
) -> str:
    scene.user(username)
    accounts.add_member(world.project_id, username, role)
    return scene.token(username, scopes=scopes, expires_at=expires_at)


def revoked_token(username: str, *, scopes: list[str] | None = None, expires_at: str | None = None) -> str:
    stored, secret = accounts.create_token(username, scopes=scopes, expires_at=expires_at)
    accounts.revoke_token(int(stored.token_id))
    return secret


# Section 2: who may call what, tried as an attacker would: every route that names a project, every
# kind of caller, the project named by id and by path, in each visibility.

CALLERS = [
    "anonymous",
    "unknown-token",
    "malformed-token",
    "expired",  # a maintainer's token past its date
    "revoked",  # a maintainer's revoked token
    "read_api",  # a maintainer's token that may only read
    "blocked",  # a blocked maintainer's token
    "blocked-admin",
    "non-member",
    "neighbour",  # maintainer of another project
    "guest",
    "reporter",
    "developer",
    "maintainer",
    "owner",
    "admin",  # an instance admin, not a member
]


def caller_tokens(scene: Scene, world: World) -> dict[str, str | None]:
    """A token for every caller in CALLERS, each of its own user."""
    tokens: dict[str, str | None] = {"anonymous": None, "unknown-token": NEVER_ISSUED, "malformed-token": MALFORMED}
    tokens["expired"] = member_token(scene, world, "late", "maintainer", expires_at="2000-01-01")
    tokens["revoked"] = revoked_token("late")
    tokens["read_api"] = member_token(scene, world, "reader", "maintainer", scopes=["read_api"])
    tokens["blocked"] = member_token(scene, world, "gone", "maintainer")
    accounts.set_user_state("gone", "blocked")
    scene.user("fallen", admin=True, blocked=True)
    tokens["blocked-admin"] = scene.token("fallen")
    scene.user("stranger")
    tokens["non-member"] = scene.token("stranger")
    tokens["neighbour"] = scene.maintainer(scene.project("rival/shop"), "neighbour")
    for role in ROLE_LEVELS:
        tokens[role] = member_token(scene, world, role, role)
    scene.user("root", admin=True)
    tokens["admin"] = scene.token("root")
    assert list(tokens) == sorted(tokens, key=CALLERS.index)
    return tokens


def refusal(caller: str, visibility: str, route: Route) -> Outcome | None:
    """Spec sections 1 and 2, in GitLab's order of checks; None when the caller is allowed."""
    if caller in ("anonymous", "unknown-token", "malformed-token"):
        return (401, UNAUTHORIZED)
    if caller == "expired":
        return (401, EXPIRED)
    if caller == "revoked":
        return (401, REVOKED)
    if caller == "read_api":
        return (403, INSUFFICIENT_SCOPE) if route.writes else None
    if caller in ("blocked", "blocked-admin"):
        return (403, BLOCKED)
    if caller in ("non-member", "neighbour"):
        return (404, PROJECT_NOT_FOUND) if visibility == "private" else (403, FORBIDDEN)
    if caller == "admin" or ROLE_LEVELS[caller] >= ROLE_LEVELS[route.role]:
        return None
    return (403, FORBIDDEN)


@pytest.mark.parametrize("visibility", VISIBILITIES)
@pytest.mark.parametrize("route", route_params(PROJECT_ROUTES))
def test_authorization_matrix(api: Api, scene: Scene, route: Route, visibility: str) -> None:
    world = make_world(api, scene, visibility=visibility)
    tokens = caller_tokens(scene, world)
    refs: list[str | int] = [world.project_id, world.path.replace("/", "%2F")]
    actual: dict[tuple[str, str | int], Outcome] = {}
    expected: dict[tuple[str, str | int], Outcome] = {}
    # The refused first: none of them may change anything.
    for caller, token in tokens.items():
        refused = refusal(caller, visibility, route)
        if refused is None:
            continue
        for ref in refs:
            actual[caller, ref] = observe(route, send(api, route, world, token, ref=ref), token)
            expected[caller, ref] = refused
    assert state(api, world) == world.untouched
    for caller, token in tokens.items():
        for ref in refs if refusal(caller, visibility, route) is None else []:
            assert token is not None
            actual[caller, ref], expected[caller, ref] = try_allowed(api, route, world, token, ref=ref)
    assert {caller for caller, _ in actual} == set(CALLERS)
    assert actual == expected


def test_the_matrix_covers_every_route_with_the_role_it_declares() -> None:
    """A route added to app.py without its row in the matrix above fails here."""
    from app import app
    from chalicelib.authorizer import Requirement

    declared: dict[tuple[str, str], Requirement] = {
        (method, path): getattr(entry.view_function, "requirement")  # noqa: B009  (set by @requires)
        for path, methods in app.routes.items()
        for method, entry in methods.items()
    }
    by_project = {key: need.role for key, need in declared.items() if need.role is not None}
    matrix = {(route.method, route.template): ROLE_LEVELS[route.role] for route in PROJECT_ROUTES}
    assert by_project == matrix
    others = {key for key, need in declared.items() if need.role is None}
    # /user and /version are tested below with every caller; the public routes take no token at all.
    assert others == {("GET", USER), ("GET", VERSION), *PUBLIC_ROUTES}
    assert {key for key in others if declared[key].public} == set(PUBLIC_ROUTES)


def test_another_projects_maintainer_reaches_nothing_of_this_project(api: Api, scene: Scene) -> None:
    """Project B's maintainer, through A's URL and through B's URL naming A's key and error."""
    a = make_world(api, scene, path="acme/shop")
    b = make_world(api, scene, path="rival/shop")
    assert a.key_id != b.key_id and a.error_id != b.error_id
    actual: dict[tuple[str, str, str | int], Outcome] = {}
    expected: dict[tuple[str, str, str | int], Outcome] = {}
    for route in PROJECT_ROUTES:
        for ref in (a.project_id, "acme%2Fshop"):
            actual[route.name, "a's url", ref] = observe(route, send(api, route, a, b.keeper, ref=ref), b.keeper)
            expected[route.name, "a's url", ref] = (404, PROJECT_NOT_FOUND)
    assert state(api, a) == a.untouched
    for route in PROJECT_ROUTES:
        for ref in (b.project_id, "rival%2Fshop"):
            cell = (route.name, "b's url naming a's key and error", ref)
            if "{key_id}" in route.template or "{error_id}" in route.template:
                actual[cell] = observe(route, send(api, route, a, b.keeper, ref=ref), b.keeper)
                expected[cell] = (404, KEY_NOT_FOUND if "{key_id}" in route.template else ERROR_NOT_FOUND)
            elif not route.writes:  # B's lists hold B's key and error only
                actual[cell], expected[cell] = try_allowed(api, route, b, b.keeper, ref=ref)
    # A's Sentry key through B's ingestion URL.
    for endpoint in ("envelope", "store"):
        reply = ingest(api, b.project_id, a.public_key, "Intruder", endpoint=endpoint)
        actual["ingest", endpoint, b.project_id] = observe(LIST_KEYS, reply, a.public_key)
        expected["ingest", endpoint, b.project_id] = (403, OTHER_PROJECTS_KEY)
    assert actual == expected
    assert state(api, a) == a.untouched
    assert state(api, b) == b.untouched


def test_gitlab_tokens_open_no_public_route(api: Api, scene: Scene, world: World) -> None:
    """A token is not a Sentry key: whoever sends one, ingestion asks for the key, and refuses the
    token where the key goes. The API's own description is public, whatever token comes along."""
    tokens = caller_tokens(scene, world)
    actual: dict[tuple[str, ...], Outcome] = {}
    for caller, token in tokens.items():
        for transport in TRANSPORTS:
            for endpoint in ("envelope", "store"):
                path = with_token(INGEST.format(id=world.project_id, endpoint=endpoint), token, transport)
                reply = api.post(path, headers=auth_headers(token, transport), body=b'{"message": "hi"}')
                actual[caller, transport, endpoint] = observe(LIST_KEYS, reply, token)
            reply = api.get(with_token(OPENAPI, token, transport), headers=auth_headers(token, transport))
            actual[caller, transport, "openapi"] = (reply.status, reply.json.get("openapi"), *hygiene(reply, token))
    # Nor is a token a key when sent where a key goes.
    for caller, token in tokens.items():
        if token is None:
            continue
        reply = ingest(api, world.project_id, token, "TokenAsKey")
        actual[caller, "as-key", "envelope"] = observe(LIST_KEYS, reply, token)
        path = INGEST.format(id=world.project_id, endpoint="store") + f"?sentry_key={token}"
        actual[caller, "as-key", "store"] = observe(LIST_KEYS, api.post(path, body=b'{"message": "hi"}'), token)
    # A project named by path is no DSN's project, even with the right key.
    for endpoint in ("envelope", "store"):
        reply = ingest(api, "acme%2Fshop", world.public_key, "ByPath", endpoint=endpoint)
        actual["right-key", "by-path", endpoint] = observe(LIST_KEYS, reply, world.public_key)
    answers = {"openapi": (200, "3.1.0"), "by-path": (403, UNKNOWN_PROJECT), "as-key": (403, UNKNOWN_KEY)}
    assert actual == {cell: answers.get(cell[-1], answers.get(cell[1], (400, NO_SENTRY_KEY))) for cell in actual}
    assert state(api, world) == world.untouched


# Order of checks: authenticate (401) -> project (404) -> role (403) -> parameters (400) -> endpoint.

BAD_PARAMS = [
    pytest.param("PUT", {"active": "maybe", "integrated": True}, "active is invalid", id="put-invalid-boolean"),
    pytest.param("PATCH", {"active": "maybe"}, "active is invalid", id="patch-invalid-boolean"),
    pytest.param("PUT", {"active": True}, "integrated is missing", id="put-missing-integrated"),
    pytest.param("PATCH", {"integrated": True}, "active is missing", id="patch-missing-active"),
    pytest.param("PUT", {"active": "", "integrated": ""}, "active is empty, integrated is empty", id="put-empty"),
]


@pytest.mark.parametrize(("method", "body", "problem"), BAD_PARAMS)
def test_project_and_role_are_checked_before_parameters(
    api: Api, scene: Scene, world: World, method: str, body: dict[str, Any], problem: str
) -> None:
    path = SETTINGS.format(id=world.project_id)
    callers = {role: member_token(scene, world, role, role) for role in ("guest", "reporter", "developer")}
    scene.user("stranger")
    callers["stranger"] = scene.token("stranger")
    actual = {
        who: observe(PUT_SETTINGS, api.call(method, path, token=t, json_body=body), t) for who, t in callers.items()
    }
    actual["no-token"] = observe(PUT_SETTINGS, api.call(method, path, json_body=body))
    assert actual == {
        "guest": (403, FORBIDDEN),
        "reporter": (403, FORBIDDEN),
        "developer": (403, FORBIDDEN),
        "stranger": (404, PROJECT_NOT_FOUND),
        "no-token": (401, UNAUTHORIZED),
    }
    assert state(api, world) == world.untouched
    # The parameters really are bad: the maintainer is told so.
    reply = api.call(method, path, token=world.keeper, json_body=body)
    assert_error(reply, 400, {"error": problem}, world.keeper)


def test_non_member_of_visible_project_with_bad_parameters_gets_403(api: Api, scene: Scene) -> None:
    scene.user("stranger")
    token = scene.token("stranger")
    for visibility, path in (("internal", "acme/inside"), ("public", "acme/outside")):
        project = scene.project(path, visibility=visibility)
        reply = api.put(SETTINGS.format(id=int(project.project_id)), token=token, json_body={"active": "maybe"})
        assert_error(reply, 403, FORBIDDEN, token)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_maintainer_with_bad_parameters_gets_400(api: Api, world: World, method: str) -> None:
    body = {"active": "maybe", "integrated": True}
    reply = api.call(method, SETTINGS.format(id=world.project_id), token=world.keeper, json_body=body)
    assert_error(reply, 400, {"error": "active is invalid"}, world.keeper)
    assert state(api, world) == world.untouched


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_malformed_json_from_developer_is_403_and_from_maintainer_400(
    api: Api, scene: Scene, world: World, method: str
) -> None:
    path = SETTINGS.format(id=world.project_id)
    headers = {"Content-Type": "application/json"}
    developer = member_token(scene, world, "dev", "developer")
    assert_error(
        api.call(method, path, token=developer, headers=headers, body='{"active": tru'), 403, FORBIDDEN, developer
    )
    reply = api.call(method, path, token=world.keeper, headers=headers, body='{"active": tru')
    assert_error(reply, 400, not_json('{"active": tru'), world.keeper)
    assert state(api, world) == world.untouched


MISSING_REFS: list[str | int] = [999, "nobody%2Fnothing", "garbage"]


@pytest.mark.parametrize("route", route_params(PROJECT_ROUTES))
def test_who_learns_what_about_a_missing_project(api: Api, scene: Scene, world: World, route: Route) -> None:
    """Token problems are answered before the project is looked up; only then is it not found."""
    scene.user("late")
    scene.user("gone", blocked=True)
    scene.user("root", admin=True)
    tokens: dict[str, str | None] = {
        "no-token": None,
        "unknown": NEVER_ISSUED,
        "malformed": MALFORMED,
        "expired": scene.token("late", expires_at="2000-01-01"),
        "revoked": revoked_token("late"),
        "blocked": scene.token("gone"),
        "read_api-admin": scene.token("root", scopes=["read_api"]),
        "admin": scene.token("root"),
        "maintainer-here": world.keeper,
    }
    answers: dict[str, Outcome] = {
        "no-token": (401, UNAUTHORIZED),
        "unknown": (401, UNAUTHORIZED),
        "malformed": (401, UNAUTHORIZED),
        "expired": (401, EXPIRED),
        "revoked": (401, REVOKED),
        "blocked": (403, BLOCKED),
        "read_api-admin": (403, INSUFFICIENT_SCOPE) if route.writes else (404, PROJECT_NOT_FOUND),
        "admin": (404, PROJECT_NOT_FOUND),
        "maintainer-here": (404, PROJECT_NOT_FOUND),
    }
    actual = {
        (who, ref): observe(route, send(api, route, world, token, ref=ref), token)
        for who, token in tokens.items()
        for ref in MISSING_REFS
    }
    assert actual == {(who, ref): answers[who] for who in tokens for ref in MISSING_REFS}
    assert state(api, world) == world.untouched


@pytest.mark.parametrize("route", route_params(WRITE_ROUTES))
def test_read_api_write_is_refused_for_scope_before_project_and_role(
    api: Api, scene: Scene, world: World, route: Route
) -> None:
    scene.user("stranger")
    tokens = {
        "non-member": scene.token("stranger", scopes=["read_api"]),
        "guest": member_token(scene, world, "guest", "guest", scopes=["read_api"]),
        "developer": member_token(scene, world, "developer", "developer", scopes=["read_api"]),
        "maintainer": member_token(scene, world, "maintainer", "maintainer", scopes=["read_api"]),
    }
    actual = {who: observe(route, send(api, route, world, token), token) for who, token in tokens.items()}
    assert actual == {who: (403, INSUFFICIENT_SCOPE) for who in tokens}
    assert state(api, world) == world.untouched


@pytest.mark.parametrize("route", [GET_SETTINGS, PATCH_SETTINGS], ids=["get", "patch"])
def test_role_is_checked_before_the_setting_exists(api: Api, scene: Scene, route: Route) -> None:
    project = scene.project("acme/bare")
    path = SETTINGS.format(id=int(project.project_id))
    scene.user("dev")
    scene.member(project, "dev", "developer")
    developer = scene.token("dev")
    assert_error(api.call(route.method, path, token=developer, json_body=route.body), 403, FORBIDDEN, developer)
    maintainer = scene.maintainer(project)
    reply = api.call(route.method, path, token=maintainer, json_body=route.body)
    assert_error(reply, 404, SETTING_NOT_FOUND, maintainer)


def test_deleting_a_missing_key_answers_by_caller(api: Api, scene: Scene, world: World) -> None:
    developer = member_token(scene, world, "dev", "developer")
    scene.user("stranger")
    scene.user("root", admin=True)
    tokens = {"developer": developer, "stranger": scene.token("stranger"), "maintainer": world.keeper}
    tokens["admin"] = scene.token("root")
    actual = {
        (who, key_ref): observe(DELETE_KEY, api.delete(KEY.format(id=world.project_id, key_id=key_ref), token=t), t)
        for who, t in tokens.items()
        for key_ref in ("999", "abc", "-1", "0")
    }
    by_caller = {
        "developer": (403, FORBIDDEN),
        "stranger": (404, PROJECT_NOT_FOUND),
        "maintainer": (404, KEY_NOT_FOUND),
        "admin": (404, KEY_NOT_FOUND),
    }
    # GitLab's order: token, project, role, then the key_id parameter (400), then the key (404).
    not_an_integer = (400, {"error": "key_id is invalid"})
    expected = {
        (who, key_ref): not_an_integer if key_ref == "abc" and who in ("maintainer", "admin") else by_caller[who]
        for who, key_ref in actual
    }
    assert actual == expected
    assert state(api, world) == world.untouched


def test_integrated_switch_off_is_checked_after_role_and_parameters(
    api: Api, scene: Scene, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ERRORTRACKING_INTEGRATED", "false")
    config.get_config.cache_clear()
    path = SETTINGS.format(id=world.project_id)
    developer = member_token(scene, world, "dev", "developer")
    reply = api.put(path, token=developer, json_body={"active": True, "integrated": True})
    assert_error(reply, 403, FORBIDDEN, developer)
    reply = api.put(path, token=world.keeper, json_body={"active": "maybe", "integrated": True})
    assert_error(reply, 400, {"error": "active is invalid"}, world.keeper)
    reply = api.put(path, token=world.keeper, json_body={"active": True, "integrated": True})
    assert_error(reply, 404, NOT_FOUND, world.keeper)


# Section 1: authentication, on every route.


@pytest.mark.parametrize("route", route_params(PROJECT_ROUTES))
def test_every_transport_on_every_route(api: Api, scene: Scene, world: World, route: Route) -> None:
    expired = member_token(scene, world, "late", "maintainer", expires_at="2000-01-01")
    reader = member_token(scene, world, "reader", "maintainer", scopes=["read_api"])
    actual: dict[tuple[str, str], Outcome] = {}
    expected: dict[tuple[str, str], Outcome] = {}
    for transport in TRANSPORTS:
        for who, token, answer in (
            ("unknown", NEVER_ISSUED, (401, UNAUTHORIZED)),
            ("expired", expired, (401, EXPIRED)),
        ):
            actual[transport, who] = observe(route, send(api, route, world, token, transport=transport), token)
            expected[transport, who] = answer
        if route.writes:
            actual[transport, "read_api"] = observe(route, send(api, route, world, reader, transport=transport), reader)
            expected[transport, "read_api"] = (403, INSUFFICIENT_SCOPE)
    assert state(api, world) == world.untouched
    for transport in TRANSPORTS:
        # The numeric id with every transport; a path id next to the token in the query string too.
        for ref in (world.project_id, "acme%2Fshop") if transport == "query-parameter" else (world.project_id,):
            cell = (transport, f"maintainer@{ref}")
            actual[cell], expected[cell] = try_allowed(api, route, world, world.keeper, ref=ref, transport=transport)
        if not route.writes:
            actual[transport, "read_api"], expected[transport, "read_api"] = try_allowed(
                api, route, world, reader, transport=transport
            )
    assert actual == expected


@pytest.mark.parametrize("route", route_params(PROJECT_ROUTES))
def test_token_and_user_states_on_every_route(api: Api, scene: Scene, world: World, route: Route) -> None:
    tomorrow = (today() + dt.timedelta(days=1)).isoformat()
    member_token(scene, world, "m", "maintainer")
    blocked = member_token(scene, world, "gone", "maintainer")
    accounts.set_user_state("gone", "blocked")
    scene.user("fallen", admin=True, blocked=True)
    refused: dict[str, tuple[str, Outcome]] = {
        "expired": (scene.token("m", expires_at="2000-01-01"), (401, EXPIRED)),
        "expiring-today": (scene.token("m", expires_at=today().isoformat()), (401, EXPIRED)),
        "revoked": (revoked_token("m"), (401, REVOKED)),
        # GitLab's order: expired before revoked, both before scope; scope before the user's state.
        "expired-and-revoked": (revoked_token("m", expires_at="2000-01-01"), (401, EXPIRED)),
        "revoked-read_api": (revoked_token("m", scopes=["read_api"]), (401, REVOKED)),
        "blocked-maintainer": (blocked, (403, BLOCKED)),
        "blocked-admin": (scene.token("fallen"), (403, BLOCKED)),
    }
    if route.writes:
        refused["read_api"] = (scene.token("m", scopes=["read_api"]), (403, INSUFFICIENT_SCOPE))
        refused["blocked-read_api"] = (scene.token("gone", scopes=["read_api"]), (403, INSUFFICIENT_SCOPE))
    actual = {case: observe(route, send(api, route, world, token), token) for case, (token, _) in refused.items()}
    expected = {case: answer for case, (_, answer) in refused.items()}
    assert state(api, world) == world.untouched
    allowed = {
        "expiring-tomorrow": scene.token("m", expires_at=tomorrow),
        "api-and-read_api": scene.token("m", scopes=["read_api", "api"]),
        "other-token-of-a-user-with-a-revoked-one": scene.token("m"),
    }
    if not route.writes:
        allowed["read_api"] = scene.token("m", scopes=["read_api"])
    for case, token in allowed.items():
        actual[case], expected[case] = try_allowed(api, route, world, token)
    assert actual == expected


def test_unblocked_user_is_let_in_again(api: Api, scene: Scene, world: World) -> None:
    token = member_token(scene, world, "m", "maintainer")
    accounts.set_user_state("m", "blocked")
    assert_error(send(api, GET_SETTINGS, world, token), 403, BLOCKED, token)
    accounts.set_user_state("m", "active")
    assert observe(GET_SETTINGS, send(api, GET_SETTINGS, world, token), token) == (200, SETTING_ON)


def test_empty_or_unusable_token_is_401(api: Api, world: World) -> None:
    ways: dict[str, tuple[dict[str, str], str]] = {
        "empty-private-token": ({"PRIVATE-TOKEN": ""}, ""),
        "bearer-without-token": ({"Authorization": "Bearer"}, ""),
        "bearer-blank": ({"Authorization": "Bearer "}, ""),
        "basic-scheme": ({"Authorization": f"Basic {NEVER_ISSUED}"}, ""),
        "empty-query-token": ({}, "?private_token="),
    }
    actual = {
        (way, route.name): observe(
            route,
            api.call(route.method, route.path(world.project_id, world.key_id) + query, headers=headers),
            NEVER_ISSUED,
        )
        for way, (headers, query) in ways.items()
        for route in PROJECT_ROUTES
    }
    assert actual == {cell: (401, UNAUTHORIZED) for cell in actual}
    assert state(api, world) == world.untouched


# GET /api/v4/user


def expected_user(user: models.User, username: str, name: str, *, admin: bool = False) -> dict[str, Any]:
    return {
        "id": int(user.user_id),
        "username": username,
        "name": name,
        "state": "active",
        "locked": False,
        "avatar_url": None,
        "web_url": None,
        "created_at": user.created_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{user.created_at.microsecond // 1000:03d}Z",
        "is_admin": admin,
    }


@pytest.mark.parametrize("admin", [False, True], ids=["user", "admin"])
def test_current_user(api: Api, store: None, admin: bool) -> None:
    user = accounts.create_user("alice", admin=admin, name="Alice Liddell")
    _, token = accounts.create_token("alice")
    _, reader = accounts.create_token("alice", scopes=["read_api"])
    expected = expected_user(user, "alice", "Alice Liddell", admin=admin)
    for secret in (token, reader):
        for transport in TRANSPORTS:
            reply = api.get(with_token(USER, secret, transport), headers=auth_headers(secret, transport))
            assert (reply.status, reply.json) == (200, expected), (transport, reply.body)
            assert list(reply.json) == USER_KEYS
            assert_clean(reply, secret)


def test_current_user_is_the_tokens_owner(api: Api, scene: Scene) -> None:
    first, second = scene.user("first"), scene.user("second")
    assert api.get(USER, token=scene.token("first")).json == expected_user(first, "first", "first")
    assert api.get(USER, token=scene.token("second")).json == expected_user(second, "second", "second")


def test_current_user_refusals(api: Api, scene: Scene) -> None:
    scene.user("alice")
    scene.user("bob", blocked=True)
    cases: dict[str, tuple[str | None, Outcome]] = {
        "no-token": (None, (401, UNAUTHORIZED)),
        "unknown": (NEVER_ISSUED, (401, UNAUTHORIZED)),
        "expired": (scene.token("alice", expires_at="2000-01-01"), (401, EXPIRED)),
        "expiring-today": (scene.token("alice", expires_at=today().isoformat()), (401, EXPIRED)),
        "revoked": (revoked_token("alice"), (401, REVOKED)),
        "blocked": (scene.token("bob"), (403, BLOCKED)),
    }
    actual = {}
    for case, (token, _) in cases.items():
        reply = api.get(USER, headers=auth_headers(token, "private-token-header"))
        actual[case] = (reply.status, reply.json, *([problems] if (problems := hygiene(reply, token)) else []))
    assert actual == {case: answer for case, (_, answer) in cases.items()}


# GET /api/v4/version


def test_version_answers_any_valid_token_in_gitlabs_shape(api: Api, scene: Scene) -> None:
    """python-gitlab's ``gl.version()`` reads it (and says "unknown" when it fails)."""
    import tomllib

    scene.user("alice")
    scene.user("bob", blocked=True)
    with open(os.path.join(PROJECT_DIR, "pyproject.toml"), "rb") as project:
        version = tomllib.load(project)["project"]["version"]
    expected = {
        "version": version,
        "revision": "errortracking",
        "kas": {"enabled": False, "externalUrl": None, "version": None},
        "enterprise": False,
    }
    cases = {
        "api": (scene.token("alice"), (200, expected)),
        "read_api": (scene.token("alice", scopes=["read_api"]), (200, expected)),
        "no-token": (None, (401, UNAUTHORIZED)),
        "unknown": (NEVER_ISSUED, (401, UNAUTHORIZED)),
        "blocked": (scene.token("bob"), (403, BLOCKED)),
    }
    actual = {}
    for case, (token, _) in cases.items():
        reply = api.get(VERSION, headers=auth_headers(token, "private-token-header"))
        actual[case] = (reply.status, reply.json)
    assert actual == {case: answer for case, (_, answer) in cases.items()}


# Section 3: the :id path parameter.


@pytest.mark.parametrize("route", route_params(PROJECT_ROUTES))
def test_project_by_url_encoded_path_ignores_case(api: Api, world: World, route: Route) -> None:
    actual: dict[str, Outcome] = {}
    expected: dict[str, Outcome] = {}
    for ref in ("acme%2Fshop", "ACME%2FSHOP", "aCmE%2fsHoP"):
        actual[ref], expected[ref] = try_allowed(api, route, world, world.keeper, ref=ref)
    assert actual == expected


def test_project_in_a_subgroup_by_path(api: Api, scene: Scene) -> None:
    world = make_world(api, scene, path="acme/team/shop")
    scene.project("acme/team2")
    actual = {
        ref: observe(LIST_KEYS, send(api, LIST_KEYS, world, world.keeper, ref=ref))
        for ref in ("acme%2Fteam%2Fshop", "Acme%2FTeam%2FShop", "acme%2Fteam", "acme%2Fshop", "team%2Fshop")
    }
    assert actual == {
        "acme%2Fteam%2Fshop": (200, {"ids": [world.key_id]}),
        "Acme%2FTeam%2FShop": (200, {"ids": [world.key_id]}),
        "acme%2Fteam": (404, PROJECT_NOT_FOUND),
        "acme%2Fshop": (404, PROJECT_NOT_FOUND),
        "team%2Fshop": (404, PROJECT_NOT_FOUND),
    }


def test_numeric_id_and_path_reach_the_same_project(api: Api, scene: Scene) -> None:
    first = make_world(api, scene, path="acme/shop")
    second = scene.project("acme/second")
    assert int(second.project_id) != first.project_id
    for ref in (first.project_id, "acme%2Fshop"):
        keys = send(api, LIST_KEYS, first, first.keeper, ref=ref)
        assert [key["id"] for key in keys.json] == [first.key_id]
        # The DSN names the project by number, whichever way the request named it.
        assert keys.json[0]["sentry_dsn"].endswith(f"/errortracking/api/v1/projects/{first.project_id}")


GARBAGE_REFS = [
    "abc",
    "acme",
    "shop",
    "-1",
    "+1",
    "%2B1",
    "1.0",
    "1e3",
    "0x1",
    "%201",
    "1%20",
    "1%2F",
    "%",
    "%ZZ",
    "%C3%A9",
    "acme%252Fshop",
    "acme%2F",
    "nobody%2Fnothing",
    "0",
    "999",
    "99999999999999999999999999999999999999999999999999",
]


def test_unknown_or_garbage_id_is_project_not_found(api: Api, scene: Scene, world: World) -> None:
    # An admin may see every project: a 404 for them means there is no such project.
    scene.user("root", admin=True)
    admin = scene.token("root")
    actual = {
        (ref, route.name): observe(route, send(api, route, world, admin, ref=ref), admin)
        for ref in GARBAGE_REFS
        for route in (GET_SETTINGS, PUT_SETTINGS)
    }
    assert actual == {cell: (404, PROJECT_NOT_FOUND) for cell in actual}
    assert state(api, world) == world.untouched


@pytest.fixture
def gateway(api: Api) -> Iterator[Any]:
    """The app as Lambda sees it behind API Gateway, which may hand ``:id`` over already decoded."""
    from app import app

    yield app


def invoke(app: Any, method: str, encoded_path: str, path_id: str, token: str) -> tuple[int, Any]:
    """Call the Lambda handler with the event API Gateway would send, ``:id`` handed over as ``path_id``."""
    from chalice.local import LambdaContext, LambdaEventConverter, RouteMatcher

    converter = LambdaEventConverter(RouteMatcher(list(app.routes)))
    event = converter.create_lambda_event(method, encoded_path, {"PRIVATE-TOKEN": token}, None)
    event["pathParameters"]["id"] = path_id
    response = app(event, LambdaContext("api_handler", 128))
    return int(response["statusCode"]), json.loads(response["body"])


def test_path_id_is_accepted_encoded_or_decoded(gateway: Any, world: World) -> None:
    handovers = [
        ("acme%2Fshop", "acme%2Fshop"),  # as `chalice local` hands it over
        ("Acme%2fShop", "Acme%2fShop"),
        ("acme%2Fshop", "acme/shop"),  # as API Gateway may hand it over
        ("ACME%2FShop", "ACME/Shop"),
    ]
    actual = {
        (encoded, handed_over): invoke(gateway, "GET", SETTINGS.format(id=encoded), handed_over, world.keeper)
        for encoded, handed_over in handovers
    }
    assert actual == {cell: (200, SETTING_ON) for cell in handovers}


def test_path_id_is_decoded_exactly_once_when_handed_over_decoded(gateway: Any, world: World) -> None:
    # The client sent acme%252Fshop, whose single decoding is the id "acme%2Fshop": no slash, no project.
    # API Gateway may hand it over already decoded once; decoding it again would find acme/shop.
    encoded = SETTINGS.format(id="acme%252Fshop")
    assert invoke(gateway, "GET", encoded, "acme%252Fshop", world.keeper) == (404, PROJECT_NOT_FOUND)
    assert invoke(gateway, "GET", encoded, "acme%2Fshop", world.keeper) == (404, PROJECT_NOT_FOUND)


# Section 8: everything else.


def test_unknown_route_is_refused_without_echoing_the_token(api: Api, world: World) -> None:
    for path in ("/api/v4/nope", f"/api/v4/projects/{world.project_id}/error_tracking/nope", "/api/v4/projects"):
        reply = api.get(path, token=world.keeper)
        # chalice.test.Client's own answer, before any of our code runs. The servers users reach give
        # GitLab's 404 {"error": "404 Not Found"}: the deployed gateway (tests/test_apigateway.py) and
        # `make run`'s handler (tests/test_local_server.py).
        assert (reply.status, reply.json) == (403, {"message": "Missing Authentication Token"}), reply.body
        assert world.keeper not in reply.body.decode("utf-8")


def preflight_answer(path: str, headers: dict[str, str]) -> Reply:
    """A CORS preflight as chalice local's gateway answers it (chalice.test.Client cannot: no body)."""
    from chalice.config import Config
    from chalice.local import LocalGateway

    from app import app

    answer = LocalGateway(app, Config.create(chalice_stage="dev")).handle_request("OPTIONS", path, headers, None)
    return Reply(answer["statusCode"], {k.lower(): v for k, v in answer["headers"].items()}, b"")


def test_a_page_on_any_origin_may_call_the_api_with_a_token_but_no_cookie(api: Api, world: World) -> None:
    """GitLab's CORS for /api: a preflight from any origin is answered, answers carry the origin and
    expose the pagination headers, and credentials (cookies) are never allowed."""
    origin = {"Origin": "https://dashboard.example"}
    keys = KEYS.format(id=world.project_id)
    preflight = preflight_answer(
        keys, {**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "private-token"}
    )
    assert preflight.status == 200, preflight.body
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert cors_list(preflight.headers, "access-control-allow-methods") >= {"get", "post"}
    assert cors_list(preflight.headers, "access-control-allow-headers") >= CORS_REQUEST_HEADERS
    listed = api.get(keys + "?per_page=1", token=world.keeper, headers=origin)
    refused = api.get(keys, token=NEVER_ISSUED, headers=origin)
    wrong_method = api.call("PUT", keys, token=world.keeper, headers=origin)
    for reply, status in ((listed, 200), (refused, 401), (wrong_method, 405)):
        assert reply.status == status, reply.body
        assert reply.headers["access-control-allow-origin"] == "*", (status, reply.headers)
        assert cors_list(reply.headers, "access-control-expose-headers") >= CORS_EXPOSED_HEADERS
    for reply in (preflight, listed, refused, wrong_method):
        assert "access-control-allow-credentials" not in reply.headers, reply.headers
    assert listed.headers["x-total"] == "1" and "link" in listed.headers


def test_wrong_method_answers_json(api: Api, world: World) -> None:
    for method, path in (("POST", USER), ("DELETE", SETTINGS), ("PUT", KEYS), ("GET", KEY)):
        reply = api.call(method, path.format(id=world.project_id, key_id=world.key_id), token=world.keeper)
        assert (reply.status, reply.json) == (405, METHOD_NOT_ALLOWED), (method, path, reply.body)
        assert_clean(reply, world.keeper)
    assert state(api, world) == world.untouched
