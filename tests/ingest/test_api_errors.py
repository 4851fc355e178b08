"""The errors API and client key PATCH as GitLab users expect them.

Spec: sentry-ingestion.md sections 5 and 7 (the list, its fields and pagination), error-tracking-api.md
sections 1-2 (tokens and roles) and the client key entity. Errors are made the way users make them:
by posting Sentry envelopes with a client key.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from scripts.strict_store import StrictStore
from tests.conftest import Api, Reply, Scene, index_caught_up
from tests.wire import (
    CLIENT_KEY_FIELDS,
    ERROR_NOT_FOUND,
    FORBIDDEN,
    INACTIVE_KEY,
    INSUFFICIENT_SCOPE,
    KEY_NOT_FOUND,
    PROJECT_NOT_FOUND,
)

PUBLIC_URL = "http://errors.example.test"  # set by conftest
SETTINGS = "/api/v4/projects/{}/error_tracking/settings"
KEYS = "/api/v4/projects/{}/error_tracking/client_keys"
KEY = KEYS + "/{}"
ERRORS = "/api/v4/projects/{}/error_tracking/errors"
ERROR = ERRORS + "/{}"
EVENTS = ERROR + "/events"
INGEST = "/errortracking/api/v1/projects/api/{}/envelope/"

LIST_KEYS = [
    "id",
    "title",
    "type",
    "user_count",
    "count",
    "first_seen",
    "last_seen",
    "message",
    "culprit",
    "external_url",
    "project_id",
    "project_name",
    "project_slug",
    "short_id",
    "status",
    "frequency",
]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")
NEXT_LINK = re.compile(r'^<([^<>]+)>; rel="next"$')
CURSOR_INVALID = {"error": "cursor is invalid"}
INVALID_STATUS = {"error": "status does not have a valid value"}


# Making errors


def exception_event(
    exc_type: str = "ValueError",
    value: str = "invalid literal for int() with base 10: 'abc'",
    *,
    function: str = "checkout",
    timestamp: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "timestamp": timestamp or dt.datetime.now(dt.UTC).isoformat(),
        "platform": "python",
        "level": "error",
        "environment": "production",
        "release": "shop@1.0.0",
        "exception": {
            "values": [
                {
                    "type": exc_type,
                    "value": value,
                    "stacktrace": {
                        "frames": [
                            {
                                "function": "main",
                                "module": "shop.app",
                                "filename": "shop/app.py",
                                "abs_path": "/srv/shop/app.py",
                                "lineno": 10,
                                "in_app": True,
                                "pre_context": ["def main():"],
                                "context_line": "    checkout()",
                                "post_context": [""],
                            },
                            {
                                "function": function,
                                "module": "shop.views",
                                "filename": "shop/views.py",
                                "abs_path": "/srv/shop/views.py",
                                "lineno": 42,
                                "colno": None,
                                "in_app": True,
                                "pre_context": [f"def {function}():", "    raw = 'abc'"],
                                "context_line": "    return int(raw)",
                                "post_context": ["", "# end"],
                            },
                        ]
                    },
                }
            ]
        },
        **extra,
    }


def item_bytes(event: dict[str, Any]) -> bytes:
    data = json.dumps(event).encode()
    return json.dumps({"type": "event", "length": len(data)}).encode() + b"\n" + data + b"\n"


def envelope(*events: dict[str, Any]) -> bytes:
    return json.dumps({"event_id": events[0]["event_id"]}).encode() + b"\n" + b"".join(map(item_bytes, events))


# No test here waits between two events of one error: each is stored and counted at once while the
# error's roll-up token bucket lasts (tracked_errors: BURST roll-ups, REFILL_PER_SECOND more a
# second), and no test here sends more than a handful of one error.


@dataclass
class Ctx:
    """Project 1 "acme/shop" (private) with integrated error tracking; ``api.token`` is its maintainer's."""

    api: Api
    scene: Scene
    project_id: int
    key_id: int
    public_key: str

    def send(self, *events: dict[str, Any], public_key: str | None = None, project_id: int | None = None) -> None:
        """One envelope per event, as SDKs send them (an envelope carries at most one event)."""
        for event in events:
            reply = self.api.call(
                "POST",
                INGEST.format(project_id or self.project_id),
                headers={
                    "X-Sentry-Auth": f"Sentry sentry_key={public_key or self.public_key}, sentry_version=7",
                    "Content-Type": "application/x-sentry-envelope",
                },
                body=envelope(event),
            )
            assert reply.status == 200, reply.body

    def error_of(self, exc_type: str, value: str = "boom", **kw: Any) -> int:
        """Send one event of a new error; returns the error's id."""
        self.send(exception_event(exc_type, value, **kw))
        found = [e for e in self.listing("?status=unresolved&limit=100").json if e["title"].startswith(exc_type + ":")]
        assert len(found) == 1, found
        return int(found[0]["id"])

    def listing(self, query: str = "", project_id: int | None = None, **kw: Any) -> Reply:
        index_caught_up()
        return self.api.get(ERRORS.format(project_id or self.project_id) + query, **kw)

    def ok_list(self, query: str = "") -> list[dict[str, Any]]:
        reply = self.listing(query)
        assert reply.status == 200, reply.body
        items: list[dict[str, Any]] = reply.json
        return items

    def titles(self, query: str = "") -> list[str]:
        return [e["title"] for e in self.ok_list(query)]

    def detail(self, error_id: int | str, **kw: Any) -> Reply:
        return self.api.get(ERROR.format(self.project_id, error_id), **kw)

    def events(self, error_id: int | str, query: str = "", **kw: Any) -> Reply:
        return self.api.get(EVENTS.format(self.project_id, error_id) + query, **kw)

    def set_status(self, error_id: int | str, status: str, **kw: Any) -> Reply:
        return self.api.put(ERROR.format(self.project_id, error_id), form={"status": status}, **kw)

    def patch_key(self, key_id: int | str | None = None, **kw: Any) -> Reply:
        return self.api.patch(KEY.format(self.project_id, self.key_id if key_id is None else key_id), **kw)

    def client_keys(self) -> list[dict[str, Any]]:
        reply = self.api.get(KEYS.format(self.project_id))
        assert reply.status == 200, reply.body
        keys: list[dict[str, Any]] = reply.json
        return keys


