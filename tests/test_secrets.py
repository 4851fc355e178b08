"""Secrets: what an attacker with the table, the logs or a response would get. Nothing usable.

Spec: error-tracking-api.md section 1 (tokens: random, shown once, stored only as a digest),
section 5 (the Sentry token: write-only, encrypted at rest, never echoed, in no response or log)
and section 8 (no response carries a token); an API body is a few hundred bytes, and one over
1 MB is refused (413) without being stored, whether or not its length was declared.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest

from chalicelib import accounts
from chalicelib.ingest import ingestion
from tests.conftest import SESSION, SUITE_LOGS, SUITE_SECRETS, Api, Reply, Scene, index_caught_up
from tests.table import as_text, raw_items
from tests.test_faults import INTERNAL, Fault, store_faults
from tests.wire import PAYLOAD_TOO_LARGE

SETTINGS = "/api/v4/projects/{}/error_tracking/settings"
KEYS = "/api/v4/projects/{}/error_tracking/client_keys"
KEY = KEYS + "/{}"
ERRORS = "/api/v4/projects/{}/error_tracking/errors"
INGEST = "/errortracking/api/v1/projects/api/{}/envelope/"
URLSAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
MB = 1024 * 1024


def disguises(secret: str) -> list[str]:
    """The secret, and the forms it would take if stored or logged carelessly."""
    data = secret.encode()
    return [
        secret,
        base64.b64encode(data).decode().rstrip("="),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
        data.hex(),
    ]


def found_in(text: str, named_secrets: dict[str, str]) -> list[str]:
    return [name for name, secret in named_secrets.items() if any(form in text for form in disguises(secret))]


# Personal access tokens


def test_tokens_are_glpat_and_carry_at_least_128_random_bits(scene: Scene) -> None:
    scene.user("alice")
    tokens = [accounts.create_token("alice")[1] for _ in range(40)]
    assert len(set(tokens)) == len(tokens)
    randoms = []
    for token in tokens:
        assert token.startswith("glpat-")
        rest = token.removeprefix("glpat-")
        assert set(rest) <= URLSAFE, token
        randoms.append(rest)
    assert len({len(r) for r in randoms}) == 1
    length = len(randoms[0])
    # What the tokens show of their alphabet, and that no position is fixed (a counter, a date).
    alphabet = set("".join(randoms))
    assert len(alphabet) >= 48, sorted(alphabet)
    assert length * math.log2(len(alphabet)) >= 128
    assert length * math.log2(len(URLSAFE)) >= 128
    for position in range(length):
        assert len({r[position] for r in randoms}) >= 10, f"position {position} barely varies"


def test_the_table_holds_only_the_sha256_of_each_token_never_the_token(scene: Scene) -> None:
    scene.user("alice")
    scene.user("bob", admin=True)
    tokens = {
        "api": accounts.create_token("alice")[1],
        "read_api": accounts.create_token("alice", scopes=["read_api"])[1],
        "expiring": accounts.create_token("bob", expires_at="2099-01-01")[1],
    }
    items = raw_items()
    text = "\n".join(as_text(item) for item in items)
    assert found_in(text, tokens) == []
    assert found_in(text, {name: token.removeprefix("glpat-") for name, token in tokens.items()}) == []
    stored_keys = {item["pk"] for item in items if item.get("kind") == "token"}
    assert stored_keys == {f"token#{hashlib.sha256(t.encode()).hexdigest()}" for t in tokens.values()}


# The Sentry auth token


@dataclass
class Ctx:
    api: Api
    token: str
    project_id: int


@pytest.fixture
def ctx(api: Api, scene: Scene) -> Ctx:
    project = scene.project("acme/shop")
    return Ctx(api, scene.maintainer(project), int(project.project_id))


def sentry_form(sentry_token: str, **extra: str) -> dict[str, str]:
    return {
        "active": "true",
        "integrated": "false",
        "api_host": "https://8.8.8.8",
        "organization_slug": "acme",
        "project_slug": "shop",
        "token": sentry_token,
        **extra,
    }


def test_a_sentry_token_is_never_stored_in_the_clear_nor_echoed(ctx: Ctx) -> None:
    sentry_token = "sntrys_" + secrets.token_hex(32)
    reply = ctx.api.put(SETTINGS.format(ctx.project_id), token=ctx.token, form=sentry_form(sentry_token))
    assert reply.status == 200, reply.body
    assert reply.json["api_url"] == "https://8.8.8.8/api/0/projects/acme/shop/"
    shown = ctx.api.get(SETTINGS.format(ctx.project_id), token=ctx.token)
    for answer in (reply, shown):
        assert found_in(answer.body.decode(), {"sentry token": sentry_token}) == []
        assert "token" not in answer.json
    items = raw_items()
    setting = [item for item in items if item.get("kind") == "setting"]
    assert len(setting) == 1 and setting[0].get("encrypted_token")  # kept, but only as ciphertext
    for item in items:
        assert found_in(as_text(item), {"sentry token": sentry_token}) == [], item["pk"]


# Logs


@dataclass
class Transcript:
    """What one scenario sent back, and the secrets it involved."""

    secrets: dict[str, str] = field(default_factory=dict)
    replies: list[tuple[str, Reply]] = field(default_factory=list)

    def keep(self, what: str, reply: Reply) -> Reply:
        self.replies.append((what, reply))
        return reply


def _envelope(public_key: str, *, in_query: bool = False) -> tuple[str, dict[str, str], bytes]:
    event: dict[str, Any] = {
        "event_id": secrets.token_hex(16),
        "platform": "python",
        "exception": {"values": [{"type": "KeyError", "value": "'missing'"}]},
    }
    payload = json.dumps(event).encode()
    body = b'{"event_id":"%s"}\n{"type":"event","length":%d}\n%s\n' % (
        event["event_id"].encode(),
        len(payload),
        payload,
    )
    headers = {"Content-Type": "application/x-sentry-envelope"}
    query = ""
    if in_query:
        query = "?" + urlencode({"sentry_key": public_key, "sentry_version": "7"})
    else:
        headers["X-Sentry-Auth"] = f"Sentry sentry_key={public_key}, sentry_version=7, sentry_client=sentry.python/2.0"
    return query, headers, body


def run_scenario(api: Api, scene: Scene) -> Transcript:
    """Everything a day of use involves: each way of sending a token, refusals of every kind, a
    Sentry token, client keys made, used, changed and deleted, events in, and a store failure."""
    seen = Transcript()
    project = scene.project("acme/shop")
    other = scene.project("acme/other")
    scene.user("maintainer")
    scene.member(project, "maintainer", "maintainer")
    scene.user("dev")
    scene.member(project, "dev", "developer")
    tokens = {
        "api token": scene.token("maintainer"),
        "read_api token": scene.token("maintainer", scopes=["read_api"]),
        "expired token": scene.token("maintainer", expires_at="2000-01-01"),
        "developer token": scene.token("dev"),
    }
    revoked, revoked_secret = accounts.create_token("maintainer")
    accounts.revoke_token(int(revoked.token_id))
    tokens["revoked token"] = revoked_secret
    tokens["unknown token"] = accounts.new_token_secret()
    seen.secrets.update(tokens)
    sentry_token = "sntrys_" + secrets.token_hex(32)
    seen.secrets["sentry token"] = sentry_token
    pid, main = int(project.project_id), tokens["api token"]
    settings_path, keys_path = SETTINGS.format(pid), KEYS.format(pid)

    # The three transports, and the query parameter on a write.
    seen.keep("header", api.get(settings_path, token=main))
    seen.keep("bearer", api.get(settings_path, headers={"Authorization": f"Bearer {main}"}))
    seen.keep("query", api.call("GET", settings_path + "?" + urlencode({"private_token": main}), token=None))
    seen.keep(
        "query PUT",
        api.put(
            settings_path + "?" + urlencode({"private_token": main}), form={"active": "true", "integrated": "true"}
        ),
    )
    # Refusals.
    for name in ("expired token", "revoked token", "unknown token", "developer token"):
        seen.keep(name, api.get(settings_path, token=tokens[name]))
        seen.keep(name + " bearer", api.get(keys_path, headers={"Authorization": f"Bearer {tokens[name]}"}))
    seen.keep(
        "read_api write",
        api.put(settings_path, token=tokens["read_api token"], form={"active": "true", "integrated": "true"}),
    )
    seen.keep("other project", api.get(SETTINGS.format(int(other.project_id)), token=main))
    seen.keep("bad boolean", api.put(settings_path, token=main, form={"active": "maybe", "integrated": "true"}))
    seen.keep(
        "bad json",
        api.call(
            "PUT", settings_path, token=main, headers={"Content-Type": "application/json"}, body=b'{"active": tru'
        ),
    )
    # The Sentry token: refused for a bad host, then saved, then replaced by a PATCH.
    seen.keep(
        "sentry bad host",
        api.put(settings_path, token=main, form=sentry_form(sentry_token, api_host="http://127.0.0.1")),
    )
    seen.keep("sentry put", api.put(settings_path, token=main, form=sentry_form(sentry_token)))
    seen.keep("sentry patch", api.patch(settings_path, token=main, form={"active": "true", "token": sentry_token}))
    seen.keep("integrated", api.put(settings_path, token=main, form={"active": "true", "integrated": "true"}))
    # Client keys, made, listed, used, changed and deleted.
    created = [seen.keep("create", api.post(keys_path, token=main)) for _ in range(2)]
    listed = seen.keep("list", api.get(keys_path + "?per_page=1&page=2", token=main))
    public_keys = [key["public_key"] for key in api.get(keys_path, token=main).json]
    for number, public_key in enumerate(public_keys):
        seen.secrets[f"public key {number}"] = public_key
    assert created[0].status == 201 and listed.status == 200
    for in_query in (False, True):
        query, headers, body = _envelope(public_keys[0], in_query=in_query)
        seen.keep("ingest", api.call("POST", INGEST.format(pid) + query, headers=headers, body=body))
    query, headers, body = _envelope(ingestion_unknown_key())
    seen.keep("ingest unknown key", api.call("POST", INGEST.format(pid) + query, headers=headers, body=body))
    query, headers, body = _envelope(public_keys[1])
    seen.keep(
        "ingest wrong project",
        api.call("POST", INGEST.format(int(other.project_id)) + query, headers=headers, body=body),
    )
    second = created[1].json["id"]
    seen.keep("deactivate", api.patch(KEY.format(pid, second), token=main, form={"active": "false", "name": "old"}))
    seen.keep("ingest inactive", api.call("POST", INGEST.format(pid), headers=_envelope(public_keys[-1])[1], body=body))
    index_caught_up()
    seen.keep("errors", api.get(ERRORS.format(pid), token=main))
    # The store failing on a write, a read, and under ingestion.
    with store_faults(Fault(INTERNAL, frozenset({"TransactWriteItems", "Query", "BatchGetItem"}))):
        seen.keep("create under fault", api.post(keys_path, token=main))
        query, headers, body = _envelope(public_keys[0])
        seen.keep("ingest under fault", api.call("POST", INGEST.format(pid), headers=headers, body=body))
    with store_faults(Fault(INTERNAL, frozenset({"Query"}))):
        seen.keep("list under fault", api.get(keys_path, token=main))
    seen.keep("delete", api.delete(KEY.format(pid, second), token=main))
    return seen


def ingestion_unknown_key() -> str:
    return "glet_" + secrets.token_hex(16)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{self.format(record)} {record.args!r}")


@contextlib.contextmanager
def every_logger_at(caplog: pytest.LogCaptureFixture, level: int) -> Iterator[_Records]:
    """Every record of every logger at ``level``, botocore's included, even from loggers that do
    not propagate (Chalice's own)."""
    caplog.set_level(level)
    records = _Records()
    records.setLevel(level)
    attached = [logging.getLogger()]
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if logger.level != logging.NOTSET:
            caplog.set_level(level, logger=name)
        if not logger.propagate:
            attached.append(logger)
    for name in ("botocore", "boto3", "pynamodb", "urllib3", "chalice", "chalicelib", "errortracking"):
        caplog.set_level(level, logger=name)
    for logger in attached:
        logger.addHandler(records)
    try:
        yield records
    finally:
        for logger in attached:
            logger.removeHandler(records)


def _secrets_in_logs(seen: Transcript, text: str) -> list[str]:
    public_keys = {name: value for name, value in seen.secrets.items() if name.startswith("public key")}
    found = found_in(text, seen.secrets)
    found += [
        f"{name} (its hex part)"
        for name in found_in(text, {k: v.removeprefix("glet_") for k, v in public_keys.items()})
    ]
    return found


def test_no_response_carries_a_token_or_the_sentry_token(api: Api, scene: Scene) -> None:
    seen = run_scenario(api, scene)
    statuses = {what: reply.status for what, reply in seen.replies}
    assert statuses["create under fault"] >= 500 and statuses["list under fault"] >= 500  # the faults were felt
    assert statuses["sentry put"] == 200 and statuses["ingest"] == 200
    not_public = {k: v for k, v in seen.secrets.items() if not k.startswith("public key")}
    leaks = [f"{what}: {found_in(reply.body.decode('latin-1'), not_public)}" for what, reply in seen.replies]
    assert [leak for leak in leaks if not leak.endswith("[]")] == []
    for what, reply in seen.replies:
        assert b"Traceback" not in reply.body and b'File "' not in reply.body, what


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO], ids=["every logger at DEBUG", "every logger at INFO"])
def test_nothing_logged_holds_a_token_a_public_key_or_the_sentry_token(
    api: Api, scene: Scene, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, level: int
) -> None:
    with every_logger_at(caplog, level) as records:
        seen = run_scenario(api, scene)
    out, err = capfd.readouterr()
    assert '"status": 200' in out  # the request lines were captured
    logged = {
        "stdout/stderr": out + err,
        "caplog": caplog.text + "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records),
        "every logger": "\n".join(records.lines),
    }
    if level == logging.DEBUG:
        assert any(line.startswith("botocore") for line in records.lines)  # DEBUG really was on
    leaks = {where: _secrets_in_logs(seen, text) for where, text in logged.items()}
    assert leaks == {where: [] for where in logged}, _leak_report(seen, records.lines + out.splitlines())


