"""Reading an event payload's parts, whatever shape an SDK (or anyone holding a DSN) gave them.

Every reader takes any JSON and returns what it found in one shape, or nothing.
"""

from __future__ import annotations

from typing import Any

Payload = dict[str, Any]


def clean(text: str) -> str:
    """Valid UTF-8 only: JSON may carry lone surrogates (\\ud800), which nothing downstream takes."""
    return text.encode("utf-8", "replace").decode("utf-8")


def text(value: Any, limit: int) -> str | None:
    """A scalar as stripped text of at most ``limit`` characters; None for nothing, objects and lists."""
    if value is None or isinstance(value, dict | list):
        return None
    found = clean(str(value)).strip()
    return found[:limit] if found else None


def _present(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool) and str(value).strip() != ""


def exceptions(payload: Payload) -> list[dict[str, Any]]:
    """The event's exceptions, oldest first; those with neither type nor value are dropped (Relay
    drops them too). Go SDKs send a bare array instead of ``{"values": [...]}``."""
    exception = payload.get("exception")
    values = exception.get("values") if isinstance(exception, dict) else exception
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, dict) and (_present(v.get("type")) or _present(v.get("value")))]


def frames(holder: Any) -> list[dict[str, Any]]:
    """The frames of the stack trace of ``holder`` (an exception, a thread, the event), oldest first."""
    stacktrace = holder.get("stacktrace") if isinstance(holder, dict) else None
    found = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
    return [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []


def threads(payload: Payload) -> list[dict[str, Any]]:
    found = payload.get("threads")
    values = found.get("values") if isinstance(found, dict) else None
    return [t for t in values if isinstance(t, dict)] if isinstance(values, list) else []


def all_frames(payload: Payload) -> list[dict[str, Any]]:
    """Every frame of the event: its exceptions', its own stack trace's and its threads'."""
    return [f for holder in (*exceptions(payload), payload, *threads(payload)) for f in frames(holder)]


def breadcrumbs(payload: Payload) -> list[dict[str, Any]] | None:
    """The breadcrumbs, oldest first (JavaScript SDKs send a list, Python's ``{"values": [...]}``);
    None when there are none."""
    found = payload.get("breadcrumbs")
    values = found.get("values") if isinstance(found, dict) else found
    return [c for c in values if isinstance(c, dict)] if isinstance(values, list) else None


def pairs(value: Any) -> list[tuple[str, Any]] | None:
    """Headers, cookies, a query or tags as (name, value) pairs, from an object or a list of pairs."""
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list):
        return [(str(p[0]), p[1]) for p in value if isinstance(p, list | tuple) and len(p) == 2]
    return None
