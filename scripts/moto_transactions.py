"""The embedded store's transactions at a cost that does not grow with the table (and update
expressions parsed once, queries that read their partition only, items not kept after use).

moto's ``TransactWriteItems`` deep-copies every table a transaction touches before it starts, to
restore it if the transaction is cancelled. Every roll-up, key write and first settings save is a
transaction, so each one cost a copy of the whole table: the embedded store got slower and bigger
with every event it held (about 4 MB of copying per stored event), and the test suite's floods grew
quadratic. DynamoDB's own transactions cost what their items cost.

:func:`install` replaces that method on moto's DynamoDB backend with one that keeps moto's answers
(the same cancellation reasons, in the same order, and the same errors for malformed
transactions) and remembers only the items the transaction writes: every condition is checked
before anything is written, then the writes are applied; should one of them fail, the items
already written are put back as they were.
"""

from __future__ import annotations

import copy
from typing import Any

_installed = False


def install() -> None:
    """Use :func:`transact_write_items` for every moto DynamoDB backend from now on (idempotent)."""
    global _installed
    if _installed:
        return
    from moto.dynamodb.models import DynamoDBBackend

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _parse_each_update_expression_once()
    _query_without_sorting_the_table()
    _items_not_kept_for_good()
    _installed = True


def _items_not_kept_for_good() -> None:
    """moto appends every model instance it makes to a list on its class (``instances_tracked``,
    for its dashboard and its reset), emptied only when a mock stops, which a server never does.
    Every item a query answers with or a write replaces is a copy, so each one stayed in memory
    for good: about 28 KB a Query of 21 errors, and the store of `make run` grew past 1 GB after
    100,000 requests. DynamoDB items are not tracked here; nothing of ours reads that list."""
    from moto.dynamodb.models.dynamo_type import Item

    def untracked(cls: type[Any], *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    Item.__new__ = staticmethod(untracked)  # type: ignore[method-assign]


def _query_without_sorting_the_table() -> None:
    """moto's Query starts from every item of the table, sorted (``Table.all_items``), then keeps
    those of the asked partition and sorts them again: with 10,000 events stored, listing a
    project's errors took 790 ms instead of 26. DynamoDB reads only the partition. Here a query
    of the table starts from its partition, and a query of an index from the items whose index
    key matches, unsorted (moto sorts what it keeps anyway); the rest of moto's query (ranges,
    filters, paging, projections) is unchanged."""
    import threading

    from moto.dynamodb.models.table import Table

    query, every_item = Table.query, Table.all_items
    # The candidates of the query running on this thread (tests call moto from several threads).
    running = threading.local()

    def all_items(self: Any) -> Any:
        override = getattr(running, "candidates", None)
        if override is not None and override[0] is self:
            return override[1]
        return every_item(self)

    def partition_query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if index_name:
            wanted = dict(kwargs.get("hash_key_conditions") or [])
            if not wanted:
                return query(self, hash_key, *args, **kwargs)
            items = [
                item
                for partition in self.items.values()
                for item in (partition.values() if self.range_key_attr else [partition])
                if all(name in item.attrs and item.attrs[name] == value for name, value in wanted.items())
            ]
        else:
            partition = self.items.get(hash_key)
            items = [] if partition is None else list(partition.values() if self.range_key_attr else [partition])
        outer = getattr(running, "candidates", None)
        running.candidates = (self, items)
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            running.candidates = outer

    Table.all_items = all_items  # type: ignore[method-assign]
    Table.query = partition_query  # type: ignore[method-assign]


def _parse_each_update_expression_once() -> None:
    """moto parses a request's update expression afresh on every write: a sixth of what a
    roll-up cost the embedded store, for the same few expression strings, over and over. The
    parsed tree is only read (each validation works on its own deep copy of it), so one tree per
    expression string serves every write that sends it; an expression that fails to parse is
    not kept, and fails again the same way."""
    import functools

    from moto.dynamodb.parsing import expressions

    parser: Any = expressions.UpdateExpressionParser  # type: ignore[attr-defined]
    parse = parser.make.__func__

    @functools.lru_cache(maxsize=1024)
    def parsed(expression: str) -> Any:
        return parse(parser, expression)

    parser.make = classmethod(lambda cls, expression: parsed(expression))


def _key_of(backend: Any, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        key: dict[str, Any] = op["Key"]
        return key
    table = backend.get_table(op["TableName"])
    attrs = op["Item"]
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return key


def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()

    # Phase 1: the shape of the request, and every condition against the items as they are.
    ops: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    seen: set[tuple[str, str]] = set()
    reasons: list[tuple[Any, Any, Any]] = []
    for entry in transact_items:
        if len(entry) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(entry.items()))
        original_item: dict[str, Any] | None = None
        try:
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            key = _key_of(self, op_type, op)
            identity = (str(op["TableName"]), str(dict(sorted(key.items()))))
            if identity in seen:
                raise MultipleTransactionsException()
            seen.add(identity)
            current = self.get_item(op["TableName"], key)
            condition = op.get("ConditionExpression")
            if condition is not None:
                check = get_filter_expression(
                    condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                )
                if not check.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)
            ops.append((op_type, op, key))
            reasons.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            raise
        except ConditionalCheckFailed as exc:
            reasons.append(("ConditionalCheckFailed", str(exc.message), original_item))
        except Exception as exc:  # moto reports any other failure of an item as its reason
            reasons.append((type(exc).__name__, str(exc), original_item))
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)

    # Phase 2: the writes, remembering each item as it was until all are done.
    before: list[tuple[str, dict[str, Any], Any]] = []
    for n, (op_type, op, key) in enumerate(ops):
        if op_type == "ConditionCheck":
            continue
        table_name = op["TableName"]
        before.append((table_name, key, copy.deepcopy(self.get_item(table_name, key))))
        try:
            _write(self, op_type, op, key)
        except MockValidationException:
            _restore(self, before)
            raise
        except Exception as exc:
            _restore(self, before)
            failed: list[tuple[Any, Any, Any]] = [(None, None, None)] * len(ops)
            failed[n] = (type(exc).__name__, str(exc), None)
            raise TransactionCanceledException(failed) from exc


def _write(backend: Any, op_type: str, op: dict[str, Any], key: dict[str, Any]) -> None:
    names = {
        "expression_attribute_names": op.get("ExpressionAttributeNames"),
        "expression_attribute_values": op.get("ExpressionAttributeValues"),
    }
    if op_type == "Put":
        backend.put_item(op["TableName"], op["Item"], **names)
    elif op_type == "Delete":
        backend.delete_item(op["TableName"], key, **names)
    else:
        backend.update_item(op["TableName"], key, update_expression=op["UpdateExpression"], **names)


def _restore(backend: Any, before: list[tuple[str, dict[str, Any], Any]]) -> None:
    for table_name, key, item in reversed(before):
        if item is None:
            backend.delete_item(table_name, key)
        else:
            backend.put_item(table_name, item.to_json()["Attributes"])