def set_up_project(api: Api, project_id: int) -> tuple[int, str]:
    reply = api.put(SETTINGS.format(project_id), form={"active": "true", "integrated": "true"})
    assert reply.status == 200, reply.body
    keys = api.get(KEYS.format(project_id))
    assert keys.status == 200 and len(keys.json) == 1, keys.body
    return int(keys.json[0]["id"]), str(keys.json[0]["public_key"])


@pytest.fixture
def ctx(api: Api, scene: Scene) -> Ctx:
    project = scene.project("acme/shop")
    api.token = scene.maintainer(project)
    key_id, public_key = set_up_project(api, int(project.project_id))
    return Ctx(api, scene, int(project.project_id), key_id, public_key)


def next_link(reply: Reply) -> str | None:
    """The path and query of the next page, checking Link and X-Next-Cursor agree."""
    link, cursor = reply.headers.get("link"), reply.headers.get("x-next-cursor")
    if link is None:
        assert cursor is None, reply.headers
        return None
    match = NEXT_LINK.match(link)
    assert match, link
    url = urlsplit(match.group(1))
    assert f"{url.scheme}://{url.netloc}" == PUBLIC_URL, link
    assert parse_qs(url.query)["cursor"] == [cursor], (link, cursor)
    return f"{url.path}?{url.query}"


def walk(ctx: Ctx, first: str) -> list[list[dict[str, Any]]]:
    """Every page, following the next links from ``first``."""
    index_caught_up()
    pages: list[list[dict[str, Any]]] = []
    path: str | None = first
    while path is not None:
        reply = ctx.api.get(path)
        assert reply.status == 200, reply.body
        pages.append(reply.json)
        path = next_link(reply)
        assert len(pages) < 50, "the next links never end"
    return pages


def cursor_of(reply: Reply) -> str:
    cursor = reply.headers.get("x-next-cursor")
    assert cursor, reply.headers
    return cursor


def b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def unb64(cursor: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# The list


def test_list_items_have_gitlabs_keys_in_order(ctx: Ctx) -> None:
    before = dt.datetime.now(dt.UTC)
    ctx.send(exception_event("ValueError", "bad sku", user={"id": "42"}))
    reply = ctx.listing()
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    assert isinstance(reply.json, list) and len(reply.json) == 1
    error = reply.json[0]
    assert list(error) == LIST_KEYS
    error_id = error["id"]
    assert type(error_id) is int and error_id > 0
    assert error["title"] == "ValueError: bad sku"
    assert error["type"] == "error"
    assert type(error["user_count"]) is int and error["user_count"] == 1
    assert type(error["count"]) is int and error["count"] == 1
    for field in ("first_seen", "last_seen"):
        assert ISO_UTC.match(error[field]), error[field]
        assert before - dt.timedelta(seconds=1) <= parse_iso(error[field]) <= dt.datetime.now(dt.UTC)
    assert error["first_seen"] == error["last_seen"]
    assert error["message"] == "bad sku"
    assert error["culprit"] == "checkout(shop.views)"
    assert error["external_url"].startswith(PUBLIC_URL + "/")
    assert str(error_id) in error["external_url"]
    assert error["project_id"] == ctx.project_id
    assert error["project_name"] == "shop"
    assert error["project_slug"] == "shop"
    assert isinstance(error["short_id"], str) and error["short_id"]
    assert error["status"] == "unresolved"


def test_frequency_is_24_hourly_pairs_ending_now(ctx: Ctx) -> None:
    ctx.send(exception_event())
    ctx.send(exception_event())
    (error,) = ctx.ok_list()
    frequency = error["frequency"]
    assert len(frequency) == 24
    assert all(isinstance(pair, list) and len(pair) == 2 for pair in frequency)
    hours = [pair[0] for pair in frequency]
    assert all(type(h) is int and h % 3600 == 0 for h in hours)
    assert [b - a for a, b in itertools.pairwise(hours)] == [3600] * 23
    now_hour = int(time.time()) // 3600 * 3600
    assert hours[-1] in (now_hour, now_hour - 3600)  # the hour may have turned since
    assert sum(pair[1] for pair in frequency) == 2


def test_user_count_counts_distinct_users(ctx: Ctx) -> None:
    for user in ({"id": "1"}, {"email": "bob@example.test"}, {"id": "1"}, None):
        ctx.send(exception_event(user=user))
    (error,) = ctx.ok_list()
    assert (error["count"], error["user_count"]) == (4, 2)


def test_empty_list_is_an_empty_array_without_next_link(ctx: Ctx) -> None:
    reply = ctx.listing()
    assert reply.status == 200 and reply.json == []
    assert "link" not in reply.headers and "x-next-cursor" not in reply.headers


def test_project_without_a_setting_lists_nothing(ctx: Ctx) -> None:
    other = ctx.scene.project("acme/other")
    ctx.scene.member(other, "maintainer", "maintainer")
    reply = ctx.listing(project_id=int(other.project_id))
    assert reply.status == 200 and reply.json == []


def test_list_by_project_path(ctx: Ctx) -> None:
    ctx.send(exception_event())
    index_caught_up()
    assert [e["project_id"] for e in ctx.api.get(ERRORS.format("acme%2Fshop")).json] == [ctx.project_id]


def test_errors_of_another_project_are_not_listed(ctx: Ctx) -> None:
    other = ctx.scene.project("acme/other")
    ctx.scene.member(other, "maintainer", "maintainer")
    _, other_key = set_up_project(ctx.api, int(other.project_id))
    ctx.send(exception_event("KeyError"), public_key=other_key, project_id=int(other.project_id))
    ctx.send(exception_event("ValueError"))
    assert [e["title"].split(":")[0] for e in ctx.ok_list()] == ["ValueError"]
    assert [e["title"].split(":")[0] for e in ctx.listing(project_id=int(other.project_id)).json] == ["KeyError"]


# Status


def test_status_filter_follows_triage(ctx: Ctx) -> None:
    first, second = ctx.error_of("KeyError"), ctx.error_of("ValueError")
    assert {e["id"] for e in ctx.ok_list()} == {first, second}
    assert ctx.set_status(first, "resolved").status == 200
    assert [e["id"] for e in ctx.ok_list()] == [second]
    assert [e["id"] for e in ctx.ok_list("?status=unresolved")] == [second]
    assert [(e["id"], e["status"]) for e in ctx.ok_list("?status=resolved")] == [(first, "resolved")]
    assert ctx.ok_list("?status=ignored") == []
    assert ctx.set_status(second, "ignored").status == 200
    assert ctx.ok_list() == []
    assert [(e["id"], e["status"]) for e in ctx.ok_list("?status=ignored")] == [(second, "ignored")]
    assert ctx.set_status(first, "unresolved").status == 200
    assert [(e["id"], e["status"]) for e in ctx.ok_list()] == [(first, "unresolved")]
    assert ctx.ok_list("?status=resolved") == []


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("?status=open", "status does not have a valid value"),
        ("?status=RESOLVED", "status does not have a valid value"),
        ("?sort=count", "sort does not have a valid value"),
        ("?sort=last_seen_desc", "sort does not have a valid value"),
        ("?status=all&sort=newest", "status does not have a valid value, sort does not have a valid value"),
    ],
)
def test_invalid_status_or_sort_is_400(ctx: Ctx, query: str, problem: str) -> None:
    reply = ctx.listing(query)
    assert reply.status == 400, reply.body
    assert reply.json == {"error": problem}


