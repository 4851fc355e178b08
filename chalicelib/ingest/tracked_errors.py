"""Errors and their events in DynamoDB: recording an event, listing, reading, triaging.

Recording is built so that a noisy error cannot throttle. Each event first lands on one of
``ERROR_SHARDS`` shard items of its error (each its own partition). The shard is *rolled up* into
the error item, and the event stored, in one transaction, when the shard has nothing pending or
its last roll-up is a second old; otherwise the event only adds to the shard's pending count. So
an error item takes at most a few writes a second per shard however many events arrive, while a
quiet error (the usual case) has every event stored and counted at once.

Round trips per ingested event: the BatchGetItem that also checks the key (see ingestion), then
one write: the roll-up transaction, or an UpdateItem of the shard.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import random
from collections.abc import Iterator, Mapping
from typing import Any

from pynamodb.exceptions import TransactWriteError

from chalicelib import errors, models
from chalicelib.ingest.events import Event, fit_for_storage
from chalicelib.models import ERROR_SHARDS, HOUR, ErrorShard, EventIdClaim, Key, StoredEvent, TrackedError

STATUSES = ("unresolved", "resolved", "ignored")
# Each sort of the list: the index that keeps errors in that order, and the attribute it sorts by.
SORTS = {
    "last_seen": ("by_last_seen", "last_seen"),
    "first_seen": ("by_first_seen", "first_seen"),
    "frequency": ("by_count", "events_count"),
}
ROLLUP_INTERVAL = dt.timedelta(seconds=1)
# Roll-ups an error may take beyond one per shard per ROLLUP_INTERVAL: a token bucket of BURST,
# refilled at REFILL_PER_SECOND. Bursts up to BURST events are stored and counted at once; a
# sustained flood costs the error item about REFILL_PER_SECOND + ERROR_SHARDS writes a second.
BURST = 50
REFILL_PER_SECOND = 10
USER_CAP = 1000
EVENT_ID_MEMORY = dt.timedelta(days=30)
_ATTEMPTS = 3


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def listing(project_id: int, status: str) -> str:
    return f"{project_id}#{status}"


def keys_to_read(project_id: int, event: Event) -> tuple[Key, Key]:
    """The error and one shard (chosen at random) that recording ``event`` reads first."""
    shard = random.randrange(ERROR_SHARDS)
    return TrackedError.key(project_id, event.error_id), ErrorShard.key(project_id, event.error_id, shard)


def _parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _tokens(error: TrackedError | None, now: dt.datetime) -> float:
    if error is None or error.tokens is None or not error.refilled_at:
        return float(BURST)
    elapsed = max(0.0, (now - _parse(error.refilled_at)).total_seconds())
    return min(float(BURST), float(error.tokens) + elapsed * REFILL_PER_SECOND)


def _due(shard: ErrorShard | None, error: TrackedError | None, now: dt.datetime) -> bool:
    """Roll up (and store the event) now? Each shard once a ``ROLLUP_INTERVAL``, and beyond that
    while the error's token bucket lasts."""
    if shard is None or not shard.rolled_at or now - _parse(shard.rolled_at) >= ROLLUP_INTERVAL:
        return True
    return _tokens(error, now) >= 1


def _error_actions(
    project_id: int, event: Event, error: TrackedError | None, pending: int, now: dt.datetime, event_sort_key: str
) -> tuple[list[Any], Any]:
    """Update actions and condition for rolling ``pending`` + this event into the error."""
    t = TrackedError
    stamp, count = iso(now), pending + 1
    actions = [
        models.kind_of(TrackedError),
        t.project_id.set(project_id),
        t.error_id.set(event.error_id),
        t.title.set(event.title),
        t.title_lower.set(event.title.lower()),
        t.type.set(event.type),
        t.message.set(event.message) if event.message else t.message.remove(),
        t.culprit.set(event.culprit) if event.culprit else t.culprit.remove(),
        t.platform.set(event.platform),
        t.first_seen.set(t.first_seen | stamp),
        t.last_seen.set(stamp),
        t.events_count.add(count),
        t.latest_event.set(event_sort_key),
        t.tokens.set(max(0.0, _tokens(error, now) - 1)),
        t.refilled_at.set(stamp),
    ]
    hour = str(TrackedError.hour_of(now))
    if error is None or error.hours is None:
        actions.append(t.hours.set({hour: count}))
    else:
        actions.append(t.hours[hour].set((t.hours[hour] | 0) + count))
        oldest = TrackedError.hour_of(now) - 24 * HOUR
        actions += [t.hours[h].remove() for h in error.hours.attribute_values if int(h) < oldest]
    seen = (error.users or set()) if error is not None else set()
    if event.user and event.user not in seen and len(seen) < USER_CAP:
        actions.append(t.users.add({event.user}))
    if error is None:
        actions += [t.status.set("unresolved"), t.listing.set(listing(project_id, "unresolved"))]
        return actions, t.pk.does_not_exist()
    if error.status == "resolved":  # it happened again: back to the open list
        actions += [t.status.set("unresolved"), t.listing.set(listing(project_id, "unresolved"))]
    return actions, t.status == error.status


