"""GitLab-compatible Error Tracking API: the routes, each with the role it needs.

Every request passes through the authorizer middleware first (chalicelib/authorizer.py), which
authenticates the token, finds the project, checks the role declared by ``@requires`` and loads
what the route preloads. Views then validate parameters, call a service and present an entity.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from chalice.app import Chalice, CORSConfig, DynamoDBEvent, Request, Response

from chalicelib import authorizer, budget, client_keys, entities, errors, settings, telemetry
from chalicelib.authorizer import Preload, current, current_project, public, requires
from chalicelib.config import get_config
from chalicelib.ingest import function_url, ingestion, tracked_errors
from chalicelib.models import DEVELOPER, MAINTAINER, REPORTER, ErrorTrackingSetting, ProjectHook, TrackedError
from chalicelib.pagination import cursor_headers, page_size, paginate
from chalicelib.params import CONTENT_TYPES, Params, raw_body, request_params, require_integer
from chalicelib.urls import dsn_base_url, public_base_url, request_url

app = Chalice(app_name="errortracking")
# The deployed API's binary media types are */* (.chalice/merge-template.json), so API Gateway hands
# every body over base64, as sent: SDKs post compressed bodies under any content type, or none.
# Chalice's own list (app.api.binary_types, what it packages) is overridden there, never given */*:
# Chalice would then take its JSON answers for binary ones and refuse them to clients sending no
# binary Accept header (a 400), as Sentry SDKs do.
app.register_middleware(telemetry.middleware, "http")  # outermost: logs the final answer
app.register_middleware(budget.middleware, "http")  # a deadline for every store call after it
app.register_middleware(authorizer.middleware(app), "http")

PROJECT = "/api/v4/projects/{id}"
SETTINGS = PROJECT + "/error_tracking/settings"
CLIENT_KEYS = PROJECT + "/error_tracking/client_keys"
CLIENT_KEY = CLIENT_KEYS + "/{key_id}"
HOOKS = PROJECT + "/hooks"
HOOK = HOOKS + "/{hook_id}"
ERRORS = PROJECT + "/error_tracking/errors"
ERROR = ERRORS + "/{error_id}"
# Where a DSN leads: a Sentry SDK appends api/<project id>/envelope/ to the DSN's path.
INGEST = function_url.INGEST_ROUTE
# Any content type, or none, as Sentry takes: @sentry/node sends none, browsers text/plain, curl's
# --data-binary a form type. The body is read by its bytes whatever it says it is.
SENTRY_CONTENT_TYPES = ["*/*"]
# GitLab's CORS for /api/* called with a token (config/application.rb, Rack::Cors): any origin, never
# credentials (no cookie session here to protect), the token headers, and the pagination headers
# readable by the page; X-Next-Cursor and Retry-After are this service's own. The browser may cache
# a preflight as long as rack-cors lets it (7200 s).
API_CORS = CORSConfig(
    allow_origin="*",
    allow_headers=["PRIVATE-TOKEN", "Authorization", "Content-Type"],
    expose_headers=[
        "Link",
        "X-Total",
        "X-Total-Pages",
        "X-Per-Page",
        "X-Page",
        "X-Next-Page",
        "X-Prev-Page",
        "X-Next-Cursor",
        "Retry-After",
    ],
    max_age=7200,
)
# Browser SDKs post cross-origin and must read the rate-limit headers.
SENTRY_CORS = CORSConfig(
    allow_origin="*",
    allow_headers=["X-Sentry-Auth", "Content-Type", "Content-Encoding"],
    expose_headers=["X-Sentry-Rate-Limits", "Retry-After"],
)


def _request() -> Request:
    request = app.current_request
    assert request is not None  # always set while a view runs
    return request


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json", **(headers or {})})


def _setting_response(setting: ErrorTrackingSetting) -> Response:
    return _json(entities.setting(setting))


def _current_error() -> TrackedError:
    error = current().error
    if error is None:
        raise errors.not_found("Error")
    return error


@app.route("/api/v4/user", methods=["GET"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(None)
def get_current_user() -> Response:
    return _json(entities.current_user(current().user))


@app.route("/api/v4/version", methods=["GET"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(None)
def get_version() -> Response:
    return _json(entities.version())


@app.route(SETTINGS, methods=["GET"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER, preload=(Preload.SETTING,))
def get_settings(id: str) -> Response:
    setting = current().setting
    if setting is None:
        raise errors.not_found("Error Tracking Setting")
    return _setting_response(setting)


@app.route(SETTINGS, methods=["PATCH"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER, preload=(Preload.SETTING,))
def patch_settings(id: str) -> Response:
    change = settings.parse_change(request_params(_request()), integrated_required=False)
    return _setting_response(settings.save(current_project(), current().setting, change, create=False))


@app.route(SETTINGS, methods=["PUT"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER, preload=(Preload.SETTING,))
def put_settings(id: str) -> Response:
    change = settings.parse_change(request_params(_request()), integrated_required=True)
    if not get_config().integrated_enabled:
        raise errors.not_found()
    return _setting_response(settings.save(current_project(), current().setting, change, create=True))


@app.route(CLIENT_KEYS, methods=["GET"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER)
def list_client_keys(id: str) -> Response:
    request = _request()
    base = dsn_base_url(request)
    page, headers = paginate(
        client_keys.list_keys(int(current_project().project_id)), request_params(request), request_url(request)
    )
    return _json([entities.client_key(key, base) for key in page], headers=headers)


@app.route(CLIENT_KEYS, methods=["POST"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER)
def create_client_key(id: str) -> Response:
    key = client_keys.create_key(current_project())
    return _json(entities.client_key(key, dsn_base_url(_request())), status=201)


@app.route(CLIENT_KEY, methods=["DELETE"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER, preload=(Preload.CLIENT_KEY,))
def delete_client_key(id: str, key_id: str) -> Response:
    require_integer("key_id", key_id)
    key = client_keys.delete_key(current_project(), current().client_key)
    return _json(entities.client_key(key, dsn_base_url(_request())))


@app.route(CLIENT_KEY, methods=["PATCH"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER, preload=(Preload.CLIENT_KEY,))
def update_client_key(id: str, key_id: str) -> Response:
    require_integer("key_id", key_id)
    params = Params(request_params(_request()))
    params.at_least_one(("active", "name", "rate_limit_count", "rate_limit_window"))
    active = params.boolean("active")
    name = params.string("name", allow_empty=True)
    count = params.integer("rate_limit_count", minimum=1, maximum=1_000_000, allow_empty=True)
    window = params.integer("rate_limit_window", minimum=1, maximum=86_400, allow_empty=True)
    pair_given = "rate_limit_count" in params.raw, "rate_limit_window" in params.raw
    if pair_given[0] != pair_given[1] or (count == 0) != (window == 0):
        params.problems.append("rate_limit_count and rate_limit_window must be given together")
    params.check()
    key = client_keys.update_key(
        current_project(),
        current().client_key,
        active=active,
        name=name,
        rate_limit=None if count is None or window is None else (count, window),
    )
    return _json(entities.client_key(key, dsn_base_url(_request())))


@app.route(ERRORS, methods=["GET"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(REPORTER)
def list_errors(id: str) -> Response:
    request = _request()
    raw = request_params(request)
    params = Params(raw)
    status = params.one_of("status", tracked_errors.STATUSES, default="unresolved")
    sort = params.one_of("sort", tuple(tracked_errors.SORTS), default="last_seen")
    search = params.string("search", allow_empty=True)
    cursor = params.string("cursor", max_length=2048)
    params.check()
    project = current_project()
    items, next_cursor = tracked_errors.list_errors(
        int(project.project_id),
        status=str(status),
        sort=str(sort),
        search=search or None,
        cursor=cursor,
        limit=page_size(raw.get("limit")),
    )
    base = public_base_url(request)
    return _json(
        [entities.tracked_error(item, project, base) for item in items],
        headers=cursor_headers(request_url(request), raw, next_cursor),
    )


@app.route(ERROR, methods=["GET"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(REPORTER, preload=(Preload.ERROR,))
def get_error(id: str, error_id: str) -> Response:
    error = _current_error()
    latest, pending, pending_users = tracked_errors.latest_event_and_pending(error)
    return _json(
        entities.error_detail(error, current_project(), public_base_url(_request()), latest, pending, pending_users)
    )


@app.route(ERROR + "/events", methods=["GET"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(REPORTER, preload=(Preload.ERROR,))
def list_error_events(id: str, error_id: str) -> Response:
    request = _request()
    raw = request_params(request)
    params = Params(raw)
    cursor = params.string("cursor", max_length=2048)
    params.check()
    error = _current_error()
    items, next_cursor = tracked_errors.list_events(
        int(error.project_id), int(error.error_id), cursor, page_size(raw.get("limit"))
    )
    return _json(
        [entities.error_event(item) for item in items],
        headers=cursor_headers(request_url(request), raw, next_cursor),
    )


@app.route(ERROR, methods=["PUT"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(DEVELOPER, preload=(Preload.ERROR,))
def update_error(id: str, error_id: str) -> Response:
    params = Params(request_params(_request()))
    status = params.one_of("status", tracked_errors.STATUSES, required=True)
    params.check()
    error = tracked_errors.set_status(_current_error(), str(status))
    return _json(entities.tracked_error(error, current_project(), public_base_url(_request())))


def _hook_response(hook: ProjectHook, status: int = 200) -> Response:
    return _json(entities.project_hook(hook, dt.datetime.now(dt.UTC)), status=status)


def _current_hook(hook_id: str) -> ProjectHook:
    require_integer("hook_id", hook_id)
    hook = current().hook
    if hook is None:
        raise errors.record_not_found()
    return hook


@app.route(HOOKS, methods=["GET"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER)
def list_hooks(id: str) -> Response:
    from chalicelib.hooks import service as hooks

    request = _request()
    now = dt.datetime.now(dt.UTC)
    page, headers = paginate(
        hooks.list_hooks(int(current_project().project_id)), request_params(request), request_url(request)
    )
    return _json([entities.project_hook(hook, now) for hook in page], headers=headers)


@app.route(HOOKS, methods=["POST"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER)
def create_hook(id: str) -> Response:
    from chalicelib.hooks import service as hooks

    change = hooks.parse_change(request_params(_request()), creating=True)
    return _hook_response(hooks.create(current_project(), change), status=201)


@app.route(HOOK, methods=["GET"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER, preload=(Preload.HOOK,))
def get_hook(id: str, hook_id: str) -> Response:
    return _hook_response(_current_hook(hook_id))


@app.route(HOOK, methods=["PUT"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER, preload=(Preload.HOOK,))
def update_hook(id: str, hook_id: str) -> Response:
    from chalicelib.hooks import service as hooks

    hook = _current_hook(hook_id)
    change = hooks.parse_change(request_params(_request()), creating=False)
    return _hook_response(hooks.update(hook, change))


@app.route(HOOK, methods=["DELETE"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER, preload=(Preload.HOOK,))
def delete_hook(id: str, hook_id: str) -> Response:
    from chalicelib.hooks import service as hooks

    hooks.delete(_current_hook(hook_id))
    return Response(body="", status_code=204)


@app.route(HOOK + "/test/{trigger}", methods=["POST"], content_types=CONTENT_TYPES, cors=API_CORS)
@requires(MAINTAINER, preload=(Preload.HOOK,))
def test_hook(id: str, hook_id: str, trigger: str) -> Response:
    hook = _current_hook(hook_id)
    if trigger != "error_tracking_events":  # GitLab's other triggers have nothing to test here
        raise errors.bad_request("trigger does not have a valid value")
    from chalicelib.hooks import stream

    outcome = stream.send_test(current_project(), hook, public_base_url(_request()))
    if not outcome.ok:
        raise errors.validation_failed(f"Hook execution failed: {outcome.reason}")
    return _json({"message": "201 Created"}, status=201)


def _ingest(project_id: str, *, legacy_store: bool) -> Response:
    request = _request()
    query: dict[str, str] = dict(request.query_params or {})
    body = ingestion.ingest(
        project_id,
        raw_body(request),
        auth_header=request.headers.get("x-sentry-auth"),
        query_key=query.get("sentry_key"),
        content_encoding=request.headers.get("content-encoding"),
        legacy_store=legacy_store,
    )
    return _json(body)


@app.route(INGEST + "/envelope", methods=["POST"], content_types=SENTRY_CONTENT_TYPES, cors=SENTRY_CORS)
@public
def ingest_envelope(project_id: str) -> Response:
    return _ingest(project_id, legacy_store=False)


@app.route(INGEST + "/store", methods=["POST"], content_types=SENTRY_CONTENT_TYPES, cors=SENTRY_CORS)
@public
def ingest_store(project_id: str) -> Response:
    return _ingest(project_id, legacy_store=True)


def ingest_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda handler behind the DSN host's Function URL on AWS (chalicelib/ingest/function_url.py):
    the two routes above, without API Gateway's price per request."""
    return function_url.handle(app, event, context, SENTRY_CORS.get_access_control_headers())