# Sort


def test_sorts(ctx: Ctx) -> None:
    for exc_type in ("AError", "BError", "CError"):
        ctx.send(exception_event(exc_type))
    ctx.send(exception_event("AError"))

    def order(query: str) -> list[str]:
        return [t.split(":")[0] for t in ctx.titles(query)]

    assert order("") == ["AError", "CError", "BError"]  # last seen, newest first
    assert order("?sort=last_seen") == ["AError", "CError", "BError"]
    assert order("?sort=first_seen") == ["CError", "BError", "AError"]
    listed = ctx.ok_list("?sort=frequency")
    assert listed[0]["title"].startswith("AError") and listed[0]["count"] == 2
    assert [e["count"] for e in listed] == [2, 1, 1]
    last_seen = [parse_iso(e["last_seen"]) for e in ctx.ok_list()]
    assert last_seen == sorted(last_seen, reverse=True)


# Search


def test_search_in_titles_ignores_case(ctx: Ctx) -> None:
    ctx.send(exception_event("KeyError", "'sku'", function="add_to_cart"))
    ctx.send(exception_event("KeyError", "'price'", function="price_of"))
    ctx.send(exception_event("ValueError", "bad SKU format"))
    assert sorted(ctx.titles("?search=keyerror")) == ["KeyError: 'price'", "KeyError: 'sku'"]
    assert sorted(ctx.titles("?search=Sku")) == ["KeyError: 'sku'", "ValueError: bad SKU format"]
    assert ctx.titles("?search=PRICE") == ["KeyError: 'price'"]
    assert ctx.titles("?search=nothing-like-it") == []
    assert len(ctx.titles("?search=")) == 3
    assert ctx.titles("?search=sku&status=resolved") == []


def test_search_with_pagination_finds_every_match_once(ctx: Ctx) -> None:
    ctx.send(*[exception_event(f"Match{n}Error" if n % 2 else f"Other{n}Error") for n in range(14)])
    pages = walk(ctx, ERRORS.format(ctx.project_id) + "?search=match&limit=3")
    titles = [e["title"] for page in pages for e in page]
    assert len(titles) == 7 and len(set(titles)) == 7
    assert all("Match" in t for t in titles)
    assert all(len(page) <= 3 for page in pages)
    assert [len(page) for page in pages][:2] == [3, 3]


# Limit and keyset pagination


@pytest.fixture
def twenty_five(ctx: Ctx) -> list[str]:
    """25 errors sent one after the other; their titles, newest first."""
    titles = []
    for n in range(25):
        event = exception_event(f"Error{n:02}", "boom")
        ctx.send(event)
        titles.append(f"Error{n:02}: boom")
    return titles[::-1]


def test_limit_defaults_to_20_and_links_keep_the_other_parameters(ctx: Ctx, twenty_five: list[str]) -> None:
    reply = ctx.listing()
    assert reply.status == 200
    assert [e["title"] for e in reply.json] == twenty_five[:20]
    assert next_link(reply) is not None
    for limit in ("0", "-1", "abc", "", "1.5"):
        assert len(ctx.ok_list(f"?limit={limit}")) == 20, limit
    assert len(ctx.ok_list("?limit=100")) == 25
    assert len(ctx.ok_list("?limit=1000")) == 25
    reply = ctx.listing("?sort=first_seen&limit=7&search=error&status=unresolved")
    path = next_link(reply)
    assert path is not None
    query = parse_qs(urlsplit(path).query)
    assert query["sort"] == ["first_seen"] and query["limit"] == ["7"]
    assert query["search"] == ["error"] and query["status"] == ["unresolved"]
    assert urlsplit(path).path == ERRORS.format(ctx.project_id)
    assert "private_token" not in query


def test_following_next_links_visits_every_error_once(ctx: Ctx, twenty_five: list[str]) -> None:
    for sort in ("last_seen", "first_seen", "frequency"):
        first = ctx.listing(f"?sort={sort}&limit=10")
        assert first.status == 200
        assert "x-next-cursor" in first.headers
        pages = walk(ctx, ERRORS.format(ctx.project_id) + f"?sort={sort}&limit=10")
        assert [len(page) for page in pages] == [10, 10, 5], sort
        titles = [e["title"] for page in pages for e in page]
        assert sorted(titles) == sorted(twenty_five), sort
        if sort != "frequency":  # each was seen once: newest first either way
            assert titles == twenty_five, sort
    # With the token in the query string, as some clients send it: never echoed in the links.
    token = ctx.api.token
    ctx.api.token = None
    index_caught_up()
    reply = ctx.api.get(ERRORS.format(ctx.project_id) + f"?limit=10&private_token={token}")
    assert reply.status == 200, reply.body
    assert token is not None and token not in reply.headers["link"]
    ctx.api.token = token


def seed_errors(project_id: int, count: int) -> None:
    """``count`` errors written straight to the store as ingestion writes them (101 ingested events
    would take moto half a minute): one event each, a second apart."""
    from chalicelib import models
    from chalicelib.ingest import tracked_errors
    from chalicelib.models import TrackedError

    now = dt.datetime.now(dt.UTC)
    with TrackedError.batch_write() as batch:
        for n in range(count):
            stamp = tracked_errors.iso(now - dt.timedelta(seconds=n))
            title = f"Seeded{n:03}Error: boom"
            batch.save(
                models.build(
                    TrackedError,
                    TrackedError.key(project_id, 1_000_000 + n),
                    project_id=project_id,
                    error_id=1_000_000 + n,
                    title=title,
                    title_lower=title.lower(),
                    type="error",
                    message="boom",
                    culprit="checkout(shop.views)",
                    platform="python",
                    status="unresolved",
                    listing=tracked_errors.listing(project_id, "unresolved"),
                    first_seen=stamp,
                    last_seen=stamp,
                    events_count=1,
                )
            )


