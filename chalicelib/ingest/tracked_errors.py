"""Errors and their events in DynamoDB: recording an event, listing, reading, triaging.

Recording is built so that a noisy error cannot throttle. Each event first lands on one of
``ERROR_SHARDS`` shard items of its error (each its own partition). The shard is *rolled up* into
the error item, and the event stored, in one transaction, while the error's token bucket of
roll-ups lasts or when the shard's last roll-up is a second old; otherwise the event only adds to
the shard's pending count. So an error item takes at most a few writes a second per shard however
many events arrive, while a quiet error (the usual case) has every event stored and counted at
once, without writing its shard at all (the shard is written to take its counts, or to hold back
its next roll-up once the bucket is spent).

Distinct users are counted exactly without growing the error item: the first event of a user
writes that user's claim (:class:`ErrorUserClaim`, its own partition) in the same write as the
count it adds, to the error when rolling up, or to the shard's pending users otherwise.

Round trips per ingested event: the BatchGetItem that also checks the key (see ingestion) and
reads the error, a shard and the user's claim, then one write: the roll-up transaction, or an
update of the shard (a transaction with the user's claim when the user is new). A race lost to
another event costs a backoff, one more BatchGetItem and one more write, at most five times; then
the event is only counted on its shard.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import TransactWriteError, UpdateError

from chalicelib import budget, config, errors, models
from chalicelib.ingest.events import Event, fit_for_storage
from chalicelib.models import (
    ERROR_SHARDS,
    HOUR,
    Entity,
    ErrorShard,
    ErrorUserClaim,
    EventIdClaim,
    Key,
    StoredEvent,
    TrackedError,
)

STATUSES = ("unresolved", "resolved", "ignored")
# Each sort of the list: the index that keeps errors in that order, and the attribute it sorts by.
SORTS = {
    "last_seen": ("by_last_seen", "last_seen"),
    "first_seen": ("by_first_seen", "first_seen"),
    "frequency": ("by_count", "events_count"),
}
# A search reads at most SEARCH_PAGES index pages of SEARCH_PAGE_ITEMS errors, then answers with a
# cursor: a fixed bound on the work of one request, whatever the project holds.
SEARCH_PAGES = 3
SEARCH_PAGE_ITEMS = 100
ROLLUP_INTERVAL = dt.timedelta(seconds=1)
# Roll-ups an error may take beyond one per shard per ROLLUP_INTERVAL: a token bucket of BURST,
# refilled at REFILL_PER_SECOND. Bursts up to BURST events are stored and counted at once; a
# sustained flood costs the error item about REFILL_PER_SECOND + ERROR_SHARDS writes a second.
BURST = 50
REFILL_PER_SECOND = 10
EVENT_ID_MEMORY = dt.timedelta(days=30)
# Roll-up tries per event, a backoff between them (budget.attempts): enough for two or three
# events of one error sent at once to take turns; beyond, an event is only counted on its shard.
_ATTEMPTS = 6
# Plain writes to an item a roll-up transaction may hold (a shard's count, an error's status) are
# tried this many times, with a backoff between.
_HELD_ITEM_ATTEMPTS = 5


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def listing(project_id: int, status: str) -> str:
    return f"{project_id}#{status}"


@dataclass(frozen=True)
class Targets:
    """The items recording an event reads first: its error, one of its shards (chosen at random),
    and the claim of its user (when the event names one)."""

    error: Key
    shard: Key
    user: Key | None

    @property
    def keys(self) -> list[Key]:
        return [self.error, self.shard, *([self.user] if self.user else [])]


def keys_to_read(project_id: int, event: Event) -> Targets:
    error_id = event.error_id
    return Targets(
        TrackedError.key(project_id, error_id),
        ErrorShard.key(project_id, error_id, random.randrange(ERROR_SHARDS)),
        ErrorUserClaim.key(project_id, error_id, event.user) if event.user else None,
    )


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
    project_id: int,
    event: Event,
    error: TrackedError | None,
    pending: int,
    new_users: int,
    now: dt.datetime,
    event_sort_key: str,
) -> tuple[list[Any], Any]:
    """Update actions and condition for rolling ``pending`` + this event (and ``new_users``) into the error."""
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
        t.expires.set(retained_until(now)),
    ]
    hour = str(TrackedError.hour_of(now))
    if error is None or error.hours is None:
        actions.append(t.hours.set({hour: count}))
    else:
        actions.append(t.hours[hour].set((t.hours[hour] | 0) + count))
        oldest = TrackedError.hour_of(now) - 24 * HOUR
        actions += [t.hours[h].remove() for h in error.hours.attribute_values if int(h) < oldest]
    if new_users:
        actions.append(t.user_count.add(new_users))
    if error is None:
        actions += [t.status.set("unresolved"), t.listing.set(listing(project_id, "unresolved"))]
        return actions, t.pk.does_not_exist()
    if error.status == "resolved":  # it happened again: back to the open list
        actions += [t.status.set("unresolved"), t.listing.set(listing(project_id, "unresolved"))]
    return actions, t.status == error.status


def record(
    project_id: int, event: Event, targets: Targets, found: Mapping[Key, Entity], received_at: dt.datetime
) -> None:
    """Count ``event`` (and its user, if new) and store it when its shard is due; see the module
    docstring. ``found`` holds what the first read found of ``targets``."""
    stored_event: StoredEvent | None = None  # built (and compressed) once, when first due
    for attempt in budget.attempts(_ATTEMPTS):
        if attempt:  # another event rolled this error or shard up (or counted this user) meanwhile
            found = models.fetch(targets.keys)
        error, shard = _as(TrackedError, found.get(targets.error)), _as(ErrorShard, found.get(targets.shard))
        new_user = targets.user is not None and not isinstance(found.get(targets.user), ErrorUserClaim)
        if not _due(shard, error, received_at):
            break
        if stored_event is None:
            stored_event = _stored_event(project_id, event, received_at)
        pending = int(shard.pending or 0) if shard else 0
        pending_users = int(shard.pending_users or 0) if shard else 0
        target = error if error is not None else models.build(TrackedError, targets.error)
        actions, condition = _error_actions(
            project_id, event, error, pending, pending_users + new_user, received_at, stored_event.sk
        )
        shard_item = shard if shard is not None else models.build(ErrorShard, targets.shard)
        # Whoever rolls a shard up first wins; events counted on it meanwhile stay pending.
        shard_condition = (
            ErrorShard.rolled_at == shard.rolled_at
            if shard is not None and shard.rolled_at
            else ErrorShard.rolled_at.does_not_exist()
        )
        # The shard is written only to take its counts, or once the error's bucket is spent (its
        # time then holds back the shard's next roll-up). While the bucket lasts, the next event is
        # due whatever the shard's time says, so a quiet error's events leave their shard alone:
        # two write units less each, as the transaction doubles them.
        touch_shard = pending > 0 or pending_users > 0 or _tokens(error, received_at) - 1 < 1
        try:
            with models.transaction() as tw:
                if not event.identified:  # stored under the time it arrived: only a claim knows it again
                    claim = models.build(
                        EventIdClaim,
                        EventIdClaim.key(project_id, event.event_id),
                        expires=received_at + EVENT_ID_MEMORY,
                    )
                    tw.save(claim, condition=EventIdClaim.pk.does_not_exist())
                tw.save(stored_event, condition=StoredEvent.pk.does_not_exist())
                tw.update(target, actions=actions, condition=condition)
                if touch_shard:
                    tw.update(
                        shard_item,
                        actions=[
                            models.kind_of(ErrorShard),
                            ErrorShard.pending.add(-pending),
                            ErrorShard.pending_users.add(-pending_users),
                            ErrorShard.rolled_at.set(iso(received_at)),
                            ErrorShard.expires.set(retained_until(received_at)),
                        ],
                        condition=shard_condition,
                    )
                if new_user and targets.user:
                    tw.save(_user_claim(targets.user, received_at), condition=ErrorUserClaim.pk.does_not_exist())
            return
        except TransactWriteError as exc:
            if "ConditionalCheckFailed" in models.cancellation_codes(exc)[: 1 if event.identified else 2]:
                return  # the event (or its id's claim) was stored before: nothing is counted
            if not models.lost_race(exc):
                raise
    _count_on_shard(targets, found, received_at)


def retained_until(moment: dt.datetime) -> dt.datetime:
    """When what ``moment`` wrote expires: DynamoDB's TTL deletes it (within days) after that."""
    return moment + dt.timedelta(days=config.get_config().retention_days)


