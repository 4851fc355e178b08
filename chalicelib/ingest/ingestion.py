"""Where a DSN leads: Sentry SDKs post envelopes (and legacy store bodies) here.

Order of checks: a key must be given (400); the body must be readable (400, or 413 when too big);
then one BatchGetItem reads the key's claim, the project's setting, and each event's error and
shard; the key must be known, active and this project's, and the setting active and integrated
(403, saying which); then the key's rate limit (429). Every well-formed envelope from a valid key
gets 200 ``{"id": <event id>}`` whatever its items; only ``event`` items are stored.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import UpdateError

from chalicelib import errors, models
from chalicelib.authorizer import parse_id
from chalicelib.ingest import events, tracked_errors
from chalicelib.ingest.envelopes import EnvelopeError, decode_body, parse_envelope, parse_store_body, sentry_key
from chalicelib.models import ErrorTrackingSetting, PublicKeyClaim, RateWindow

# A key found over its limit is refused from memory until its window ends: a flood costs this
# Lambda instance no DynamoDB calls. Keyed by the limit too, so changing the limit lifts it.
_blocked_until: dict[tuple[int, int, int], float] = {}


def clock() -> dt.datetime:
    """Now, as ingestion sees it (the benchmark replays a simulated second through it)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Submission:
    """What a request carries: the envelope's event id, and its one event (if any)."""

    header_event_id: Any
    event: tuple[dict[str, Any], bytes] | None  # the event, and the JSON bytes it came as


def read_submission(body: bytes, content_encoding: str | None, *, legacy_store: bool) -> Submission:
    """The request's body read: a 400 (or 413) that says why when it cannot be.

    Sentry's envelope protocol allows one event item per envelope (Relay refuses a second as a
    duplicate item), and every SDK sends one: an envelope carrying more is refused whole, so a
    request's store work stays bounded whatever its body carries."""
    try:
        data = decode_body(body, content_encoding)
        if legacy_store:
            payload = parse_store_body(data)
            return Submission(payload.get("event_id"), (payload, data))
        envelope = parse_envelope(data)
        items = [item for item in envelope.items if item.type == "event"]
        if len(items) > 1:
            raise EnvelopeError(f"an envelope carries at most one event item, this one carries {len(items)}")
        event = None
        if items:
            payload = items[0].json()
            if not isinstance(payload, dict):
                raise EnvelopeError("an event item is not a JSON object")
            event = (payload, items[0].payload)
        return Submission(envelope.headers.get("event_id"), event)
    except EnvelopeError as exc:
        if exc.status == 413:
            raise errors.payload_too_large() from exc
        raise errors.ingest_bad_request(str(exc)) from exc


def _gate(claim: Any, setting: Any, project_id: int) -> PublicKeyClaim:
    if not isinstance(claim, PublicKeyClaim):
        raise errors.ingest_forbidden("unknown client key")
    if int(claim.project_id) != project_id:
        raise errors.ingest_forbidden("the client key belongs to another project")
    if not claim.active:
        raise errors.ingest_forbidden("the client key is inactive")
    if not isinstance(setting, ErrorTrackingSetting):
        raise errors.ingest_forbidden("error tracking is not set up for this project")
    if not setting.enabled:
        raise errors.ingest_forbidden("error tracking is disabled for this project")
    if not setting.integrated_in_effect:
        raise errors.ingest_forbidden("integrated error tracking is not enabled for this project")
    return claim


def _check_rate_limit(claim: PublicKeyClaim, count: int) -> None:
    limit, window = claim.rate_limit_count, claim.rate_limit_window
    if not limit or not window or not count:
        return
    key_id, now = int(claim.key_id), time.time()
    remembered = (key_id, int(limit), int(window))
    start = int(now) // int(window) * int(window)
    retry_after = max(1, start + int(window) - int(now))
    if _blocked_until.get(remembered, 0.0) > now:
        raise errors.rate_limited(max(1, int(_blocked_until[remembered] - now + 0.999)))
    counter = models.build(RateWindow, RateWindow.key(key_id, start))
    try:
        counter.update(
            actions=[
                models.kind_of(RateWindow),
                RateWindow.hits.add(count),
                RateWindow.expires.set(dt.datetime.fromtimestamp(start + int(window) + 60, dt.UTC)),
            ],
            condition=RateWindow.hits.does_not_exist() | (RateWindow.hits <= int(limit) - count),
        )
    except UpdateError as exc:
        if not models.condition_failed(exc):
            raise
        _blocked_until[remembered] = float(start + int(window))
        raise errors.rate_limited(retry_after) from exc


def ingest(
    project_ref: str,
    body: bytes,
    *,
    auth_header: str | None,
    query_key: str | None,
    content_encoding: str | None,
    legacy_store: bool = False,
) -> dict[str, str]:
    """Take one request's events; returns the body of the 200 answer."""
    received_at = clock()
    public_key = sentry_key(auth_header, query_key)
    if not public_key:
        raise errors.ingest_bad_request("no sentry_key in the X-Sentry-Auth header or the query string")
    project_id = parse_id(project_ref)
    if project_id is None:
        raise errors.ingest_forbidden("unknown project")
    submission = read_submission(body, content_encoding, legacy_store=legacy_store)
    event = (
        events.normalize(submission.event[0], received_at, submission.header_event_id, submission.event[1])
        if submission.event is not None
        else None
    )

    # One read decides the request: key, setting, and the event's error and one of its shards.
    claim_key, setting_key = PublicKeyClaim.key(public_key), ErrorTrackingSetting.key(project_id)
    if not models.key_fits(claim_key):
        raise errors.ingest_forbidden("unknown client key")  # no key is that long; DynamoDB would refuse the read
    targets = tracked_errors.keys_to_read(project_id, event) if event is not None else None
    found = models.fetch([claim_key, setting_key, *(targets.keys if targets else ())])
    claim = _gate(found.get(claim_key), found.get(setting_key), project_id)
    if event is None or targets is None:
        return {"id": events.event_id_of({}, submission.header_event_id)}
    _check_rate_limit(claim, 1)
    tracked_errors.record(project_id, event, targets, found, received_at)
    return {"id": event.event_id}
