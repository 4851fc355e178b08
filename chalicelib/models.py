"""What is stored: one DynamoDB table, one PynamoDB model per kind of item.

Single-table design, so that one BatchGetItem can fetch everything a request needs to decide
(user, project, membership, setting, client key) in a single round trip.

| item                | pk                        | sk                    |
|---------------------|---------------------------|-----------------------|
| Counter             | ``counter#<name>``        | ``counter``           |
| User                | ``user#<id>``             | ``user``              |
| UsernameClaim       | ``username#<lower name>`` | ``username``          |
| AccessToken         | ``token#<sha256 hex>``    | ``token``             |
| TokenIdClaim        | ``tokenid#<id>``          | ``tokenid``           |
| Project             | ``project#<id>``          | ``project``           |
| ProjectPathClaim    | ``path#<lower full path>``| ``path``              |
| Membership          | ``project#<id>``          | ``member#<user id>``  |
| ErrorTrackingSetting| ``project#<id>``          | ``setting``           |
| ClientKey           | ``project#<id>``          | ``clientkey#<id:012>``|
| PublicKeyClaim      | ``publickey#<public key>``| ``publickey``         |
| TrackedError        | ``error#<project>#<id>``  | ``error``             |
| ErrorShard          | ``errorshard#<p>#<id>#<n>``| ``shard``            |
| ErrorUserClaim      | ``erroruser#<p>#<id>#<user>``| ``erroruser``      |
| StoredEvent         | ``events#<project>#<id>`` | ``<time>#<event id>`` |
| EventIdClaim        | ``eventid#<p>#<event id>``| ``eventid``           |
| ProjectHook         | ``project#<id>``          | ``hook#<id:012>``     |
| HookDelivery        | ``hookdelivery#<hook>#<what>``| ``delivery``      |
| HookWindow          | ``hookwindow#<hook>#<error>``| ``window``         |

The ``collection`` index (gsi1pk, gsi1sk) lists users, projects and tokens for the admin command;
no request path reads it.

The table's stream (new and old images) feeds the webhooks (chalicelib/hooks): only changes of
error items reach it (the event source mapping's filter, ``hooks.stream.STREAM_FILTER``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    DiscriminatorAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
    VersionAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib import budget, clients, config

Key = tuple[str, str]

GUEST, REPORTER, DEVELOPER, MAINTAINER, OWNER = 10, 20, 30, 40, 50
ROLES = {"guest": GUEST, "reporter": REPORTER, "developer": DEVELOPER, "maintainer": MAINTAINER, "owner": OWNER}
VISIBILITIES = ("private", "internal", "public")


class CollectionIndex(GlobalSecondaryIndex["Entity"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "collection"
        projection = AllProjection()

    gsi1pk = UnicodeAttribute(hash_key=True)
    gsi1sk = UnicodeAttribute(range_key=True)


class Entity(Model):
    class Meta:
        table_name = config.table_name()
        region = config.region()
        billing_mode = "PAY_PER_REQUEST"
        stream_view_type = "NEW_AND_OLD_IMAGES"  # for the webhooks: what an error was and is now
        # Bounded so that a request answers 503 before Lambda's timeout (chalicelib/budget.py).
        connect_timeout_seconds = budget.CONNECT_TIMEOUT
        read_timeout_seconds = budget.READ_TIMEOUT
        max_retry_attempts = budget.MAX_ATTEMPTS - 1

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    kind = DiscriminatorAttribute()
    gsi1pk = UnicodeAttribute(null=True)
    gsi1sk = UnicodeAttribute(null=True)
    collection = CollectionIndex()

    @classmethod
    def _get_connection(cls) -> Any:
        # Every kind of item lives in this one table: share one botocore client (creating one
        # costs ~50 ms of service-model loading) instead of PynamoDB's client per model class.
        connection = Model._get_connection.__func__(Entity)  # type: ignore[attr-defined]
        clients.instrument(connection.connection.client)
        return connection

    @staticmethod
    def key(*parts: Any) -> Key:
        raise NotImplementedError


class Counter(Entity, discriminator="counter"):
    value = NumberAttribute(default=0)

    @staticmethod
    def key(name: str) -> Key:
        return f"counter#{name}", "counter"


class User(Entity, discriminator="user"):
    user_id = NumberAttribute()
    username = UnicodeAttribute()
    name = UnicodeAttribute()
    admin = BooleanAttribute(default=False)
    state = UnicodeAttribute(default="active")
    created_at = UTCDateTimeAttribute()

    @staticmethod
    def key(user_id: int) -> Key:
        return f"user#{user_id}", "user"


class UsernameClaim(Entity, discriminator="username"):
    """Makes usernames unique (case-insensitively) and findable."""

    user_id = NumberAttribute()

    @staticmethod
    def key(username: str) -> Key:
        return f"username#{username.lower()}", "username"


class AccessToken(Entity, discriminator="token"):
    """A personal access token, keyed by the SHA-256 digest of its secret: the secret is never stored."""

    token_id = NumberAttribute()
    user_id = NumberAttribute()
    name = UnicodeAttribute()
    scopes = UnicodeSetAttribute()
    expires_at = UnicodeAttribute(null=True)  # ISO date; the token is expired from that day on (UTC)
    revoked = BooleanAttribute(default=False)
    created_at = UTCDateTimeAttribute()

    @staticmethod
    def key(digest: str) -> Key:
        return f"token#{digest}", "token"


class TokenIdClaim(Entity, discriminator="tokenid"):
    """Finds a token by its id alone (what ``errortracking token revoke`` is given): written with
    the token, so revoking one just made never depends on an index catching up."""

    digest = UnicodeAttribute()

    @staticmethod
    def key(token_id: int) -> Key:
        return f"tokenid#{token_id}", "tokenid"


class Project(Entity, discriminator="project"):
    project_id = NumberAttribute()
    path_with_namespace = UnicodeAttribute()
    name = UnicodeAttribute()
    visibility = UnicodeAttribute(default="private")
    # Kept with every key write, so that a settings save knows without a Query whether it must
    # create the automatic first key.
    active_keys = NumberAttribute(default=0)
    created_at = UTCDateTimeAttribute()

    @staticmethod
    def key(project_id: int) -> Key:
        return f"project#{project_id}", "project"


class ProjectPathClaim(Entity, discriminator="path"):
    """Makes full paths unique (case-insensitively) and resolves a path id to the numeric id."""

    project_id = NumberAttribute()

    @staticmethod
    def key(full_path: str) -> Key:
        return f"path#{full_path.lower()}", "path"


class Membership(Entity, discriminator="member"):
    project_id = NumberAttribute()
    user_id = NumberAttribute()
    access_level = NumberAttribute()

    @staticmethod
    def key(project_id: int, user_id: int) -> Key:
        return f"project#{project_id}", f"member#{user_id}"


class ErrorTrackingSetting(Entity, discriminator="setting"):
    project_id = NumberAttribute()
    enabled = BooleanAttribute(default=False)
    integrated = BooleanAttribute(default=False)
    api_url = UnicodeAttribute(null=True)
    project_name = UnicodeAttribute(null=True)
    organization_name = UnicodeAttribute(null=True)
    # KMS ciphertext of the Sentry auth token, bound to the project by the encryption context.
    encrypted_token = BinaryAttribute(null=True, legacy_encoding=False)
    # Every save is conditional on the version it read, so racing PUT/PATCH never lose a field.
    version = VersionAttribute()
    updated_at = UTCDateTimeAttribute(null=True)

    @staticmethod
    def key(project_id: int) -> Key:
        return f"project#{project_id}", "setting"

    @property
    def integrated_in_effect(self) -> bool:
        """Integrated error tracking applies: the setting asks for it and the deployment allows it."""
        return bool(self.integrated) and config.get_config().integrated_enabled


CLIENT_KEY_PREFIX = "clientkey#"


class ClientKey(Entity, discriminator="clientkey"):
    key_id = NumberAttribute()
    project_id = NumberAttribute()
    public_key = UnicodeAttribute()
    active = BooleanAttribute(default=True)
    name = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    rate_limit_count = NumberAttribute(null=True)
    rate_limit_window = NumberAttribute(null=True)

    @staticmethod
    def key(project_id: int, key_id: int) -> Key:
        return f"project#{project_id}", f"{CLIENT_KEY_PREFIX}{key_id:012d}"


class PublicKeyClaim(Entity, discriminator="publickey"):
    """Finds a client key by its public key alone (what a Sentry SDK sends); written with the key.

    It carries copies of what ingestion decides on (active, rate limit), changed in the same
    transaction as the key, so one read answers whether an event may come in.
    """

    project_id = NumberAttribute()
    key_id = NumberAttribute()
    active = BooleanAttribute(default=True)
    rate_limit_count = NumberAttribute(null=True)
    rate_limit_window = NumberAttribute(null=True)

    @staticmethod
    def key(public_key: str) -> Key:
        return f"publickey#{public_key}", "publickey"


class ErrorsByLastSeen(GlobalSecondaryIndex["Entity"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "errors_by_last_seen"
        projection = AllProjection()

    listing = UnicodeAttribute(hash_key=True)
    last_seen = UnicodeAttribute(range_key=True)


class ErrorsByFirstSeen(GlobalSecondaryIndex["Entity"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "errors_by_first_seen"
        projection = AllProjection()

    listing = UnicodeAttribute(hash_key=True)
    first_seen = UnicodeAttribute(range_key=True)


class ErrorsByCount(GlobalSecondaryIndex["Entity"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "errors_by_count"
        projection = AllProjection()

    listing = UnicodeAttribute(hash_key=True)
    events_count = NumberAttribute(range_key=True)


class TrackedError(Entity, discriminator="error"):
    """One error: the events that share a grouping key. Listed per project and status, newest,
    oldest or most frequent first, by three indexes on ``listing`` = ``<project id>#<status>``.

    Its count is rolled up from :class:`ErrorShard` items at most a few times a second, so a noisy
    error never makes this (indexed) item hot.
    """

    project_id = NumberAttribute()
    error_id = NumberAttribute()
    title = UnicodeAttribute()
    title_lower = UnicodeAttribute()  # for case-insensitive search
    type = UnicodeAttribute()
    message = UnicodeAttribute(null=True)
    culprit = UnicodeAttribute(null=True)
    platform = UnicodeAttribute(null=True)
    status = UnicodeAttribute(default="unresolved")
    listing = UnicodeAttribute()
    first_seen = UnicodeAttribute()  # ISO-8601 UTC, microseconds: sorts as text
    last_seen = UnicodeAttribute()
    events_count = NumberAttribute(default=0)
    # Distinct users met, counted by their claims (ErrorUserClaim): the item stays the same small
    # size however many users an error meets, so rolling it up costs the same few write units.
    user_count = NumberAttribute(default=0)
    # Events per hour ("<epoch hour>": n) over the last 24 hours.
    hours: MapAttribute[str, Any] = MapAttribute(null=True)  # type: ignore[no-untyped-call]
    latest_event = UnicodeAttribute(null=True)  # sort key of the newest stored event
    tokens = NumberAttribute(null=True)  # the roll-up token bucket (tracked_errors)
    refilled_at = UnicodeAttribute(null=True)
    # The retention period after last_seen: by then every stored event of the error has expired.
    expires = TTLAttribute(null=True)
    by_last_seen = ErrorsByLastSeen()
    by_first_seen = ErrorsByFirstSeen()
    by_count = ErrorsByCount()

    @staticmethod
    def key(project_id: int, error_id: int) -> Key:
        return f"error#{project_id}#{error_id}", "error"

    @staticmethod
    def hour_of(moment: dt.datetime) -> int:
        """The key of ``moment``'s bucket in ``hours``: the epoch second its hour starts at."""
        return int(moment.timestamp()) // HOUR * HOUR


