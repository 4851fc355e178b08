"""Shared fixtures: an in-process moto store, the Chalice test client, and a scene builder.

moto must be imported before any botocore client exists, and the models' cached clients are reset
for every test, so nothing can leak to a real AWS endpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

for _name in ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
    os.environ.pop(_name, None)
os.environ.update(
    {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "ERRORTRACKING_PUBLIC_URL": "http://errors.example.test",
    }
)

import moto  # noqa: E402  (before any botocore client is created)
import pytest  # noqa: E402
from chalice.test import Client  # noqa: E402

from chalicelib import accounts, bootstrap, config, models  # noqa: E402
from scripts import moto_transactions  # noqa: E402
from scripts.strict_store import StrictStore  # noqa: E402

models.reset_connections()
moto_transactions.install()  # the embedded store's transactions, as `make run` has them

# The project: where app.py and .chalice/ are.
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Every AWS call made while the app serves a request, for the whole session: the IAM policy test
# (tests/test_package.py, run last) checks that the shipped policy allows each one.
REQUEST_AWS_CALLS: list[tuple[str, str, dict[str, Any]]] = []
# And every AWS call the webhooks' stream handler made (tests/test_package.py checks its own policy).
STREAM_AWS_CALLS: list[tuple[str, str, dict[str, Any]]] = []
_in_stream_handler = [False]


@pytest.fixture(autouse=True, scope="session")
def record_request_aws_calls() -> Iterator[None]:
    from botocore.client import BaseClient

    from chalicelib import telemetry
    from chalicelib.hooks import stream

    original = getattr(BaseClient, "_make_api_call")  # noqa: B009  (private, untyped)
    handle = stream.handle

    def recording(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        call = (self.meta.service_model.service_name, operation_name, api_params)
        if not StrictStore.is_own(self):
            if telemetry.in_request():
                REQUEST_AWS_CALLS.append(call)
            elif _in_stream_handler[0]:  # its worker threads included: the flag is process-wide
                STREAM_AWS_CALLS.append(call)
        return original(self, operation_name, api_params)

    def handling(*args: Any, **kwargs: Any) -> Any:
        _in_stream_handler[0] = True
        try:
            return handle(*args, **kwargs)
        finally:
            _in_stream_handler[0] = False

    setattr(BaseClient, "_make_api_call", recording)  # noqa: B010
    stream.handle = handling
    yield
    stream.handle = handle
    setattr(BaseClient, "_make_api_call", original)  # noqa: B010


# Every secret issued in this process, and every line the suite logged (captured output and log
# records of each test, the local server's output): test_secrets.py's last test looks for the one
# in the other.
SUITE_SECRETS: dict[str, str] = {}  # secret -> what it is
SUITE_LOGS: list[tuple[str, str]] = []  # (where, text)


@pytest.fixture(autouse=True, scope="session")
def record_issued_secrets() -> Iterator[None]:
    from chalicelib import accounts, client_keys, crypto

    new_token, new_key, encrypt = accounts.new_token_secret, client_keys.new_public_key, crypto.encrypt_token

    def token() -> str:
        secret = new_token()
        SUITE_SECRETS[secret] = "access token"
        return secret

    def public_key() -> str:
        secret = new_key()
        SUITE_SECRETS[secret] = "client key"
        return secret

    def encrypt_token(project_id: int, plaintext: str, purpose: str | None = None) -> bytes:
        # Fuzzed values such as "0" are not secrets anybody chose; a chosen one is long and varied.
        if re.fullmatch(r"[A-Za-z0-9_-]{10,}", plaintext) and len(set(plaintext)) >= 8:
            SUITE_SECRETS[plaintext] = "hook secret" if purpose else "sentry token"
        return encrypt(project_id, plaintext, purpose)

    patches = [
        (accounts, "new_token_secret", new_token, token),
        (client_keys, "new_public_key", new_key, public_key),
        (crypto, "encrypt_token", encrypt, encrypt_token),
    ]
    for module, name, _, replacement in patches:
        setattr(module, name, replacement)
    yield
    for module, name, original, _ in patches:
        setattr(module, name, original)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Each report repeats the sections of the phases before it: teardown's holds them all.
    if report.when == "teardown":
        SUITE_LOGS.extend((f"{report.nodeid} {section}", text) for section, text in report.sections)


# Figures a test measured for the reader of the run (not asserted): printed at the end of the session.
REPORTS: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORTS:
        terminalreporter.section("measured")
        for line in REPORTS:
            terminalreporter.write_line(line)


# Whether this session started the local server (whose log the secrets scan then reads).
SESSION: dict[str, bool] = {"local server": False}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``last`` judge what the rest of the session did."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


@pytest.fixture(autouse=True)
def fresh_config() -> Iterator[None]:
    """Config is cached per process; tests that change the environment get a fresh read."""
    config.get_config.cache_clear()
    yield
    config.get_config.cache_clear()


# The store every test runs on: moto, made as strict as DynamoDB (scripts/strict_store.py).
STRICT = StrictStore(index_lag=1.0, unprocessed_rate=0.05)


# PLAIN_MOTO=1 runs the suite on moto as it is, to see what the strict layer catches.
PLAIN_MOTO = os.environ.get("PLAIN_MOTO") == "1"


@pytest.fixture(autouse=True, scope="session")
def strict_store() -> Iterator[StrictStore]:
    if PLAIN_MOTO:
        STRICT.index_lag = STRICT.unprocessed_rate = 0.0
        yield STRICT
        return
    STRICT.install()
    yield STRICT
    STRICT.uninstall()


def index_caught_up() -> None:
    """Lists read DynamoDB indexes, which catch up with writes a moment later (on the strict store
    as on DynamoDB): wait for them, as a person listing a moment later does."""
    STRICT.settle()


@pytest.fixture
def strict(store: None) -> Iterator[StrictStore]:
    """The strict layer of this test's store, to turn its knobs (they are reset after the test)."""
    yield STRICT
    STRICT.index_lag, STRICT.unprocessed_rate, STRICT.throttling, STRICT.conflicts = 1.0, 0.05, True, True
    STRICT.time_source = time.monotonic


