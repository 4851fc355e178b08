"""Telling hooks what happened to their errors, from the table's DynamoDB Stream.

Each stream record of an error item holds the item before and after the change. From the two:

- **new**: there was no item before (the error's first event);
- **regression**: events were added to an error that was resolved (the roll-up reopens it);
- **frequency**: more than a hook's ``frequency_threshold`` events of one error within its
  ``frequency_window`` minutes, counted from the window's first event, once per window.

Records arrive at least once (Lambda retries a failed batch, halving it). So each notification is
*claimed* first, with a conditional write keyed by what it is about: a batch handled again sends
nothing twice, and one that crashed after claiming sends again with the same Idempotency-Key.
Delivery failures never fail the batch (they count against the hook, GitLab's way); store
failures do, so that Lambda tries the batch again.

Round trips per batch: one Query of hooks per project with changed errors, one BatchGetItem of
projects and frequency windows, one of the newest events of the errors to notify, then per
notification a claim and its outcome (and a hook update after a failure). Ingestion pays nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PutError

from chalicelib import config, models
from chalicelib.hooks import delivery, disabling, payloads, service
from chalicelib.models import Entity, HookDelivery, HookWindow, Key, Project, ProjectHook, StoredEvent, TrackedError

log = logging.getLogger(__name__)

# The event source mapping's filter: only changes of error items start the handler (Lambda bills
# no invocation for the records it filters out). `make run`'s stream pump applies the same one.
ERROR_SORT_KEY = "error"
STREAM_FILTER = {"dynamodb": {"Keys": {"sk": {"S": [ERROR_SORT_KEY]}}}}
CLAIM_MEMORY = dt.timedelta(days=7)  # longer than a stream keeps a record (24 hours)
MAX_PARALLEL_HOOKS = 8  # within PynamoDB's pool of 10 connections


# Time a notification may take at most: three tries of hook_timeout, their backoffs, and the
# claim's writes. A batch stops starting notifications when the Lambda has less than this left
# (they are dropped, and logged), so it always ends in time and is not retried for everyone.
def _worst_case_seconds() -> float:
    return 3 * config.get_config().hook_timeout + 5.0


def passes_filter(record: Mapping[str, Any]) -> bool:
    """Whether ``record`` passes STREAM_FILTER (the one pattern it holds: an error item's key)."""
    keys = record.get("dynamodb", {}).get("Keys", {})
    return keys.get("sk", {}).get("S") in STREAM_FILTER["dynamodb"]["Keys"]["sk"]["S"]


@dataclass(frozen=True)
class Change:
    old: TrackedError | None
    new: TrackedError

    @property
    def added(self) -> int:
        """Events this change added to the error's count."""
        before = int(self.old.events_count or 0) if self.old is not None else 0
        return max(0, int(self.new.events_count or 0) - before)

    @property
    def key(self) -> Key:
        return (self.new.pk, self.new.sk)


def _image(raw: Mapping[str, Any] | None) -> TrackedError | None:
    if not raw:
        return None
    try:
        item = Entity.from_raw_data(dict(raw))
    except Exception:  # not an item of ours: nothing to tell anyone about
        return None
    return item if isinstance(item, TrackedError) else None


def changes_of(records: Iterable[Mapping[str, Any]]) -> list[Change]:
    """The error changes in ``records``, in stream order (deletions and other items left out)."""
    found: list[Change] = []
    for record in records:
        if not passes_filter(record):
            continue
        images = record.get("dynamodb", {})
        new = _image(images.get("NewImage"))
        if new is not None:
            found.append(Change(_image(images.get("OldImage")), new))
    return found


def instant_triggers(change: Change) -> list[str]:
    """The triggers one change shows by itself (frequency needs the hook's window as well)."""
    if change.old is None:
        return ["new"]
    if change.added and change.old.status == "resolved" and change.new.status == "unresolved":
        return ["regression"]
    return []


@dataclass
class Planned:
    """A notification to claim and send: which hook, what about (the claim's key), and the notice."""

    hook: ProjectHook
    what: str
    trigger: str
    change: Change
    window: tuple[int, int] | None = None


@dataclass
class Summary:
    """What a batch did, for its log line and for tests."""

    changes: int = 0
    planned: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0  # claimed by an earlier try, or the hook is disabled


def _window_state(
    hook: ProjectHook, change: Change, state: HookWindow | None
) -> tuple[HookWindow | None, tuple[int, int] | None]:
    """The hook's window for this error after ``change`` (None: unchanged), and the frequency
    notification it calls for (events counted, window minutes), if any."""
    threshold = int(hook.frequency_threshold or 0)
    if not threshold or not change.added:
        return None, None
    minutes = int(hook.frequency_window or 60)
    moment = _parse(change.new.last_seen)
    changed: HookWindow | None = None
    if state is None or moment - _parse(state.started) >= dt.timedelta(minutes=minutes):
        base = int(change.old.events_count or 0) if change.old is not None else 0
        state = models.build(
            HookWindow,
            HookWindow.key(int(hook.hook_id), int(change.new.project_id), int(change.new.error_id)),
            started=change.new.last_seen,
            base=base,
            notified=False,
            expires=moment + dt.timedelta(minutes=minutes) + CLAIM_MEMORY,
        )
        changed = state
    counted = int(change.new.events_count or 0) - int(state.base)
    if counted > threshold and not state.notified:
        state.notified = True
        return state, (counted, minutes)
    return changed, None


def _parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def plan(changes: list[Change], now: dt.datetime) -> tuple[list[Planned], dict[int, Project], list[HookWindow]]:
    """Every notification ``changes`` call for, the projects they are about, and the frequency
    windows to store."""
    by_project: dict[int, list[Change]] = {}
    for change in changes:
        by_project.setdefault(int(change.new.project_id), []).append(change)
    hooks: dict[int, list[ProjectHook]] = {}
    for project_id in by_project:
        listed = service.list_hooks(project_id)  # consistent: a hook just changed is told as changed
        hooks[project_id] = [h for h in listed if h.error_tracking_events and disabling.executable(h, now)]
    wanted: list[Key] = [Project.key(p) for p, found in hooks.items() if found]
    for project_id, its_hooks in hooks.items():
        for hook in its_hooks:
            if hook.frequency_threshold:
                wanted += [
                    HookWindow.key(int(hook.hook_id), project_id, int(c.new.error_id)) for c in by_project[project_id]
                ]
    found = models.fetch(wanted) if wanted else {}
    projects = {int(p.project_id): p for p in found.values() if isinstance(p, Project)}
    states: dict[Key, HookWindow] = {k: v for k, v in found.items() if isinstance(v, HookWindow)}
    planned: list[Planned] = []
    to_store: dict[Key, HookWindow] = {}
    for project_id, its_changes in by_project.items():
        if project_id not in projects:
            continue
        for change in its_changes:  # in stream order: a window sees its error's changes in turn
            error = change.new
            for hook in hooks[project_id]:
                hook_id = int(hook.hook_id)
                for trigger in instant_triggers(change):
                    stamp = error.first_seen if trigger == "new" else error.last_seen
                    what = f"{trigger}#{project_id}#{int(error.error_id)}#{stamp}"
                    planned.append(Planned(hook, what, trigger, change))
                key = HookWindow.key(hook_id, project_id, int(error.error_id))
                state, window = _window_state(hook, change, states.get(key))
                if state is not None:
                    states[key] = to_store[key] = state
                if window is not None:
                    what = f"frequency#{project_id}#{int(error.error_id)}#{states[key].started}"
                    planned.append(Planned(hook, what, "frequency", change, window))
    return planned, projects, list(to_store.values())


def _claim(hook: ProjectHook, what: str, now: dt.datetime) -> tuple[str, bool]:
    """(the notification's UUID, whether to send it): claimed now, or claimed before and never sent."""
    claim: HookDelivery = models.build(
        HookDelivery, HookDelivery.key(int(hook.hook_id), what), uuid=str(uuid.uuid4()), expires=now + CLAIM_MEMORY
    )
    try:
        claim.save(condition=HookDelivery.pk.does_not_exist())
        return str(claim.uuid), True
    except PutError as exc:
        if not models.condition_failed(exc):
            raise
    earlier = models.fetch([(claim.pk, claim.sk)]).get((claim.pk, claim.sk))
    if not isinstance(earlier, HookDelivery):  # expired between the two calls: claim it afresh
        return _claim(hook, what, now)
    return str(earlier.uuid), earlier.state == "claimed"


def _settle(hook: ProjectHook, what: str, state: str) -> None:
    models.build(HookDelivery, HookDelivery.key(int(hook.hook_id), what)).update(
        actions=[HookDelivery.state.set(state)]
    )


def record_outcome(hook: ProjectHook, outcome: delivery.Outcome, now: dt.datetime) -> None:
    """Count a failure against the hook (GitLab's back-off), or clear its failures after a success.

    A failure is counted by an atomic increment, and the back-off set from the count it returns:
    other invocations (other stream shards, a test from the API) may count at the same time, and
    none may lose another's failure or lift another's back-off."""
    from pynamodb.exceptions import UpdateError

    if outcome.ok and not hook.recent_failures and hook.disabled_until is None:
        return
    try:
        if outcome.ok:
            hook.update(
                actions=[ProjectHook.recent_failures.set(0), ProjectHook.disabled_until.remove()],
                condition=ProjectHook.pk.exists(),
            )
            return
        hook.update(actions=[ProjectHook.recent_failures.add(1)], condition=ProjectHook.pk.exists())
        _, until = disabling.backoff_after(int(hook.recent_failures), now)
        if until is not None:
            hook.update(actions=[ProjectHook.disabled_until.set(until)], condition=ProjectHook.pk.exists())
    except UpdateError as exc:
        if not models.condition_failed(exc):  # deleted meanwhile: nothing to count
            raise


def _send_all(
    hook: ProjectHook, notices: list[tuple[Planned, payloads.Notice]], now: dt.datetime, deadline: float | None
) -> Summary:
    """One hook's notifications, in order. After a failure the rest of this batch's are dropped:
    the hook is failing, and a hanging receiver must not hold the batch for each of them.

    What goes wrong with this one hook (its secrets no longer decrypt, a payload that cannot be
    built) fails its notification, not the batch: only the store being unavailable is raised, so
    that Lambda tries the batch again."""
    summary = Summary()
    secrets: tuple[str | None, list[tuple[str, str]]] | None = None
    failing = False
    for planned, notice in notices:
        event_uuid, send = _claim(hook, planned.what, now)
        if not send:
            summary.skipped += 1
            continue
        out_of_time = deadline is not None and deadline - time.monotonic() < _worst_case_seconds()
        if failing or out_of_time or not disabling.executable(hook, now):
            _settle(hook, planned.what, "dropped")
            summary.skipped += 1
            if out_of_time:
                log.warning(
                    "hook %s: dropped a %s notification, the batch is out of time", hook.hook_id, planned.trigger
                )
            continue
        try:
            if secrets is None:
                secrets = service.secrets_of(hook)
            token, custom = secrets
            body = payloads.body(notice, hook.payload_format or "gitlab")
            headers = delivery.headers_for(hook, body, event_uuid, token, custom, notice.base_url)
            outcome = delivery.post(hook, body, headers)
        except Exception as exc:
            if models.unavailable(exc):
                raise
            log.warning("hook %s: could not send: %s", int(hook.hook_id), type(exc).__name__)
            outcome = delivery.Outcome(False, None, f"could not be sent: {type(exc).__name__}", final=True)
        _settle(hook, planned.what, "sent" if outcome.ok else "failed")
        record_outcome(hook, outcome, now)
        if outcome.ok:
            summary.sent += 1
        else:
            summary.failed += 1
            failing = True
            log.warning("hook %s: %s", int(hook.hook_id), outcome.reason)
    return summary


def handle(
    records: Iterable[Mapping[str, Any]], now: dt.datetime | None = None, remaining_seconds: float | None = None
) -> Summary:
    """Tell every hook what ``records`` (a stream batch) show; see the module docstring.
    ``remaining_seconds``: the Lambda's time left (None: no limit, as under `make run`)."""
    now = now or dt.datetime.now(dt.UTC)
    deadline = None if remaining_seconds is None else time.monotonic() + remaining_seconds
    changes = changes_of(records)
    summary = Summary(changes=len(changes))
    if not changes:
        return summary
    planned, projects, windows = plan(changes, now)
    summary.planned = len(planned)
    if planned:
        _notify(planned, projects, now, deadline, summary)
    # Stored last: a batch that fails before its claims are written plans the same notifications
    # again (the same window, the same claim keys), instead of finding its window already notified.
    for window in windows:
        window.save()
    log.info(
        "hooks: %s",
        json.dumps({k: getattr(summary, k) for k in ("changes", "planned", "sent", "failed", "skipped")}),
    )
    return summary


def _notify(
    planned: list[Planned], projects: dict[int, Project], now: dt.datetime, deadline: float | None, summary: Summary
) -> None:
    event_keys = {
        p.change.key: (StoredEvent.key(int(p.change.new.project_id), int(p.change.new.error_id), "", "")[0], ev)
        for p in planned
        if (ev := p.change.new.latest_event)
    }
    events = models.fetch(list(set(event_keys.values()))) if event_keys else {}
    base_url = config.get_config().public_url or ""
    per_hook: dict[int, list[tuple[Planned, payloads.Notice]]] = {}
    for p in planned:
        latest = events.get(event_keys[p.change.key]) if p.change.key in event_keys else None
        notice = payloads.Notice(
            p.trigger,
            projects[int(p.change.new.project_id)],
            p.change.new,
            latest if isinstance(latest, StoredEvent) else None,
            base_url,
            p.window,
        )
        per_hook.setdefault(int(p.hook.hook_id), []).append((p, notice))
    hooks = {int(p.hook.hook_id): p.hook for p in planned}
    # One thread per hook: a receiver that hangs delays only its own notifications.
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_HOOKS, len(per_hook))) as pool:
        results = list(pool.map(lambda item: _send_all(hooks[item[0]], item[1], now, deadline), per_hook.items()))
    for result in results:
        summary.sent += result.sent
        summary.failed += result.failed
        summary.skipped += result.skipped


