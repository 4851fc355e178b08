"""Client keys as a Maintainer sees them: the entity, list/create/delete, the DSN and pagination.

Spec: error-tracking-api.md, section 5 from "Client key entity" on, and section 6.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from chalicelib import client_keys, config
from chalicelib.models import ClientKey
from tests.conftest import Api, Reply, Scene
from tests.wire import CLIENT_KEY_FIELDS, KEY_NOT_FOUND, PUBLIC_KEY

PUBLIC_URL = "http://errors.example.test"  # set by conftest
KEYS = "/api/v4/projects/{}/error_tracking/client_keys"
KEY = KEYS + "/{}"
LINK = re.compile(r'<([^<>]*)>; rel="([a-z]+)"')


@dataclass
class Ctx:
    """A project "group/project" whose maintainer's token is set on ``api``."""

    api: Api
    scene: Scene
    project_id: int
    token: str

    def keys_path(self, ref: str | int | None = None) -> str:
        return KEYS.format(self.project_id if ref is None else ref)

    def create(self, ref: str | int | None = None, **kw: Any) -> dict[str, Any]:
        reply = self.api.post(self.keys_path(ref), **kw)
        assert reply.status == 201, reply.body
        body: dict[str, Any] = reply.json
        return body

    def listing(self, query: str = "", ref: str | int | None = None, **kw: Any) -> Reply:
        reply = self.api.get(self.keys_path(ref) + query, **kw)
        assert reply.status == 200, reply.body
        return reply


@pytest.fixture
def ctx(api: Api, scene: Scene) -> Ctx:
    project = scene.project("group/project")
    token = scene.maintainer(project)
    api.token = token
    return Ctx(api, scene, int(project.project_id), token)


@pytest.fixture
def other_project_id(ctx: Ctx) -> int:
    """A second project that the same maintainer also maintains."""
    other = ctx.scene.project("other/elsewhere")
    ctx.scene.member(other, "maintainer", "maintainer")
    return int(other.project_id)


def deactivate(project_id: int, key_id: int) -> None:
    item = ClientKey.get(*ClientKey.key(project_id, key_id), consistent_read=True)
    item.active = False
    item.save()


def expected_dsn(public_key: str, project_id: int, base: str = PUBLIC_URL) -> str:
    scheme, rest = base.split("://", 1)
    return f"{scheme}://{public_key}@{rest}/errortracking/api/v1/projects/{project_id}"


def ids(reply: Reply) -> list[int]:
    return [key["id"] for key in reply.json]


def parse_links(reply: Reply) -> list[tuple[str, str]]:
    """The Link header as (rel, url) pairs, in header order."""
    header = reply.headers["link"]
    pairs = []
    for part in header.split(", "):
        match = LINK.fullmatch(part)
        assert match, f"malformed Link element {part!r} in {header!r}"
        pairs.append((match.group(2), match.group(1)))
    return pairs


def link_pages(reply: Reply, base_path: str) -> dict[str, tuple[int, int]]:
    """rel -> (page, per_page), checking every URL is absolute on the public URL and names the list."""
    pages: dict[str, tuple[int, int]] = {}
    for rel, url in parse_links(reply):
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL, url
        assert parts.path == base_path, url
        query = parse_qs(parts.query, keep_blank_values=True)
        assert len(query["page"]) == 1 and len(query["per_page"]) == 1, url
        pages[rel] = (int(query["page"][0]), int(query["per_page"][0]))
    return pages


def paging_headers(reply: Reply) -> dict[str, str]:
    names = ["x-page", "x-per-page", "x-total", "x-total-pages", "x-next-page", "x-prev-page"]
    return {name: reply.headers[name] for name in names}


def make_keys(project_id: int, count: int) -> list[int]:
    """``count`` keys created through the same service call as POST (faster than HTTP for 45 keys)."""
    from chalicelib.accounts import find_project

    project = find_project(project_id)
    return [int(client_keys.create_key(project).key_id) for _ in range(count)]


# The entity