def _leak_report(seen: Transcript, lines: list[str]) -> str:
    """Which form of each leaked secret shows, and the first line that holds it."""
    report = []
    for name, secret in seen.secrets.items():
        forms = dict(zip(["as is", "base64", "base64url", "hex"], disguises(secret), strict=True))
        if secret.startswith("glet_"):
            forms["hex part"] = secret.removeprefix("glet_")
        for form_name, form in forms.items():
            hits = [line for line in lines if form in line]
            if hits:
                report.append(f"{name} ({form_name}): {len(hits)} lines, e.g. {hits[0][:240]}")
    return "\n".join(report)


# Bodies over 1 MB


def _form_of(size: int) -> bytes:
    prefix = b"active=true&integrated=true&name=x&pad="
    return prefix + b"x" * (size - len(prefix))


@pytest.fixture
def keyed(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> tuple[Ctx, dict[str, Any]]:
    monkeypatch.setattr(ingestion, "_blocked_until", {})
    assert (
        ctx.api.put(SETTINGS.format(ctx.project_id), token=ctx.token, form={"active": "1", "integrated": "1"}).status
        == 200
    )
    key: dict[str, Any] = ctx.api.get(KEYS.format(ctx.project_id), token=ctx.token).json[0]
    return ctx, key


ROUTES = [
    ("PUT", "settings"),
    ("PATCH", "settings"),
    ("GET", "settings"),
    ("POST", "keys"),
    ("GET", "keys"),
    ("PATCH", "key"),
    ("DELETE", "key"),
    ("GET", "errors"),
    ("GET", "user"),
    ("POST", "envelope"),
]


@pytest.mark.parametrize("declared", [True, False], ids=["with Content-Length", "without Content-Length"])
@pytest.mark.parametrize(("method", "route"), ROUTES, ids=[f"{m} {r}" for m, r in ROUTES])
def test_a_body_over_1_mb_is_413_and_nothing_is_stored(
    keyed: tuple[Ctx, dict[str, Any]], method: str, route: str, declared: bool
) -> None:
    ctx, key = keyed
    paths = {
        "settings": SETTINGS.format(ctx.project_id),
        "keys": KEYS.format(ctx.project_id),
        "key": KEY.format(ctx.project_id, key["id"]),
        "errors": ERRORS.format(ctx.project_id),
        "user": "/api/v4/user",
        "envelope": INGEST.format(ctx.project_id),
    }
    body = _form_of(MB + 1)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if route == "envelope":
        headers = {
            "Content-Type": "application/x-sentry-envelope",
            "X-Sentry-Auth": f"Sentry sentry_key={key['public_key']}, sentry_version=7",
        }
        body = b"{}\n" + b'{"type":"attachment","length":%d}\n' % (MB + 1) + b"x" * (MB + 1)
    if declared:
        headers["Content-Length"] = str(len(body))
    before = raw_items()
    reply = ctx.api.call(method, paths[route], token=ctx.token, headers=headers, body=body)
    assert (reply.status, reply.json) == (413, PAYLOAD_TOO_LARGE), reply.body[:300]
    assert raw_items() == before


# The whole suite's logs

PROBE = 10  # characters of a secret's form that index it; every registered secret is longer
_RUNS = re.compile(rf"[A-Za-z0-9+/=_-]{{{PROBE},}}")
# What a token, a client key or a Sentry token looks like, issued by this process or not.
_SHAPES = re.compile(r"glpat-[A-Za-z0-9_-]{20,}|glet_[0-9a-f]{32}|sntrys_[A-Za-z0-9_]{3,}")


def _forms(secret: str) -> list[str]:
    """The secret in the forms disguises() names, its random part without a prefix, and its base64
    inside a longer encoded text (``Basic base64("user:" + token)``): there, the secret starts at any
    of three byte offsets within a 3-byte group, and only the groups wholly its own are fixed."""
    forms = disguises(secret)
    for prefix in ("glpat-", "glet_"):
        if secret.startswith(prefix):
            forms.append(secret.removeprefix(prefix))
    data = secret.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms.append(encode(data).decode()[: len(data) // 3 * 4])  # at a group's start, more after it
        for shift in (1, 2):
            whole = (len(data) - (3 - shift)) // 3 * 4  # characters of the groups after the shared first
            forms.append(encode(b"\0" * shift + data).decode()[4 : 4 + whole])
    return [form for form in forms if len(form) >= PROBE]


def leaks_in(logs: list[tuple[str, str]], issued: dict[str, str]) -> list[tuple[str, list[str], str]]:
    """(where, what, the line) for each logged line holding a secret of ``issued`` in any of its forms,
    or anything shaped like a secret."""
    index: dict[str, list[tuple[str, str]]] = {}
    for secret, what in issued.items():
        for form in _forms(secret):
            index.setdefault(form[:PROBE], []).append((form, what))
    found = []
    for where, text in logs:
        for line in text.splitlines():
            kinds = {what for _, what in _hits(line, index)}
            kinds.update(f"{shape.group()[:8]}... shape" for shape in _SHAPES.finditer(line))
            if kinds:
                found.append((where, sorted(kinds), line[:200]))
    return found


def _hits(line: str, index: dict[str, list[tuple[str, str]]]) -> Iterator[tuple[str, str]]:
    # Only runs of the characters secrets are made of can hold one: look up each window of those.
    for run in _RUNS.finditer(line):
        text = run.group()
        for start in range(len(text) - PROBE + 1):
            for form, what in index.get(text[start : start + PROBE], ()):
                if text.startswith(form, start):
                    yield form, what


def test_the_leak_finder_finds_secrets_in_every_form_and_only_them() -> None:
    token, key, sentry = "glpat-ZqXv3Tb9Lm2Wc8Rn5Yh4Pd7K", "glet_" + "5e1f0c9a" * 4, "sntrys_4f9a2c7e1b"
    issued = {token: "access token", key: "client key", sentry: "sentry token"}
    logs = [
        ("clean", '{"route": "/api/v4/projects/1/error_tracking/settings", "status": 200}\nINFO fine'),
        ("token", f"auth {token}"),
        ("bare key", f"key={key.removeprefix('glet_')}!"),
        ("base64 sentry", f"body {base64.b64encode(sentry.encode()).decode()}"),
        ("basic auth", f"Authorization: Basic {base64.b64encode(b'oauth2:' + token.encode()).decode()}"),
        ("shifted", f"{base64.urlsafe_b64encode(b'ab' + key.encode()).decode()}"),
        ("aligned", base64.b64encode(b'{"k":"' + sentry.encode() + b'"}').decode()),
        ("unissued", "PRIVATE-TOKEN: glpat-" + "A1b2C3d4E5" * 2),
    ]
    assert [(where, kinds) for where, kinds, _ in leaks_in(logs, issued)] == [
        ("token", ["access token", "glpat-Zq... shape"]),
        ("bare key", ["client key"]),
        ("base64 sentry", ["sentry token"]),
        ("basic auth", ["access token"]),
        ("shifted", ["client key"]),
        ("aligned", ["sentry token"]),
        ("unissued", ["glpat-A1... shape"]),
    ]


@pytest.mark.last
def test_nothing_the_whole_suite_logged_holds_a_secret() -> None:
    """Every line of captured output and every log record (INFO and up) of every test, and the local
    server's log, against every token, client key, Sentry token and hook secret the suite issued."""
    if all(where.startswith("tests/test_secrets.py") for where, _ in SUITE_LOGS):
        pytest.fail("only this file's output was recorded: run the whole suite, not this file alone")
    kinds = set(SUITE_SECRETS.values())
    assert kinds == {"access token", "client key", "sentry token", "hook secret"}, kinds
    assert any('"status": 200' in text for _, text in SUITE_LOGS)  # request lines were recorded
    if SESSION["local server"]:
        assert any(where.startswith("local server") for where, _ in SUITE_LOGS)
    leaks = leaks_in(SUITE_LOGS, SUITE_SECRETS)
    assert leaks == [], "\n".join(f"{where}: {kinds} in {line!r}" for where, kinds, line in leaks[:20])