@pytest.fixture
def store() -> Iterator[None]:
    # Cached botocore clients stay valid across tests: moto intercepts any client created after it
    # was imported, and each mock_aws() starts from an empty account.
    from chalicelib.ingest import ingestion

    ingestion._blocked_until.clear()  # key ids restart at 1 in every store
    with moto.mock_aws():
        STRICT.reset()
        bootstrap.init_store()
        yield
    ingestion._blocked_until.clear()


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Any]]:
    """What `make package STAGE=<stage>` builds in a clean copy of the repository: its sam.json, read,
    with its file under "__path__" and `make`'s output under "__output__".

    The copy holds what a clone would (git's tracked and unignored files, as they are now), so a
    file the build needs but git would not carry fails here. Built on first use and kept for the
    session: tests/test_package.py checks the stack, tests/test_apigateway.py runs requests through
    the API it configures.
    """
    built: dict[str, dict[str, Any]] = {}
    venv = os.path.join(PROJECT_DIR, ".venv")

    clone = tmp_path_factory.mktemp("clone")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_DIR,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = os.path.join(PROJECT_DIR, name)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(clone, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(clone, name))

    def package(stage: str) -> dict[str, Any]:
        if stage not in built:
            out = clone / "build" / stage
            make_package = ["package", f"STAGE={stage}"]
            # This suite's virtualenv stands in for the one `make` would build (-o: not rebuilt).
            result = subprocess.run(
                ["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/bin/.installed", *make_package],
                cwd=clone,
                env={k: v for k, v in os.environ.items() if not k.startswith("MAKE")},
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            built[stage] = {
                **json.loads((out / "sam.json").read_text()),
                "__path__": str(out / "sam.json"),
                "__output__": result.stdout,
            }
        return built[stage]

    return package


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Api:
    """The app behind chalice.test.Client, with GitLab-style calls."""

    client: Any
    token: str | None = None

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        use = token if token is not None else self.token
        if use is not None and not any(k.lower() in ("private-token", "authorization") for k in sent):
            sent["PRIVATE-TOKEN"] = use
        if json_body is not None:
            body = json.dumps(json_body)
            sent.setdefault("Content-Type", "application/json")
        elif form is not None:
            from urllib.parse import urlencode

            body = urlencode(form)
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        response = self.client.http.request(method, path, headers=sent, body=body or b"")
        return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.body)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def put(self, path: str, **kw: Any) -> Reply:
        return self.call("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Reply:
        return self.call("PATCH", path, **kw)

    def post(self, path: str, **kw: Any) -> Reply:
        return self.call("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.call("DELETE", path, **kw)


@dataclass
class Scene:
    """Builds users, projects, memberships and tokens directly in the store."""

    tokens: dict[str, str] = field(default_factory=dict)

    def user(self, username: str, *, admin: bool = False, blocked: bool = False) -> models.User:
        user = accounts.create_user(username, admin=admin)
        if blocked:
            user = accounts.set_user_state(username, "blocked")
        return user

    def token(self, username: str, *, scopes: list[str] | None = None, expires_at: str | None = None) -> str:
        _, secret = accounts.create_token(username, scopes=scopes, expires_at=expires_at)
        return secret

    def project(self, path: str = "group/project", *, visibility: str = "private") -> models.Project:
        return accounts.create_project(path, visibility=visibility)

    def member(self, project: models.Project, username: str, role: str) -> None:
        accounts.add_member(int(project.project_id), username, role)

    def maintainer(self, project: models.Project, username: str = "maintainer") -> str:
        """A user who maintains ``project``, and an ``api`` token of theirs."""
        self.user(username)
        self.member(project, username, "maintainer")
        return self.token(username)


@pytest.fixture
def scene(store: None) -> Scene:
    return Scene()


@pytest.fixture
def api(store: None) -> Iterator[Api]:
    from app import app

    with Client(app, stage_name="dev", project_dir=PROJECT_DIR) as client:
        yield Api(client)


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every AWS API call made from now on, as (service, operation): DynamoDB round trips and KMS.

    Counts are exact when DynamoDB answers every key at once, so the strict layer leaves none
    unprocessed here (the retries of unprocessed keys are tested on their own)."""
    from botocore.client import BaseClient

    monkeypatch.setattr(STRICT, "unprocessed_rate", 0.0)

    recorded: list[tuple[str, str]] = []
    original = getattr(BaseClient, "_make_api_call")  # noqa: B009  (private, untyped)

    def counting(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        if not StrictStore.is_own(self):  # the strict layer's own look at the store is no round trip of ours
            recorded.append((self.meta.service_model.service_name, operation_name))
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    return recorded