def test_created_key_entity_has_gitlab_keys_first_then_ours(ctx: Ctx) -> None:
    reply = ctx.api.post(ctx.keys_path())
    assert reply.status == 201, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    key = reply.json
    assert list(key) == CLIENT_KEY_FIELDS
    assert type(key["id"]) is int
    assert key["active"] is True
    assert PUBLIC_KEY.match(key["public_key"]), key["public_key"]
    assert key["sentry_dsn"] == expected_dsn(key["public_key"], ctx.project_id)
    assert key["name"] is None or isinstance(key["name"], str)
    assert isinstance(key["created_at"], str)
    created = dt.datetime.fromisoformat(key["created_at"].replace("Z", "+00:00"))
    assert created.tzinfo is not None
    assert abs(dt.datetime.now(dt.UTC) - created) < dt.timedelta(minutes=5)
    for field in ("rate_limit_count", "rate_limit_window"):
        assert key[field] is None or type(key[field]) is int


def test_listed_keys_have_the_same_entity_shape(ctx: Ctx) -> None:
    created = [ctx.create() for _ in range(2)]
    listed = ctx.listing().json
    assert listed == created
    for key in listed:
        assert list(key) == CLIENT_KEY_FIELDS


def test_public_keys_are_distinct_and_well_formed(ctx: Ctx) -> None:
    keys = [ctx.create() for _ in range(5)]
    public_keys = [key["public_key"] for key in keys]
    assert all(PUBLIC_KEY.match(pk) for pk in public_keys), public_keys
    assert len(set(public_keys)) == 5


def test_post_ignores_a_body_and_still_creates_an_active_key(ctx: Ctx) -> None:
    key = ctx.create(json_body={"active": False})
    assert key["active"] is True


def test_key_ids_are_unique_across_projects(ctx: Ctx, other_project_id: int) -> None:
    created: dict[int, list[int]] = {ctx.project_id: [], other_project_id: []}
    for _ in range(3):
        for project_id in created:
            created[project_id].append(ctx.create(project_id)["id"])
    mine, theirs = created[ctx.project_id], created[other_project_id]
    assert not set(mine) & set(theirs)
    assert len(set(mine)) == 3 and len(set(theirs)) == 3
    # And each project lists only its own keys.
    assert ids(ctx.listing()) == mine
    assert ids(ctx.listing(ref=other_project_id)) == theirs


# GET


def test_list_without_any_setting_and_without_keys_is_an_empty_array(ctx: Ctx) -> None:
    reply = ctx.listing()
    assert reply.json == []
    assert reply.headers["content-type"].startswith("application/json")


def test_list_without_any_setting_shows_created_keys(ctx: Ctx) -> None:
    key = ctx.create()
    assert ctx.listing().json == [key]


def test_list_includes_inactive_keys_ordered_by_id(ctx: Ctx) -> None:
    created = [ctx.create()["id"] for _ in range(3)]
    deactivate(ctx.project_id, created[1])
    listed = ctx.listing().json
    assert [key["id"] for key in listed] == sorted(created)
    assert [key["active"] for key in listed] == [True, False, True]


def test_list_orders_by_numeric_id_past_one_digit(ctx: Ctx) -> None:
    created = make_keys(ctx.project_id, 12)
    listed = ids(ctx.listing())
    assert listed == sorted(created)
    assert listed[-1] >= 10  # ids of different widths, still in numeric order


def test_list_by_project_path_is_the_same_list(ctx: Ctx) -> None:
    for _ in range(2):
        ctx.create()
    assert ctx.listing(ref="group%2Fproject").json == ctx.listing().json


# DELETE


def test_delete_returns_the_deleted_key_and_removes_it(ctx: Ctx) -> None:
    first, second = ctx.create(), ctx.create()
    reply = ctx.api.delete(KEY.format(ctx.project_id, first["id"]))
    assert reply.status == 200, reply.body
    assert reply.json == first
    assert list(reply.json) == CLIENT_KEY_FIELDS
    assert ctx.listing().json == [second]


def test_delete_of_an_inactive_key_returns_it_inactive(ctx: Ctx) -> None:
    key = ctx.create()
    deactivate(ctx.project_id, key["id"])
    reply = ctx.api.delete(KEY.format(ctx.project_id, key["id"]))
    assert reply.status == 200, reply.body
    assert reply.json == {**key, "active": False}
    assert ctx.listing().json == []


def test_delete_by_project_path(ctx: Ctx) -> None:
    key = ctx.create()
    reply = ctx.api.delete(KEY.format("group%2Fproject", key["id"]))
    assert reply.status == 200, reply.body
    assert reply.json == key
    assert ctx.listing().json == []


