"""Project hooks: GitLab's ``/projects/:id/hooks`` API, for the error tracking events.

A hook is one item in its project's partition (listed by one Query, ordered by id). Its secret
token and its custom headers' values are stored as KMS ciphertexts bound to the project, never
returned. A URL is checked when saved (chalicelib/urlsafety.py) and again at each delivery.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import DeleteError, PutError

from chalicelib import crypto, errors, models, urlsafety
from chalicelib.config import get_config
from chalicelib.models import HOOK_PREFIX, Project, ProjectHook
from chalicelib.params import Params

PAYLOAD_FORMATS = ("gitlab", "slack")
MAX_HOOKS = 100  # GitLab's default plan limit of project hooks
MAX_CUSTOM_HEADERS = 20
MAX_CUSTOM_HEADER_BYTES = 4000  # KMS encrypts at most 4,096 bytes
MAX_URL_LENGTH = 2048
# A custom header may not stand in for what the delivery itself says (chalicelib/hooks/delivery.py).
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "user-agent",
        "idempotency-key",
        "x-gitlab-event",
        "x-gitlab-token",
        "x-gitlab-event-uuid",
        "x-gitlab-webhook-uuid",
        "x-gitlab-instance",
        "x-errortracking-signature",
    }
)
# What an HTTP header carries as it is: visible ASCII, spaces and tabs (a token is sent in one).
_HEADER_VALUE = re.compile(r"\A[\t\x20-\x7e]*\Z")
_HEADER_NAME = re.compile(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}\Z")  # an RFC 9110 token


@dataclass(frozen=True)
class Change:
    """A validated create or update; None leaves a field as it is ("" clears text fields)."""

    url: str | None = None
    name: str | None = None
    description: str | None = None
    token: str | None = None
    enable_ssl_verification: bool | None = None
    custom_headers: list[tuple[str, str]] | None = None
    error_tracking_events: bool | None = None
    payload_format: str | None = None
    frequency_threshold: int | None = None  # 0 turns frequency alerts off
    frequency_window: int | None = None


def _custom_headers(params: Params) -> list[tuple[str, str]] | None:
    """GitLab's ``custom_headers``: an array of ``{"key", "value"}`` (a JSON body)."""
    if "custom_headers" not in params.raw:
        return None
    raw = params.raw["custom_headers"]
    if raw is None or raw == "" or raw == []:
        return []
    problem = "custom_headers is invalid"
    if not isinstance(raw, list) or len(raw) > MAX_CUSTOM_HEADERS:
        params.problems.append(problem)
        return None
    headers: list[tuple[str, str]] = []
    for entry in raw:
        key = entry.get("key") if isinstance(entry, dict) else None
        value = entry.get("value") if isinstance(entry, dict) else None
        if (
            not isinstance(key, str)
            or not _HEADER_NAME.match(key)
            or key.lower() in RESERVED_HEADERS
            or not isinstance(value, str)
            or len(value) > 2048
            or not _HEADER_VALUE.match(value)
        ):
            params.problems.append(problem)
            return None
        # A header named again (in any case) replaces the one before, as one header it is sent.
        headers = [(k, v) for k, v in headers if k.lower() != key.lower()] + [(key, value)]
    if len(json.dumps(headers)) > MAX_CUSTOM_HEADER_BYTES:  # one KMS ciphertext holds them all
        params.problems.append(problem)
        return None
    return headers


FIELDS = tuple(f.name for f in dataclasses.fields(Change))  # what a request may change


def parse_change(raw: dict[str, Any], *, creating: bool) -> Change:
    """Validate a create (``url`` required) or an update (at least one field): a 400 naming every
    problem, or a 422 for a URL the service will not send to."""
    params = Params(raw)
    if not creating:
        params.at_least_one(FIELDS)
    url = params.string("url", max_length=MAX_URL_LENGTH)
    if creating and url is None and "url" not in raw:
        params.problems.append("url is missing")
    change = Change(
        url=url,
        name=params.string("name", allow_empty=True),
        description=params.string("description", allow_empty=True, max_length=2048),
        token=params.string("token", allow_empty=True, max_length=4096),
        enable_ssl_verification=params.boolean("enable_ssl_verification"),
        custom_headers=_custom_headers(params),
        error_tracking_events=params.boolean("error_tracking_events"),
        payload_format=params.one_of("payload_format", PAYLOAD_FORMATS),
        frequency_threshold=params.integer("frequency_threshold", minimum=1, maximum=1_000_000, allow_empty=True),
        frequency_window=params.integer("frequency_window", minimum=1, maximum=1440),
    )
    if change.token and not _HEADER_VALUE.match(change.token):
        params.problems.append("token is invalid")
    params.check()
    if change.url is not None:
        check_url(change.url)
    return change