# Chalice wants the stream's ARN at import; the stack's own takes its place at packaging
# (scripts/package.py, the table's StreamArn).
STREAM_ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/errortracking/stream/set-by-make-package"


@app.on_dynamodb_record(stream_arn=STREAM_ARN, batch_size=100, name="hooks")
def deliver_hooks(event: DynamoDBEvent) -> None:
    """Tell the projects' hooks what happened to their errors: the table's stream, filtered to error
    items (chalicelib/hooks/stream.py); `make run` pumps the embedded store's stream into it. The
    hooks' modules load here and in their routes only: the API's and ingestion's cold starts never
    pay for them."""
    from chalicelib.hooks import stream

    clock = getattr(event.context, "get_remaining_time_in_millis", None)  # Lambda's; none locally
    remaining = clock() / 1000 if callable(clock) else None
    stream.handle(event.to_dict()["Records"], remaining_seconds=remaining)


# This very API, described (chalicelib/openapi.json): read on the first request, so imports stay cheap.
_openapi_document: dict[str, Any] = {}


@app.route("/api/v4/openapi.json", methods=["GET"], cors=API_CORS)
@public
def get_openapi_document() -> Response:
    if not _openapi_document:
        import json
        from importlib.resources import files

        _openapi_document.update(json.loads(files("chalicelib").joinpath("openapi.json").read_text("utf-8")))
    return _json(_openapi_document)