HOUR = 3600


ERROR_SHARDS = 8


class ErrorShard(Entity, discriminator="errorshard"):
    """Events (and new users) counted but not yet rolled up into their error; each on its own partition."""

    pending = NumberAttribute(default=0)
    pending_users = NumberAttribute(default=0)
    rolled_at = UnicodeAttribute(null=True)
    expires = TTLAttribute(null=True)  # the retention period after its last count, like its error

    @staticmethod
    def key(project_id: int, error_id: int, shard: int) -> Key:
        return f"errorshard#{project_id}#{error_id}#{shard}", "shard"


class ErrorUserClaim(Entity, discriminator="erroruser"):
    """One distinct user an error met (by a digest of their identity): written once, with the first
    event of that user, in the same transaction as the count it adds to. Each is its own partition.

    It expires a retention period after that first event: the user is then counted again if they
    meet the error again (an exact count would rewrite the claim on every event of a known user)."""

    expires = TTLAttribute(null=True)

    @staticmethod
    def key(project_id: int, error_id: int, user: str) -> Key:
        return f"erroruser#{project_id}#{error_id}#{user}", "erroruser"


class StoredEvent(Entity, discriminator="event"):
    """One event of an error, newest last in its partition; the payload zlib-compressed JSON."""

    project_id = NumberAttribute()
    error_id = NumberAttribute()
    event_id = UnicodeAttribute()
    timestamp = UnicodeAttribute()
    received_at = UnicodeAttribute()
    level = UnicodeAttribute(null=True)
    environment = UnicodeAttribute(null=True)
    release = UnicodeAttribute(null=True)
    title = UnicodeAttribute(null=True)
    trimmed = BooleanAttribute(default=False)
    payload = BinaryAttribute(legacy_encoding=False)
    expires = TTLAttribute(null=True)  # received_at plus the retention period (config.retention_days)

    @staticmethod
    def key(project_id: int, error_id: int, timestamp: str, event_id: str) -> Key:
        return f"events#{project_id}#{error_id}", f"{timestamp}#{event_id}"


