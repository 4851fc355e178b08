"""What goes on the wire, separate from what is stored (GitLab's lib/api/entities)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from chalicelib import config, sentry
from chalicelib.ingest import exceptions, normalization
from chalicelib.ingest import payload as parts
from chalicelib.ingest.events import frames_of, load_stored
from chalicelib.ingest.payload import text
from chalicelib.models import (
    HOUR,
    AccessToken,
    ClientKey,
    ErrorTrackingSetting,
    Membership,
    Project,
    ProjectHook,
    StoredEvent,
    TrackedError,
    User,
)
from chalicelib.urls import split_base


def setting(item: ErrorTrackingSetting) -> dict[str, Any]:
    """GitLab's ErrorTracking::ProjectSetting; the Sentry token is never part of it."""
    slug = sentry.project_slug(item.api_url)
    return {
        "active": bool(item.enabled),
        "project_name": item.project_name or (sentry.titleize(slug) if slug else None),
        "sentry_external_url": sentry.external_url(item.api_url),
        "api_url": item.api_url,
        "integrated": item.integrated_in_effect,
    }


def dsn(public_key: str, project_id: int, base_url: str) -> str:
    scheme, host, port, base_path = split_base(base_url)
    netloc = f"{host}:{port}" if port else host
    return f"{scheme}://{public_key}@{netloc}{base_path}/errortracking/api/v1/projects/{project_id}"


def client_key(item: ClientKey, base_url: str) -> dict[str, Any]:
    """GitLab's four keys first and in its order; our additions after them."""
    return {
        "id": int(item.key_id),
        "active": bool(item.active),
        "public_key": item.public_key,
        "sentry_dsn": dsn(item.public_key, int(item.project_id), base_url),
        "name": item.name,
        "created_at": _time(item.created_at),
        "rate_limit_count": None if item.rate_limit_count is None else int(item.rate_limit_count),
        "rate_limit_window": None if item.rate_limit_window is None else int(item.rate_limit_window),
    }


def _frequency(hours: dict[str, Any] | None, now: dt.datetime) -> list[list[int]]:
    """Events per hour over the last 24 hours, oldest first: Sentry's ``stats["24h"]``."""
    current = TrackedError.hour_of(now)
    counts = {int(h): int(n) for h, n in (hours or {}).items()}
    return [[hour, counts.get(hour, 0)] for hour in range(current - 23 * HOUR, current + HOUR, HOUR)]


def tracked_error(
    item: TrackedError, project: Project, base_url: str, pending: int = 0, pending_users: int = 0
) -> dict[str, Any]:
    """GitLab's ErrorTracking::ErrorEntity, keys in its order."""
    error_id, project_id = int(item.error_id), int(project.project_id)
    slug = project.path_with_namespace.rsplit("/", 1)[-1]
    return {
        "id": error_id,
        "title": item.title,
        "type": item.type,
        "user_count": int(item.user_count or 0) + pending_users,
        "count": int(item.events_count or 0) + pending,
        "first_seen": item.first_seen,
        "last_seen": item.last_seen,
        "message": item.message,
        "culprit": item.culprit,
        "external_url": f"{base_url}/api/v4/projects/{project_id}/error_tracking/errors/{error_id}",
        "project_id": project_id,
        "project_name": project.name,
        "project_slug": slug,
        "short_id": f"{slug.upper()}-{error_id}",
        "status": item.status,
        "frequency": _frequency(
            dict(item.hours.attribute_values) if item.hours is not None else None, dt.datetime.now(dt.UTC)
        ),
    }


