"""GET/PUT/PATCH /api/v4/projects/:id/error_tracking/settings as a Maintainer (spec sections 4 and 5).

Every test starts from an empty in-process store, which costs a few hundred milliseconds; value
lists (boolean strings, refused hosts...) are therefore walked inside one test on one project,
each assertion naming the value it was checking.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest

from chalicelib import config, crypto
from tests.conftest import Api, Reply, Scene
from tests.wire import NOT_AN_OBJECT, SETTING_FIELDS, SETTING_NOT_FOUND, not_json

SETTINGS = "/api/v4/projects/{}/error_tracking/settings"
KEYS = "/api/v4/projects/{}/error_tracking/client_keys"

# Spec section 4, verbatim.
TRUE_STRINGS = ["1", "on", "On", "ON", "t", "true", "True", "TRUE", "T", "y", "yes", "Yes", "YES", "Y"]
FALSE_STRINGS = ["0", "off", "Off", "OFF", "f", "false", "False", "FALSE", "F", "n", "no", "No", "NO", "N"]

PUBLIC_HOST = "https://8.8.8.8"  # a public IP literal: no DNS needed, and nothing is ever sent to it
SENTRY_TOKEN = "sntrys_Secret-Sentry-Auth-Token-0123456789abcdef"
API_URL = "https://8.8.8.8/api/0/projects/sentry-org/sentry-project/"
GITLAB_EXAMPLE = {
    "active": True,
    "project_name": None,
    "sentry_external_url": None,
    "api_url": None,
    "integrated": True,
}
BOUNDARY = "----errortrackingtestboundary"
# A failed save's answers, each saying what to change.
NEEDS_CONNECTION = {
    "message": "An active error tracking setting that is not integrated needs a Sentry connection: "
    "api_host, organization_slug, project_slug and token"
}
LOCAL_HOST_REFUSED = {"message": "api_host resolves to a local or private address, which is not allowed"}
NOT_HTTP = {"message": "api_host must be an http or https URL"}
TEXT_PLAIN_UNSUPPORTED = {"error": "The provided content-type 'text/plain' is not supported."}  # Grape's words


@pytest.fixture
def project_id(api: Api, scene: Scene) -> int:
    """A private project the api's token maintains; no setting yet."""
    project = scene.project("acme/shop")
    api.token = scene.maintainer(project)
    return int(project.project_id)


def path(project_id: int | str, query: str = "") -> str:
    return SETTINGS.format(project_id) + (f"?{query}" if query else "")


