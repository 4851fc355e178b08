"""Client keys: the public keys behind Sentry DSNs.

Every key is two items written together in one transaction: the key in its project's partition
(listed by a Query, ordered by id) and a claim on its public key (so ingestion finds a key by the
public key alone, and no two keys ever share one). The project's count of active keys moves in the
same transaction.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import budget, errors, models
from chalicelib.models import CLIENT_KEY_PREFIX, ClientKey, Project, PublicKeyClaim

PUBLIC_KEY_PREFIX = "glet_"
# Every key change moves the project's active-key count: concurrent changes of one project's keys
# conflict on that item, and take turns (budget.attempts). Within a request its deadline is the
# real bound: 50 keys created at once took more than 12 tries for the last one.
_ATTEMPTS = 30


def new_public_key() -> str:
    return PUBLIC_KEY_PREFIX + secrets.token_hex(16)


def list_keys(project_id: int) -> list[ClientKey]:
    """Every key of the project, ordered by id: one Query (more only past 1 MB of keys)."""
    pk = Project.key(project_id)[0]
    return list(ClientKey.query(pk, ClientKey.sk.startswith(CLIENT_KEY_PREFIX), consistent_read=True))


def add_key_to(tw: TransactWrite, project: Project, *, project_condition: Any) -> ClientKey:
    """Stage a new active key for ``project`` in the transaction ``tw``, and one more active key on
    the project, written only if ``project_condition`` holds; returns the key."""
    project_id = int(project.project_id)
    key_id = models.next_id("client_key")
    key: ClientKey = models.build(
        ClientKey,
        ClientKey.key(project_id, key_id),
        key_id=key_id,
        project_id=project_id,
        public_key=new_public_key(),
        active=True,
        created_at=dt.datetime.now(dt.UTC),
    )
    claim = models.build(PublicKeyClaim, PublicKeyClaim.key(key.public_key), project_id=project_id, key_id=key_id)
    tw.save(key, condition=ClientKey.pk.does_not_exist())
    tw.save(claim, condition=PublicKeyClaim.pk.does_not_exist())
    tw.update(project, actions=[Project.active_keys.add(1)], condition=project_condition)
    return key


def create_key(project: Project) -> ClientKey:
    """A new active key: one counter update and one transaction."""

    def write(_: ClientKey | None) -> ClientKey:
        with models.transaction() as tw:
            key = add_key_to(tw, project, project_condition=Project.pk.exists())
        return key

    # A lost race here is a public key collision (2^-128) or a concurrent transaction: new ids.
    return _write_until_won(None, write)


def delete_key(project: Project, key: ClientKey | None) -> ClientKey:
    """Delete ``key`` (already read by the authorizer); a racing second delete gets 404."""
    if key is None:
        raise errors.client_key_not_found()

    def write(key: ClientKey | None) -> ClientKey:
        assert key is not None
        with models.transaction() as tw:
            # Conditional on the key as read, so the active-key count moves by what was stored.
            tw.delete(key, condition=ClientKey.active == bool(key.active))
            tw.delete(models.build(PublicKeyClaim, PublicKeyClaim.key(key.public_key)))
            if key.active:
                tw.update(project, actions=[Project.active_keys.add(-1)])
        return key

    return _write_until_won(key, write)


def update_key(
    project: Project,
    key: ClientKey | None,
    *,
    active: bool | None,
    name: str | None,
    rate_limit: tuple[int, int] | None,
) -> ClientKey:
    """Change a key's name, state or rate limit; the public key claim changes with it, so a
    deactivated key stops ingestion at once. ``rate_limit`` (0, 0) removes the limit."""
    if key is None:
        raise errors.client_key_not_found()

    def write(key: ClientKey | None) -> ClientKey:
        assert key is not None
        was_active = bool(key.active)
        now_active = was_active if active is None else active
        key_actions: list[Any] = [ClientKey.active.set(now_active)]
        claim_actions: list[Any] = [PublicKeyClaim.active.set(now_active)]
        if name is not None:
            key_actions.append(ClientKey.name.set(name) if name else ClientKey.name.remove())
        if rate_limit is not None:
            count, window = rate_limit
            for target, actions in ((ClientKey, key_actions), (PublicKeyClaim, claim_actions)):
                if count:
                    actions += [target.rate_limit_count.set(count), target.rate_limit_window.set(window)]
                else:
                    actions += [target.rate_limit_count.remove(), target.rate_limit_window.remove()]
        with models.transaction() as tw:
            tw.update(key, actions=key_actions, condition=ClientKey.active == was_active)
            tw.update(
                models.build(PublicKeyClaim, PublicKeyClaim.key(key.public_key)),
                actions=claim_actions,
                condition=PublicKeyClaim.pk.exists(),
            )
            if now_active != was_active:
                tw.update(project, actions=[Project.active_keys.add(1 if now_active else -1)])
        # What the transaction wrote, without reading it back.
        key.active = now_active
        if name is not None:
            key.name = name or None
        if rate_limit is not None:
            key.rate_limit_count, key.rate_limit_window = rate_limit if rate_limit[0] else (None, None)
        return key

    return _write_until_won(key, write)


def _write_until_won(key: ClientKey | None, write: Callable[[ClientKey | None], ClientKey]) -> ClientKey:
    """``write(key)``, tried again after each race lost to a concurrent transaction (after a
    jittered backoff, with ``key`` as stored by then); 503 having written nothing when the races go
    on past the attempts or the request's time."""
    for attempt in budget.attempts(_ATTEMPTS):
        if attempt and key is not None:
            key = _read_again(key)
        try:
            return write(key)
        except TransactWriteError as exc:
            if not models.lost_race(exc):
                raise
    raise errors.service_unavailable()


def _read_again(key: ClientKey) -> ClientKey:
    """The key as stored now, after a lost race: gone (a racing DELETE won: 404) or changed."""
    found = models.fetch([(key.pk, key.sk)]).get((key.pk, key.sk))
    if not isinstance(found, ClientKey):
        raise errors.client_key_not_found()
    return found
