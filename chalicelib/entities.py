"""What goes on the wire, separate from what is stored (GitLab's lib/api/entities)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from chalicelib import sentry
from chalicelib.ingest.events import frames_of, load_stored
from chalicelib.models import (
    HOUR,
    AccessToken,
    ClientKey,
    ErrorTrackingSetting,
    Membership,
    Project,
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
        "created_at": item.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "rate_limit_count": None if item.rate_limit_count is None else int(item.rate_limit_count),
        "rate_limit_window": None if item.rate_limit_window is None else int(item.rate_limit_window),
    }


def _frequency(hours: dict[str, Any] | None, now: dt.datetime) -> list[list[int]]:
    """Events per hour over the last 24 hours, oldest first: Sentry's ``stats["24h"]``."""
    current = TrackedError.hour_of(now)
    counts = {int(h): int(n) for h, n in (hours or {}).items()}
    return [[hour, counts.get(hour, 0)] for hour in range(current - 23 * HOUR, current + HOUR, HOUR)]


def tracked_error(item: TrackedError, project: Project, base_url: str, pending: int = 0) -> dict[str, Any]:
    """GitLab's ErrorTracking::ErrorEntity, keys in its order."""
    error_id, project_id = int(item.error_id), int(project.project_id)
    slug = project.path_with_namespace.rsplit("/", 1)[-1]
    return {
        "id": error_id,
        "title": item.title,
        "type": item.type,
        "user_count": len(item.users or ()),
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


def _stack_trace(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The raised exception's frames, innermost (where it was raised) first."""
    entries = []
    for frame in reversed(frames_of(payload)):
        raw_lineno = frame.get("lineno")
        lineno = raw_lineno if isinstance(raw_lineno, int) and not isinstance(raw_lineno, bool) else None
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


def error_event(item: StoredEvent, *, with_payload: bool = True) -> dict[str, Any]:
    payload = load_stored(item.payload)
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
        "stack_trace": _stack_trace(payload),
    }
    if with_payload:
        body["payload"] = payload
    return body


def error_detail(
    item: TrackedError, project: Project, base_url: str, latest: StoredEvent | None, pending: int
) -> dict[str, Any]:
    """The error, its exact count (pending events included) and its latest event's stack trace."""
    body = tracked_error(item, project, base_url, pending)
    body["latest_event"] = error_event(latest, with_payload=False) if latest is not None else None
    body["stack_trace"] = body["latest_event"]["stack_trace"] if latest is not None else []
    return body


def current_user(item: User) -> dict[str, Any]:
    return {
        "id": int(item.user_id),
        "username": item.username,
        "name": item.name,
        "state": item.state,
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