def test_limit_is_capped_at_100(ctx: Ctx) -> None:
    seed_errors(ctx.project_id, 101)
    for limit in ("100", "101", "1000"):
        reply = ctx.listing(f"?limit={limit}")
        assert reply.status == 200, reply.body
        assert len(reply.json) == 100, limit
        path = next_link(reply)
        assert path is not None
        last = ctx.api.get(path)
        assert [e["title"] for e in last.json] == ["Seeded100Error: boom"]
        assert next_link(last) is None


def test_pagination_through_errors_seen_at_the_same_moment(ctx: Ctx) -> None:
    ctx.send(*[exception_event(f"Same{n:02}Error") for n in range(13)])  # one request: equal last_seen
    for sort in ("last_seen", "first_seen", "frequency"):
        pages = walk(ctx, ERRORS.format(ctx.project_id) + f"?sort={sort}&limit=5")
        titles = [e["title"] for page in pages for e in page]
        assert [len(page) for page in pages] == [5, 5, 3], sort
        assert len(set(titles)) == 13, sort


def test_exactly_one_full_page_has_no_next(ctx: Ctx) -> None:
    ctx.send(*[exception_event(f"E{n}Error") for n in range(5)])
    reply = ctx.listing("?limit=5")
    assert len(reply.json) == 5
    assert next_link(reply) is None


def foreign_cursors(ctx: Ctx) -> dict[str, str]:
    """Cursors the unresolved list sorted by last_seen must refuse, by what is wrong with them."""
    other = ctx.scene.project("acme/other")
    ctx.scene.member(other, "maintainer", "maintainer")
    other_id = int(other.project_id)
    _, other_key = set_up_project(ctx.api, other_id)
    ctx.send(exception_event("AError"), exception_event("BError"), public_key=other_key, project_id=other_id)
    theirs = cursor_of(ctx.listing("?limit=1", project_id=other_id))
    mine = cursor_of(ctx.listing("?limit=1"))
    by_first_seen = cursor_of(ctx.listing("?limit=1&sort=first_seen"))
    by_frequency = cursor_of(ctx.listing("?limit=1&sort=frequency"))
    twice = max(ctx.ok_list(), key=lambda e: int(e["count"]))
    events_cursor = cursor_of(ctx.events(twice["id"], "?limit=1"))
    raw = unb64(mine)
    return {
        "garbage": "garbage",
        "not base64": "!!!***",
        "base64 of a list": b64([1, 2]),
        "base64 of a string": b64("error"),
        "base64 of not json": base64.urlsafe_b64encode(b"\xff\xfe{").decode(),
        "another project's": theirs,
        "another sort's (first_seen)": by_first_seen,
        "another sort's (frequency)": by_frequency,
        "an events list's": events_cursor,
        "pk of another project": b64(
            {**raw, "pk": raw["pk"].replace(f"error#{ctx.project_id}#", f"error#{other_id}#")}
        ),
        "listing of another status": b64({**raw, "listing": f"{ctx.project_id}#resolved"}),
        "listing of another project": b64({**raw, "listing": f"{other_id}#unresolved"}),
        "a number where a time goes": b64({**raw, "last_seen": 12}),
        "a missing field": b64({k: v for k, v in raw.items() if k != "last_seen"}),
        "an extra field": b64({**raw, "extra": "x"}),
        "null fields": b64(dict.fromkeys(raw)),
        "wrong sk": b64({**raw, "sk": "shard"}),
        "too long": "A" * 3000,
        "an over-long pk": b64({**raw, "pk": raw["pk"] + "9" * 1100}),
        # Within the parameter's 2,048 characters, but past DynamoDB's 1,024 bytes for the index's
        # sort key: DynamoDB refuses the whole Query (moto does not), which was a 500.
        "a sort value DynamoDB refuses": b64({**raw, "last_seen": raw["last_seen"] + "Z" * 1100}),
    }


def test_tampered_or_foreign_cursors_are_400(ctx: Ctx) -> None:
    ctx.send(*[exception_event(f"E{n}Error") for n in range(3)])
    ctx.send(exception_event("E0Error"))
    actual: dict[str, tuple[int, Any]] = {}
    for name, cursor in foreign_cursors(ctx).items():
        reply = ctx.listing(f"?limit=1&cursor={cursor}")
        actual[name] = (reply.status, reply.json)
    assert actual == {name: (400, CURSOR_INVALID) for name in actual}
    raw = unb64(cursor_of(ctx.listing("?limit=1&sort=frequency")))
    for bad in ({**raw, "events_count": "1"}, {**raw, "events_count": True}, {**raw, "events_count": 1.5}):
        reply = ctx.listing(f"?limit=1&sort=frequency&cursor={b64(bad)}")
        assert (reply.status, reply.json) == (400, CURSOR_INVALID), (bad, reply.body)


def test_an_empty_cursor_is_400_cursor_is_empty(ctx: Ctx) -> None:
    # Given but empty, not absent (Grape too hands an empty optional string on as ""): Params answers
    # an empty value "<name> is empty", as for status=; the document gives the cursor minLength 1.
    ctx.send(*[exception_event(f"E{n}Error") for n in range(2)])
    for query in ("?limit=1&cursor=", "?cursor=", "?sort=frequency&cursor="):
        reply = ctx.listing(query)
        assert (reply.status, reply.json) == (400, {"error": "cursor is empty"}), query
        assert "link" not in reply.headers and "x-next-cursor" not in reply.headers, reply.headers
    reply = ctx.events(ctx.ok_list()[0]["id"], "?cursor=")
    assert (reply.status, reply.json) == (400, {"error": "cursor is empty"})


# One error


