"""A strict layer over the embedded store: what DynamoDB documents and moto forgives.

moto accepts requests DynamoDB refuses and never behaves as DynamoDB does under load, so a test
suite on plain moto proves less than it seems. This layer sits at botocore's level, on every
DynamoDB client the service makes (``chalicelib.clients.instrument``), and makes the store answer
as DynamoDB would:

- **Limits** (DynamoDB "Service, account, and table quotas"): partition key values at most 2,048
  bytes, sort key values at most 1,024, no empty string key values, items at most 400 KB, at most
  100 keys in a BatchGetItem and 100 actions in a TransactWriteItems, no two actions on one item of
  a transaction; checked on every operation, reads included (moto checks key sizes on writes
  only). Refused with DynamoDB's ValidationException.
- **Unprocessed keys**: BatchGetItem leaves a random share of the keys in ``UnprocessedKeys``
  (DynamoDB does under load, moto never), BatchWriteItem a share of its items in
  ``UnprocessedItems``.
- **Transaction conflicts**: a write that overlaps an in-flight transaction on one item, or a
  transaction that overlaps an in-flight write on one of its items, is refused
  (TransactionCanceledException with ``TransactionConflict``, or TransactionConflictException)
  when the two were sent within ``conflict_window`` (25 ms, about DynamoDB's transaction latency) of
  each other.
- **Index lag**: a Query on a global secondary index sees the table as it was ``index_lag``
  seconds ago (DynamoDB updates indexes asynchronously; moto at once).
- **Throttling**: more than 1,000 write units or 3,000 read units in one second on one partition
  of the table or of an index (units from item sizes, by DynamoDB's rules: writes per 1 KB,
  doubled in transactions; reads per 4 KB, halved when eventually consistent; an index write is a
  put of the projected item, plus a delete when its key changes) is answered
  ProvisionedThroughputExceededException, which botocore retries as it would on AWS.

Errors are injected as HTTP answers before the request is sent (``before-send``), so botocore
parses and retries them as DynamoDB's own; responses are changed after the call (``after-call``).
The layer's clock (:attr:`StrictStore.clock`) can be moved on by tests (:meth:`StrictStore.settle`)
instead of sleeping. ``make run STRICT=1`` runs the local server on it.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_PARTITION_KEY = 2048
MAX_SORT_KEY = 1024
MAX_ITEM = 400 * 1024
MAX_BATCH_GET = 100
MAX_TRANSACTION = 100
WRITE_UNITS_PER_PARTITION = 1000
READ_UNITS_PER_PARTITION = 3000
_SWEEP_EVERY = 512  # writes between two sweeps of what the layer remembers
_WRITES = ("PutItem", "UpdateItem", "DeleteItem")
Item = dict[str, Any]  # DynamoDB's wire format: {"name": {"S": "..."}}


class _Raw(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        contents = self.read()
        while contents:
            yield contents
            contents = self.read()


def _answer(request: Any, status: int, code: str, message: str, **extra: Any) -> Any:
    from botocore.awsrequest import AWSResponse, HTTPHeaders

    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message, **extra})
    headers = HTTPHeaders()
    headers["Content-Type"] = "application/x-amz-json-1.0"
    headers["x-amzn-RequestId"] = "strict-store"
    return AWSResponse(request.url, status, headers, _Raw(body.encode()))


class Refusal(Exception):
    """What DynamoDB would answer instead of doing the request."""

    def __init__(self, code: str, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.extra = code, message, status, extra


# Sizes, by DynamoDB's rules ("Item sizes and formats")


def _number_size(text: str) -> int:
    # Leading and trailing zeros are trimmed: 0.00100 and 100 each have one significant digit.
    digits = text.lstrip("-").replace(".", "").strip("0") or "0"
    return max(1, math.ceil(len(digits) / 2)) + 1


def value_size(value: dict[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(str(data).encode("utf-8"))
    if kind == "N":
        return _number_size(str(data))
    if kind == "B":
        return len(base64.b64decode(data)) if isinstance(data, str) else len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(str(s).encode("utf-8")) for s in data)
    if kind == "NS":
        return sum(_number_size(str(n)) for n in data)
    if kind == "BS":
        return sum(len(base64.b64decode(b)) if isinstance(b, str) else len(b) for b in data)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in data)
    if kind == "M":
        return 3 + sum(len(k.encode("utf-8")) + 1 + value_size(v) for k, v in data.items())
    return 0


def item_size(item: Item) -> int:
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return float(units) if consistent else units / 2


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: str
    range_key: str | None
    projection: str  # ALL, KEYS_ONLY, INCLUDE
    included: frozenset[str] = frozenset()

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.hash_key, *([self.range_key] if self.range_key else []))

    def key_of(self, item: Item) -> tuple[Any, ...]:
        return tuple(json.dumps(item.get(k), sort_keys=True) for k in self.keys)

    def order(self, item: Item) -> tuple[Any, ...]:
        """Where ``item`` stands in the index: by its range key (ties by the item's identity)."""
        return (
            _order_value(item.get(self.range_key)) if self.range_key else (0, ""),
            json.dumps(item.get("pk")),
            json.dumps(item.get("sk")),
        )

    def projected(self, item: Item, table_keys: tuple[str, ...]) -> Item | None:
        """The index's copy of ``item``, or None when the item has no entry in the index."""
        if self.hash_key not in item or (self.range_key and self.range_key not in item):
            return None
        if self.projection == "ALL":
            return item
        keep = {*table_keys, self.hash_key, *([self.range_key] if self.range_key else []), *self.included}
        return {k: v for k, v in item.items() if k in keep}


def index_writes(index: Index, table_keys: tuple[str, ...], before: Item | None, after: Item | None) -> list[Item]:
    """The index items one table write makes the index write, by DynamoDB's rules ("Provisioned
    throughput considerations for global secondary indexes"): a put when the item enters the index
    or its projected attributes change, a delete when it leaves, both when its index key changes,
    nothing when its copy in the index is unchanged. Each is billed by its own size."""
    old = index.projected(before, table_keys) if before else None
    new = index.projected(after, table_keys) if after else None
    moved = old is not None and new is not None and index.key_of(old) != index.key_of(new)
    written = []
    if old is not None and (new is None or moved):
        written.append(old)  # the delete of the old copy
    if new is not None and (old is None or moved or old != new):
        written.append(new)
    return written


@dataclass(frozen=True)
class Table:
    name: str
    hash_key: str
    range_key: str | None
    indexes: tuple[Index, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.hash_key, *([self.range_key] if self.range_key else []))

    def key(self, item: Item) -> Item:
        return {k: item[k] for k in self.keys if k in item}

    def identity(self, item: Item) -> tuple[str, ...]:
        return (self.name, *(json.dumps(item.get(k), sort_keys=True) for k in self.keys))

    def index(self, name: str | None) -> Index | None:
        return next((i for i in self.indexes if i.name == name), None) if name else None


@dataclass
class _Write:
    at: float
    before: Item | None  # the item before this write (None: it did not exist)


@dataclass(repr=False)  # botocore logs its handlers at DEBUG: the layer's state (keys) stays out
class StrictStore:
    """Install with :meth:`install`; every knob may be changed between requests."""

    index_lag: float = 0.0
    unprocessed_rate: float = 0.0
    throttling: bool = True
    conflicts: bool = True
    # How long a transaction holds its items, as DynamoDB processes it (its typical latency): the
    # local store serializes requests, so the time a request spends in flight is mostly queueing,
    # during which DynamoDB would not hold the items. Writes overlapping that long conflict.
    conflict_window: float = 0.025
    seed: int = 0
    time_source: Callable[[], float] = time.monotonic
    offset: float = 0.0  # added to the time source: what settle() moves on
    refused: list[str] = field(default_factory=list)  # "<operation>: <code>" of each injected error
    # Request units DynamoDB would bill, ("write" | "read", table or "<table>/<index>") -> units,
    # since the last reset; never swept (the bench's cost model reads it).
    billed: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    _random: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _tables: dict[str, Table] = field(default_factory=dict, init=False)
    # item -> {call: (transactional, when it was sent)} for every write in flight
    _in_flight: dict[tuple[str, ...], dict[int, tuple[bool, float]]] = field(
        default_factory=lambda: defaultdict(dict), init=False
    )
    _history: dict[tuple[str, ...], list[_Write]] = field(default_factory=lambda: defaultdict(list), init=False)
    _units: dict[tuple[str, str, str, int], float] = field(default_factory=lambda: defaultdict(float), init=False)
    _raw: Any = field(default=None, init=False)
    _forced: list[list[Any]] = field(default_factory=list, init=False)  # [matches, times left]
    _writes_since_sweep: int = field(default=0, init=False)
    _installed: list[tuple[Any, str, Any]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def __repr__(self) -> str:
        return f"StrictStore(index_lag={self.index_lag}, unprocessed_rate={self.unprocessed_rate})"

    def reset(self) -> None:
        """Forget every write, unit and refusal (a fresh store)."""
        with self._lock:
            self._in_flight.clear()
            self._history.clear()
            self._units.clear()
            self.billed.clear()
            self.refused.clear()
            self._forced.clear()
            self._tables.clear()
            self._random = random.Random(self.seed)

    # The clock

    def clock(self) -> float:
        return self.time_source() + self.offset

    def settle(self, seconds: float | None = None) -> None:
        """Move the clock on (by the index lag unless told): indexes catch up, throttling windows end."""
        self.offset += (self.index_lag if seconds is None else seconds) + 1e-3
        self._sweep()

    def _sweep(self) -> None:
        """Forget what no longer changes an answer: writes every index has caught up with, and the
        units of seconds gone by (a long run would otherwise keep every item it ever wrote)."""
        now = self.clock()
        horizon, second = now - max(self.index_lag, 0.0) - 1.0, int(now)
        with self._lock:
            for identity in [i for i, history in self._history.items() if not history or history[-1].at < horizon]:
                del self._history[identity]
            for counted in [k for k in self._units if k[3] < second - 1]:
                del self._units[counted]
            self._writes_since_sweep = 0

    # Wiring

    def install(self) -> None:
        """Attach to every DynamoDB client the service makes from now on."""
        from chalicelib import clients, models

        instrument = clients.instrument

        def instrument_strictly(client: Any) -> Any:
            client = instrument(client)
            if (
                client.meta.service_model.service_name == "dynamodb"
                and getattr(client, "_strict_store", None) is not self
            ):
                self.attach(client)
            return client

        self._installed.append((clients, "instrument", instrument))
        clients.instrument = instrument_strictly
        _stop_moto_for_refused_requests(self._installed)
        models.reset_connections()

    def uninstall(self) -> None:
        from chalicelib import models

        for module, name, original in reversed(self._installed):
            setattr(module, name, original)
        self._installed.clear()
        models.reset_connections()

    @staticmethod
    def is_own(client: Any) -> bool:
        """The client the layer reads the store with (what it costs is not the service's)."""
        return bool(getattr(client, "_strict_store_own", False))

    def attach(self, client: Any) -> None:
        import boto3

        client._strict_store = self
        if self._raw is None:
            self._raw = boto3.session.Session().client(
                "dynamodb",
                region_name=client.meta.region_name,
                endpoint_url=client.meta.endpoint_url,
                aws_access_key_id="strict",
                aws_secret_access_key="strict",
            )
        self._raw._strict_store_own = True
        client.meta.events.register_first("before-send.dynamodb", self._before_send)
        client.meta.events.register("after-call.dynamodb", self._after_call)
        client.meta.events.register("after-call-error.dynamodb", self._after_call_error)

    def _table(self, name: str) -> Table:
        if name not in self._tables:
            described = self._raw.describe_table(TableName=name)["Table"]

            def keys(schema: list[dict[str, str]]) -> tuple[str, str | None]:
                by_type = {k["KeyType"]: k["AttributeName"] for k in schema}
                return by_type["HASH"], by_type.get("RANGE")

            indexes = []
            for gsi in described.get("GlobalSecondaryIndexes", []):
                projection = gsi.get("Projection", {})
                indexes.append(
                    Index(
                        gsi["IndexName"],
                        *keys(gsi["KeySchema"]),
                        projection.get("ProjectionType", "ALL"),
                        frozenset(projection.get("NonKeyAttributes", [])),
                    )
                )
            self._tables[name] = Table(name, *keys(described["KeySchema"]), tuple(indexes))
        return self._tables[name]

    # Around each request

    def _before_send(self, request: Any, **_: Any) -> Any:
        target = request.headers.get("X-Amz-Target", b"")
        operation = (target.decode() if isinstance(target, bytes) else str(target)).rsplit(".", 1)[-1]
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        params = json.loads(body or "{}")
        request.context["strict_params"] = params
        try:
            self._check(operation, params, request.context)
        except Refusal as refusal:
            self.refused.append(f"{operation}: {refusal.code}")
            self._release(request.context)
            request.context[_REFUSED] = True
            return _answer(request, refusal.status, refusal.code, refusal.message, **refusal.extra)
        return None

    def _after_call(
        self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        try:
            params = context.get("strict_params")
            if params is not None and http_response.status_code < 300:
                if model.name == "BatchGetItem":
                    self._leave_unprocessed(params, parsed)
                elif model.name == "Query" and params.get("IndexName"):
                    self._lag(params, parsed)
                if self.throttling:
                    self._count_reads(model.name, params, parsed)
        finally:
            self._release(context)

    def _after_call_error(self, context: dict[str, Any], **_: Any) -> None:
        self._release(context)

    # Checks before a request is sent

    def _check(self, operation: str, params: dict[str, Any], context: dict[str, Any]) -> None:
        if operation in ("GetItem", *_WRITES):
            table = self._table(params["TableName"])
            self._check_key(table, params["Item"] if operation == "PutItem" else params.get("Key", {}))
            if operation == "PutItem":
                self._check_item(params["Item"])
        elif operation == "BatchGetItem":
            keys = [(name, key) for name, request in params["RequestItems"].items() for key in request["Keys"]]
            if len(keys) > MAX_BATCH_GET:
                raise Refusal("ValidationException", "Too many items requested for the BatchGetItem call")
            for name, key in keys:
                self._check_key(self._table(name), key)
        elif operation == "Query":
            self._check_query(self._table(params["TableName"]), params)
        elif operation == "TransactWriteItems":
            self._check_transaction(params)
        elif operation == "BatchWriteItem":
            for name, requests in params["RequestItems"].items():
                table = self._table(name)
                for request in requests:
                    put, delete = request.get("PutRequest"), request.get("DeleteRequest")
                    self._check_key(table, put["Item"] if put else delete["Key"])
                    if put:
                        self._check_item(put["Item"])
        if operation in (*_WRITES, "TransactWriteItems", "BatchWriteItem"):
            self._before_write(operation, params, context)
        elif operation in ("GetItem", "BatchGetItem", "Query") and self.throttling:
            self._check_read_capacity(operation, params)

    def _check_key(self, table: Table | Index, key: Item) -> None:
        for name, limit in ((table.hash_key, MAX_PARTITION_KEY), (table.range_key, MAX_SORT_KEY)):
            if name is None or name not in key:
                continue
            value = key[name]
            ((kind, data),) = value.items()
            if kind == "S" and data == "":
                raise Refusal(
                    "ValidationException",
                    "One or more parameter values are not valid. The AttributeValue for a key attribute "
                    f"cannot contain an empty string value. Key: {name}",
                )
            if value_size(value) > limit:
                which = "hashkey" if name == table.hash_key else "rangekey"
                raise Refusal(
                    "ValidationException",
                    f"One or more parameter values were invalid: Size of {which} has exceeded the maximum "
                    f"size limit of{limit} bytes",
                )

    def _check_item(self, item: Item) -> None:
        if item_size(item) > MAX_ITEM:
            raise Refusal("ValidationException", "Item size has exceeded the maximum allowed size")

    def _check_query(self, table: Table, params: dict[str, Any]) -> None:
        index = table.index(params.get("IndexName"))
        value = _hash_value(params, index.hash_key if index else table.hash_key)
        if value is not None and value_size(value) > MAX_PARTITION_KEY:
            raise Refusal(
                "ValidationException",
                "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size "
                f"limit of{MAX_PARTITION_KEY} bytes",
            )
        start = params.get("ExclusiveStartKey")
        if start:
            self._check_key(table, start)
            if index is not None:  # an index's key parts are key values too, under the same limits
                self._check_key(index, start)

    def _check_transaction(self, params: dict[str, Any]) -> None:
        actions = params["TransactItems"]
        if len(actions) > MAX_TRANSACTION:
            raise Refusal("ValidationException", "Member must have length less than or equal to 100")
        seen = set()
        for action in actions:
            ((kind, body),) = action.items()
            table = self._table(body["TableName"])
            key = body["Item"] if kind == "Put" else body["Key"]
            self._check_key(table, key)
            if kind == "Put":
                self._check_item(body["Item"])
            identity = table.identity(key)
            if identity in seen:
                raise Refusal(
                    "ValidationException", "Transaction request cannot include multiple operations on one item"
                )
            seen.add(identity)

    # Writes: conflicts, history (for index lag), write capacity

    def _written(self, operation: str, params: dict[str, Any]) -> list[_Written]:
        found = []
        if operation == "TransactWriteItems":
            for action in params["TransactItems"]:
                ((kind, body),) = action.items()
                if kind != "ConditionCheck":
                    table = self._table(body["TableName"])
                    item = body.get("Item")
                    found.append(_Written(table, table.key(item or body["Key"]), kind, item, body))
        elif operation == "BatchWriteItem":
            for name, requests in params["RequestItems"].items():
                table = self._table(name)
                for request in requests:
                    put = request.get("PutRequest")
                    item = put["Item"] if put else None
                    key = table.key(item or request["DeleteRequest"]["Key"])
                    found.append(_Written(table, key, "Put" if put else "Delete", item, request))
        else:
            table = self._table(params["TableName"])
            item = params.get("Item")
            kind = {"PutItem": "Put", "UpdateItem": "Update", "DeleteItem": "Delete"}[operation]
            found.append(_Written(table, table.key(item or params["Key"]), kind, item, params))
        return found

    def _before_write(self, operation: str, params: dict[str, Any], context: dict[str, Any]) -> None:
        written = self._written(operation, params)
        transactional = operation == "TransactWriteItems"
        call = id(context)
        with self._lock:
            if "strict_registered" not in context:
                identities = [w.table.identity(w.key) for w in written]
                now = time.monotonic()
                clashes = {
                    n
                    for n, identity in enumerate(identities)
                    if any(
                        (transactional or other) and now - started < self.conflict_window
                        for other, started in self._in_flight.get(identity, {}).values()
                    )
                }
                clashes |= self._forced_clashes(written)
                if clashes and self.conflicts:
                    if not transactional:
                        raise Refusal("TransactionConflictException", "Transaction is ongoing for the item")
                    items = [a for a in params["TransactItems"] if "ConditionCheck" not in a]
                    reasons = [
                        {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
                        if n in clashes
                        else {"Code": "None"}
                        for n in range(len(items))
                    ]
                    raise Refusal(
                        "TransactionCanceledException",
                        "Transaction cancelled, please refer cancellation reasons for specific reasons "
                        f"[{', '.join(r['Code'] for r in reasons)}]",
                        CancellationReasons=reasons,
                    )
                for identity in identities:
                    self._in_flight[identity][call] = (transactional, now)
                context["strict_registered"] = identities
        befores = [
            self._raw.get_item(TableName=w.table.name, Key=w.key, ConsistentRead=True).get("Item") for w in written
        ]
        if self.throttling:
            self._charge_writes(written, befores, transactional)
        now = self.clock()
        horizon = now - max(self.index_lag, 0.0) - 1.0
        with self._lock:
            for w, before in zip(written, befores, strict=True):
                history = self._history[w.table.identity(w.key)]
                history.append(_Write(now, before))
                while len(history) > 1 and history[1].at < horizon:
                    history.pop(0)
            self._writes_since_sweep += 1
            sweep = self._writes_since_sweep >= _SWEEP_EVERY
        if sweep:
            self._sweep()

    def conflict_next(self, matches: Callable[[str], bool], times: int = 1) -> None:
        """Refuse the next ``times`` writes of an item whose partition key ``matches`` as DynamoDB
        does while another transaction holds it: what concurrent writers cause, on demand."""
        with self._lock:
            self._forced.append([matches, times])

    def _forced_clashes(self, written: list[_Written]) -> set[int]:
        clashes = set()
        for n, w in enumerate(written):
            pk = next(iter(w.key[w.table.hash_key].values()))
            for forced in self._forced:
                if forced[1] > 0 and forced[0](pk):
                    forced[1] -= 1
                    clashes.add(n)
                    break
        self._forced = [f for f in self._forced if f[1] > 0]
        return clashes

    def _release(self, context: dict[str, Any]) -> None:
        identities = context.pop("strict_registered", None)
        if not identities:
            return
        with self._lock:
            for identity in identities:
                calls = self._in_flight.get(identity)
                if calls is not None:
                    calls.pop(id(context), None)
                    if not calls:
                        del self._in_flight[identity]

    def _charge_writes(self, written: list[_Written], befores: list[Item | None], transactional: bool) -> None:
        """Charge a write's units before it is sent, or refuse it when a partition has no room left."""
        charges: dict[tuple[str, str], float] = defaultdict(float)
        for w, before in zip(written, befores, strict=True):
            after = w.after(before)
            size = max(item_size(before or {}), item_size(after or {})) or item_size(w.key)
            charges[(w.table.name, _partition(w.key[w.table.hash_key]))] += write_units(size) * (
                2 if transactional else 1
            )
            for index in w.table.indexes:
                for copy in index_writes(index, w.table.keys, before, after):
                    charges[(f"{w.table.name}/{index.name}", _partition(copy[index.hash_key]))] += write_units(
                        item_size(copy)
                    )
        second = int(self.clock())
        with self._lock:
            if any(
                self._units[("w", where, partition, second)] + units > WRITE_UNITS_PER_PARTITION
                for (where, partition), units in charges.items()
            ):
                raise Refusal("ProvisionedThroughputExceededException", _THROTTLED)
            for (where, partition), units in charges.items():
                self._units[("w", where, partition, second)] += units
                self.billed[("write", where)] += units  # a throttled write is not billed

    def write_units_in(self, where: str, partition: Any, second: int | None = None) -> float:
        """Units written this second (or ``second``) to one partition of the table or an index
        (``where``: the table's name, or ``<table>/<index>``)."""
        at = int(self.clock()) if second is None else second
        return self._units[("w", where, _partition(partition), at)]

    # Reads: capacity, unprocessed keys, index lag

    def _read_partitions(self, operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
        if operation == "GetItem":
            table = self._table(params["TableName"])
            return [(table.name, _partition(params["Key"][table.hash_key]))]
        if operation == "BatchGetItem":
            return [
                (name, _partition(key[self._table(name).hash_key]))
                for name, request in params["RequestItems"].items()
                for key in request["Keys"]
            ]
        table = self._table(params["TableName"])
        index = table.index(params.get("IndexName"))
        where = f"{table.name}/{index.name}" if index else table.name
        return [(where, _partition(_hash_value(params, index.hash_key if index else table.hash_key)))]

    def _check_read_capacity(self, operation: str, params: dict[str, Any]) -> None:
        second = int(self.clock())
        with self._lock:
            full = any(
                self._units[("r", where, partition, second)] >= READ_UNITS_PER_PARTITION
                for where, partition in self._read_partitions(operation, params)
            )
        if full:
            raise Refusal("ProvisionedThroughputExceededException", _THROTTLED)

    def _count_reads(self, operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> None:
        if operation not in ("GetItem", "BatchGetItem", "Query"):
            return
        second = int(self.clock())
        if operation == "BatchGetItem":
            found = []
            for name, request in params["RequestItems"].items():
                table = self._table(name)
                consistent = bool(request.get("ConsistentRead"))
                items = (parsed.get("Responses") or {}).get(name, [])
                found += [
                    (name, _partition(i.get(table.hash_key)), read_units(item_size(i), consistent)) for i in items
                ]
                # A key with no item still costs a read's minimum, as it does on DynamoDB; one left
                # unprocessed costs nothing (it is read again).
                answered = {table.identity(i) for i in items} | {
                    table.identity(k) for k in ((parsed.get("UnprocessedKeys") or {}).get(name) or {}).get("Keys", [])
                }
                found += [
                    (name, _partition(k.get(table.hash_key)), read_units(0, consistent))
                    for k in request["Keys"]
                    if table.identity(k) not in answered
                ]
        else:
            items = [parsed["Item"]] if parsed.get("Item") else parsed.get("Items", [])
            ((where, partition),) = self._read_partitions(operation, params)
            size = sum(item_size(item) for item in items)
            found = [(where, partition, read_units(size, bool(params.get("ConsistentRead"))))]
        with self._lock:
            for where, partition, units in found:
                self._units[("r", where, partition, second)] += units
                self.billed[("read", where)] += units

    def _leave_unprocessed(self, params: dict[str, Any], parsed: dict[str, Any]) -> None:
        if self.unprocessed_rate <= 0:
            return
        responses = parsed.setdefault("Responses", {})
        unprocessed = dict(parsed.get("UnprocessedKeys") or {})
        for name, request in params["RequestItems"].items():
            table = self._table(name)
            left = [key for key in request["Keys"] if self._random.random() < self.unprocessed_rate]
            if not left:
                continue
            gone = {table.identity(key) for key in left}
            responses[name] = [item for item in responses.get(name, []) if table.identity(item) not in gone]
            unprocessed[name] = {**{k: v for k, v in request.items() if k != "Keys"}, "Keys": left}
        if unprocessed:
            parsed["UnprocessedKeys"] = unprocessed

    def _lag(self, params: dict[str, Any], parsed: dict[str, Any]) -> None:
        """The Query's items as the index held them ``index_lag`` seconds ago.

        The query ran on the table as it is; every item written since then is taken out and, when the
        image it had then belongs on this page of this query, put back as it was."""
        if self.index_lag <= 0:
            return
        table = self._table(params["TableName"])
        index = table.index(params.get("IndexName"))
        if index is None:
            return
        seen_at = self.clock() - self.index_lag
        with self._lock:
            then = {
                identity: next(w.before for w in history if w.at > seen_at)
                for identity, history in self._history.items()
                if identity[0] == table.name and history and history[-1].at > seen_at
            }
        if not then:
            return
        live = parsed.get("Items", [])
        kept = [item for item in live if table.identity(item) not in then]
        forward = params.get("ScanIndexForward", True)
        start = params.get("ExclusiveStartKey")
        # Old images are put back only within the page the table's answer covered.
        last = parsed.get("LastEvaluatedKey")
        wanted, matches = _hash_value(params, index.hash_key), _filter(params)
        for old in then.values():
            copy = index.projected(old, table.keys) if old else None
            if copy is None or copy.get(index.hash_key) != wanted or not matches(copy):
                continue
            position = index.order(copy)
            if start and not _after(position, index.order(start), forward):
                continue
            if last and _after(position, index.order(last), forward):
                continue
            kept.append(copy)
        kept.sort(key=index.order, reverse=not forward)
        limit = params.get("Limit")
        if limit and len(kept) > limit:
            kept = kept[:limit]
            parsed["LastEvaluatedKey"] = {
                name: kept[-1][name] for name in {*table.keys, *index.keys} if name in kept[-1]
            }
        parsed["Items"], parsed["Count"] = kept, len(kept)


_REFUSED = "strict_refused"


def _stop_moto_for_refused_requests(installed: list[tuple[Any, str, Any]]) -> None:
    """botocore calls every before-send handler, not only until one answers: in-process, moto's
    stubber (after this layer's) would still carry out a request the layer refused, so a refused
    write would be written all the same. It is told to leave those alone. (A moto server is not
    reached at all by a refused request.)"""
    try:
        from moto.core.botocore_stubber import BotocoreStubber
    except ImportError:
        return
    original = BotocoreStubber.__call__

    def call(self: Any, event_name: str, request: Any, **kwargs: Any) -> Any:
        if request.context.get(_REFUSED):
            return None
        return original(self, event_name, request, **kwargs)

    installed.append((BotocoreStubber, "__call__", original))
    BotocoreStubber.__call__ = call  # type: ignore[method-assign]


_THROTTLED = (
    "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically scaling your "
    "table or index so please try again shortly."
)


def _partition(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _after(position: tuple[Any, ...], boundary: tuple[Any, ...], forward: bool) -> bool:
    return position > boundary if forward else position < boundary


@dataclass(frozen=True)
class _Written:
    """One item a write request writes."""

    table: Table
    key: Item
    kind: str  # Put, Update, Delete
    item: Item | None  # what a put writes
    request: dict[str, Any]  # the part of the request that writes it (an update's expression, ...)

    def after(self, before: Item | None) -> Item | None:
        """The item after the write, as far as the request tells without running it."""
        if self.kind == "Put":
            return self.item
        if self.kind == "Delete":
            return None
        return _apply_update(dict(before or self.key), self.request)


_SECTIONS = re.compile(r"\b(SET|REMOVE|ADD|DELETE)\b")


def _clauses(text: str) -> list[str]:
    """``text`` split on its top-level commas."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()] if current.strip() else parts


def _apply_update(item: Item, request: dict[str, Any]) -> Item:
    """``item`` after the update ``request`` describes, for its top-level attributes: SET of a value
    or ``if_not_exists``, ADD of numbers and sets, REMOVE. Nested paths and arithmetic are left as
    they were (they only change an item's size a little)."""
    expression = request.get("UpdateExpression") or ""
    names = request.get("ExpressionAttributeNames") or {}
    values = request.get("ExpressionAttributeValues") or {}
    pieces = _SECTIONS.split(expression)
    for keyword, body in zip(pieces[1::2], pieces[2::2], strict=True):
        for clause in _clauses(body):
            if keyword == "REMOVE":
                name = names.get(clause, clause)
                item.pop(name, None)
                continue
            path, _, value_text = clause.partition("=") if keyword == "SET" else clause.partition(" ")
            path = path.strip()
            if "." in path or "[" in path:
                continue
            name = names.get(path, path)
            tokens = re.findall(r":\w+", value_text)
            if keyword == "SET" and tokens and tokens[-1] in values:
                keep = value_text.strip().startswith("if_not_exists") and name in item
                if not keep and "+" not in value_text and "-" not in value_text:
                    item[name] = values[tokens[-1]]
            elif keyword == "ADD" and tokens and tokens[-1] in values:
                added = values[tokens[-1]]
                current = item.get(name)
                if "N" in added:
                    base = float(current["N"]) if current and "N" in current else 0.0
                    total = base + float(added["N"])
                    item[name] = {"N": str(int(total)) if total.is_integer() else str(total)}
                else:
                    ((kind, members),) = added.items()
                    existing = (current or {}).get(kind, [])
                    item[name] = {kind: sorted({*existing, *members})}
    return item


def _hash_value(params: dict[str, Any], attribute: str) -> Any:
    """The value a Query asks of ``attribute`` (its partition key) in its key condition."""
    expression = params.get("KeyConditionExpression")
    names = params.get("ExpressionAttributeNames") or {}
    values = params.get("ExpressionAttributeValues") or {}
    for part in re.split(r"\s+AND\s+", expression or "", flags=re.IGNORECASE):
        match = re.match(r"^\s*\(?\s*(#?\w+)\s*=\s*(:\w+)", part)
        if match and names.get(match[1], match[1]) == attribute:
            return values.get(match[2])
    conditions = params.get("KeyConditions") or {}
    return conditions[attribute]["AttributeValueList"][0] if attribute in conditions else None


def _filter(params: dict[str, Any]) -> Callable[[Item], bool]:
    """The Query's filter, for the one the service uses (``contains(name, :value)``); any other lets
    every item through."""
    match = re.fullmatch(r"\s*contains\s*\(\s*(#?\w+)\s*,\s*(:\w+)\s*\)\s*", params.get("FilterExpression") or "")
    if not match:
        return lambda _: True
    name = str((params.get("ExpressionAttributeNames") or {}).get(match[1], match[1]))
    needle = (params.get("ExpressionAttributeValues") or {}).get(match[2], {}).get("S", "")
    return lambda item: needle in str((item.get(name) or {}).get("S", ""))


def _order_value(value: Any) -> tuple[int, Any]:
    if not value:
        return (0, "")
    ((kind, data),) = value.items()
    return (1, float(data)) if kind == "N" else (2, str(data))
