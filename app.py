"""GitLab-compatible Error Tracking API: the routes, each with the role it needs.

Every request passes through the authorizer middleware first (chalicelib/authorizer.py), which
authenticates the token, finds the project, checks the role declared by ``@requires`` and loads
what the route preloads. Views then validate parameters, call a service and present an entity.
"""

from __future__ import annotations

from typing import Any

from chalice.app import Chalice, Request, Response

from chalicelib import authorizer, client_keys, entities, errors, settings, telemetry
from chalicelib.authorizer import Preload, current, current_project, requires
from chalicelib.config import get_config
from chalicelib.models import MAINTAINER, ErrorTrackingSetting
from chalicelib.pagination import paginate
from chalicelib.params import CONTENT_TYPES, request_params
from chalicelib.urls import public_base_url, request_path

app = Chalice(app_name="errortracking")
# Sentry SDKs post compressed envelopes: API Gateway must hand them over as bytes, untouched.
app.api.binary_types.append("application/x-sentry-envelope")
app.register_middleware(telemetry.middleware, "http")  # outermost: logs the final answer
app.register_middleware(authorizer.middleware(app), "http")

PROJECT = "/api/v4/projects/{id}"
SETTINGS = PROJECT + "/error_tracking/settings"
CLIENT_KEYS = PROJECT + "/error_tracking/client_keys"
CLIENT_KEY = CLIENT_KEYS + "/{key_id}"


def _request() -> Request:
    request = app.current_request
    assert request is not None  # always set while a view runs
    return request


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json", **(headers or {})})


def _setting_response(setting: ErrorTrackingSetting) -> Response:
    return _json(entities.setting(setting, get_config().integrated_enabled))


@app.route("/api/v4/user", methods=["GET"], content_types=CONTENT_TYPES)
@requires(None)
def get_current_user() -> Response:
    return _json(entities.current_user(current().user))


@app.route(SETTINGS, methods=["GET"], content_types=CONTENT_TYPES)
@requires(MAINTAINER, preload=(Preload.SETTING,))
def get_settings(id: str) -> Response:
    setting = current().setting
    if setting is None:
        raise errors.not_found("Error Tracking Setting")
    return _setting_response(setting)


@app.route(SETTINGS, methods=["PATCH"], content_types=CONTENT_TYPES)
@requires(MAINTAINER, preload=(Preload.SETTING,))
def patch_settings(id: str) -> Response:
    change = settings.parse_change(request_params(_request()), integrated_required=False)
    return _setting_response(settings.save(current_project(), current().setting, change, create=False))


@app.route(SETTINGS, methods=["PUT"], content_types=CONTENT_TYPES)
@requires(MAINTAINER, preload=(Preload.SETTING,))
def put_settings(id: str) -> Response:
    change = settings.parse_change(request_params(_request()), integrated_required=True)
    if not get_config().integrated_enabled:
        raise errors.not_found()
    return _setting_response(settings.save(current_project(), current().setting, change, create=True))


@app.route(CLIENT_KEYS, methods=["GET"], content_types=CONTENT_TYPES)
@requires(MAINTAINER)
def list_client_keys(id: str) -> Response:
    request = _request()
    base = public_base_url(request)
    page, headers = paginate(
        client_keys.list_keys(int(current_project().project_id)),
        request_params(request),
        base + request_path(request),
    )
    return _json([entities.client_key(key, base) for key in page], headers=headers)


@app.route(CLIENT_KEYS, methods=["POST"], content_types=CONTENT_TYPES)
@requires(MAINTAINER)
def create_client_key(id: str) -> Response:
    key = client_keys.create_key(current_project())
    return _json(entities.client_key(key, public_base_url(_request())), status=201)


@app.route(CLIENT_KEY, methods=["DELETE"], content_types=CONTENT_TYPES)
@requires(MAINTAINER, preload=(Preload.CLIENT_KEY,))
def delete_client_key(id: str, key_id: str) -> Response:
    key = client_keys.delete_key(current_project(), current().client_key)
    return _json(entities.client_key(key, public_base_url(_request())))