def test_detail_adds_the_latest_event_and_its_stack_trace(ctx: Ctx) -> None:
    ctx.send(exception_event("ValueError", "first"))
    latest = exception_event("ValueError", "second", environment="staging")
    ctx.send(latest)
    (listed,) = ctx.ok_list()
    reply = ctx.detail(listed["id"])
    assert reply.status == 200, reply.body
    detail = reply.json
    assert list(detail) == [*LIST_KEYS, "latest_event", "stack_trace"]
    assert {k: detail[k] for k in LIST_KEYS if k != "frequency"} == {
        k: listed[k] for k in LIST_KEYS if k != "frequency"
    }
    assert detail["count"] == 2
    event = detail["latest_event"]
    assert event["event_id"] == latest["event_id"]
    assert event["error_id"] == listed["id"]
    assert event["environment"] == "staging"
    assert event["level"] == "error"
    assert event["trimmed"] is False
    assert parse_iso(event["timestamp"]) == parse_iso(latest["timestamp"])
    assert detail["stack_trace"] == event["stack_trace"]
    frames = detail["stack_trace"]
    assert [f["function"] for f in frames] == ["checkout", "main"]  # innermost first
    innermost = frames[0]
    assert (innermost["filename"], innermost["lineno"], innermost["module"]) == ("shop/views.py", 42, "shop.views")
    assert innermost["in_app"] is True
    assert innermost["context"] == [
        [40, "def checkout():"],
        [41, "    raw = 'abc'"],
        [42, "    return int(raw)"],
        [43, ""],
        [44, "# end"],
    ]
    assert frames[1]["context"] == [[9, "def main():"], [10, "    checkout()"], [11, ""]]


def test_detail_of_a_message_event_has_an_empty_stack_trace(ctx: Ctx) -> None:
    ctx.send({"event_id": uuid.uuid4().hex, "message": "disk almost full", "level": "warning"})
    (listed,) = ctx.ok_list()
    assert listed["type"] == "default"
    detail = ctx.detail(listed["id"]).json
    assert detail["stack_trace"] == []
    assert detail["latest_event"]["level"] == "warning"


def test_an_unknown_error_is_404(ctx: Ctx) -> None:
    ctx.send(exception_event())
    for error_id in ("1", "999999999", "abc", "00", "1e3", "99999999999999999999", "-1"):
        for reply in (ctx.detail(error_id), ctx.events(error_id), ctx.set_status(error_id, "resolved")):
            assert (reply.status, reply.json) == (404, ERROR_NOT_FOUND), (error_id, reply.body)
    assert [e["status"] for e in ctx.ok_list()] == ["unresolved"]


def test_an_error_of_another_project_is_404_here(ctx: Ctx) -> None:
    other = ctx.scene.project("acme/other")
    ctx.scene.member(other, "maintainer", "maintainer")
    _, other_key = set_up_project(ctx.api, int(other.project_id))
    ctx.send(exception_event("KeyError"), public_key=other_key, project_id=int(other.project_id))
    (theirs,) = ctx.listing(project_id=int(other.project_id)).json
    for reply in (ctx.detail(theirs["id"]), ctx.events(theirs["id"]), ctx.set_status(theirs["id"], "resolved")):
        assert (reply.status, reply.json) == (404, ERROR_NOT_FOUND), reply.body
    assert ctx.listing(project_id=int(other.project_id)).json[0]["status"] == "unresolved"


# Its events


def test_events_newest_first_paginated_by_cursor(ctx: Ctx) -> None:
    base = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    sent = []
    for minute in (3, 1, 4, 0, 2):  # sent out of order: listed by when they happened
        event = exception_event(timestamp=(base + dt.timedelta(minutes=minute)).isoformat())
        ctx.send(event)
        sent.append((minute, event["event_id"]))
    newest_first = [event_id for _, event_id in sorted(sent, reverse=True)]
    (error,) = ctx.ok_list()
    reply = ctx.events(error["id"])
    assert reply.status == 200, reply.body
    assert [e["event_id"] for e in reply.json] == newest_first
    assert next_link(reply) is None
    first = reply.json[0]
    assert first["error_id"] == error["id"]
    assert first["payload"]["exception"]["values"][0]["type"] == "ValueError"
    assert [f["function"] for f in first["stack_trace"]] == ["checkout", "main"]
    pages = walk(ctx, EVENTS.format(ctx.project_id, error["id"]) + "?limit=2")
    assert [[e["event_id"] for e in page] for page in pages] == [newest_first[:2], newest_first[2:4], newest_first[4:]]


def test_events_cursor_tampered_or_from_another_error_is_400(ctx: Ctx) -> None:
    for exc_type in ("KeyError", "KeyError", "ValueError", "ValueError"):
        ctx.send(exception_event(exc_type))
    key_error, value_error = sorted(ctx.ok_list(), key=lambda e: str(e["title"]))
    theirs = cursor_of(ctx.events(value_error["id"], "?limit=1"))
    list_cursor = cursor_of(ctx.listing("?limit=1"))
    for cursor in ("garbage", theirs, list_cursor, b64({"pk": "x", "sk": "y"}), "A" * 3000):
        reply = ctx.events(key_error["id"], f"?limit=1&cursor={cursor}")
        assert (reply.status, reply.json) == (400, CURSOR_INVALID), (cursor, reply.body)


# Triage


def test_put_status_answers_the_updated_error(ctx: Ctx) -> None:
    ctx.send(exception_event())
    (error,) = ctx.ok_list()
    for status in ("resolved", "ignored", "unresolved", "unresolved"):
        reply = ctx.set_status(error["id"], status)
        assert reply.status == 200, reply.body
        assert list(reply.json) == LIST_KEYS
        assert reply.json["status"] == status
        unchanged = {k: v for k, v in reply.json.items() if k != "status"}
        assert unchanged == {k: v for k, v in error.items() if k != "status"}
        assert ctx.detail(error["id"]).json["status"] == status
    reply = ctx.api.put(ERROR.format(ctx.project_id, error["id"]), json_body={"status": "ignored"})
    assert reply.status == 200, reply.body
    assert reply.json["status"] == "ignored"


def test_resolving_an_error_a_roll_up_holds_still_resolves_it(ctx: Ctx, strict: StrictStore) -> None:
    """While an error floods, roll-up transactions hold its item, and DynamoDB refuses any other
    write to it (TransactionConflict): resolving it then was a 503 for the person triaging."""
    ctx.send(exception_event())
    (error,) = ctx.ok_list()
    strict.conflict_next(lambda pk: pk == f"error#{ctx.project_id}#{error['id']}", times=2)
    reply = ctx.set_status(error["id"], "resolved")
    assert reply.status == 200, reply.body
    assert reply.json["status"] == "resolved"
    assert strict.refused == ["UpdateItem: TransactionConflictException"] * 2
    assert ctx.detail(error["id"]).json["status"] == "resolved"