def _as(cls: type[Any], item: Entity | None) -> Any:
    return item if isinstance(item, cls) else None


def _user_claim(key: Key, received_at: dt.datetime) -> ErrorUserClaim:
    claim: ErrorUserClaim = models.build(ErrorUserClaim, key, expires=retained_until(received_at))
    return claim


def _count_on_shard(targets: Targets, found: Mapping[Key, Entity], received_at: dt.datetime) -> None:
    """Busy: count the event on its shard; the next roll-up carries it into the error. A new user
    is counted there too, with their claim, in one transaction (so they are counted once).

    In a flood the shard is also in roll-up transactions, and DynamoDB refuses any write to an item
    a transaction holds (TransactionConflict): such a write is tried again after a backoff."""
    count = [ErrorShard.pending.add(1), models.kind_of(ErrorShard), ErrorShard.expires.set(retained_until(received_at))]
    shard = models.build(ErrorShard, targets.shard)
    new_user = targets.user is not None and not isinstance(found.get(targets.user), ErrorUserClaim)
    for attempt in budget.attempts(_HELD_ITEM_ATTEMPTS):
        try:
            if new_user and targets.user is not None:
                with models.transaction() as tw:
                    tw.update(shard, actions=[*count, ErrorShard.pending_users.add(1)])
                    tw.save(_user_claim(targets.user, received_at), condition=ErrorUserClaim.pk.does_not_exist())
            else:
                shard.update(actions=count)
            return
        except (TransactWriteError, UpdateError) as exc:
            if new_user and models.condition_failed(exc):
                new_user = False  # another event of this user counted them first: count only the event
                continue
            if not models.transaction_conflict(exc) or attempt + 1 == _HELD_ITEM_ATTEMPTS:
                raise


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
        expires=retained_until(received_at),
    )
    stored.payload, stored.trimmed = fit_for_storage(event.payload, event.raw)
    return stored