class EventIdClaim(Entity, discriminator="eventid"):
    """Claims an event id for a project, so that an event sent without its own id and time (stored
    under the time it arrived) is stored and counted once when sent again. An event with both needs
    none: sent again, it finds its own stored item (costing the claim's write units, doubled in the
    roll-up transaction, saves a quarter of a quiet error's table writes). DynamoDB expires it after
    a while (SDKs resend within minutes)."""

    expires = TTLAttribute(null=True)

    @staticmethod
    def key(project_id: int, event_id: str) -> Key:
        return f"eventid#{project_id}#{event_id}", "eventid"


HOOK_PREFIX = "hook#"


class ProjectHook(Entity, discriminator="hook"):
    """A project's webhook (GitLab's ProjectHook), told about its errors (chalicelib/hooks)."""

    hook_id = NumberAttribute()
    project_id = NumberAttribute()
    url = UnicodeAttribute()
    name = UnicodeAttribute(null=True)
    description = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    enable_ssl_verification = BooleanAttribute(default=True)
    # KMS ciphertexts, bound to the project like the Sentry token: the secret token, and the custom
    # headers' values (JSON). Only the headers' names are kept in the clear, to show them.
    encrypted_token = BinaryAttribute(null=True, legacy_encoding=False)
    encrypted_headers = BinaryAttribute(null=True, legacy_encoding=False)
    custom_header_names = UnicodeAttribute(null=True)  # JSON list, in the order given
    error_tracking_events = BooleanAttribute(default=True)
    payload_format = UnicodeAttribute(default="gitlab")
    frequency_threshold = NumberAttribute(null=True)  # None: no frequency alerts
    frequency_window = NumberAttribute(default=60)  # minutes
    # GitLab's auto-disabling (WebHooks::AutoDisabling): consecutive failures, and the end of the
    # current back-off once there were more than a few.
    recent_failures = NumberAttribute(default=0)
    disabled_until = UTCDateTimeAttribute(null=True)

    @staticmethod
    def key(project_id: int, hook_id: int) -> Key:
        return f"project#{project_id}", f"{HOOK_PREFIX}{hook_id:012d}"

    @property
    def header_names(self) -> list[str]:
        import json

        return [str(name) for name in json.loads(self.custom_header_names)] if self.custom_header_names else []