def test_put_invalid_or_missing_status_is_400(ctx: Ctx) -> None:
    error_id = ctx.error_of("KeyError")
    for form, problem in (
        ({"status": "closed"}, "status does not have a valid value"),
        ({"status": "Resolved"}, "status does not have a valid value"),
        ({"status": ""}, "status is empty"),
        ({}, "status is missing"),
        ({"state": "resolved"}, "status is missing"),
    ):
        reply = ctx.api.put(ERROR.format(ctx.project_id, error_id), form=form)
        assert reply.status == 400, (form, reply.body)
        assert reply.json == {"error": problem}, form
    for body, problem in (
        ({"status": ["resolved"]}, "status does not have a valid value"),
        ({"status": None}, "status is empty"),
        ({"status": 1}, "status does not have a valid value"),
    ):
        reply = ctx.api.put(ERROR.format(ctx.project_id, error_id), json_body=body)
        assert (reply.status, reply.json) == (400, {"error": problem}), (body, reply.body)
    assert ctx.detail(error_id).json["status"] == "unresolved"


# Who may do what


@pytest.fixture
def members(ctx: Ctx) -> dict[str, str]:
    """An api token for each kind of caller on the private project."""
    from chalicelib.accounts import find_project

    private = find_project(ctx.project_id)
    tokens = {}
    for role in ("guest", "reporter", "developer", "owner"):
        ctx.scene.user(role)
        ctx.scene.member(private, role, role)
        tokens[role] = ctx.scene.token(role)
    ctx.scene.user("root", admin=True)
    tokens["admin"] = ctx.scene.token("root")
    ctx.scene.user("outsider")
    tokens["outsider"] = ctx.scene.token("outsider")
    tokens["maintainer"] = str(ctx.api.token)
    return tokens


READERS = {"reporter", "developer", "maintainer", "owner", "admin"}
WRITERS = {"developer", "maintainer", "owner", "admin"}


CALLERS = ("guest", "reporter", "developer", "maintainer", "owner", "admin", "outsider")


def test_reporters_and_up_may_read(ctx: Ctx, members: dict[str, str]) -> None:
    error_id = ctx.error_of("KeyError")
    for caller in CALLERS:
        token = members[caller]
        for reply in (
            ctx.listing(token=token),
            ctx.detail(error_id, token=token),
            ctx.events(error_id, token=token),
        ):
            if caller in READERS:
                assert reply.status == 200, (caller, reply.body)
            elif caller == "outsider":
                assert (reply.status, reply.json) == (404, PROJECT_NOT_FOUND), caller
            else:
                assert (reply.status, reply.json) == (403, FORBIDDEN), caller
        # The role is checked before the parameters.
        reply = ctx.listing("?status=bogus", token=token)
        if caller in READERS:
            assert (reply.status, reply.json) == (400, INVALID_STATUS), caller
        elif caller == "outsider":
            assert (reply.status, reply.json) == (404, PROJECT_NOT_FOUND), caller
        else:
            assert (reply.status, reply.json) == (403, FORBIDDEN), caller


def test_developers_and_up_may_triage(ctx: Ctx, members: dict[str, str]) -> None:
    error_id = ctx.error_of("KeyError")
    for caller in CALLERS:
        reply = ctx.set_status(error_id, "resolved", token=members[caller])
        if caller in WRITERS:
            assert reply.status == 200, (caller, reply.body)
            assert reply.json["status"] == "resolved"
            bogus = ctx.set_status(error_id, "bogus", token=members[caller])
            assert (bogus.status, bogus.json) == (400, INVALID_STATUS), caller
            assert ctx.set_status(error_id, "unresolved").status == 200
            continue
        if caller == "outsider":
            assert (reply.status, reply.json) == (404, PROJECT_NOT_FOUND)
        else:
            assert (reply.status, reply.json) == (403, FORBIDDEN), caller
        # The role is checked before the parameters.
        bogus = ctx.set_status(error_id, "bogus", token=members[caller])
        assert (bogus.status, bogus.json) == (reply.status, reply.json), caller
        assert ctx.detail(error_id).json["status"] == "unresolved"


def test_outsider_of_a_public_project_may_not_read_its_errors(ctx: Ctx, members: dict[str, str]) -> None:
    public = ctx.scene.project("acme/public", visibility="public")
    reply = ctx.listing(project_id=int(public.project_id), token=members["outsider"])
    assert (reply.status, reply.json) == (403, FORBIDDEN)


def test_read_api_token_may_read_but_not_triage(ctx: Ctx) -> None:
    error_id = ctx.error_of("KeyError")
    read_only = ctx.scene.token("maintainer", scopes=["read_api"])
    assert ctx.listing(token=read_only).status == 200
    assert ctx.detail(error_id, token=read_only).status == 200
    assert ctx.events(error_id, token=read_only).status == 200
    reply = ctx.set_status(error_id, "resolved", token=read_only)
    assert (reply.status, reply.json) == (403, INSUFFICIENT_SCOPE)
    assert ctx.detail(error_id).json["status"] == "unresolved"


def test_no_token_is_401(ctx: Ctx) -> None:
    error_id = ctx.error_of("KeyError")
    ctx.api.token = None
    for reply in (ctx.listing(), ctx.detail(error_id), ctx.events(error_id), ctx.set_status(error_id, "resolved")):
        assert (reply.status, reply.json) == (401, {"message": "401 Unauthorized"})


# PATCH client_keys/:key_id


def test_patch_active_comes_back_in_the_entity_and_the_list(ctx: Ctx) -> None:
    reply = ctx.patch_key(form={"active": "false"})
    assert reply.status == 200, reply.body
    key = reply.json
    assert list(key) == CLIENT_KEY_FIELDS
    assert (key["id"], key["active"], key["public_key"]) == (ctx.key_id, False, ctx.public_key)
    assert ctx.client_keys() == [key]
    reply = ctx.patch_key(form={"active": "true"})
    assert reply.status == 200 and reply.json["active"] is True
    assert ctx.client_keys()[0]["active"] is True