# Reading


def encode_cursor(item: models.Entity, sort_attribute: str | None) -> str:
    key: dict[str, Any] = {"pk": item.pk, "sk": item.sk}
    if sort_attribute:
        key["listing"] = getattr(item, "listing")  # noqa: B009  (only errors have it)
        key[sort_attribute] = getattr(item, sort_attribute)
    return _encode_key(key)


def _encode_key(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def _deserialize_key(raw: dict[str, dict[str, str]]) -> dict[str, Any]:
    """A LastEvaluatedKey as a cursor's plain values (the inverse of ``_serialize_key``)."""
    return {name: int(value["N"]) if "N" in value else value["S"] for name, value in raw.items()}


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
        # A key part DynamoDB refuses would fail the whole Query: a 500 for a made-up cursor.
        if isinstance(value, str) and not 0 < len(value.encode("utf-8")) <= models.MAX_SORT_KEY_BYTES:
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
    if search:
        return _search(index, wanted, search, start, limit, sort_attribute)
    query = index.query(wanted, scan_index_forward=False, last_evaluated_key=start, page_size=limit + 1)
    items, more = _page(query, limit)
    return items, encode_cursor(items[-1], sort_attribute) if more and items else None


def _search(
    index: Any, wanted: str, search: str, start: dict[str, Any] | None, limit: int, sort_attribute: str
) -> tuple[list[TrackedError], str | None]:
    """Matches among at most SEARCH_PAGES Query pages of SEARCH_PAGE_ITEMS errors each.

    DynamoDB filters after it reads, so a search that matches little would read the whole listing
    in one request. Past the bound the page holds what matched so far (maybe nothing) and a cursor
    that goes on where the reading stopped."""
    query = index.query(
        wanted,
        scan_index_forward=False,
        filter_condition=TrackedError.title_lower.contains(search.lower()),
        last_evaluated_key=start,
        page_size=max(SEARCH_PAGE_ITEMS, limit + 1),
    )
    found: list[TrackedError] = []
    for pages, page in enumerate(query.page_iter, start=1):
        for raw in page.get("Items", ()):
            if len(found) == limit:
                return found, encode_cursor(found[-1], sort_attribute)
            found.append(TrackedError.from_raw_data(raw))
        evaluated = page.get("LastEvaluatedKey")
        if evaluated is None:
            return found, None
        if pages == SEARCH_PAGES:
            return found, _encode_key(_deserialize_key(evaluated))
    return found, None


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


def latest_event_and_pending(error: TrackedError) -> tuple[StoredEvent | None, int, int]:
    """The newest stored event, and the events and new users counted on shards but not yet rolled
    up: one read."""
    project_id, error_id = int(error.project_id), int(error.error_id)
    shard_keys = [ErrorShard.key(project_id, error_id, n) for n in range(ERROR_SHARDS)]
    event_key = StoredEvent.key(project_id, error_id, "", "")[0], error.latest_event or ""
    found = models.fetch([*shard_keys, event_key] if error.latest_event else shard_keys)
    shards = [s for s in found.values() if isinstance(s, ErrorShard)]
    pending = sum(int(s.pending or 0) for s in shards)
    pending_users = sum(int(s.pending_users or 0) for s in shards)
    event = found.get(event_key)
    return (event if isinstance(event, StoredEvent) else None), max(pending, 0), max(pending_users, 0)


def set_status(error: TrackedError, status: str) -> TrackedError:
    """Resolve, ignore or reopen ``error``. While it floods, a roll-up transaction may hold its item,
    and DynamoDB refuses the update (TransactionConflict): it is tried again after a backoff."""
    project_id = int(error.project_id)
    for attempt in budget.attempts(_HELD_ITEM_ATTEMPTS):
        try:
            error.update(
                actions=[TrackedError.status.set(status), TrackedError.listing.set(listing(project_id, status))],
                condition=TrackedError.pk.exists(),
            )
            return error
        except UpdateError as exc:
            if models.condition_failed(exc):
                raise errors.not_found("Error") from exc
            if not models.transaction_conflict(exc) or attempt + 1 == _HELD_ITEM_ATTEMPTS:
                raise
    return error