# A test from the API answers within the request (API Gateway's and the Lambda's time): one try.
TEST_TIMEOUT = 5.0


def send_test(project: Project, hook: ProjectHook, base_url: str) -> delivery.Outcome:
    """``POST .../hooks/:hook_id/test/error_tracking_events``: a sample notification, sent at once;
    a success enables a disabled hook again, a failure counts like any other."""
    now = dt.datetime.now(dt.UTC)
    stamp = now.isoformat(timespec="microseconds").replace("+00:00", "Z")
    sample: TrackedError = models.build(
        TrackedError,
        TrackedError.key(int(project.project_id), 0),
        project_id=int(project.project_id),
        error_id=0,
        title="RuntimeError: this is a test notification",
        type="RuntimeError",
        message="this is a test notification",
        culprit="errortracking.test(hooks)",
        status="unresolved",
        first_seen=stamp,
        last_seen=stamp,
        events_count=1,
        user_count=1,
    )
    notice = payloads.Notice("test", project, sample, None, base_url)
    try:
        token, custom = service.secrets_of(hook)
    except Exception as exc:  # its secrets no longer decrypt: a failure to show, not a 500
        if models.unavailable(exc):
            raise
        outcome = delivery.Outcome(False, None, f"its secrets do not decrypt: {type(exc).__name__}", final=True)
    else:
        body = payloads.body(notice, hook.payload_format or "gitlab")
        headers = delivery.headers_for(hook, body, str(uuid.uuid4()), token, custom, base_url)
        timeout = min(TEST_TIMEOUT, config.get_config().hook_timeout)
        outcome = delivery.post(hook, body, headers, attempts=1, timeout=timeout)
    record_outcome(hook, outcome, now)
    return outcome
