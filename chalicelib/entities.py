"""What goes on the wire, separate from what is stored (GitLab's lib/api/entities)."""

from __future__ import annotations

from typing import Any

from chalicelib import sentry
from chalicelib.models import AccessToken, ClientKey, ErrorTrackingSetting, Membership, Project, User
from chalicelib.urls import split_base


def setting(item: ErrorTrackingSetting, integrated_enabled: bool) -> dict[str, Any]:
    """GitLab's ErrorTracking::ProjectSetting; the Sentry token is never part of it."""
    slug = sentry.project_slug(item.api_url)
    return {
        "active": bool(item.enabled),
        "project_name": item.project_name or (sentry.titleize(slug) if slug else None),
        "sentry_external_url": sentry.external_url(item.api_url),
        "api_url": item.api_url,
        "integrated": bool(item.integrated) and integrated_enabled,
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