def record(
    project_id: int,
    event: Event,
    error: TrackedError | None,
    shard_key: Key,
    shard: ErrorShard | None,
    received_at: dt.datetime,
) -> None:
    """Count ``event`` and store it when its shard is due; see the module docstring."""
    stored_event: StoredEvent | None = None  # built (and compressed) once, when first due
    for _ in range(_ATTEMPTS):
        if not _due(shard, error, received_at):
            break
        if stored_event is None:
            stored_event = _stored_event(project_id, event, received_at)
        pending = int(shard.pending or 0) if shard else 0
        target = (
            error if error is not None else models.build(TrackedError, TrackedError.key(project_id, event.error_id))
        )
        actions, condition = _error_actions(project_id, event, error, pending, received_at, stored_event.sk)
        shard_item = shard if shard is not None else models.build(ErrorShard, shard_key)
        # Whoever rolls a shard up first wins; events counted on it meanwhile stay pending.
        shard_condition = (
            ErrorShard.rolled_at == shard.rolled_at
            if shard is not None and shard.rolled_at
            else ErrorShard.rolled_at.does_not_exist()
        )
        claim = models.build(
            EventIdClaim, EventIdClaim.key(project_id, event.event_id), expires=received_at + EVENT_ID_MEMORY
        )
        try:
            with models.transaction() as tw:
                tw.save(claim, condition=EventIdClaim.pk.does_not_exist())
                tw.save(stored_event, condition=StoredEvent.pk.does_not_exist())
                tw.update(target, actions=actions, condition=condition)
                tw.update(
                    shard_item,
                    actions=[
                        models.kind_of(ErrorShard),
                        ErrorShard.pending.add(-pending),
                        ErrorShard.rolled_at.set(iso(received_at)),
                    ],
                    condition=shard_condition,
                )
            return
        except TransactWriteError as exc:
            if "ConditionalCheckFailed" in models.cancellation_codes(exc)[:2]:  # the claim or the event
                return  # an event with this id and time was stored before: nothing is counted
            if not models.lost_race(exc):
                raise
        # Another event rolled this error or shard up meanwhile: read both again.
        found = models.fetch([TrackedError.key(project_id, event.error_id), shard_key])
        fresh_error, fresh_shard = found.get(TrackedError.key(project_id, event.error_id)), found.get(shard_key)
        error = fresh_error if isinstance(fresh_error, TrackedError) else None
        shard = fresh_shard if isinstance(fresh_shard, ErrorShard) else None
    # Busy: count it on the shard; the next roll-up carries it into the error.
    models.build(ErrorShard, shard_key).update(actions=[ErrorShard.pending.add(1), models.kind_of(ErrorShard)])


def _stored_event(project_id: int, event: Event, received_at: dt.datetime) -> StoredEvent:
    stamp = iso(event.timestamp)
    stored: StoredEvent = models.build(
        StoredEvent,
        StoredEvent.key(project_id, event.error_id, stamp, event.event_id),
        project_id=project_id,
        error_id=event.error_id,
        event_id=event.event_id,
        timestamp=stamp,
        received_at=iso(received_at),
        level=event.level,
        environment=event.environment,
        release=event.release,
        title=event.title,
    )
    stored.payload, stored.trimmed = fit_for_storage(event.payload, event.raw)
    return stored


