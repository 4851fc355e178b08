"""Project hooks as a Maintainer manages them: GitLab's entity and answers, our error tracking fields,
and every refusal a clear 4xx that stores nothing. (Who may call which route: tests/test_api_auth.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.hooks import service
from tests.conftest import SUITE_SECRETS, Api, Scene
from tests.hooks.receiver import Receiver

HOOKS = "/api/v4/projects/{}/hooks"
ENTITY_FIELDS = [
    "id",
    "url",
    "name",
    "description",
    "project_id",
    "created_at",
    "enable_ssl_verification",
    "alert_status",
    "disabled_until",
    "custom_headers",
    "error_tracking_events",
    "payload_format",
    "frequency_threshold",
    "frequency_window",
]


@pytest.fixture
def project_id(api: Api, scene: Scene) -> int:
    project = scene.project("acme/shop")
    api.token = scene.maintainer(project)
    return int(project.project_id)


def create(api: Api, project_id: int, **fields: Any) -> dict[str, Any]:
    reply = api.post(HOOKS.format(project_id), json_body=fields)
    assert reply.status == 201, reply.body
    body: dict[str, Any] = reply.json
    return body


def listed(api: Api, project_id: int) -> list[dict[str, Any]]:
    reply = api.get(HOOKS.format(project_id))
    assert reply.status == 200, reply.body
    body: list[dict[str, Any]] = reply.json
    return body


def test_a_hook_is_shown_in_gitlabs_order_without_its_secrets(api: Api, project_id: int, receiver: Receiver) -> None:
    token, header_value = "tok-" + "9" * 24, "Bearer hdr-" + "8" * 24
    SUITE_SECRETS[token] = SUITE_SECRETS[header_value] = "hook secret"
    hook = create(
        api,
        project_id,
        url=receiver.url + "?team=payments",
        name="on-call",
        description="pages the payments team",
        token=token,
        custom_headers=[{"key": "Authorization", "value": header_value}],
        frequency_threshold=50,
        frequency_window=10,
        payload_format="slack",
    )
    assert list(hook) == ENTITY_FIELDS
    assert hook["url"] == receiver.url + "?team=payments" and hook["project_id"] == project_id
    assert hook["custom_headers"] == [{"key": "Authorization"}]
    assert (hook["alert_status"], hook["disabled_until"], hook["enable_ssl_verification"]) == ("executable", None, True)
    assert (hook["frequency_threshold"], hook["frequency_window"], hook["payload_format"]) == (50, 10, "slack")
    got = api.get(HOOKS.format(project_id) + f"/{hook['id']}")
    assert got.json == hook and listed(api, project_id) == [hook]
    for answer in (got.body, api.get(HOOKS.format(project_id)).body):
        assert token.encode() not in answer and header_value.encode() not in answer


def test_an_update_changes_what_it_names_and_clears_what_it_empties(
    api: Api, project_id: int, receiver: Receiver
) -> None:
    hook = create(api, project_id, url=receiver.url, name="a", token="t", frequency_threshold=5)
    path = HOOKS.format(project_id) + f"/{hook['id']}"
    reply = api.put(path, json_body={"name": "", "frequency_threshold": "", "error_tracking_events": "false"})
    assert reply.status == 200, reply.body
    assert (reply.json["name"], reply.json["frequency_threshold"], reply.json["error_tracking_events"]) == (
        None,
        None,
        False,
    )
    assert reply.json["url"] == receiver.url and reply.json["created_at"] == hook["created_at"]
    form = api.put(path, form={"payload_format": "slack", "enable_ssl_verification": "no"})
    assert (form.json["payload_format"], form.json["enable_ssl_verification"]) == ("slack", False)


def test_delete_is_204_and_the_hook_is_gone(api: Api, project_id: int, receiver: Receiver) -> None:
    hook = create(api, project_id, url=receiver.url)
    path = HOOKS.format(project_id) + f"/{hook['id']}"
    reply = api.delete(path)
    assert (reply.status, reply.body) == (204, b"")
    for method in ("GET", "PUT", "DELETE"):
        again = api.call(method, path, json_body={"name": "x"} if method == "PUT" else None)
        assert (again.status, again.json) == (404, {"message": "404 Not found"})
    assert listed(api, project_id) == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "url is missing"),
        ({"url": ""}, "url is empty"),
        ({"url": "RECEIVER", "payload_format": "xml"}, "payload_format does not have a valid value"),
        ({"url": "RECEIVER", "frequency_window": 0}, "frequency_window is invalid"),
        ({"url": "RECEIVER", "frequency_window": 1441}, "frequency_window is invalid"),
        ({"url": "RECEIVER", "frequency_threshold": -1}, "frequency_threshold is invalid"),
        ({"url": "RECEIVER", "error_tracking_events": "maybe"}, "error_tracking_events is invalid"),
        ({"url": "RECEIVER", "custom_headers": [{"key": "X-Gitlab-Token", "value": "x"}]}, "custom_headers is invalid"),
        (
            {"url": "RECEIVER", "custom_headers": [{"key": "X-A", "value": "a\r\nInjected: 1"}]},
            "custom_headers is invalid",
        ),
        ({"url": "RECEIVER", "custom_headers": [{"key": "Bad Name", "value": "x"}]}, "custom_headers is invalid"),
        ({"url": "RECEIVER", "custom_headers": "X-A: 1"}, "custom_headers is invalid"),
        # Sent in headers, so what a header carries as it is (a 500 at the first delivery, before).
        ({"url": "RECEIVER", "token": "s\u00e9cret\u2603"}, "token is invalid"),
        ({"url": "RECEIVER", "custom_headers": [{"key": "X-A", "value": "\u2603"}]}, "custom_headers is invalid"),
        ({"url": "x" * 3000}, "url is invalid"),
        ({"url": "RECEIVER", "frequency_window": "9" * 5000}, "frequency_window is invalid"),
        (
            {"url": "RECEIVER", "custom_headers": [{"key": f"X-{n}", "value": "v" * 2000} for n in range(3)]},
            "custom_headers is invalid",
        ),
    ],
)
def test_bad_parameters_are_400_naming_them_and_store_nothing(
    api: Api, project_id: int, receiver: Receiver, body: dict[str, Any], error: str
) -> None:
    sent = {k: receiver.url if v == "RECEIVER" else v for k, v in body.items()}
    reply = api.post(HOOKS.format(project_id), json_body=sent)
    assert (reply.status, reply.json) == (400, {"error": error})
    assert listed(api, project_id) == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/hook", "url must be an http or https URL"),
        ("http://user:pass@127.0.0.1/hook", "url must not carry credentials or a fragment"),
        ("http://127.0.0.1/hook#frag", "url must not carry credentials or a fragment"),
        ("http://no-such-host.invalid/hook", "url cannot be resolved or is invalid"),
        ("http://127.0.0.1:99999/hook", "url cannot be resolved or is invalid"),
        ("http://[::1/hook", "url must be an http or https URL"),
    ],
)
def test_a_url_the_service_will_not_send_to_is_422(api: Api, project_id: int, url: str, why: str) -> None:
    reply = api.post(HOOKS.format(project_id), json_body={"url": url})
    assert (reply.status, reply.json) == (422, {"message": f"Invalid url given: {why}"})
    assert listed(api, project_id) == []


def test_an_update_with_nothing_to_change_or_a_bad_id_is_400(api: Api, project_id: int, receiver: Receiver) -> None:
    hook = create(api, project_id, url=receiver.url)
    reply = api.put(HOOKS.format(project_id) + f"/{hook['id']}", json_body={})
    assert reply.status == 400 and reply.json["error"].endswith("at least one parameter must be provided")
    for method in ("GET", "PUT", "DELETE"):
        bad = api.call(method, HOOKS.format(project_id) + "/abc", json_body={"name": "x"})
        assert (bad.status, bad.json) == (400, {"error": "hook_id is invalid"})
    unknown = api.post(HOOKS.format(project_id) + f"/{hook['id']}/test/push_events")
    assert (unknown.status, unknown.json) == (400, {"error": "trigger does not have a valid value"})


def test_another_projects_hook_is_not_found_here(api: Api, scene: Scene, project_id: int, receiver: Receiver) -> None:
    other = scene.project("acme/other")
    scene.member(other, "maintainer", "maintainer")
    theirs = create(api, int(other.project_id), url=receiver.url)
    reply = api.get(HOOKS.format(project_id) + f"/{theirs['id']}")
    assert (reply.status, reply.json) == (404, {"message": "404 Not found"})


def test_a_project_holds_at_most_its_limit_of_hooks(
    api: Api, project_id: int, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "MAX_HOOKS", 2)
    create(api, project_id, url=receiver.url)
    create(api, project_id, url=receiver.url)
    reply = api.post(HOOKS.format(project_id), json_body={"url": receiver.url})
    assert (reply.status, reply.json) == (422, {"message": "Maximum number of project hooks (2) exceeded"})
    assert len(listed(api, project_id)) == 2


def test_hooks_are_paginated_with_gitlabs_headers(api: Api, project_id: int, receiver: Receiver) -> None:
    ids = [create(api, project_id, url=receiver.url)["id"] for _ in range(3)]
    reply = api.get(HOOKS.format(project_id) + "?per_page=2&page=2")
    assert [h["id"] for h in reply.json] == ids[2:]
    assert (reply.headers["x-total"], reply.headers["x-page"], reply.headers["x-prev-page"]) == ("3", "2", "1")
