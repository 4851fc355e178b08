"""GitLab's auto-disabling of failing webhooks (app/models/concerns/web_hooks/auto_disabling.rb).

A hook that failed more than ``TEMPORARILY_DISABLED_FAILURE_THRESHOLD`` times in a row is left
alone for a back-off that doubles from a minute (at the 4th failure) up to a day; after more than
``PERMANENTLY_DISABLED_FAILURE_THRESHOLD`` failures it is disabled for good. A success, a
successful test or an update enables it again. While disabled, its notifications are dropped,
as GitLab drops them.
"""

from __future__ import annotations

import datetime as dt

from chalicelib.models import ProjectHook

TEMPORARILY_DISABLED_FAILURE_THRESHOLD = 3
PERMANENTLY_DISABLED_FAILURE_THRESHOLD = 39
INITIAL_BACKOFF = dt.timedelta(minutes=1)
MAX_BACKOFF = dt.timedelta(days=1)


def _failures(hook: ProjectHook) -> int:
    return int(hook.recent_failures or 0)


def temporarily_disabled(hook: ProjectHook, now: dt.datetime) -> bool:
    return (
        hook.disabled_until is not None
        and hook.disabled_until >= now
        and TEMPORARILY_DISABLED_FAILURE_THRESHOLD < _failures(hook) <= PERMANENTLY_DISABLED_FAILURE_THRESHOLD
    )


def permanently_disabled(hook: ProjectHook) -> bool:
    return _failures(hook) > PERMANENTLY_DISABLED_FAILURE_THRESHOLD


def executable(hook: ProjectHook, now: dt.datetime) -> bool:
    return not temporarily_disabled(hook, now) and not permanently_disabled(hook)


def alert_status(hook: ProjectHook, now: dt.datetime) -> str:
    if temporarily_disabled(hook, now):
        return "temporarily_disabled"
    if permanently_disabled(hook):
        return "disabled"
    return "executable"


def after_failure(hook: ProjectHook, now: dt.datetime) -> tuple[int, dt.datetime | None]:
    """The hook's failure count and back-off end after one more failure (GitLab's ``backoff!``)."""
    return backoff_after(_failures(hook) + 1, now)


def backoff_after(failures: int, now: dt.datetime) -> tuple[int, dt.datetime | None]:
    """The failure count (clamped as GitLab clamps it) and back-off end once a hook has failed
    ``failures`` times in a row: none up to the threshold, then a minute doubling up to a day.
    GitLab sizes the back-off by the count before this failure: a minute at the 4th."""
    failures = min(max(failures, 1), PERMANENTLY_DISABLED_FAILURE_THRESHOLD + 1)
    if failures <= TEMPORARILY_DISABLED_FAILURE_THRESHOLD:
        return failures, None
    backoff = INITIAL_BACKOFF * (2 ** (failures - 1 - TEMPORARILY_DISABLED_FAILURE_THRESHOLD))
    return failures, now + min(max(backoff, INITIAL_BACKOFF), MAX_BACKOFF)