def _lines(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _context(frame: dict[str, Any], lineno: int | None) -> list[list[Any]]:
    """[[line number, code], ...] around the frame's line, as GitLab's stack trace shows it."""
    if lineno is None or "context_line" not in frame:
        return []
    pre, post = _lines(frame.get("pre_context")), _lines(frame.get("post_context"))
    code = [*pre, frame["context_line"], *post]
    return [[lineno - len(pre) + offset, line] for offset, line in enumerate(code)]


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _stack_trace(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Frames innermost (where the exception was raised) first."""
    entries = []
    for frame in reversed(frames):
        lineno = _number(frame.get("lineno"))
        entries.append(
            {
                "filename": frame.get("filename"),
                "abs_path": frame.get("abs_path"),
                "function": frame.get("function"),
                "module": frame.get("module"),
                "lineno": lineno,
                "colno": frame.get("colno"),
                "in_app": frame.get("in_app"),
                "context": _context(frame, lineno),
            }
        )
    return entries


def _flat(value: Any, limit: int = 50) -> dict[str, Any] | None:
    """An object's scalar fields (text bounded), at most ``limit`` of them: what a context shows."""
    if not isinstance(value, dict):
        return None
    kept: dict[str, Any] = {}
    for key, item in list(value.items())[:limit]:
        name = text(key, 64)
        if name and (isinstance(item, bool | int | float) or item is None):
            kept[name] = item
        elif name and isinstance(item, str):
            kept[name] = text(item, 1024)
    return kept


def _mechanism(exception: dict[str, Any] | None) -> dict[str, Any] | None:
    return _flat(exceptions.mechanism(exception), 20) if exception is not None and "mechanism" in exception else None


def _exception(exception: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": text(exception.get("type"), 255),
        "value": text(exception.get("value"), 8192),
        "module": text(exception.get("module"), 255),
        "mechanism": _mechanism(exception),
        "stack_trace": _stack_trace(parts.frames(exception)),
    }


def _sdk(payload: dict[str, Any]) -> dict[str, Any] | None:
    sdk = payload.get("sdk")
    if not isinstance(sdk, dict):
        return None
    return {"name": text(sdk.get("name"), 128), "version": text(sdk.get("version"), 64)}


def _tags(payload: dict[str, Any]) -> dict[str, str]:
    return {
        str(text(key, 200)): str(text(value, 200) or "")
        for key, value in (parts.pairs(payload.get("tags")) or [])[:100]
        if text(key, 200)
    }


USER_FIELDS = ("id", "username", "email", "ip_address", "name")


def _user(payload: dict[str, Any]) -> dict[str, Any] | None:
    user = payload.get("user")
    if not isinstance(user, dict):
        return None
    shown = {field: text(user[field], 255) for field in USER_FIELDS if text(user.get(field), 255)}
    return shown or None


def _text_pairs(value: Any, limit: int = 100) -> dict[str, str]:
    return {str(text(k, 255)): str(text(v, 2048) or "") for k, v in (parts.pairs(value) or [])[:limit] if text(k, 255)}


def _request(payload: dict[str, Any]) -> dict[str, Any] | None:
    request = payload.get("request")
    if not isinstance(request, dict):
        return None
    return {
        "url": text(request.get("url"), 2048),
        "method": (text(request.get("method"), 32) or "").upper() or None,
        "query_string": _text_pairs(request.get("query_string")),
        "headers": _text_pairs(request.get("headers")),
        "data": request.get("data"),
    }


CONTEXTS = ("runtime", "os", "browser", "device")


def _contexts(payload: dict[str, Any]) -> dict[str, Any]:
    contexts = payload.get("contexts")
    if not isinstance(contexts, dict):
        return {}
    return {name: _flat(contexts[name]) for name in CONTEXTS if isinstance(contexts.get(name), dict)}


def _timestamp(value: Any) -> str | float | None:
    """A breadcrumb's time as sent: epoch seconds (JavaScript) or ISO text (Python)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return text(value, 64)


def _breadcrumbs(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "timestamp": _timestamp(crumb.get("timestamp")),
            "type": text(crumb.get("type"), 64) or "default",
            "category": text(crumb.get("category"), 128),
            "level": text(crumb.get("level"), 32) or "info",
            "message": text(crumb.get("message"), 1024),
            "data": crumb.get("data") if isinstance(crumb.get("data"), dict) else None,
        }
        for crumb in (parts.breadcrumbs(payload) or [])[-normalization.MAX_BREADCRUMBS :]
    ]


def error_event(item: StoredEvent, *, with_payload: bool = True) -> dict[str, Any]:
    """One event as a person reads it: what the SDK said about the error, the user, the request and
    the environment. Events stored before a normalization step existed are normalized on the way
    out, so every event reads the same."""
    payload = load_stored(item.payload)
    normalization.normalize_payload(payload)
    main = exceptions.main_exception(payload)
    body: dict[str, Any] = {
        "event_id": item.event_id,
        "error_id": int(item.error_id),
        "timestamp": item.timestamp,
        "received_at": item.received_at,
        "level": item.level,
        "environment": item.environment,
        "release": item.release,
        "title": item.title,
        "trimmed": bool(item.trimmed),
        "platform": text(payload.get("platform"), 64),
        "sdk": _sdk(payload),
        "handled": (exceptions.mechanism(main).get("handled") if main is not None else None),
        "mechanism": _mechanism(main),
        "tags": _tags(payload),
        "user": _user(payload),
        "request": _request(payload),
        "contexts": _contexts(payload),
        "breadcrumbs": _breadcrumbs(payload),
        "exceptions": [_exception(e) for e in exceptions.in_chain_order(payload)[:50]],
        "stack_trace": _stack_trace(frames_of(payload)),
    }
    if not isinstance(body["handled"], bool):
        body["handled"] = None
    if with_payload:
        body["payload"] = payload
    return body


def error_detail(
    item: TrackedError, project: Project, base_url: str, latest: StoredEvent | None, pending: int, pending_users: int
) -> dict[str, Any]:
    """The error, its exact count (pending events included) and its latest event's stack trace."""
    body = tracked_error(item, project, base_url, pending, pending_users)
    body["latest_event"] = error_event(latest, with_payload=False) if latest is not None else None
    body["stack_trace"] = body["latest_event"]["stack_trace"] if latest is not None else []
    return body


def version() -> dict[str, Any]:
    """GitLab's ``GET /version`` shape, naming this service's version (not a GitLab one)."""
    return {
        "version": config.VERSION,
        "revision": "errortracking",
        "kas": {"enabled": False, "externalUrl": None, "version": None},
        "enterprise": False,
    }


def _time(value: dt.datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def current_user(item: User) -> dict[str, Any]:
    """GitLab's UserBasic keys in its order (lib/api/entities/user_safe.rb, user_basic.rb), then
    User's created_at, then is_admin, which GitLab's /user adds for admins and we for everyone.
    Nobody is locked out here, and there are no avatars or profile pages: locked is false, the
    URLs null."""
    return {
        "id": int(item.user_id),
        "username": item.username,
        "name": item.name,
        "state": item.state,
        "locked": False,
        "avatar_url": None,
        "web_url": None,
        "created_at": _time(item.created_at),
        "is_admin": bool(item.admin),
    }


# The admin command's objects.


def admin_user(item: User) -> dict[str, Any]:
    return {"id": int(item.user_id), "username": item.username, "admin": bool(item.admin), "state": item.state}


def admin_project(item: Project) -> dict[str, Any]:
    return {
        "id": int(item.project_id),
        "path_with_namespace": item.path_with_namespace,
        "name": item.name,
        "visibility": item.visibility,
    }


def admin_member(item: Membership) -> dict[str, Any]:
    return {"project_id": int(item.project_id), "user_id": int(item.user_id), "access_level": int(item.access_level)}


def admin_token(item: AccessToken, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": int(item.token_id),
        "user_id": int(item.user_id),
        "name": item.name,
        "scopes": sorted(item.scopes),
        "expires_at": item.expires_at,
        "revoked": bool(item.revoked),
    }
    if secret is not None:
        body["token"] = secret
    return body


def project_hook(item: ProjectHook, now: dt.datetime) -> dict[str, Any]:
    """GitLab's ProjectHook entity, the fields that mean something here, in its order; then the error
    tracking events' own. The token and the custom headers' values are never shown."""
    from chalicelib.hooks import disabling  # loaded by the hook routes only (cold starts)

    return {
        "id": int(item.hook_id),
        "url": item.url,
        "name": item.name,
        "description": item.description,
        "project_id": int(item.project_id),
        "created_at": _time(item.created_at),
        "enable_ssl_verification": bool(item.enable_ssl_verification),
        "alert_status": disabling.alert_status(item, now),
        "disabled_until": _time(item.disabled_until) if item.disabled_until else None,
        "custom_headers": [{"key": name} for name in item.header_names],
        "error_tracking_events": bool(item.error_tracking_events),
        "payload_format": item.payload_format or "gitlab",
        "frequency_threshold": None if item.frequency_threshold is None else int(item.frequency_threshold),
        "frequency_window": int(item.frequency_window or 60),
    }
