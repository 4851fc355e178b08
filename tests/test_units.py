"""Unit tests of the pure helpers: booleans, pagination, path parameters, Sentry URLs, DSNs.

No store is needed: these take values and return values.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib.authorizer import parse_key_id, parse_project_id
from chalicelib.config import FALSE_STRINGS, TRUE_STRINGS, parse_bool
from chalicelib.entities import dsn
from chalicelib.pagination import page_params, paginate
from chalicelib.sentry import SentryProject, external_url, parse_api_url, project_slug, titleize

# config.parse_bool: spec section 4

SPEC_TRUE = ["1", "on", "On", "ON", "t", "true", "True", "TRUE", "T", "y", "yes", "Yes", "YES", "Y"]
SPEC_FALSE = ["0", "off", "Off", "OFF", "f", "false", "False", "FALSE", "F", "n", "no", "No", "NO", "N"]


@pytest.mark.parametrize("text", SPEC_TRUE)
def test_parse_bool_true_strings(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", SPEC_FALSE)
def test_parse_bool_false_strings(text: str) -> None:
    assert parse_bool(text) is False


def test_parse_bool_lists_are_exactly_the_spec_lists() -> None:
    assert set(TRUE_STRINGS) == set(SPEC_TRUE)
    assert set(FALSE_STRINGS) == set(SPEC_FALSE)


def test_parse_bool_json_booleans() -> None:
    assert parse_bool(True) is True
    assert parse_bool(False) is False


def test_parse_bool_json_integers_one_and_zero() -> None:
    # Grape coerces with to_s, so the JSON numbers 1 and 0 read as "1" and "0".
    assert parse_bool(1) is True
    assert parse_bool(0) is False


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "2",
        "-1",
        "tru",
        "truee",
        "TrUe",
        "yES",
        "oN",
        " true",
        "true ",
        "none",
        "null",
        None,
        1.0,
        0.0,
        2,
        -1,
        [],
        [True],
        {},
        {"active": True},
        b"true",
    ],
)
def test_parse_bool_rejects_everything_else(value: Any) -> None:
    assert parse_bool(value) is None


# pagination.page_params / paginate: spec section 6


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, (1, 20)),
        ({"page": "3"}, (3, 20)),
        ({"per_page": "5"}, (1, 5)),
        ({"page": "2", "per_page": "50"}, (2, 50)),
        ({"page": 4, "per_page": 10}, (4, 10)),  # numbers from a JSON body
        ({"per_page": "100"}, (1, 100)),
        ({"per_page": "101"}, (1, 100)),
        ({"per_page": "100000"}, (1, 100)),
        ({"page": "abc"}, (1, 20)),
        ({"page": "0"}, (1, 20)),
        ({"page": "-2"}, (1, 20)),
        ({"page": ""}, (1, 20)),
        ({"page": None}, (1, 20)),
        ({"per_page": "abc"}, (1, 20)),
        ({"per_page": "0"}, (1, 20)),
        ({"per_page": "-5"}, (1, 20)),
        ({"per_page": ""}, (1, 20)),
        ({"page": "x", "per_page": "y"}, (1, 20)),
    ],
)
def test_page_params(params: dict[str, Any], expected: tuple[int, int]) -> None:
    assert page_params(params) == expected


URL = "https://errors.example.test/api/v4/projects/7/error_tracking/client_keys"
LINK = re.compile(r'<([^<>]*)>; rel="([a-z]+)"')


def links(headers: dict[str, str]) -> list[tuple[str, dict[str, list[str]]]]:
    """(rel, query) for each element of the Link header, in order; every URL is on ``URL``."""
    found = []
    for part in headers["Link"].split(", "):
        match = LINK.fullmatch(part)
        assert match, headers["Link"]
        parts = urlsplit(match.group(1))
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == URL
        found.append((match.group(2), parse_qs(parts.query, keep_blank_values=True)))
    return found


def pages(headers: dict[str, str]) -> dict[str, tuple[int, int]]:
    return {rel: (int(q["page"][0]), int(q["per_page"][0])) for rel, q in links(headers)}


def x_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("X-")}


def test_paginate_first_page() -> None:
    items = list(range(45))
    page, headers = paginate(items, {}, URL)
    assert list(page) == items[:20]
    assert x_headers(headers) == {
        "X-Page": "1",
        "X-Per-Page": "20",
        "X-Total": "45",
        "X-Total-Pages": "3",
        "X-Next-Page": "2",
        "X-Prev-Page": "",
    }
    assert [rel for rel, _ in links(headers)] == ["next", "first", "last"]
    assert pages(headers) == {"next": (2, 20), "first": (1, 20), "last": (3, 20)}


def test_paginate_middle_page() -> None:
    items = list(range(45))
    page, headers = paginate(items, {"page": "2", "per_page": "10"}, URL)
    assert list(page) == items[10:20]
    assert headers["X-Next-Page"] == "3"
    assert headers["X-Prev-Page"] == "1"
    assert headers["X-Total-Pages"] == "5"
    assert [rel for rel, _ in links(headers)] == ["prev", "next", "first", "last"]
    assert pages(headers) == {"prev": (1, 10), "next": (3, 10), "first": (1, 10), "last": (5, 10)}


def test_paginate_last_page_is_partial() -> None:
    items = list(range(45))
    page, headers = paginate(items, {"page": "5", "per_page": "10"}, URL)
    assert list(page) == items[40:]
    assert headers["X-Next-Page"] == ""
    assert headers["X-Prev-Page"] == "4"
    assert [rel for rel, _ in links(headers)] == ["prev", "first", "last"]


def test_paginate_page_past_the_end() -> None:
    page, headers = paginate(list(range(45)), {"page": "7"}, URL)
    assert list(page) == []
    assert x_headers(headers) == {
        "X-Page": "7",
        "X-Per-Page": "20",
        "X-Total": "45",
        "X-Total-Pages": "3",
        "X-Next-Page": "",
        "X-Prev-Page": "",
    }
    assert pages(headers) == {"first": (1, 20), "last": (3, 20)}


def test_paginate_nothing_is_one_page() -> None:
    nothing: list[int] = []
    page, headers = paginate(nothing, {}, URL)
    assert list(page) == []
    assert headers["X-Total"] == "0"
    assert headers["X-Total-Pages"] == "1"
    assert headers["X-Next-Page"] == "" and headers["X-Prev-Page"] == ""
    assert pages(headers) == {"first": (1, 20), "last": (1, 20)}


@pytest.mark.parametrize(("total", "per_page", "total_pages"), [(1, 20, 1), (20, 20, 1), (21, 20, 2), (100, 100, 1)])
def test_paginate_total_pages_rounds_up(total: int, per_page: int, total_pages: int) -> None:
    _, headers = paginate(list(range(total)), {"per_page": str(per_page)}, URL)
    assert headers["X-Total-Pages"] == str(total_pages)


def test_paginate_caps_per_page_in_headers_and_links() -> None:
    page, headers = paginate(list(range(150)), {"per_page": "500"}, URL)
    assert len(page) == 100
    assert headers["X-Per-Page"] == "100"
    assert pages(headers) == {"next": (2, 100), "first": (1, 100), "last": (2, 100)}


def test_paginate_links_keep_other_parameters_but_one_page_and_per_page() -> None:
    _, headers = paginate(list(range(45)), {"page": "2", "per_page": "10", "sort": "asc"}, URL)
    for _, query in links(headers):
        assert query["sort"] == ["asc"]
        assert len(query["page"]) == 1 and len(query["per_page"]) == 1


def test_walking_next_pages_visits_every_item_once() -> None:
    items = list(range(53))
    seen: list[int] = []
    params: dict[str, Any] = {"per_page": "8"}
    for _ in range(20):
        page, headers = paginate(items, params, URL)
        seen += page
        following = dict(links(headers)).get("next")
        if following is None:
            break
        params = {"page": following["page"][0], "per_page": following["per_page"][0]}
    assert seen == items


# authorizer.parse_project_id / parse_key_id: spec section 3


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", 1),
        ("42", 42),
        ("007", 7),
        ("group%2Fproject", "group/project"),
        ("group%2fproject", "group/project"),
        ("group%2Fsub%2Fproject", "group/sub/project"),
        ("group/project", "group/project"),  # API Gateway may hand it over decoded
        ("group/sub/project", "group/sub/project"),
        ("My-Group%2FMy.Project", "My-Group/My.Project"),  # case is kept: the lookup ignores it
        ("%31", 1),  # a percent-encoded "1" is still the id 1
        ("%34%32", 42),
    ],
)
def test_parse_project_id(raw: str, expected: int | str) -> None:
    assert parse_project_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "abc",
        "project",
        "-1",
        "1.5",
        "1e3",
        " 1",
        "0x10",
        "/",
        "%2F",
        "group/",
        "group%2F",
        "%2531",  # decoded once it is "%31": not digits
        "group%252Fproject",  # decoded once it is "group%2Fproject": no slash
    ],
)
def test_parse_project_id_garbage_is_none(raw: str) -> None:
    assert parse_project_id(raw) is None


@pytest.mark.parametrize("raw", ["\u0661\u0662", "%D9%A1%D9%A2", "\uff11", "%EF%BC%91"])
def test_parse_project_id_non_ascii_digits_are_not_an_id(raw: str) -> None:
    # The spec's `^\d+$` is GitLab's Ruby regex, where \d is ASCII only: Arabic-Indic or
    # full-width digits are neither an id nor a path, so the project is not found.
    assert parse_project_id(raw) is None


@pytest.mark.parametrize("raw", ["\u0661", "\uff11\uff12"])
def test_parse_key_id_non_ascii_digits_are_not_an_id(raw: str) -> None:
    assert parse_key_id(raw) is None


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("42", 42), ("123456789", 123456789)])
def test_parse_key_id(raw: str, expected: int) -> None:
    assert parse_key_id(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "abc", "1abc", "-1", "1.0", " 1", "%31", "99999999999999999999"])
def test_parse_key_id_rejects_non_numbers(raw: str | None) -> None:
    assert parse_key_id(raw) is None


# sentry: titleize, api_url, external_url (spec section 5, settings entity and Sentry-backed mode)


@pytest.mark.parametrize(
    ("slug", "title"),
    [
        ("sentry-project", "Sentry Project"),
        ("my_proj", "My Proj"),
        ("project", "Project"),
        ("my-sentry_project", "My Sentry Project"),
        ("project-2", "Project 2"),
        ("SentryProject", "Sentry Project"),
        ("UPPER", "Upper"),
        ("user_id", "User"),  # Rails' humanize drops a trailing _id
        ("_private", "Private"),
    ],
)
def test_titleize_like_rails(slug: str, title: str) -> None:
    assert titleize(slug) == title


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("https://sentry.io", "https://sentry.io/api/0/projects/org/proj/"),
        ("https://sentry.io/", "https://sentry.io/api/0/projects/org/proj/"),
        ("https://sentry.io//", "https://sentry.io/api/0/projects/org/proj/"),
        ("https://sentry.example.test//base//", "https://sentry.example.test/base/api/0/projects/org/proj/"),
        ("http://sentry.example.test:9000", "http://sentry.example.test:9000/api/0/projects/org/proj/"),
    ],
)
def test_sentry_api_url_squeezes_slashes_but_keeps_the_scheme(host: str, expected: str) -> None:
    assert SentryProject(host, "org", "proj").api_url == expected


def test_api_url_parses_back_into_its_parts() -> None:
    url = SentryProject("https://sentry.io", "org", "sentry-project").api_url
    assert parse_api_url(url) == SentryProject("https://sentry.io", "org", "sentry-project")
    assert project_slug(url) == "sentry-project"
    assert project_slug(None) is None
    assert project_slug("https://sentry.io/somewhere/else/") is None


@pytest.mark.parametrize(
    ("api_url", "expected"),
    [
        ("https://sentry.io/api/0/projects/org/proj/", "https://sentry.io/org/proj/"),
        ("http://sentry.example.test:9000/api/0/projects/o/p/", "http://sentry.example.test:9000/o/p/"),
        (
            "https://sentry.example.test/api/0/projects/api/0/projects/p/",
            "https://sentry.example.test/api/0/projects/p/",
        ),
        (None, None),
    ],
)
def test_external_url_removes_only_the_first_api_prefix(api_url: str | None, expected: str | None) -> None:
    assert external_url(api_url) == expected


# entities.dsn: spec section 5, "The DSN"

PK = "glet_" + "0123456789abcdef" * 2


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("http://errors.example.test", f"http://{PK}@errors.example.test/errortracking/api/v1/projects/7"),
        ("http://h:8080", f"http://{PK}@h:8080/errortracking/api/v1/projects/7"),
        ("https://h:443", f"https://{PK}@h/errortracking/api/v1/projects/7"),
        ("http://h:80", f"http://{PK}@h/errortracking/api/v1/projects/7"),
        ("https://h:80", f"https://{PK}@h:80/errortracking/api/v1/projects/7"),
        ("http://h:443", f"http://{PK}@h:443/errortracking/api/v1/projects/7"),
        ("https://h/base/", f"https://{PK}@h/base/errortracking/api/v1/projects/7"),
        ("https://h/base", f"https://{PK}@h/base/errortracking/api/v1/projects/7"),
        ("https://h:8443/a/b/", f"https://{PK}@h:8443/a/b/errortracking/api/v1/projects/7"),
        ("http://127.0.0.1:8000", f"http://{PK}@127.0.0.1:8000/errortracking/api/v1/projects/7"),
        ("http://h/", f"http://{PK}@h/errortracking/api/v1/projects/7"),
    ],
)
def test_dsn(base_url: str, expected: str) -> None:
    assert dsn(PK, 7, base_url) == expected


@pytest.mark.parametrize("raw", ["0", "-1", "3651", "7.5", "seven", "٣", " 7"])
def test_a_retention_that_is_not_a_whole_number_of_days_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    from chalicelib import config

    monkeypatch.setenv("ERRORTRACKING_RETENTION_DAYS", raw)
    config.get_config.cache_clear()
    with pytest.raises(
        RuntimeError, match=r"ERRORTRACKING_RETENTION_DAYS=.* is not a whole number of days from 1 to 3650"
    ):
        config.get_config()


@pytest.mark.parametrize(("raw", "days"), [(None, 90), ("", 90), ("1", 1), ("30", 30), ("3650", 3650)])
def test_retention_is_90_days_unless_set(monkeypatch: pytest.MonkeyPatch, raw: str | None, days: int) -> None:
    from chalicelib import config

    if raw is None:
        monkeypatch.delenv("ERRORTRACKING_RETENTION_DAYS", raising=False)
    else:
        monkeypatch.setenv("ERRORTRACKING_RETENTION_DAYS", raw)
    config.get_config.cache_clear()
    assert config.get_config().retention_days == days