def check_url(url: str) -> urlsafety.Target:
    """The hook URL resolved and checked; a 422 (GitLab's "Invalid url given") saying why not."""
    try:
        return urlsafety.check(url, name="url", allow_local=get_config().allow_local_hooks, allow_query=True)
    except urlsafety.Refused as exc:
        raise errors.validation_failed(f"Invalid url given: {exc}") from exc


def list_hooks(project_id: int, *, consistent: bool = True) -> list[ProjectHook]:
    """The project's hooks, ordered by id: one Query."""
    pk = Project.key(project_id)[0]
    return list(ProjectHook.query(pk, ProjectHook.sk.startswith(HOOK_PREFIX), consistent_read=consistent))


def secrets_of(hook: ProjectHook) -> tuple[str | None, list[tuple[str, str]]]:
    """The hook's token and custom headers, decrypted (KMS): only a delivery needs them."""
    project_id = int(hook.project_id)
    purpose = crypto.HOOK_SECRET
    token = crypto.decrypt_token(project_id, bytes(hook.encrypted_token), purpose) if hook.encrypted_token else None
    headers: list[tuple[str, str]] = []
    if hook.encrypted_headers:
        plain = crypto.decrypt_token(project_id, bytes(hook.encrypted_headers), purpose)
        headers = [(k, v) for k, v in json.loads(plain)]
    return token, headers


def _apply(hook: ProjectHook, change: Change) -> None:
    project_id = int(hook.project_id)
    if change.url is not None:
        hook.url = change.url
    if change.name is not None:
        hook.name = change.name or None
    if change.description is not None:
        hook.description = change.description or None
    if change.token is not None:
        hook.encrypted_token = (
            crypto.encrypt_token(project_id, change.token, crypto.HOOK_SECRET) if change.token else None
        )
    if change.enable_ssl_verification is not None:
        hook.enable_ssl_verification = change.enable_ssl_verification
    if change.custom_headers is not None:
        headers = change.custom_headers
        hook.custom_header_names = json.dumps([k for k, _ in headers]) if headers else None
        hook.encrypted_headers = (
            crypto.encrypt_token(project_id, json.dumps(headers), crypto.HOOK_SECRET) if headers else None
        )
    if change.error_tracking_events is not None:
        hook.error_tracking_events = change.error_tracking_events
    if change.payload_format is not None:
        hook.payload_format = change.payload_format
    if change.frequency_threshold is not None:
        hook.frequency_threshold = change.frequency_threshold or None
    if change.frequency_window is not None:
        hook.frequency_window = change.frequency_window
    # Saving a hook enables it again, as in GitLab.
    hook.recent_failures = 0
    hook.disabled_until = None


def create(project: Project, change: Change) -> ProjectHook:
    project_id = int(project.project_id)
    if ProjectHook.count(Project.key(project_id)[0], ProjectHook.sk.startswith(HOOK_PREFIX)) >= MAX_HOOKS:
        raise errors.validation_failed(f"Maximum number of project hooks ({MAX_HOOKS}) exceeded")
    hook_id = models.next_id("hook")
    hook: ProjectHook = models.build(
        ProjectHook,
        ProjectHook.key(project_id, hook_id),
        hook_id=hook_id,
        project_id=project_id,
        created_at=dt.datetime.now(dt.UTC),
    )
    _apply(hook, change)
    hook.save(condition=ProjectHook.pk.does_not_exist())
    return hook


def _existing(hook: ProjectHook | None, write: Callable[[ProjectHook], Any]) -> ProjectHook:
    """``write(hook)`` (conditional on the hook still being there); GitLab's 404 when it is not."""
    if hook is None:
        raise errors.record_not_found()
    try:
        write(hook)
    except (PutError, DeleteError) as exc:
        if models.condition_failed(exc):
            raise errors.record_not_found() from exc
        raise
    return hook


def update(hook: ProjectHook | None, change: Change) -> ProjectHook:
    def save(found: ProjectHook) -> None:
        _apply(found, change)
        found.save(condition=ProjectHook.pk.exists())

    return _existing(hook, save)


def delete(hook: ProjectHook | None) -> None:
    _existing(hook, lambda found: found.delete(condition=ProjectHook.pk.exists()))