def switch(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """Change a deployment setting for the rest of the test."""
    monkeypatch.setenv(name, value)
    config.get_config.cache_clear()


def multipart(fields: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    body = ("".join(parts) + f"--{BOUNDARY}--\r\n").encode("utf-8")
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def send(api: Api, method: str, url: str, source: str, fields: dict[str, Any]) -> Reply:
    """Send ``fields`` as a query string, a JSON body, a urlencoded form or a multipart form."""
    if source == "query":
        return api.call(method, url + ("&" if "?" in url else "?") + urlencode(fields))
    if source == "json":
        return api.call(method, url, json_body=fields)
    if source == "form":
        return api.call(method, url, form={k: str(v) for k, v in fields.items()})
    assert source == "multipart"
    body, headers = multipart({k: str(v) for k, v in fields.items()})
    return api.call(method, url, body=body, headers=headers)


def sentry_fields(**overrides: str) -> dict[str, str]:
    fields = {
        "api_host": PUBLIC_HOST,
        "organization_slug": "sentry-org",
        "project_slug": "sentry-project",
        "token": SENTRY_TOKEN,
    }
    fields.update(overrides)
    return fields


def connect_sentry(api: Api, project_id: int, *, active: bool = True, **overrides: str) -> Reply:
    """A Sentry-backed (not integrated) setting, stored inactive first and then switched on.

    Two steps on purpose: the single-request way is asserted by its own tests below, so that a
    defect there does not hide what the other tests check.
    """
    stored = api.put(path(project_id), form={"active": "false", "integrated": "false", **sentry_fields(**overrides)})
    assert stored.status == 200, stored.body
    if not active:
        return stored
    reply = api.patch(path(project_id), form={"active": "true"})
    assert reply.status == 200, reply.body
    return reply


def raw_setting(project_id: int) -> dict[str, Any] | None:
    """The stored setting item exactly as DynamoDB holds it (the moto mock is active)."""
    client = boto3.client("dynamodb", region_name=config.region())
    found = client.get_item(
        TableName=config.table_name(),
        Key={"pk": {"S": f"project#{project_id}"}, "sk": {"S": "setting"}},
        ConsistentRead=True,
    )
    item: dict[str, Any] | None = found.get("Item")
    return item


def binary_values(item: dict[str, Any]) -> list[bytes]:
    """Every binary attribute of a raw item (where a KMS ciphertext would be)."""
    return [bytes(value["B"]) for value in item.values() if "B" in value]


def stored_token(project_id: int) -> str | None:
    item = raw_setting(project_id)
    assert item is not None
    ciphertexts = binary_values(item)
    assert len(ciphertexts) <= 1, item
    return crypto.decrypt_token(project_id, ciphertexts[0]) if ciphertexts else None


def keys_of(api: Api, project_id: int) -> list[dict[str, Any]]:
    reply = api.get(KEYS.format(project_id))
    assert reply.status == 200, reply.body
    keys: list[dict[str, Any]] = reply.json
    return keys


# The settings entity ---------------------------------------------------------------------------


def test_gitlab_example_put_creates_the_setting(api: Api, project_id: int) -> None:
    reply = api.put(path(project_id, "active=true&integrated=true"))
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json == GITLAB_EXAMPLE
    assert list(reply.json) == SETTING_FIELDS


def test_get_before_any_put_is_404(api: Api, project_id: int) -> None:
    reply = api.get(path(project_id))
    assert reply.status == 404
    assert reply.json == SETTING_NOT_FOUND


def test_get_returns_the_stored_entity_with_keys_in_order(api: Api, project_id: int) -> None:
    assert api.put(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    reply = api.get(path(project_id))
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    assert list(reply.json) == SETTING_FIELDS
    assert reply.json == GITLAB_EXAMPLE


def test_key_order_with_every_field_filled(api: Api, project_id: int) -> None:
    reply = connect_sentry(api, project_id)
    assert list(reply.json) == SETTING_FIELDS
    assert list(api.get(path(project_id)).json) == SETTING_FIELDS
    patched = api.patch(path(project_id), form={"active": "false"})
    assert patched.status == 200, patched.body
    assert list(patched.json) == SETTING_FIELDS


def test_disabled_setting_is_still_200(api: Api, project_id: int) -> None:
    reply = api.put(path(project_id), form={"active": "false", "integrated": "true"})
    assert reply.status == 200, reply.body
    disabled = {**GITLAB_EXAMPLE, "active": False}
    assert reply.json == disabled
    got = api.get(path(project_id))
    assert got.status == 200
    assert got.json == disabled


def test_setting_is_reached_by_path_id_too(api: Api, project_id: int) -> None:
    assert api.put(path("acme%2Fshop"), form={"active": "true", "integrated": "true"}).status == 200
    assert api.get(path(project_id)).json == GITLAB_EXAMPLE
    assert api.get(path("acme%2Fshop")).json == GITLAB_EXAMPLE


# PUT: create or update; PATCH: update only -------------------------------------------------------


def test_put_creates_then_updates_in_place(api: Api, project_id: int) -> None:
    first = api.put(path(project_id), form={"active": "true", "integrated": "true"})
    assert first.status == 200, first.body
    second = api.put(path(project_id), form={"active": "false", "integrated": "false"})
    assert second.status == 200, second.body
    assert second.json == {**GITLAB_EXAMPLE, "active": False, "integrated": False}
    assert api.get(path(project_id)).json == second.json
    third = api.put(path(project_id), form={"active": "true", "integrated": "true"})
    assert third.json == GITLAB_EXAMPLE
    assert api.get(path(project_id)).json == GITLAB_EXAMPLE


def test_patch_without_a_setting_is_404_and_creates_nothing(api: Api, project_id: int) -> None:
    for form in ({"active": "true", "integrated": "true"}, {"active": "false"}):
        reply = api.patch(path(project_id), form=form)
        assert reply.status == 404, (form, reply.body)
        assert reply.json == SETTING_NOT_FOUND
    assert api.get(path(project_id)).json == SETTING_NOT_FOUND
    assert raw_setting(project_id) is None
    assert keys_of(api, project_id) == []


def test_patch_bad_params_is_400_before_404(api: Api, project_id: int) -> None:
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "active is missing"),
        ({"active": "maybe"}, "active is invalid"),
        ({"active": ""}, "active is empty"),
        ({"active": "true", "integrated": "sometimes"}, "integrated is invalid"),
    ]
    for form, error in cases:
        reply = api.patch(path(project_id), form=form)
        assert reply.status == 400, (form, reply.body)
        assert reply.json == {"error": error}, form
    assert raw_setting(project_id) is None


def test_patch_updates_an_existing_setting(api: Api, project_id: int) -> None:
    assert api.put(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    reply = api.patch(path(project_id), form={"active": "false", "integrated": "false"})
    assert reply.status == 200, reply.body
    assert reply.json == {**GITLAB_EXAMPLE, "active": False, "integrated": False}
    assert api.get(path(project_id)).json == reply.json


@pytest.mark.parametrize("stored", [True, False])
def test_patch_without_integrated_keeps_stored_integrated(api: Api, project_id: int, stored: bool) -> None:
    put = api.put(path(project_id), form={"active": "false", "integrated": str(stored).lower()})
    assert put.status == 200, put.body
    for active in ("true", "false") if stored else ("false",):
        reply = api.patch(path(project_id), form={"active": active})
        assert reply.status == 200, reply.body
        assert reply.json["integrated"] is stored
        assert api.get(path(project_id)).json["integrated"] is stored


def test_patch_only_changes_the_fields_given(api: Api, project_id: int) -> None:
    put = api.put(
        path(project_id),
        form={"active": "false", "integrated": "false", "project_name": "Shop Errors", **sentry_fields()},
    )
    assert put.status == 200, put.body
    on = api.patch(path(project_id), form={"active": "true"})
    assert on.status == 200, on.body
    assert on.json == {**put.json, "active": True}
    off = api.patch(path(project_id), form={"active": "false"})
    assert off.json == put.json
    assert stored_token(project_id) == SENTRY_TOKEN


# Parameters ------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["query", "json", "form", "multipart"])
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_parameters_from_every_source(api: Api, project_id: int, source: str, method: str) -> None:
    if method == "PATCH":
        assert api.put(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    fields: dict[str, Any] = {"active": "false", "integrated": "false"}
    if source == "json":
        fields = {"active": False, "integrated": False}
    reply = send(api, method, path(project_id), source, fields)
    assert reply.status == 200, reply.body
    expected = {**GITLAB_EXAMPLE, "active": False, "integrated": False}
    assert reply.json == expected
    assert api.get(path(project_id)).json == expected


@pytest.mark.parametrize("source", ["json", "form", "multipart"])
def test_body_wins_over_query(api: Api, project_id: int, source: str) -> None:
    url = path(project_id, "active=true&integrated=true")
    fields: dict[str, Any] = {"active": False} if source == "json" else {"active": "false"}
    reply = send(api, "PUT", url, source, fields)
    assert reply.status == 200, reply.body
    assert reply.json["active"] is False  # the body's value
    assert reply.json["integrated"] is True  # only in the query: still read
    assert keys_of(api, project_id) == []  # it was never active


@pytest.mark.parametrize("source", ["query", "json", "form", "multipart"])
def test_sentry_fields_from_every_source(api: Api, project_id: int, source: str) -> None:
    fields = {"active": "false", "integrated": "false", "project_name": "From " + source, **sentry_fields()}
    reply = send(api, "PUT", path(project_id), source, fields)
    assert reply.status == 200, reply.body
    assert reply.json["api_url"] == API_URL
    assert reply.json["project_name"] == "From " + source
    assert stored_token(project_id) == SENTRY_TOKEN


def test_every_true_and_false_string(api: Api, project_id: int) -> None:
    for value in TRUE_STRINGS + FALSE_STRINGS:
        expected = value in TRUE_STRINGS
        opposite = {"active": str(not expected).lower(), "integrated": str(not expected).lower()}
        for method in ("PUT", "PATCH"):
            assert api.put(path(project_id), form=opposite).status == 200, value
            reply = api.call(method, path(project_id), form={"active": value, "integrated": value})
            assert reply.status == 200, (method, value, reply.body)
            assert (reply.json["active"], reply.json["integrated"]) == (expected, expected), (method, value)
            stored = api.get(path(project_id)).json
            assert (stored["active"], stored["integrated"]) == (expected, expected), (method, value)


@pytest.mark.parametrize("source", ["query", "json", "multipart"])
def test_boolean_strings_in_other_sources(api: Api, project_id: int, source: str) -> None:
    for value in ["yes", "Y", "ON", "t", "off", "0", "N", "FALSE"]:
        expected = value in TRUE_STRINGS
        reply = send(api, "PUT", path(project_id), source, {"active": value, "integrated": value})
        assert reply.status == 200, (value, reply.body)
        assert (reply.json["active"], reply.json["integrated"]) == (expected, expected), value


@pytest.mark.parametrize("value", [True, False])
def test_json_booleans(api: Api, project_id: int, value: bool) -> None:
    reply = api.put(path(project_id), json_body={"active": value, "integrated": value})
    assert reply.status == 200, reply.body
    assert reply.json["active"] is value
    assert reply.json["integrated"] is value
    patched = api.patch(path(project_id), json_body={"active": value})
    assert patched.status == 200, patched.body
    assert patched.json["active"] is value
    assert api.get(path(project_id)).json["active"] is value


def test_invalid_boolean_values(api: Api, project_id: int) -> None:
    strings = ["maybe", "2", "-1", "truee", "yEs", "tRUE", "oN", "nO", " true", "true ", "null", "nil", "enabled"]
    for value in strings:
        for method in ("PUT", "PATCH"):
            reply = api.call(method, path(project_id), form={"active": value, "integrated": "true"})
            assert reply.status == 400, (method, value, reply.body)
            assert reply.json == {"error": "active is invalid"}, (method, value)
        reply = api.put(path(project_id), form={"active": "true", "integrated": value})
        assert reply.json == {"error": "integrated is invalid"}, value
    json_values: list[Any] = [2, -1, 1.5, [True], {"value": True}, "maybe"]
    for json_value in json_values:
        reply = api.put(path(project_id), json_body={"active": json_value, "integrated": True})
        assert reply.status == 400, (json_value, reply.body)
        assert reply.json == {"error": "active is invalid"}, json_value
    assert raw_setting(project_id) is None


def test_missing_empty_invalid_messages(api: Api, project_id: int) -> None:
    assert api.put(path(project_id), form={"active": "false", "integrated": "true"}).status == 200
    before = raw_setting(project_id)
    cases: list[tuple[str, dict[str, str], str]] = [
        ("PUT", {}, "active is missing, integrated is missing"),
        ("PUT", {"integrated": "true"}, "active is missing"),
        ("PUT", {"active": "true"}, "integrated is missing"),
        ("PUT", {"active": ""}, "active is empty, integrated is missing"),
        ("PUT", {"active": "", "integrated": ""}, "active is empty, integrated is empty"),
        ("PUT", {"active": "", "integrated": "true"}, "active is empty"),
        ("PUT", {"active": "maybe", "integrated": ""}, "active is invalid, integrated is empty"),
        ("PUT", {"active": "maybe", "integrated": "perhaps"}, "active is invalid, integrated is invalid"),
        ("PUT", {"integrated": "perhaps"}, "active is missing, integrated is invalid"),
        ("PATCH", {}, "active is missing"),
        ("PATCH", {"integrated": "true"}, "active is missing"),
        ("PATCH", {"active": ""}, "active is empty"),
        ("PATCH", {"active": "", "integrated": "x"}, "active is empty, integrated is invalid"),
    ]
    for method, form, error in cases:
        reply = api.call(method, path(project_id), form=form)
        assert reply.status == 400, (method, form, reply.body)
        assert reply.json == {"error": error}, (method, form)
    assert raw_setting(project_id) == before


def test_put_with_nothing_at_all(api: Api, project_id: int) -> None:
    reply = api.put(path(project_id))
    assert reply.status == 400
    assert reply.json == {"error": "active is missing, integrated is missing"}
    empty_json = api.put(path(project_id), json_body={})
    assert empty_json.status == 400
    assert empty_json.json == {"error": "active is missing, integrated is missing"}


def test_empty_values_from_query_and_json(api: Api, project_id: int) -> None:
    reply = api.put(path(project_id, "active=&integrated=true"))
    assert reply.status == 400
    assert reply.json == {"error": "active is empty"}
    reply = api.put(path(project_id), json_body={"active": "", "integrated": True})
    assert reply.status == 400
    assert reply.json == {"error": "active is empty"}


def test_malformed_or_non_object_json_body(api: Api, project_id: int) -> None:
    malformed = ['{"active": true, "integrated": true', "{active: true}", "not json", "{'active': 1}"]
    not_objects = ["[]", '[{"active": true, "integrated": true}]', '"active"', "1", "true", "null"]
    for body in malformed + not_objects:
        told = not_json(body) if body in malformed else NOT_AN_OBJECT
        for method in ("PUT", "PATCH"):
            reply = api.call(method, path(project_id), body=body, headers={"Content-Type": "application/json"})
            assert (reply.status, reply.json) == (400, told), (method, body, reply.body)
    assert raw_setting(project_id) is None


def test_text_plain_body_is_415(api: Api, project_id: int) -> None:
    for method in ("PUT", "PATCH"):
        reply = api.call(
            method, path(project_id), body="active=true&integrated=true", headers={"Content-Type": "text/plain"}
        )
        assert (reply.status, reply.json) == (415, TEXT_PLAIN_UNSUPPORTED), (method, reply.body)
        assert reply.headers["content-type"].startswith("application/json")
    assert raw_setting(project_id) is None


# The integrated error tracking switch ----------------------------------------------------------


def test_switch_off_put_is_404_after_validation(api: Api, project_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    switch(monkeypatch, "ERRORTRACKING_INTEGRATED", "false")
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "active is missing, integrated is missing"),
        ({"active": "maybe", "integrated": "true"}, "active is invalid"),
        ({"active": "", "integrated": "false"}, "active is empty"),
    ]
    for form, error in cases:
        bad = api.put(path(project_id), form=form)
        assert bad.status == 400, (form, bad.body)
        assert bad.json == {"error": error}, form
    for form in ({"active": "true", "integrated": "true"}, {"active": "false", "integrated": "false"}):
        reply = api.put(path(project_id), form=form)
        assert reply.status == 404, (form, reply.body)
        assert reply.json == {"message": "404 Not Found"}
    assert raw_setting(project_id) is None
    assert api.get(path(project_id)).json == SETTING_NOT_FOUND
    assert keys_of(api, project_id) == []


def test_switch_off_put_on_existing_setting_changes_nothing(
    api: Api, project_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert api.put(path(project_id), form={"active": "false", "integrated": "true"}).status == 200
    before = raw_setting(project_id)
    switch(monkeypatch, "ERRORTRACKING_INTEGRATED", "false")
    reply = api.put(path(project_id), form={"active": "true", "integrated": "true"})
    assert reply.status == 404
    assert reply.json == {"message": "404 Not Found"}
    assert raw_setting(project_id) == before
    assert keys_of(api, project_id) == []


def test_switch_off_integrated_reads_false_whatever_is_stored(
    api: Api, project_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert api.put(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    switch(monkeypatch, "ERRORTRACKING_INTEGRATED", "false")
    got = api.get(path(project_id))
    assert got.status == 200
    assert got.json == {**GITLAB_EXAMPLE, "integrated": False}
    assert list(got.json) == SETTING_FIELDS
    for form in ({"active": "true"}, {"active": "true", "integrated": "true"}, {"active": "false"}):
        patched = api.patch(path(project_id), form=form)
        assert patched.status == 200, (form, patched.body)
        assert patched.json["integrated"] is False, form
    # What is stored was never changed: switching back on shows it again.
    switch(monkeypatch, "ERRORTRACKING_INTEGRATED", "true")
    assert api.get(path(project_id)).json["integrated"] is True


def test_switch_off_no_automatic_key(api: Api, project_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    assert api.put(path(project_id), form={"active": "false", "integrated": "true"}).status == 200
    switch(monkeypatch, "ERRORTRACKING_INTEGRATED", "false")
    reply = api.patch(path(project_id), form={"active": "true", "integrated": "true"})
    assert reply.status == 200, reply.body
    assert reply.json["active"] is True
    assert keys_of(api, project_id) == []


# The automatic first key -----------------------------------------------------------------------


def test_first_active_integrated_put_creates_exactly_one_key(api: Api, project_id: int) -> None:
    assert keys_of(api, project_id) == []
    assert api.put(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    keys = keys_of(api, project_id)
    assert len(keys) == 1
    assert keys[0]["active"] is True
    assert keys[0]["public_key"].startswith("glet_")
    assert api.put(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    assert api.patch(path(project_id), form={"active": "true"}).status == 200
    assert api.patch(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    assert keys_of(api, project_id) == keys


def test_no_key_unless_active_and_integrated(api: Api, project_id: int) -> None:
    for form in ({"active": "false", "integrated": "true"}, {"active": "false", "integrated": "false"}):
        reply = api.put(path(project_id), form=form)
        assert reply.status == 200, (form, reply.body)
        assert keys_of(api, project_id) == [], form
    connect_sentry(api, project_id)  # active, not integrated
    assert keys_of(api, project_id) == []


def test_patch_that_activates_creates_the_key(api: Api, project_id: int) -> None:
    assert api.put(path(project_id), form={"active": "false", "integrated": "true"}).status == 200
    assert keys_of(api, project_id) == []
    assert api.patch(path(project_id), form={"active": "true"}).status == 200
    assert len(keys_of(api, project_id)) == 1


def test_patch_that_integrates_creates_the_key(api: Api, project_id: int) -> None:
    connect_sentry(api, project_id)
    assert keys_of(api, project_id) == []
    assert api.patch(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    assert len(keys_of(api, project_id)) == 1


def test_no_automatic_key_when_an_active_key_exists(api: Api, project_id: int) -> None:
    created = api.post(KEYS.format(project_id))
    assert created.status == 201, created.body
    assert api.put(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    assert [key["id"] for key in keys_of(api, project_id)] == [created.json["id"]]


def test_key_created_again_when_no_active_key_is_left(api: Api, project_id: int) -> None:
    assert api.put(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    (first,) = keys_of(api, project_id)
    assert api.delete(f"{KEYS.format(project_id)}/{first['id']}").status == 200
    assert keys_of(api, project_id) == []
    assert api.put(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    keys = keys_of(api, project_id)
    assert len(keys) == 1
    assert keys[0]["id"] != first["id"]


def test_automatic_keys_are_per_project(api: Api, scene: Scene, project_id: int) -> None:
    other = scene.project("acme/other")
    scene.member(other, "maintainer", "maintainer")
    other_id = int(other.project_id)
    assert api.put(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    assert keys_of(api, other_id) == []
    assert api.put(path(other_id), form={"active": "true", "integrated": "true"}).status == 200
    assert len(keys_of(api, project_id)) == 1
    assert len(keys_of(api, other_id)) == 1


# Sentry-backed mode ----------------------------------------------------------------------------

SENTRY_ENTITY = {
    "active": True,
    "project_name": "Sentry Project",
    "sentry_external_url": "https://8.8.8.8/sentry-org/sentry-project/",
    "api_url": API_URL,
    "integrated": False,
}


def test_sentry_backed_setting_in_one_put(api: Api, project_id: int) -> None:
    reply = api.put(path(project_id), form={"active": "true", "integrated": "false", **sentry_fields()})
    assert reply.status == 200, reply.body
    assert reply.json == SENTRY_ENTITY
    assert list(reply.json) == SETTING_FIELDS
    assert api.get(path(project_id)).json == SENTRY_ENTITY
    assert stored_token(project_id) == SENTRY_TOKEN


def test_switch_to_sentry_backed_in_one_patch(api: Api, project_id: int) -> None:
    assert api.put(path(project_id), form={"active": "true", "integrated": "true"}).status == 200
    reply = api.patch(path(project_id), form={"active": "true", "integrated": "false", **sentry_fields()})
    assert reply.status == 200, reply.body
    assert reply.json == SENTRY_ENTITY
    assert stored_token(project_id) == SENTRY_TOKEN


def test_sentry_backed_setting_entity(api: Api, project_id: int) -> None:
    reply = connect_sentry(api, project_id)
    assert reply.json == SENTRY_ENTITY
    assert api.get(path(project_id)).json == SENTRY_ENTITY


def test_api_url_squeezes_duplicate_slashes(api: Api, project_id: int) -> None:
    cases = [
        ("https://8.8.8.8", API_URL),
        ("https://8.8.8.8/", API_URL),
        ("https://8.8.8.8//", API_URL),
        ("https://8.8.8.8/sentry/", "https://8.8.8.8/sentry/api/0/projects/sentry-org/sentry-project/"),
        ("https://8.8.8.8//sentry//", "https://8.8.8.8/sentry/api/0/projects/sentry-org/sentry-project/"),
        ("http://8.8.8.8:9000", "http://8.8.8.8:9000/api/0/projects/sentry-org/sentry-project/"),
    ]
    for api_host, api_url in cases:
        form = {"active": "false", "integrated": "false", **sentry_fields(api_host=api_host)}
        reply = api.put(path(project_id), form=form)
        assert reply.status == 200, (api_host, reply.body)
        assert reply.json["api_url"] == api_url, api_host
        assert reply.json["sentry_external_url"] == api_url.replace("api/0/projects/", "", 1), api_host
        assert api.get(path(project_id)).json["api_url"] == api_url, api_host


def test_project_name_titleized_from_slug(api: Api, project_id: int) -> None:
    for slug, title in [("sentry-project", "Sentry Project"), ("backend", "Backend"), ("my_cool-app", "My Cool App")]:
        form = {"active": "false", "integrated": "false", **sentry_fields(project_slug=slug)}
        reply = api.put(path(project_id), form=form)
        assert reply.status == 200, (slug, reply.body)
        assert reply.json["project_name"] == title, slug
        assert api.get(path(project_id)).json["project_name"] == title, slug


def test_stored_project_name_wins(api: Api, project_id: int) -> None:
    form = {"active": "false", "integrated": "false", "project_name": "Shop Backend", **sentry_fields()}
    reply = api.put(path(project_id), form=form)
    assert reply.status == 200, reply.body
    assert reply.json["project_name"] == "Shop Backend"
    assert api.get(path(project_id)).json["project_name"] == "Shop Backend"
    assert api.patch(path(project_id), form={"active": "true"}).json["project_name"] == "Shop Backend"


def test_organization_name_is_accepted_but_not_shown(api: Api, project_id: int) -> None:
    form = {"active": "false", "integrated": "false", "organization_name": "Acme Inc", **sentry_fields()}
    reply = api.put(path(project_id), form=form)
    assert reply.status == 200, reply.body
    assert list(reply.json) == SETTING_FIELDS
    assert "Acme Inc" not in reply.body.decode()


def test_token_is_never_echoed(
    api: Api, project_id: int, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level("DEBUG")
    replies = [
        api.put(path(project_id), form={"active": "false", "integrated": "false", **sentry_fields()}),
        api.patch(path(project_id), form={"active": "true", "token": SENTRY_TOKEN}),
        api.get(path(project_id)),
        api.patch(path(project_id, f"token={SENTRY_TOKEN}"), json_body={"active": True}),
        api.put(path(project_id), json_body={"active": True, "integrated": True, "token": SENTRY_TOKEN}),
        api.get(path(project_id)),
        api.get(KEYS.format(project_id)),
        # failures do not echo it either
        api.put(path(project_id), form={"active": "maybe", "integrated": "true", "token": SENTRY_TOKEN}),
        api.put(path(project_id), form={"active": "true", "integrated": "false", **sentry_fields(api_host="x")}),
        api.patch(path(project_id), form={"active": "", **sentry_fields()}),
    ]
    assert [reply.status for reply in replies] == [200] * 7 + [400] * 3
    for reply in replies:
        assert SENTRY_TOKEN.encode() not in reply.body
        assert not any(SENTRY_TOKEN in value for value in reply.headers.values())
        if isinstance(reply.json, dict):
            assert "token" not in reply.json
    assert SENTRY_TOKEN not in caplog.text
    printed = capsys.readouterr()
    assert SENTRY_TOKEN not in printed.out + printed.err


def test_token_stored_only_as_kms_ciphertext(api: Api, project_id: int) -> None:
    connect_sentry(api, project_id)
    item = raw_setting(project_id)
    assert item is not None
    plain = SENTRY_TOKEN.encode()
    as_text = json.dumps(item, default=lambda b: base64.b64encode(b).decode())
    assert SENTRY_TOKEN not in as_text
    assert base64.b64encode(plain).decode() not in as_text
    assert SENTRY_TOKEN not in repr(item)
    (ciphertext,) = binary_values(item)
    assert plain not in ciphertext
    assert crypto.decrypt_token(project_id, ciphertext) == SENTRY_TOKEN


def test_new_token_replaces_the_stored_one(api: Api, project_id: int) -> None:
    connect_sentry(api, project_id)
    reply = api.patch(path(project_id), form={"active": "true", "token": "sntrys_second"})
    assert reply.status == 200, reply.body
    assert reply.json == SENTRY_ENTITY
    assert stored_token(project_id) == "sntrys_second"


def test_changing_api_url_without_token_clears_the_token(api: Api, project_id: int) -> None:
    changes = [
        {"project_slug": "another-project"},
        {"organization_slug": "another-org"},
        {"api_host": "https://8.8.4.4"},
    ]
    for change in changes:
        connect_sentry(api, project_id, active=False)
        assert stored_token(project_id) == SENTRY_TOKEN
        reply = api.patch(path(project_id), form={"active": "false", **change})
        assert reply.status == 200, (change, reply.body)
        assert reply.json["api_url"] != API_URL, change
        assert stored_token(project_id) is None, change
        # Without a token the Sentry-backed setting cannot be switched on any more.
        refused = api.patch(path(project_id), form={"active": "true"})
        assert (refused.status, refused.json) == (400, NEEDS_CONNECTION), (change, refused.body)
        assert api.get(path(project_id)).json == reply.json


def test_changing_api_url_with_a_new_token_keeps_that_token(api: Api, project_id: int) -> None:
    connect_sentry(api, project_id, active=False)
    reply = api.patch(path(project_id), form={"active": "false", "project_slug": "other", "token": "sntrys_other"})
    assert reply.status == 200, reply.body
    assert reply.json["api_url"] == "https://8.8.8.8/api/0/projects/sentry-org/other/"
    assert reply.json["project_name"] == "Other"
    assert stored_token(project_id) == "sntrys_other"
    assert api.patch(path(project_id), form={"active": "true"}).status == 200


def test_same_api_url_without_token_keeps_the_token(api: Api, project_id: int) -> None:
    connect_sentry(api, project_id, active=False)
    fields = sentry_fields()
    del fields["token"]
    reply = api.patch(path(project_id), form={"active": "true", **fields})
    assert reply.status == 200, reply.body
    assert reply.json == SENTRY_ENTITY
    assert stored_token(project_id) == SENTRY_TOKEN


def test_active_not_integrated_without_connection_stores_nothing(api: Api, project_id: int) -> None:
    attempts: list[dict[str, str]] = [
        {},
        {"api_host": PUBLIC_HOST, "organization_slug": "sentry-org", "project_slug": "sentry-project"},
        {"token": SENTRY_TOKEN},
        {**sentry_fields(), "token": ""},
    ]
    for extra in attempts:
        reply = api.put(path(project_id), form={"active": "true", "integrated": "false", **extra})
        assert (reply.status, reply.json) == (400, NEEDS_CONNECTION), (extra, reply.body)
    assert raw_setting(project_id) is None
    assert api.get(path(project_id)).json == SETTING_NOT_FOUND
    assert keys_of(api, project_id) == []


def test_active_not_integrated_failure_keeps_the_previous_state(api: Api, project_id: int) -> None:
    before = api.put(path(project_id), form={"active": "true", "integrated": "true"})
    assert before.status == 200
    stored = raw_setting(project_id)
    for method in ("PUT", "PATCH"):
        for extra in ({}, {"token": SENTRY_TOKEN}, {**sentry_fields(), "token": ""}):
            reply = api.call(method, path(project_id), form={"active": "true", "integrated": "false", **extra})
            assert (reply.status, reply.json) == (400, NEEDS_CONNECTION), (method, extra, reply.body)
    assert api.get(path(project_id)).json == before.json
    assert raw_setting(project_id) == stored


LOCAL_HOSTS = [
    "http://127.0.0.1",
    "http://127.1.2.3:9000",
    "http://10.0.0.1",
    "http://172.16.0.1",
    "http://192.168.1.1",
    "http://169.254.169.254",
    "http://localhost",
    "http://localhost:9000/sentry",
    "http://[::1]",
]


def test_local_api_hosts_are_refused(api: Api, project_id: int) -> None:
    for api_host in LOCAL_HOSTS:
        form = {"active": "false", "integrated": "false", **sentry_fields(api_host=api_host)}
        reply = api.put(path(project_id), form=form)
        assert (reply.status, reply.json) == (400, LOCAL_HOST_REFUSED), (api_host, reply.body)
    assert raw_setting(project_id) is None


def test_local_api_hosts_allowed_when_the_deployment_says_so(
    api: Api, project_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    switch(monkeypatch, "ERRORTRACKING_ALLOW_LOCAL_SENTRY_HOSTS", "true")
    for api_host in LOCAL_HOSTS:
        form = {"active": "false", "integrated": "false", **sentry_fields(api_host=api_host)}
        reply = api.put(path(project_id), form=form)
        assert reply.status == 200, (api_host, reply.body)
        assert reply.json["api_url"] == f"{api_host}/api/0/projects/sentry-org/sentry-project/", api_host


def test_local_api_host_refused_on_patch_and_nothing_changes(api: Api, project_id: int) -> None:
    connect_sentry(api, project_id)
    before = raw_setting(project_id)
    for api_host in ("http://169.254.169.254", "http://127.0.0.1:8000"):
        reply = api.patch(path(project_id), form={"active": "true", "api_host": api_host, "token": "sntrys_new"})
        assert (reply.status, reply.json) == (400, LOCAL_HOST_REFUSED), (api_host, reply.body)
    assert raw_setting(project_id) == before
    assert api.get(path(project_id)).json == SENTRY_ENTITY


def test_non_http_api_hosts_are_refused(api: Api, project_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    switch(monkeypatch, "ERRORTRACKING_ALLOW_LOCAL_SENTRY_HOSTS", "true")  # the scheme alone decides
    for api_host in ["ftp://8.8.8.8", "file:///etc/passwd", "gopher://8.8.8.8", "8.8.8.8", "javascript:alert(1)"]:
        form = {"active": "false", "integrated": "false", **sentry_fields(api_host=api_host)}
        reply = api.put(path(project_id), form=form)
        assert (reply.status, reply.json) == (400, NOT_HTTP), (api_host, reply.body)
    assert raw_setting(project_id) is None


# A failed save never changes stored data -------------------------------------------------------


def test_failed_saves_change_nothing(api: Api, project_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    first = api.put(path(project_id), form={"active": "true", "integrated": "true", "project_name": "Kept"})
    assert first.status == 200, first.body
    stored = raw_setting(project_id)
    keys = keys_of(api, project_id)
    failures: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("PUT", {"active": "maybe", "integrated": "false", "project_name": "Changed"}, {"error": "active is invalid"}),
        ("PATCH", {"active": "", "project_name": "Changed"}, {"error": "active is empty"}),
        ("PATCH", {"active": "false", "integrated": "nope", **sentry_fields()}, {"error": "integrated is invalid"}),
        (
            "PUT",
            {"active": "false", "integrated": "false", **sentry_fields(api_host="http://10.0.0.1")},
            LOCAL_HOST_REFUSED,
        ),
        ("PATCH", {"active": "false", **sentry_fields(api_host="ftp://8.8.8.8")}, NOT_HTTP),
        ("PUT", {"active": "true", "integrated": "false", "project_name": "Changed"}, NEEDS_CONNECTION),
        ("PATCH", {"active": "true", "integrated": "false", **sentry_fields(token="")}, NEEDS_CONNECTION),
    ]
    for method, form, told in failures:
        reply = api.call(method, path(project_id), form=form)
        assert (reply.status, reply.json) == (400, told), (method, form, reply.body)
    malformed = api.put(path(project_id), body="{", headers={"Content-Type": "application/json"})
    assert (malformed.status, malformed.json) == (400, not_json("{"))
    plain = api.patch(path(project_id), body="active=false", headers={"Content-Type": "text/plain"})
    assert (plain.status, plain.json) == (415, TEXT_PLAIN_UNSUPPORTED)
    switch(monkeypatch, "ERRORTRACKING_INTEGRATED", "false")
    switched_off = api.put(path(project_id), form={"active": "false", "integrated": "false"})
    assert (switched_off.status, switched_off.json) == (404, {"message": "404 Not Found"})
    switch(monkeypatch, "ERRORTRACKING_INTEGRATED", "true")
    assert raw_setting(project_id) == stored
    assert api.get(path(project_id)).json == first.json
    assert keys_of(api, project_id) == keys
