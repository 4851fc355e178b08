"""Error tracking settings: GitLab's PUT (create or update) and PATCH (update only).

A save reads the setting in the authorizer's batch, changes it in memory and writes it back on
the condition that nobody wrote in between (a version number); on a lost race it reads again and
re-applies the request, so concurrent PUT and PATCH never lose a field.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PutError, TransactWriteError

from chalicelib import budget, client_keys, crypto, errors, models, sentry
from chalicelib.models import ErrorTrackingSetting, Project
from chalicelib.params import Params

_ATTEMPTS = 30  # budget.attempts: within a request, its deadline ends them first
_TOKEN_STANDIN = b"ciphertext to come"  # never stored: only the dry run sees it


@dataclass(frozen=True)
class Change:
    """A validated request to change a setting; None means "leave as it is"."""

    enabled: bool
    integrated: bool | None
    organization_slug: str | None = None
    project_slug: str | None = None
    api_host: str | None = None
    organization_name: str | None = None  # "" clears
    project_name: str | None = None  # "" clears
    token: str | None = None


def parse_change(raw: dict[str, Any], *, integrated_required: bool) -> Change:
    """Validate the request's parameters (400 naming every problem)."""
    params = Params(raw)
    enabled = params.boolean("active", required=True)
    integrated = params.boolean("integrated", required=integrated_required)
    api_host = params.string("api_host", max_length=2048)
    organization_slug = params.string("organization_slug")
    project_slug = params.string("project_slug")
    organization_name = params.string("organization_name", allow_empty=True)
    project_name = params.string("project_name", allow_empty=True)
    token = params.string("token", allow_empty=True, max_length=4096)
    params.check()
    assert enabled is not None
    try:
        if organization_slug is not None:
            sentry.check_slug("organization_slug", organization_slug)
        if project_slug is not None:
            sentry.check_slug("project_slug", project_slug)
        if api_host is not None:
            api_host = sentry.check_api_host(api_host)
    except sentry.ConnectionProblem as exc:
        raise errors.unprocessable(str(exc)) from exc
    return Change(
        enabled=enabled,
        integrated=integrated,
        api_host=api_host,
        organization_slug=organization_slug,
        project_slug=project_slug,
        organization_name=organization_name,
        project_name=project_name,
        token=token or None,
    )


def _connection(change: Change, current_api_url: str | None) -> str | None:
    """The api_url after the change: given parts over the stored ones."""
    if change.api_host is None and change.organization_slug is None and change.project_slug is None:
        return current_api_url
    stored = sentry.parse_api_url(current_api_url)
    host = change.api_host or (stored.api_host if stored else None)
    organization = change.organization_slug or (stored.organization_slug if stored else None)
    project = change.project_slug or (stored.project_slug if stored else None)
    if not (host and organization and project):
        raise errors.unprocessable("api_host, organization_slug and project_slug are all needed to connect to Sentry")
    return sentry.SentryProject(host, organization, project).api_url


def _apply(setting: ErrorTrackingSetting, change: Change, encrypted_token: bytes | None) -> None:
    api_url = _connection(change, setting.api_url)
    if api_url != setting.api_url:
        setting.api_url = api_url
        setting.encrypted_token = None  # a token belongs to the Sentry project it was given for
    if encrypted_token is not None:
        setting.encrypted_token = encrypted_token
    setting.enabled = change.enabled
    if change.integrated is not None:
        setting.integrated = change.integrated
    if change.organization_name is not None:
        setting.organization_name = change.organization_name or None
    if change.project_name is not None:
        setting.project_name = change.project_name or None
    if setting.enabled and not setting.integrated and not (setting.api_url and setting.encrypted_token):
        raise errors.unprocessable(
            "An active error tracking setting that is not integrated needs a Sentry connection: "
            "api_host, organization_slug, project_slug and token"
        )
    setting.updated_at = dt.datetime.now(dt.UTC)


def _new_setting(project_id: int) -> ErrorTrackingSetting:
    setting: ErrorTrackingSetting = models.build(
        ErrorTrackingSetting, ErrorTrackingSetting.key(project_id), project_id=project_id
    )
    return setting


def save(
    project: Project, setting: ErrorTrackingSetting | None, change: Change, *, create: bool
) -> ErrorTrackingSetting:
    """Write ``change``; create the setting when missing only if ``create`` (PUT)."""
    project_id = int(project.project_id)
    if setting is None and not create:
        raise errors.not_found("Error Tracking Setting")
    # Validate on a scratch copy first, so KMS is only asked once the request is known to be good;
    # a token sent with the request counts as present there.
    _apply(
        _new_setting(project_id) if setting is None else _copy(setting),
        change,
        _TOKEN_STANDIN if change.token else None,
    )
    encrypted = crypto.encrypt_token(project_id, change.token) if change.token else None
    for attempt in budget.attempts(_ATTEMPTS):
        if attempt:  # somebody wrote in between: read both again, re-apply the request to what is there now
            found = models.fetch([ErrorTrackingSetting.key(project_id), Project.key(project_id)])
            fresh_setting = found.get(ErrorTrackingSetting.key(project_id))
            fresh_project = found.get(Project.key(project_id))
            if not isinstance(fresh_project, Project):
                raise errors.not_found("Project")
            project = fresh_project
            setting = fresh_setting if isinstance(fresh_setting, ErrorTrackingSetting) else None
            if setting is None and not create:
                raise errors.not_found("Error Tracking Setting")
        current = _new_setting(project_id) if setting is None else setting
        _apply(current, change, encrypted)
        needs_key = current.enabled and current.integrated_in_effect and int(project.active_keys or 0) == 0
        try:
            if needs_key:
                with models.transaction() as tw:
                    tw.save(current)
                    # Only while the project still has no active key: a racing save adds none twice.
                    no_active_key = (Project.active_keys == 0) | Project.active_keys.does_not_exist()
                    client_keys.add_key_to(tw, project, project_condition=no_active_key)
            else:
                current.save()
            return current
        except (PutError, TransactWriteError) as exc:
            if not models.lost_race(exc):
                raise
    raise errors.service_unavailable()


def _copy(setting: ErrorTrackingSetting) -> ErrorTrackingSetting:
    copy: ErrorTrackingSetting = ErrorTrackingSetting.from_raw_data(setting.serialize())
    return copy
