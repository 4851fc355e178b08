"""An event's exceptions as Sentry reads them: which one is the main one, and which are synthetic.

SDKs send ``exception.values`` oldest first: a cause before what it caused, the raised exception
last (sentry-python for ``raise B from A`` sends ``[A, B]``; @sentry/core's linked errors send
``[cause, error]``). Exception groups carry a tree in ``mechanism`` (``exception_id``, ``parent_id``,
``is_exception_group``). The rules here are Sentry's (getsentry/sentry ``eventtypes/error.py``
``get_exception``, ``grouping/strategies/newstyle.py`` ``filter_exceptions_for_exception_groups``):
the main exception is the last one, unless the exception groups boil down to one distinct
exception, which is then the main one.
"""

from __future__ import annotations

from typing import Any

from chalicelib.ingest.payload import exceptions as values_of
from chalicelib.ingest.payload import frames

__all__ = ["in_chain_order", "is_synthetic", "main_exception", "main_index", "mechanism"]

Exception_ = dict[str, Any]


def mechanism(exception: Exception_) -> dict[str, Any]:
    found = exception.get("mechanism")
    return found if isinstance(found, dict) else {}


def is_synthetic(exception: Exception_ | None) -> bool:
    """An exception an SDK made up to carry a stack trace (JavaScript's ``captureMessage``): its
    type means nothing, its value is the message."""
    return exception is not None and mechanism(exception).get("synthetic") is True


def _exception_id(exception: Exception_) -> int | None:
    value = mechanism(exception).get("exception_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _signature(exception: Exception_) -> tuple[Any, ...]:
    """What makes two exceptions the same for grouping: the type and the stack, or the type and the
    value when there is no stack."""
    stack = tuple(
        (
            str(f.get("module") or f.get("filename") or ""),
            str(f.get("function") or ""),
            str(f.get("context_line") or ""),
        )
        for f in frames(exception)
    )
    return (str(exception.get("type") or ""), stack or str(exception.get("value") or ""))


def main_index(values: list[Exception_]) -> int | None:
    """The index of the exception an error is titled and grouped by; None without exceptions."""
    if not values:
        return None
    ids = [_exception_id(v) for v in values]
    parents = [mechanism(v).get("parent_id") for v in values]
    # Only a well-formed tree is read as one (Sentry's rule): every exception has its own id, none is
    # its own parent, and the root is 0. Plain chains (Python's, without ids) are not trees.
    if (
        None in ids
        or len(set(ids)) != len(ids)
        or 0 not in ids
        or any(i == p for i, p in zip(ids, parents, strict=True))
    ):
        return len(values) - 1
    by_id = {i: n for n, i in enumerate(ids)}
    children: dict[int, list[int]] = {}
    for n in reversed(range(len(values))):
        parent = parents[n]
        if isinstance(parent, int) and parent in by_id:
            children.setdefault(parent, []).append(n)

    def top_level(n: int, depth: int = 0) -> list[int]:
        if mechanism(values[n]).get("is_exception_group") is True and depth < 32:
            return [t for child in children.get(ids[n] or 0, []) for t in top_level(child, depth + 1)]
        return [n]

    tops = sorted(top_level(by_id[0]), key=lambda n: str(values[n].get("type") or ""), reverse=True)
    distinct: list[int] = []
    for n in tops:
        if not distinct or _signature(values[distinct[-1]]) != _signature(values[n]):
            distinct.append(n)
    return distinct[0] if len(distinct) == 1 else len(values) - 1


def main_exception(payload: dict[str, Any]) -> Exception_ | None:
    values = values_of(payload)
    index = main_index(values)
    return None if index is None else values[index]


def in_chain_order(payload: dict[str, Any]) -> list[Exception_]:
    """Every exception, the main one first, then the others from the raised one down to its
    causes and members (the reverse of what SDKs send)."""
    values = values_of(payload)
    index = main_index(values)
    if index is None:
        return []
    return [values[index], *(values[n] for n in reversed(range(len(values))) if n != index)]