class HookDelivery(Entity, discriminator="hookdelivery"):
    """One notification of one hook, claimed before it is sent: a stream batch handled twice sends it
    once, and a send interrupted by a crash is sent again with the same Idempotency-Key."""

    uuid = UnicodeAttribute()
    state = UnicodeAttribute(default="claimed")  # claimed, sent, failed, dropped
    expires = TTLAttribute(null=True)

    @staticmethod
    def key(hook_id: int, what: str) -> Key:
        return f"hookdelivery#{hook_id}#{what}", "delivery"


class HookWindow(Entity, discriminator="hookwindow"):
    """The frequency window a hook counts an error's events in: when it started, the error's count
    just before it, and whether this window was notified already."""

    started = UnicodeAttribute()
    base = NumberAttribute()
    notified = BooleanAttribute(default=False)
    expires = TTLAttribute(null=True)

    @staticmethod
    def key(hook_id: int, project_id: int, error_id: int) -> Key:
        return f"hookwindow#{hook_id}#{project_id}#{error_id}", "window"


class RateWindow(Entity, discriminator="ratewindow"):
    """Events a client key sent in one rate-limit window; DynamoDB expires it afterwards."""

    hits = NumberAttribute(default=0)
    expires = TTLAttribute(null=True)

    @staticmethod
    def key(key_id: int, window_start: int) -> Key:
        return f"ratelimit#{key_id}", str(window_start)