def test_deleting_twice_is_404_the_second_time(ctx: Ctx) -> None:
    key = ctx.create()
    assert ctx.api.delete(KEY.format(ctx.project_id, key["id"])).status == 200
    reply = ctx.api.delete(KEY.format(ctx.project_id, key["id"]))
    assert reply.status == 404
    assert reply.json == KEY_NOT_FOUND


@pytest.mark.parametrize("key_id", ["999", "-1", "99999999999999999999"])
def test_delete_of_a_key_that_does_not_exist_is_404_and_touches_nothing(ctx: Ctx, key_id: str) -> None:
    existing = ctx.create()
    assert str(existing["id"]) != key_id
    reply = ctx.api.delete(KEY.format(ctx.project_id, key_id))
    assert reply.status == 404, reply.body
    assert reply.json == KEY_NOT_FOUND
    assert ctx.listing().json == [existing]


@pytest.mark.parametrize("ref", ["id", "group%2Fproject"])
def test_delete_of_another_projects_key_is_404_and_the_key_survives(ctx: Ctx, other_project_id: int, ref: str) -> None:
    mine = ctx.create()
    theirs = ctx.create(other_project_id)
    path_ref = ctx.project_id if ref == "id" else ref
    reply = ctx.api.delete(KEY.format(path_ref, theirs["id"]))
    assert reply.status == 404, reply.body
    assert reply.json == KEY_NOT_FOUND
    assert ctx.listing(ref=other_project_id).json == [theirs]
    assert ctx.listing().json == [mine]
    # The key is still usable: its own project can delete it.
    assert ctx.api.delete(KEY.format(other_project_id, theirs["id"])).status == 200


# The DSN


def test_every_key_dsn_carries_its_own_public_key(ctx: Ctx) -> None:
    created = [ctx.create() for _ in range(3)]
    listed = ctx.listing().json
    for key in created + listed:
        assert key["sentry_dsn"] == expected_dsn(key["public_key"], ctx.project_id)
    assert len({key["sentry_dsn"] for key in listed}) == 3


def test_dsn_uses_the_numeric_project_id_when_addressed_by_path(ctx: Ctx) -> None:
    key = ctx.create(ref="group%2Fproject")
    assert key["sentry_dsn"] == expected_dsn(key["public_key"], ctx.project_id)
    listed = ctx.listing(ref="group%2Fproject").json
    assert [k["sentry_dsn"] for k in listed] == [expected_dsn(key["public_key"], ctx.project_id)]
    assert "group" not in key["sentry_dsn"]


def test_dsn_of_a_second_project_names_that_project(ctx: Ctx, other_project_id: int) -> None:
    key = ctx.create(other_project_id)
    assert key["sentry_dsn"] == expected_dsn(key["public_key"], other_project_id)


@pytest.mark.parametrize(
    ("public_url", "expected_netloc_and_path"),
    [
        ("http://h:8080", "http://{pk}@h:8080"),
        ("https://h:443", "https://{pk}@h"),
        ("http://h:80", "http://{pk}@h"),
        ("https://h/base/", "https://{pk}@h/base"),
        ("https://h/base", "https://{pk}@h/base"),
        ("https://h:8443/base/", "https://{pk}@h:8443/base"),
    ],
)
def test_dsn_follows_the_configured_public_url(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch, public_url: str, expected_netloc_and_path: str
) -> None:
    monkeypatch.setenv("ERRORTRACKING_PUBLIC_URL", public_url)
    config.get_config.cache_clear()
    key = ctx.create()
    prefix = expected_netloc_and_path.format(pk=key["public_key"])
    expected = f"{prefix}/errortracking/api/v1/projects/{ctx.project_id}"
    assert key["sentry_dsn"] == expected
    assert ctx.listing().json[0]["sentry_dsn"] == expected