# Reading


def encode_cursor(item: models.Entity, sort_attribute: str | None) -> str:
    key: dict[str, Any] = {"pk": item.pk, "sk": item.sk}
    if sort_attribute:
        key["listing"] = getattr(item, "listing")  # noqa: B009  (only errors have it)
        key[sort_attribute] = getattr(item, sort_attribute)
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, expected: Mapping[str, Any], sort_attribute: str | None) -> dict[str, Any]:
    """A cursor this service made for this very list, or a 400."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise errors.bad_request("cursor is invalid") from exc
    names = {"pk", "sk", *(("listing", sort_attribute) if sort_attribute else ())}
    if not isinstance(raw, dict) or set(raw) != names:
        raise errors.bad_request("cursor is invalid")
    for name, value in raw.items():
        wanted = int if name == "events_count" else str
        if not isinstance(value, wanted) or isinstance(value, bool) or (name in expected and not expected[name](value)):
            raise errors.bad_request("cursor is invalid")
    return raw


def _serialize_key(raw: dict[str, Any]) -> dict[str, Any]:
    return {name: {"N": str(value)} if name == "events_count" else {"S": value} for name, value in raw.items()}


def _page(results: Iterator[Any], limit: int) -> tuple[list[Any], bool]:
    items: list[Any] = []
    for item in results:
        if len(items) == limit:
            return items, True
        items.append(item)
    return items, False


def list_errors(
    project_id: int, *, status: str, sort: str, search: str | None, cursor: str | None, limit: int
) -> tuple[list[TrackedError], str | None]:
    """One page of a project's errors and the cursor of the next (None on the last page)."""
    index_name, sort_attribute = SORTS[sort]
    wanted = listing(project_id, status)
    start = None
    if cursor:
        start = _serialize_key(
            decode_cursor(
                cursor,
                {
                    "listing": lambda v: v == wanted,
                    "pk": lambda v: v.startswith(f"error#{project_id}#"),
                    "sk": lambda v: v == "error",
                },
                sort_attribute,
            )
        )
    index = getattr(TrackedError, index_name)
    query = index.query(
        wanted,
        scan_index_forward=False,
        filter_condition=TrackedError.title_lower.contains(search.lower()) if search else None,
        last_evaluated_key=start,
        page_size=limit + 1,
    )
    items, more = _page(query, limit)
    return items, encode_cursor(items[-1], sort_attribute) if more and items else None


def list_events(project_id: int, error_id: int, cursor: str | None, limit: int) -> tuple[list[StoredEvent], str | None]:
    pk = StoredEvent.key(project_id, error_id, "", "")[0]
    start = None
    if cursor:
        start = _serialize_key(decode_cursor(cursor, {"pk": lambda v: v == pk}, None))
    query = StoredEvent.query(
        pk, scan_index_forward=False, last_evaluated_key=start, page_size=limit + 1, consistent_read=True
    )
    items, more = _page(query, limit)
    return items, encode_cursor(items[-1], None) if more and items else None


def latest_event_and_pending(error: TrackedError) -> tuple[StoredEvent | None, int]:
    """The newest stored event, and the events counted on shards but not yet rolled up: one read."""
    project_id, error_id = int(error.project_id), int(error.error_id)
    shard_keys = [ErrorShard.key(project_id, error_id, n) for n in range(ERROR_SHARDS)]
    event_key = StoredEvent.key(project_id, error_id, "", "")[0], error.latest_event or ""
    found = models.fetch([*shard_keys, event_key] if error.latest_event else shard_keys)
    pending = sum(int(s.pending or 0) for s in found.values() if isinstance(s, ErrorShard))
    event = found.get(event_key)
    return (event if isinstance(event, StoredEvent) else None), max(pending, 0)


def set_status(error: TrackedError, status: str) -> TrackedError:
    project_id = int(error.project_id)
    try:
        error.update(
            actions=[TrackedError.status.set(status), TrackedError.listing.set(listing(project_id, status))],
            condition=TrackedError.pk.exists(),
        )
    except Exception as exc:
        if models.condition_failed(exc):
            raise errors.not_found("Error") from exc
        raise
    return error