def kind_of(cls: type[Entity]) -> Any:
    """The update action that tags an item with its kind: UpdateItem may create the item, and an
    item without its discriminator could not be read back as its model."""
    return cls.kind.set(cls)


def build(cls: type[Entity], key: Key, **attributes: Any) -> Any:
    """A new item of ``cls`` at ``key``."""
    return cls(key[0], key[1], **attributes)


# DynamoDB's limits on key attribute values, in bytes of UTF-8 (its "Service quotas").
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024


def key_fits(key: Key) -> bool:
    """Whether DynamoDB takes ``key`` at all. A key built from what a client sent (a project path,
    a Sentry key, a cursor) is checked first: DynamoDB refuses a whole request with an oversized
    key with a ValidationException, which would be a 500 for a request that merely names nothing."""
    pk, sk = key
    return 0 < len(pk.encode("utf-8")) <= MAX_PARTITION_KEY_BYTES and 0 < len(sk.encode("utf-8")) <= MAX_SORT_KEY_BYTES


def fetch(keys: list[Key]) -> dict[Key, Entity]:
    """Read several items of any kind in one strongly consistent BatchGetItem (GetItem for one;
    one BatchGetItem per 100 keys, DynamoDB's limit).

    DynamoDB may leave some keys unprocessed (under load, or past 16 MB): they are asked for again
    after a jittered backoff, within the request's time (PynamoDB's own batch_get asks again at
    once, in a loop)."""
    unique = list(dict.fromkeys(keys))
    if len(unique) == 1:
        try:
            item = Entity.get(*unique[0], consistent_read=True)
        except Entity.DoesNotExist:
            return {}
        return {unique[0]: item}
    found: dict[Key, Entity] = {}
    for start in range(0, len(unique), BATCH_GET_MAX_KEYS):  # DynamoDB takes 100 keys a call
        found.update(_batch_get(unique[start : start + BATCH_GET_MAX_KEYS]))
    return found