def test_patch_name_and_clear_it(ctx: Ctx) -> None:
    before = ctx.client_keys()[0]
    reply = ctx.patch_key(form={"name": "Production web"})
    assert reply.status == 200, reply.body
    assert reply.json["name"] == "Production web"
    assert {k: v for k, v in reply.json.items() if k != "name"} == {k: v for k, v in before.items() if k != "name"}
    assert ctx.client_keys()[0]["name"] == "Production web"
    reply = ctx.patch_key(form={"name": ""})
    assert reply.status == 200 and reply.json["name"] is None
    assert ctx.client_keys()[0]["name"] is None


def test_patch_rate_limit_and_remove_it(ctx: Ctx) -> None:
    reply = ctx.patch_key(form={"rate_limit_count": "100", "rate_limit_window": "60"})
    assert reply.status == 200, reply.body
    assert (reply.json["rate_limit_count"], reply.json["rate_limit_window"]) == (100, 60)
    assert (ctx.client_keys()[0]["rate_limit_count"], ctx.client_keys()[0]["rate_limit_window"]) == (100, 60)
    reply = ctx.patch_key(form={"name": "web"})  # other fields leave the limit alone
    assert (reply.json["rate_limit_count"], reply.json["rate_limit_window"], reply.json["active"]) == (100, 60, True)
    reply = ctx.patch_key(form={"rate_limit_count": "", "rate_limit_window": ""})
    assert reply.status == 200, reply.body
    assert (reply.json["rate_limit_count"], reply.json["rate_limit_window"]) == (None, None)
    assert ctx.client_keys()[0]["rate_limit_count"] is None


def test_patch_everything_at_once_as_json(ctx: Ctx) -> None:
    created_at = ctx.client_keys()[0]["created_at"]
    body = {"active": False, "name": "batch jobs", "rate_limit_count": 5, "rate_limit_window": 86400}
    reply = ctx.patch_key(json_body=body)
    assert reply.status == 200, reply.body
    key = reply.json
    assert list(key) == CLIENT_KEY_FIELDS
    assert (key["active"], key["name"], key["rate_limit_count"], key["rate_limit_window"]) == (
        False,
        "batch jobs",
        5,
        86400,
    )
    assert key["created_at"] == created_at
    assert ctx.client_keys() == [key]
    reply = ctx.patch_key(json_body={"rate_limit_count": None, "rate_limit_window": None, "name": None})
    assert reply.status == 200, reply.body
    assert (reply.json["rate_limit_count"], reply.json["rate_limit_window"], reply.json["name"]) == (None, None, None)


def test_leading_zeros_are_not_digits_of_the_value(ctx: Ctx) -> None:
    """The document's pattern allows any run of digits: a zero-padded 86400 is 86400, and 31 digits
    of value are out of range, however many zeros lead them."""
    reply = ctx.patch_key(form={"rate_limit_count": "0" * 40 + "5", "rate_limit_window": "0" * 28 + "86400"})
    assert reply.status == 200, reply.body
    assert (reply.json["rate_limit_count"], reply.json["rate_limit_window"]) == (5, 86400)
    reply = ctx.patch_key(form={"rate_limit_count": "0" * 5 + "1" * 31, "rate_limit_window": "60"})
    assert (reply.status, reply.json) == (400, {"error": "rate_limit_count is invalid"}), reply.body


def test_rate_limit_must_be_given_as_a_pair(ctx: Ctx) -> None:
    for form in (
        {"rate_limit_count": "10"},
        {"rate_limit_window": "60"},
        {"rate_limit_count": "", "rate_limit_window": "60"},
        {"rate_limit_count": "10", "rate_limit_window": ""},
        {"active": "true", "rate_limit_count": "10"},
    ):
        reply = ctx.patch_key(form=form)
        assert (reply.status, reply.json) == (
            400,
            {"error": "rate_limit_count and rate_limit_window must be given together"},
        ), (form, reply.body)
    assert ctx.client_keys()[0]["rate_limit_count"] is None


def test_invalid_values_are_400_and_change_nothing(ctx: Ctx) -> None:
    before = ctx.client_keys()
    for form, problem in (
        ({"active": "maybe"}, "active is invalid"),
        ({"active": ""}, "active is empty"),
        ({"rate_limit_count": "0", "rate_limit_window": "60"}, "rate_limit_count is invalid"),
        ({"rate_limit_count": "-1", "rate_limit_window": "60"}, "rate_limit_count is invalid"),
        ({"rate_limit_count": "abc", "rate_limit_window": "60"}, "rate_limit_count is invalid"),
        ({"rate_limit_count": "1.5", "rate_limit_window": "60"}, "rate_limit_count is invalid"),
        ({"rate_limit_count": "1000001", "rate_limit_window": "60"}, "rate_limit_count is invalid"),
        ({"rate_limit_count": "10", "rate_limit_window": "0"}, "rate_limit_window is invalid"),
        ({"rate_limit_count": "10", "rate_limit_window": "86401"}, "rate_limit_window is invalid"),
        ({"name": "x" * 256}, "name is invalid"),
    ):
        # A valid change alongside: nothing at all is saved when anything is wrong.
        reply = ctx.patch_key(form={"name": "renamed", **form})
        assert (reply.status, reply.json) == (400, {"error": problem}), (form, reply.body)
    for body, problem in (
        ({"active": 1.5}, "active is invalid"),
        ({"active": "yes please"}, "active is invalid"),
        ({"name": 123}, "name is invalid"),
        ({"name": ["a"]}, "name is invalid"),
        ({"rate_limit_count": True, "rate_limit_window": 60}, "rate_limit_count is invalid"),
        ({"rate_limit_count": 10, "rate_limit_window": 1.5}, "rate_limit_window is invalid"),
        ({"rate_limit_count": [10], "rate_limit_window": 60}, "rate_limit_count is invalid"),
    ):
        reply = ctx.patch_key(json_body={"name": "renamed", **body})
        assert (reply.status, reply.json) == (400, {"error": problem}), (body, reply.body)
    assert ctx.client_keys() == before


def test_patch_without_any_parameter_is_400(ctx: Ctx) -> None:
    # Grape's answer for a PATCH whose parameters are all optional but at least one is required.
    nothing = {
        "error": "active, name, rate_limit_count, rate_limit_window are missing, "
        "at least one parameter must be provided"
    }
    for form in ({}, {"public_key": "glet_" + "0" * 32}, {"id": "5"}):
        reply = ctx.patch_key(form=form)
        assert (reply.status, reply.json) == (400, nothing), (form, reply.body)
    reply = ctx.patch_key(json_body={})
    assert (reply.status, reply.json) == (400, nothing), reply.body
    assert ctx.client_keys()[0]["public_key"] == ctx.public_key