def test_dsn_from_the_host_header_without_a_public_url(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERRORTRACKING_PUBLIC_URL", raising=False)
    config.get_config.cache_clear()
    host = {"Host": "api.example.org:9000"}
    key = ctx.create(headers=host)
    expected = f"http://{key['public_key']}@api.example.org:9000/errortracking/api/v1/projects/{ctx.project_id}"
    assert key["sentry_dsn"] == expected
    reply = ctx.listing(headers=host)
    assert reply.json[0]["sentry_dsn"] == expected
    # Pagination links are absolute on the same address.
    for _, url in parse_links(reply):
        assert url.startswith(f"http://api.example.org:9000{ctx.keys_path()}?"), url


def test_dsn_from_the_forwarded_scheme_without_a_public_url(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERRORTRACKING_PUBLIC_URL", raising=False)
    config.get_config.cache_clear()
    key = ctx.create(headers={"Host": "api.example.org", "X-Forwarded-Proto": "https"})
    assert key["sentry_dsn"] == (
        f"https://{key['public_key']}@api.example.org/errortracking/api/v1/projects/{ctx.project_id}"
    )


# Pagination (section 6)


@pytest.fixture
def forty_five(ctx: Ctx) -> list[int]:
    return make_keys(ctx.project_id, 45)


def test_first_page_defaults(ctx: Ctx, forty_five: list[int]) -> None:
    reply = ctx.listing()
    assert ids(reply) == forty_five[:20]
    assert paging_headers(reply) == {
        "x-page": "1",
        "x-per-page": "20",
        "x-total": "45",
        "x-total-pages": "3",
        "x-next-page": "2",
        "x-prev-page": "",
    }
    assert [rel for rel, _ in parse_links(reply)] == ["next", "first", "last"]
    assert link_pages(reply, ctx.keys_path()) == {"next": (2, 20), "first": (1, 20), "last": (3, 20)}


def test_middle_page_has_prev_and_next(ctx: Ctx, forty_five: list[int]) -> None:
    reply = ctx.listing("?page=2")
    assert ids(reply) == forty_five[20:40]
    assert paging_headers(reply) == {
        "x-page": "2",
        "x-per-page": "20",
        "x-total": "45",
        "x-total-pages": "3",
        "x-next-page": "3",
        "x-prev-page": "1",
    }
    assert [rel for rel, _ in parse_links(reply)] == ["prev", "next", "first", "last"]
    assert link_pages(reply, ctx.keys_path()) == {
        "prev": (1, 20),
        "next": (3, 20),
        "first": (1, 20),
        "last": (3, 20),
    }


def test_last_page_has_no_next(ctx: Ctx, forty_five: list[int]) -> None:
    reply = ctx.listing("?page=3")
    assert ids(reply) == forty_five[40:]
    assert paging_headers(reply) == {
        "x-page": "3",
        "x-per-page": "20",
        "x-total": "45",
        "x-total-pages": "3",
        "x-next-page": "",
        "x-prev-page": "2",
    }
    assert [rel for rel, _ in parse_links(reply)] == ["prev", "first", "last"]
    assert link_pages(reply, ctx.keys_path()) == {"prev": (2, 20), "first": (1, 20), "last": (3, 20)}


def test_explicit_per_page(ctx: Ctx, forty_five: list[int]) -> None:
    reply = ctx.listing("?page=4&per_page=10")
    assert ids(reply) == forty_five[30:40]
    assert paging_headers(reply) == {
        "x-page": "4",
        "x-per-page": "10",
        "x-total": "45",
        "x-total-pages": "5",
        "x-next-page": "5",
        "x-prev-page": "3",
    }
    assert link_pages(reply, ctx.keys_path()) == {
        "prev": (3, 10),
        "next": (5, 10),
        "first": (1, 10),
        "last": (5, 10),
    }


def test_per_page_is_capped_at_100(ctx: Ctx, forty_five: list[int]) -> None:
    for per_page in ("101", "1000", "100"):
        reply = ctx.listing(f"?per_page={per_page}")
        assert ids(reply) == forty_five, per_page
        headers = paging_headers(reply)
        assert headers["x-per-page"] == "100", per_page
        assert headers["x-total-pages"] == "1", per_page
        assert headers["x-next-page"] == "" and headers["x-prev-page"] == "", per_page
        assert link_pages(reply, ctx.keys_path()) == {"first": (1, 100), "last": (1, 100)}, per_page


def test_bad_page_means_page_one(ctx: Ctx, forty_five: list[int]) -> None:
    # One store for every value: building 45 keys per case would dominate the runtime.
    for page in ("abc", "0", "-1", "", "1e1"):
        reply = ctx.listing(f"?page={page}")
        assert ids(reply) == forty_five[:20], page
        assert reply.headers["x-page"] == "1", page
        assert reply.headers["x-prev-page"] == "", page
        assert reply.headers["x-next-page"] == "2", page
        assert link_pages(reply, ctx.keys_path())["next"] == (2, 20), page


def test_bad_per_page_means_twenty(ctx: Ctx, forty_five: list[int]) -> None:
    for per_page in ("abc", "0", "-5", ""):
        reply = ctx.listing(f"?per_page={per_page}")
        assert ids(reply) == forty_five[:20], per_page
        assert reply.headers["x-per-page"] == "20", per_page
        assert reply.headers["x-total-pages"] == "3", per_page
        assert link_pages(reply, ctx.keys_path())["last"] == (3, 20), per_page


def test_page_past_the_end_is_an_empty_array(ctx: Ctx, forty_five: list[int]) -> None:
    reply = ctx.listing("?page=9")
    assert reply.json == []
    assert paging_headers(reply) == {
        "x-page": "9",
        "x-per-page": "20",
        "x-total": "45",
        "x-total-pages": "3",
        "x-next-page": "",
        # As GitLab (Kaminari): a page out of range has no previous page either.
        "x-prev-page": "",
    }
    assert link_pages(reply, ctx.keys_path()) == {"first": (1, 20), "last": (3, 20)}


def test_no_items_is_one_empty_page(ctx: Ctx) -> None:
    reply = ctx.listing()
    assert reply.json == []
    assert paging_headers(reply) == {
        "x-page": "1",
        "x-per-page": "20",
        "x-total": "0",
        "x-total-pages": "1",
        "x-next-page": "",
        "x-prev-page": "",
    }
    assert [rel for rel, _ in parse_links(reply)] == ["first", "last"]
    assert link_pages(reply, ctx.keys_path()) == {"first": (1, 20), "last": (1, 20)}


def test_exactly_one_full_page_has_no_next(ctx: Ctx) -> None:
    created = make_keys(ctx.project_id, 20)
    reply = ctx.listing()
    assert ids(reply) == created
    assert reply.headers["x-total-pages"] == "1"
    assert reply.headers["x-next-page"] == ""
    assert [rel for rel, _ in parse_links(reply)] == ["first", "last"]


def test_private_token_in_the_query_never_reaches_the_links(ctx: Ctx, forty_five: list[int]) -> None:
    ctx.api.token = None
    reply = ctx.listing(f"?private_token={ctx.token}&page=2&per_page=10")
    assert ids(reply) == forty_five[10:20]
    links = parse_links(reply)
    assert [rel for rel, _ in links] == ["prev", "next", "first", "last"]
    for _, url in links:
        assert "private_token" not in url, url
        assert ctx.token not in url, url
    for name, value in reply.headers.items():
        assert ctx.token not in value, name
    assert link_pages(reply, ctx.keys_path())["next"] == (3, 10)


@pytest.mark.parametrize("ref", ["id", "group%2Fproject"])
def test_following_next_links_visits_every_key_once(ctx: Ctx, forty_five: list[int], ref: str) -> None:
    path_ref = ctx.project_id if ref == "id" else ref
    path: str | None = f"{ctx.keys_path(path_ref)}?per_page=7"
    seen: list[int] = []
    pages = 0
    while path is not None:
        reply = ctx.api.get(path)
        assert reply.status == 200, reply.body
        pages += 1
        assert reply.headers["x-page"] == str(pages)
        seen += ids(reply)
        following = dict(parse_links(reply)).get("next")
        if following is None:
            assert reply.headers["x-next-page"] == ""
            path = None
        else:
            assert following.startswith(PUBLIC_URL + "/"), following
            path = following.removeprefix(PUBLIC_URL)
        assert pages <= 10, "next links do not end"
    assert pages == 7
    assert seen == forty_five


@pytest.mark.parametrize("key_id", ["abc", "1abc", "1.0", "0x1", " 1"])
@pytest.mark.parametrize("method", ["DELETE", "PATCH"])
def test_a_key_id_that_is_no_integer_is_400_key_id_is_invalid(ctx: Ctx, key_id: str, method: str) -> None:
    """GitLab declares ``key_id`` an Integer: Grape answers anything else 400 before any lookup,
    after the token and the role (a bad token is still 401)."""
    existing = ctx.create()
    path = KEY.format(ctx.project_id, quote(key_id))
    reply = ctx.api.call(method, path, form={"name": "x"} if method == "PATCH" else None)
    assert (reply.status, reply.json) == (400, {"error": "key_id is invalid"}), reply.body
    refused = ctx.api.call(method, path, token="glpat-" + "Zq3" * 10)
    assert (refused.status, refused.json) == (401, {"message": "401 Unauthorized"})
    assert ctx.listing().json == [existing]