BATCH_GET_MAX_KEYS = 100


def _batch_get(keys: list[Key]) -> dict[Key, Entity]:
    connection = Entity._get_connection()
    table = Entity.Meta.table_name
    wanted = [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in keys]
    found: dict[Key, Entity] = {}
    for _ in budget.attempts(BATCH_GET_ATTEMPTS):
        answer = connection.batch_get_item(wanted, consistent_read=True)
        for raw in answer.get("Responses", {}).get(table, []):
            item = Entity.from_raw_data(raw)
            found[(item.pk, item.sk)] = item
        wanted = answer.get("UnprocessedKeys", {}).get(table, {}).get("Keys") or []
        if not wanted:
            return found
    raise budget.DeadlineExceeded()


BATCH_GET_ATTEMPTS = 8


def next_id(name: str) -> int:
    """The next value of a service-wide sequence: one atomic UpdateItem."""
    counter = build(Counter, Counter.key(name))
    counter.update(actions=[Counter.value.add(1), kind_of(Counter)])
    return int(counter.value)


def connection() -> Any:
    """The models' own connection (same client, same endpoint), for transactions."""
    return Entity._get_connection().connection


def transaction() -> Any:
    """A write transaction with its own idempotency token: when botocore retries it after a lost
    connection, DynamoDB applies it once instead of failing its conditions against itself."""
    import uuid

    from pynamodb.transactions import TransactWrite

    return TransactWrite(connection=connection(), client_request_token=uuid.uuid4().hex)


def reset_connections() -> None:
    """Forget the cached botocore client (tests re-point the models at a fresh mock)."""
    Entity._connection = None


# How a failed store call is read: a lost race (the service retries or answers 404/409), a
# passing unavailability (answered 503 with Retry-After), or anything else (a bug: 500).
_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
        "TransactionInProgressException",
        "KMSInternalException",
        "DependencyTimeoutException",
    }
)


def cancellation_codes(exc: Exception) -> list[str | None]:
    """Why each item of a cancelled transaction failed, in the transaction's order (None: it did not)."""
    if getattr(exc, "cause_response_code", None) != "TransactionCanceledException":
        return []
    return [r.code if r is not None else None for r in (getattr(exc, "cancellation_reasons", None) or [])]


def _reasons(exc: Exception) -> list[str]:
    return [code for code in cancellation_codes(exc) if code is not None]


def condition_failed(exc: Exception) -> bool:
    """A conditional write found the item other than expected: taken, missing, or changed."""
    if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
        return True
    return "ConditionalCheckFailed" in _reasons(exc)


def transaction_conflict(exc: Exception) -> bool:
    """Another transaction held the same item: trying again will do. A transaction is cancelled with
    a TransactionConflict reason; a single write is refused with TransactionConflictException."""
    if getattr(exc, "cause_response_code", None) == "TransactionConflictException":
        return True
    return "TransactionConflict" in _reasons(exc)


# How DynamoDB reports throttling of one item inside a cancelled transaction.
_TRANSIENT_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"})


def lost_race(exc: Exception) -> bool:
    """A conditional write or transaction that another writer beat: read again and retry."""
    return condition_failed(exc) or transaction_conflict(exc)


def unavailable(exc: Exception) -> bool:
    """The store (or KMS) failed for a while, not because of our request: worth a 503."""
    from botocore.exceptions import BotoCoreError, ClientError
    from pynamodb.exceptions import PynamoDBException

    code = getattr(exc, "cause_response_code", None)
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
    if code in _TRANSIENT_CODES or transaction_conflict(exc) or _TRANSIENT_REASONS & set(_reasons(exc)):
        return True
    # No response at all: connection refused, timeout, DNS.
    cause = getattr(exc, "cause", None)
    return isinstance(exc, BotoCoreError) or (isinstance(exc, PynamoDBException) and isinstance(cause, BotoCoreError))