def test_patch_of_an_unknown_key_is_404(ctx: Ctx) -> None:
    for key_id in ("999", "0", "-1", "99999999999999999999"):
        reply = ctx.patch_key(key_id, form={"active": "false"})
        assert (reply.status, reply.json) == (404, KEY_NOT_FOUND), key_id
    for key_id in ("abc", "1.0"):  # no integer at all: GitLab's 400, before any lookup
        reply = ctx.patch_key(key_id, form={"active": "false"})
        assert (reply.status, reply.json) == (400, {"error": "key_id is invalid"}), key_id
    assert ctx.client_keys()[0]["active"] is True


def test_patch_of_another_projects_key_is_404_and_leaves_it_alone(ctx: Ctx) -> None:
    other = ctx.scene.project("acme/other")
    ctx.scene.member(other, "maintainer", "maintainer")
    other_key_id, other_public = set_up_project(ctx.api, int(other.project_id))
    reply = ctx.patch_key(other_key_id, form={"active": "false", "name": "hijacked"})
    assert (reply.status, reply.json) == (404, KEY_NOT_FOUND)
    (theirs,) = ctx.api.get(KEYS.format(int(other.project_id))).json
    assert (theirs["active"], theirs["name"]) == (True, None)
    ctx.send(exception_event(), public_key=other_public, project_id=int(other.project_id))


def test_patch_needs_a_maintainer_and_an_api_token(ctx: Ctx, members: dict[str, str]) -> None:
    for caller in ("guest", "reporter", "developer"):
        reply = ctx.patch_key(form={"active": "false"}, token=members[caller])
        assert (reply.status, reply.json) == (403, FORBIDDEN), caller
    reply = ctx.patch_key(form={"active": "false"}, token=members["outsider"])
    assert (reply.status, reply.json) == (404, PROJECT_NOT_FOUND)
    read_only = ctx.scene.token("maintainer", scopes=["read_api"])
    reply = ctx.patch_key(form={"active": "false"}, token=read_only)
    assert (reply.status, reply.json) == (403, INSUFFICIENT_SCOPE)
    assert ctx.client_keys()[0]["active"] is True
    assert ctx.patch_key(form={"active": "false"}, token=members["owner"]).status == 200


def test_deactivating_the_only_key_then_saving_the_setting_creates_a_new_active_key(ctx: Ctx) -> None:
    reply = ctx.patch_key(form={"active": "false"})
    assert reply.status == 200 and reply.json["active"] is False
    reply = ctx.api.put(SETTINGS.format(ctx.project_id), form={"active": "true", "integrated": "true"})
    assert reply.status == 200, reply.body
    keys = ctx.client_keys()
    assert (keys[0]["id"], keys[0]["active"]) == (ctx.key_id, False)
    assert len(keys) == 2 and keys[1]["active"] is True
    new_key = keys[1]
    assert new_key["public_key"] != ctx.public_key
    # The new key's DSN works; the old one is refused.
    ctx.send(exception_event(), public_key=new_key["public_key"])
    old = ctx.api.call(
        "POST",
        INGEST.format(ctx.project_id),
        headers={
            "X-Sentry-Auth": f"Sentry sentry_key={ctx.public_key}, sentry_version=7",
            "Content-Type": "application/x-sentry-envelope",
        },
        body=envelope(exception_event()),
    )
    assert (old.status, old.json) == (403, INACTIVE_KEY), old.body
    # Saving again with an active key in place creates no other.
    assert ctx.api.put(SETTINGS.format(ctx.project_id), form={"active": "true", "integrated": "true"}).status == 200
    assert len(ctx.client_keys()) == 2


def test_reactivating_a_key_counts_as_an_active_key(ctx: Ctx) -> None:
    assert ctx.patch_key(form={"active": "false"}).status == 200
    assert ctx.patch_key(form={"active": "true"}).status == 200
    assert ctx.api.put(SETTINGS.format(ctx.project_id), form={"active": "true", "integrated": "true"}).status == 200
    assert [k["id"] for k in ctx.client_keys()] == [ctx.key_id]


def test_deactivating_one_of_two_keys_creates_no_new_key(ctx: Ctx) -> None:
    second = ctx.api.post(KEYS.format(ctx.project_id))
    assert second.status == 201
    assert ctx.patch_key(form={"active": "false"}).status == 200
    assert ctx.api.put(SETTINGS.format(ctx.project_id), form={"active": "true", "integrated": "true"}).status == 200
    assert [(k["id"], k["active"]) for k in ctx.client_keys()] == [(ctx.key_id, False), (second.json["id"], True)]


# Retention: events carry user data, and nothing an event writes is kept forever


@pytest.mark.parametrize("days", [None, "7"])
def test_what_events_write_expires_a_retention_period_after_they_were_last_seen(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch, days: str | None
) -> None:
    from chalicelib import config, models
    from chalicelib.ingest import ingestion

    if days is not None:
        monkeypatch.setenv("ERRORTRACKING_RETENTION_DAYS", days)
        config.get_config.cache_clear()
    retention = dt.timedelta(days=int(days or 90))  # GitLab's 90 days by default
    first = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    later = first + dt.timedelta(days=3)
    for moment, user in ((first, "42"), (later, "43")):
        monkeypatch.setattr(ingestion, "clock", lambda moment=moment: moment)
        ctx.send(exception_event("KeyError", user={"id": user}))
    expiries: dict[str, list[dt.datetime]] = {}
    for item in models.Entity.scan():  # the test's look at the whole store
        if isinstance(item, models.TrackedError | models.StoredEvent | models.ErrorShard | models.ErrorUserClaim):
            expiries.setdefault(type(item).__name__, []).append(item.expires)
    assert expiries.pop("TrackedError") == [later + retention]  # moved on by its last event
    assert sorted(expiries.pop("StoredEvent")) == [first + retention, later + retention]
    assert sorted(expiries.pop("ErrorUserClaim")) == [first + retention, later + retention]
    # A quiet error's events leave its shards alone (tests/ingest/test_capacity.py counts on them).
    assert all(expiry <= later + retention for expiry in expiries.pop("ErrorShard", []))
    assert expiries == {}
