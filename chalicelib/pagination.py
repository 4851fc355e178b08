"""GitLab's offset pagination: parameters, the page, and its headers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100

T = TypeVar("T")


def _positive_int(value: Any) -> int | None:
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number > 0 else None


def page_size(value: Any) -> int:
    """A page size: default 20, at most 100, forgiving instead of failing (GitLab's rule)."""
    return min(_positive_int(value) or DEFAULT_PER_PAGE, MAX_PER_PAGE)


def page_params(params: dict[str, Any]) -> tuple[int, int]:
    """(page, per_page), with GitLab's forgiving defaults instead of errors."""
    return _positive_int(params.get("page")) or 1, page_size(params.get("per_page"))


def cursor_headers(url: str, params: dict[str, Any], next_cursor: str | None) -> dict[str, str]:
    """Keyset pagination: ``Link: <...cursor=...>; rel="next"`` and ``X-Next-Cursor``, or nothing
    on the last page."""
    if not next_cursor:
        return {}
    kept = {k: str(v) for k, v in params.items() if k != "cursor" and not isinstance(v, dict | list)}
    return {
        "Link": f'<{url}?{urlencode({**kept, "cursor": next_cursor})}>; rel="next"',
        "X-Next-Cursor": next_cursor,
    }


def paginate(items: Sequence[T], params: dict[str, Any], url: str) -> tuple[Sequence[T], dict[str, str]]:
    """The requested page of ``items`` and GitLab's X-* and Link headers.

    ``params`` are the request's other parameters, kept in the links; ``url`` is the absolute URL
    of the list without a query string.
    """
    page, per_page = page_params(params)
    total = len(items)
    total_pages = max(1, -(-total // per_page))
    kept = {k: str(v) for k, v in params.items() if k not in ("page", "per_page") and not isinstance(v, dict | list)}

    def link(number: int, rel: str) -> str:
        return f'<{url}?{urlencode({**kept, "page": number, "per_page": per_page})}>; rel="{rel}"'

    # Kaminari's rule: a page past the last has neither a previous nor a next page.
    has_prev = 1 < page <= total_pages
    links = []
    if has_prev:
        links.append(link(page - 1, "prev"))
    if page < total_pages:
        links.append(link(page + 1, "next"))
    links += [link(1, "first"), link(total_pages, "last")]
    headers = {
        "X-Page": str(page),
        "X-Per-Page": str(per_page),
        "X-Total": str(total),
        "X-Total-Pages": str(total_pages),
        "X-Next-Page": str(page + 1) if page < total_pages else "",
        "X-Prev-Page": str(page - 1) if has_prev else "",
        "Link": ", ".join(links),
    }
    start = (page - 1) * per_page
    return items[start : start + per_page], headers
