"""End to end: the real local server (`make run`), spoken to over HTTP and set up with the admin CLI.

One server for the whole module, started exactly as `make run` starts it (scripts/run_local.py on
free ports). Every scenario builds its own project, users and tokens with the `errortracking`
command, so the tests do not depend on each other's order. Nothing is mocked.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import gitlab
import gitlab.exceptions
import pytest
import requests
from sentry_sdk.consts import EndpointType
from sentry_sdk.utils import Dsn

from chalicelib import config
from tests.conftest import SESSION, SUITE_LOGS, SUITE_SECRETS
from tests.wire import (
    BLOCKED,
    FORBIDDEN,
    INSUFFICIENT_SCOPE,
    KEY_NOT_FOUND,
    PROJECT_NOT_FOUND,
    PUBLIC_KEY,
    REVOKED,
    SETTING_FIELDS,
    SETTING_NOT_FOUND,
    UNAUTHORIZED,
)

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"errortracking: ready (?P<url>\S+) token=(?P<token>\S+) project_id=(?P<project_id>\d+)")
READY_TIMEOUT = 90.0
HTTP_TIMEOUT = 30.0
# The server runs on the strict store (scripts/strict_store.py), whose indexes show a write this
# many seconds after it, as DynamoDB's do within about a second.
INDEX_LAG = 0.25

GITLAB_KEY_FIELDS = ["id", "active", "public_key", "sentry_dsn"]


# The server


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _base_env() -> dict[str, str]:
    return {
        name: value for name, value in os.environ.items() if not name.startswith(("AWS_ENDPOINT_URL", "ERRORTRACKING_"))
    }


@dataclass
class Server:
    url: str
    port: int
    db_port: int
    token: str
    project_id: int
    output: list[str] = field(repr=False)

    @property
    def api(self) -> str:
        return f"{self.url}/api/v4"

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        """The first line of output holding ``text``, once the server has written it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in list(self.output) if text in line), None)
            if found is not None:
                return found
            time.sleep(0.05)
        raise AssertionError(f"the server wrote no line with {text!r}; last lines:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "".join(list(self.output)[-lines:])

    def problems(self, lines: int = 20) -> str:
        """The server's recent lines about failures (5xx answers, errors, traces)."""
        marks = ("Traceback", "Error:", "Exception:", '"status": 5')
        return "".join([line for line in list(self.output) if any(mark in line for mark in marks)][-lines:])

    def cli_env(self) -> dict[str, str]:
        store = f"http://127.0.0.1:{self.db_port}"
        env = _base_env()
        env.pop("AWS_REGION", None)
        env.pop("AWS_PROFILE", None)
        env.update(
            {
                "AWS_ENDPOINT_URL_DYNAMODB": store,
                "AWS_ENDPOINT_URL_KMS": store,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": "us-east-1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env


def _drain(stream: IO[str], output: list[str], ready: threading.Event) -> None:
    for line in stream:
        output.append(line)
        if READY.search(line):
            ready.set()


def _stop(process: subprocess.Popen[str]) -> str | None:
    """SIGINT (Ctrl-C) first, as a person would; a kill only if that did not stop everything."""
    problem = None
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            problem = "scripts/run_local.py did not exit within 30 s of SIGINT"
    try:
        os.killpg(process.pid, 0)  # anything of ours left in the group (chalice local, say)?
    except ProcessLookupError:
        return problem
    except PermissionError:  # pragma: no cover - a recycled id owned by somebody else
        return problem
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    return problem or "a process of the server's group was still running after run_local.py exited"


def _launch(
    port: int,
    db_port: int,
    *,
    strict: bool = True,
    data_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], list[str], threading.Thread]:
    """scripts/run_local.py as `make run` starts it (``make run STRICT=1`` unless told), with its
    data in ``data_dir`` (a new folder of its own unless told), once it is ready: the process, its
    output so far (and from now on), and the thread reading it."""
    env = _base_env()
    env["PYTHONUNBUFFERED"] = "1"
    env["ERRORTRACKING_STRICT_INDEX_LAG"] = str(INDEX_LAG)
    env.update(extra_env or {})
    folder = data_dir
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="errortracking-data-"))
        atexit.register(shutil.rmtree, folder, True)
    process = subprocess.Popen(
        [
            sys.executable,
            "scripts/run_local.py",
            *(["--strict"] if strict else []),
            "--port",
            str(port),
            "--db-port",
            str(db_port),
            "--data-dir",
            str(folder),
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so nothing it starts can outlive the tests
    )
    output: list[str] = []
    ready = threading.Event()
    assert process.stdout is not None
    reader = threading.Thread(target=_drain, args=(process.stdout, output, ready), daemon=True)
    reader.start()
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            break
    if not ready.is_set():
        _stop(process)
        reader.join(timeout=5)
        pytest.fail(
            f"the server did not print its ready line within {READY_TIMEOUT:.0f} s "
            f"(exit status {process.returncode}); output:\n{''.join(output)}"
        )
    return process, output, reader


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    port, db_port = _free_ports(2)
    # A module may start its server with settings of its own (SERVER_ENV), as a user would set them.
    process, output, reader = _launch(port, db_port, extra_env=getattr(request.module, "SERVER_ENV", None))
    match = next(m for m in map(READY.search, output) if m)
    running = Server(
        url=match["url"],
        port=port,
        db_port=db_port,
        token=match["token"],
        project_id=int(match["project_id"]),
        output=output,
    )
    SESSION["local server"] = True
    SUITE_SECRETS[running.token] = "access token"
    send = requests.Session.send
    requests.Session.send = _recording_issued_secrets(send)  # type: ignore[method-assign]
    try:
        yield running
    finally:
        requests.Session.send = send  # type: ignore[method-assign]
        try:
            if process.poll() is None:  # (a server that died is reported below)
                _record_issued_keys(running)
        finally:
            problem = _stop(process)
        reader.join(timeout=10)
        # Up to its ready line, `make run` shows the developer a token and how to call the API with
        # it, on purpose; every line after that is the server's log, for the suite's secrets scan.
        ready_at = next(n for n, line in enumerate(output) if READY.search(line))
        SUITE_LOGS.append((f"local server of {request.node.nodeid}", "".join(output[ready_at + 1 :])))
        assert problem is None, f"{problem}; output:\n{running.tail()}"
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, "the API still listens after the server was stopped"


# The admin command


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).parent / "errortracking"  # the console script of this very environment
    if not command.exists():
        command = ROOT / ".venv" / "bin" / "errortracking"
    done = subprocess.run(
        [str(command), *args],
        cwd=ROOT,
        env=server.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    _record_issued(done.stdout)
    return done


# What the local server issues, recorded for the suite's secrets scan (it runs in another process).
ISSUED_TOKEN = re.compile(r"glpat-[A-Za-z0-9_-]{32}")
ISSUED_KEY = re.compile(r"glet_[0-9a-f]{32}")


def _record_issued(text: str) -> None:
    for token in ISSUED_TOKEN.findall(text):
        SUITE_SECRETS[token] = "access token"
    for key in ISSUED_KEY.findall(text):
        SUITE_SECRETS[key] = "client key"


def _recording_issued_secrets(send: Callable[..., requests.Response]) -> Callable[..., requests.Response]:
    """``requests.Session.send`` (used by the tests, python-gitlab and schemathesis alike) that
    records the tokens and keys in every answer, deleted ones included."""

    def sending(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = send(session, request, **kwargs)
        if not kwargs.get("stream"):
            _record_issued(response.text)
        return response

    return sending


def _record_issued_keys(server: Server) -> None:
    """Every client key left in the server's store (the table holds them in the clear)."""
    import boto3
    from botocore.config import Config

    store = boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{server.db_port}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(connect_timeout=2, read_timeout=10, retries={"total_max_attempts": 1}),
    )
    for page in store.get_paginator("scan").paginate(TableName=config.DEFAULT_TABLE):
        _record_issued(repr(page["Items"]))


def cli_json(server: Server, *args: str) -> Any:
    done = cli(server, *args)
    assert done.returncode == 0, f"errortracking {' '.join(args)} failed ({done.returncode}): {done.stderr}"
    assert done.stderr == "", done.stderr
    return json.loads(done.stdout)


def assert_cli_refuses(done: subprocess.CompletedProcess[str], *mentions: str) -> None:
    """A failed command: non-zero, nothing on stdout, one readable line on stderr (no trace)."""
    assert done.returncode != 0, done.stdout
    assert done.stdout == ""
    message = done.stderr.strip()
    assert message, "no message on stderr"
    assert "Traceback" not in message, message
    assert len(message.splitlines()) == 1, message
    for text in mentions:
        assert text in message, message


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Project:
    id: int
    path: str

    @property
    def encoded(self) -> str:
        return quote(self.path, safe="")


def new_project(server: Server, scenario: str, visibility: str = "private") -> Project:
    path = f"{unique('e2e')}/{scenario}"
    body = cli_json(server, "project", "create", path, "--visibility", visibility)
    return Project(int(body["id"]), body["path_with_namespace"])


def new_user_token(server: Server, project: Project | None = None, role: str = "maintainer", *scopes: str) -> str:
    """A fresh user (a member of ``project`` with ``role`` when given) and a token of theirs."""
    username = unique("user")
    cli_json(server, "user", "create", username)
    if project is not None:
        cli_json(server, "member", "add", str(project.id), username, role)
    extra = ["--scopes", ",".join(scopes)] if scopes else []
    token: str = cli_json(server, "token", "create", username, *extra)["token"]
    return token


# HTTP


def index_caught_up() -> None:
    """Lists read indexes, which show a write a moment after it: wait that moment, as a person
    listing a moment later does (the detail, read by key, needs no wait)."""
    time.sleep(INDEX_LAG + 0.05)


def call(server: Server, method: str, path: str, token: str | None, **kwargs: Any) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["PRIVATE-TOKEN"] = token
    return requests.request(method, server.api + path, headers=headers, timeout=HTTP_TIMEOUT, **kwargs)


def settings_path(ref: int | str) -> str:
    return f"/projects/{ref}/error_tracking/settings"


def keys_path(ref: int | str) -> str:
    return f"/projects/{ref}/error_tracking/client_keys"


def body_of(response: requests.Response) -> Any:
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    return response.json()


def expect(response: requests.Response, status: int, body: Any = None) -> Any:
    """Assert the status (and the exact body, when given); return the JSON body."""
    assert response.status_code == status, f"{response.request.method} {response.url}: {response.text}"
    payload = body_of(response)
    if body is not None:
        assert payload == body, f"{response.request.method} {response.url}"
    return payload


def dsn(server: Server, public_key: str, project_id: int) -> str:
    return f"http://{public_key}@127.0.0.1:{server.port}/errortracking/api/v1/projects/{project_id}"


def assert_client_key(server: Server, key: dict[str, Any], project_id: int) -> None:
    assert list(key)[:4] == GITLAB_KEY_FIELDS
    assert isinstance(key["id"], int)
    assert PUBLIC_KEY.match(key["public_key"]), key
    assert key["sentry_dsn"] == dsn(server, key["public_key"], project_id)


def outcome(server: Server, responses: list[requests.Response]) -> str:
    """For a failure message: how the parallel requests were answered, and what the server said."""
    statuses = Counter(r.status_code for r in responses)
    failures = sorted({r.text for r in responses if r.status_code >= 500})
    return f"statuses {dict(statuses)}, 5xx bodies {failures}; server output:\n{server.problems()}"


def in_parallel(tasks: list[Callable[[], requests.Response]], workers: int = 10) -> list[requests.Response]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(task) for task in tasks]
        return [future.result() for future in futures]


# The server as `make run` starts it


def test_ready_line_names_the_port_and_the_seeded_admin(server: Server) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.token.startswith("glpat-")
    assert server.project_id == 1
    me = expect(call(server, "GET", "/user", server.token), 200)
    assert me["username"] == "root"
    assert me["is_admin"] is True


def test_the_banners_examples_run_top_to_bottom_leave_a_working_dsn() -> None:
    """A newcomer pastes the curl commands `make run` prints, in order: the demo project then tracks
    errors, with one active key whose DSN takes an event (they used to end by switching tracking
    off and deleting the project's only key). Before its banner, `make run` prints nothing but its
    own lines (PynamoDB used to announce that /etc/pynamodb has no settings)."""
    port, db_port = _free_ports(2)
    process, output, reader = _launch(port, db_port, strict=False)  # plain `make run`
    try:
        banner_at = next(n for n, line in enumerate(output) if "Error tracking API:" in line)
        assert "pynamo" not in "".join(output[:banner_at]).lower(), output[:banner_at]
        commands = [line.strip() for line in output if line.startswith("  curl ")]
        assert len(commands) >= 8, "".join(output)
        for command in commands:
            done = subprocess.run(
                ["bash", "-c", command.split("  #")[0] + " --silent --show-error --fail-with-body"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        match = next(m for m in map(READY.search, output) if m)
        api = f"{match['url']}/api/v4/projects/{match['project_id']}/error_tracking"
        headers = {"PRIVATE-TOKEN": match["token"]}
        assert requests.get(f"{api}/settings", headers=headers, timeout=HTTP_TIMEOUT).json()["active"] is True
        keys = requests.get(f"{api}/client_keys", headers=headers, timeout=HTTP_TIMEOUT).json()
        assert [key["active"] for key in keys] == [True], keys
        dsn = Dsn(keys[0]["sentry_dsn"])
        sent = requests.post(
            dsn.to_auth().get_api_url(EndpointType.ENVELOPE),
            data=b'{}\n{"type":"event"}\n{"message":"from the banner"}\n',
            headers={"X-Sentry-Auth": f"Sentry sentry_key={dsn.public_key}, sentry_version=7"},
            timeout=HTTP_TIMEOUT,
        )
        assert sent.status_code == 200, sent.text
    finally:
        problem = _stop(process)
        reader.join(timeout=10)
    assert problem is None, problem


# python-gitlab


def test_python_gitlab_authenticates_as_root(server: Server) -> None:
    gl = gitlab.Gitlab(server.url, private_token=server.token)
    gl.auth()
    assert gl.user is not None
    assert gl.user.username == "root"


def test_python_gitlab_reads_the_version(server: Server) -> None:
    """``gl.version()`` says ("unknown", "unknown") when GET /version fails."""
    gl = gitlab.Gitlab(server.url, private_token=server.token)
    assert gl.version() == (config.VERSION, "errortracking")


def test_python_gitlab_settings_on_the_demo_project(server: Server) -> None:
    """Only this test touches the seeded project 'demo/errors' (id 1)."""
    gl = gitlab.Gitlab(server.url, private_token=server.token)
    with pytest.raises(gitlab.exceptions.GitlabHttpError) as missing:
        gl.http_get(f"/projects/{server.project_id}/error_tracking/settings")
    assert missing.value.response_code == 404
    assert missing.value.error_message == SETTING_NOT_FOUND["message"]

    created = gl.http_put(
        f"/projects/{server.project_id}/error_tracking/settings", post_data={"active": True, "integrated": True}
    )
    expected = {"active": True, "project_name": None, "sentry_external_url": None, "api_url": None, "integrated": True}
    assert created == expected
    assert isinstance(created, dict)
    assert list(created) == SETTING_FIELDS
    assert gl.http_get("/projects/demo%2Ferrors/error_tracking/settings") == expected
    assert gl.http_get("/projects/Demo%2FErrors/error_tracking/settings") == expected  # paths are case-insensitive

    keys = gl.http_list("/projects/demo%2Ferrors/error_tracking/client_keys", get_all=True)
    assert isinstance(keys, list)
    assert len(keys) == 1  # the active, integrated setting got a key of its own
    assert_client_key(server, keys[0], server.project_id)


def test_python_gitlab_settings_on_a_fresh_project(server: Server) -> None:
    project = new_project(server, "gitlab-settings")
    gl = gitlab.Gitlab(server.url, private_token=server.token)
    with pytest.raises(gitlab.exceptions.GitlabHttpError) as missing:
        gl.http_get(f"/projects/{project.encoded}/error_tracking/settings")
    assert missing.value.response_code == 404

    created = gl.http_put(
        f"/projects/{project.id}/error_tracking/settings", post_data={"active": True, "integrated": True}
    )
    assert created == {
        "active": True,
        "project_name": None,
        "sentry_external_url": None,
        "api_url": None,
        "integrated": True,
    }
    assert gl.http_get(f"/projects/{project.encoded}/error_tracking/settings") == created
    assert gl.http_get(f"/projects/{project.id}/error_tracking/settings") == created


def test_python_gitlab_lists_every_key_across_pages(server: Server) -> None:
    project = new_project(server, "gitlab-pages")
    token = server.token  # root, an instance admin
    created = [expect(call(server, "POST", keys_path(project.id), token), 201) for _ in range(45)]
    created_ids = [key["id"] for key in created]
    assert len(set(created_ids)) == 45

    gl = gitlab.Gitlab(server.url, private_token=token)
    listed = gl.http_list(f"/projects/{project.id}/error_tracking/client_keys", get_all=True, per_page=20)
    assert isinstance(listed, list)
    assert [key["id"] for key in listed] == sorted(created_ids)  # each exactly once, ordered by id
    for key in listed:
        assert_client_key(server, key, project.id)
    assert {key["public_key"] for key in listed} == {key["public_key"] for key in created}

    pages = gl.http_list(f"/projects/{project.encoded}/error_tracking/client_keys", iterator=True, per_page=20)
    assert isinstance(pages, gitlab.GitlabList)
    assert pages.total == 45
    assert pages.total_pages == 3
    assert pages.per_page == 20
    assert [key["id"] for key in pages] == sorted(created_ids)

    # What python-gitlab followed: GitLab's headers, with links back to this very server.
    page2 = call(server, "GET", keys_path(project.id), token, params={"page": "2", "per_page": "20"})
    assert [key["id"] for key in expect(page2, 200)] == sorted(created_ids)[20:40]
    assert page2.headers["X-Page"] == "2"
    assert page2.headers["X-Per-Page"] == "20"
    assert page2.headers["X-Total"] == "45"
    assert page2.headers["X-Total-Pages"] == "3"
    assert page2.headers["X-Next-Page"] == "3"
    assert page2.headers["X-Prev-Page"] == "1"
    links = page2.links
    assert set(links) == {"prev", "next", "first", "last"}
    base = f"{server.api}{keys_path(project.id)}?"
    for rel, number in (("prev", 1), ("next", 3), ("first", 1), ("last", 3)):
        url = links[rel]["url"]
        assert url.startswith(base), url
        assert f"page={number}" in url and "per_page=20" in url, url
    last = call(server, "GET", keys_path(project.id), token, params={"page": "3", "per_page": "20"})
    assert len(expect(last, 200)) == 5
    assert last.headers["X-Next-Page"] == ""


# Plain HTTP


def test_each_token_transport_works_and_no_token_is_401(server: Server) -> None:
    project = new_project(server, "transports")
    token = server.token  # root, an instance admin
    url = server.api + keys_path(project.id)
    by_header = requests.get(url, headers={"PRIVATE-TOKEN": token}, timeout=HTTP_TIMEOUT)
    by_bearer = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT)
    by_query = requests.get(url, params={"private_token": token}, timeout=HTTP_TIMEOUT)
    for response in (by_header, by_bearer, by_query):
        assert expect(response, 200) == []

    expect(requests.get(url, timeout=HTTP_TIMEOUT), 401, UNAUTHORIZED)
    expect(requests.get(url, headers={"PRIVATE-TOKEN": "glpat-not-a-token"}, timeout=HTTP_TIMEOUT), 401, UNAUTHORIZED)
    expect(requests.get(url, headers={"Authorization": "Bearer glpat-nope"}, timeout=HTTP_TIMEOUT), 401, UNAUTHORIZED)
    # Unauthenticated: 401 even for a project that does not exist, and whatever the parameters.
    expect(
        requests.put(server.api + settings_path(999999), data={"active": "x"}, timeout=HTTP_TIMEOUT), 401, UNAUTHORIZED
    )

    # The token in the query string is a credential, never a parameter echoed in a link.
    listed = requests.get(url, params={"private_token": token, "per_page": "5"}, timeout=HTTP_TIMEOUT)
    expect(listed, 200)
    assert token not in listed.headers.get("Link", "")
    assert token not in listed.text
    # The server logs the request line with the token filtered out, as GitLab does.
    logged = server.wait_for(f"{keys_path(project.id)}?private_token=[FILTERED]&per_page=5")
    assert token not in logged, logged


def test_settings_put_json_patch_form_and_key_delete(server: Server) -> None:
    project = new_project(server, "http-settings")
    token = server.token  # root, an instance admin

    expect(call(server, "PATCH", settings_path(project.id), token, data={"active": "true"}), 404, SETTING_NOT_FOUND)
    expect(
        call(server, "PUT", settings_path(project.id), token, json={"active": True}),
        400,
        {"error": "integrated is missing"},
    )
    expect(
        call(server, "PUT", settings_path(project.id), token, json={}),
        400,
        {"error": "active is missing, integrated is missing"},
    )

    put = call(server, "PUT", settings_path(project.id), token, json={"active": True, "integrated": True})
    entity = {"active": True, "project_name": None, "sentry_external_url": None, "api_url": None, "integrated": True}
    assert expect(put, 200, entity)
    assert list(put.json()) == SETTING_FIELDS

    patched = call(server, "PATCH", settings_path(project.id), token, data={"active": "false"})
    expect(patched, 200, {**entity, "active": False})
    named = call(server, "PATCH", settings_path(project.id), token, data={"active": "yes", "project_name": "My App"})
    expect(named, 200, {**entity, "project_name": "My App"})
    expect(
        call(server, "PATCH", settings_path(project.id), token, data={"active": "maybe"}),
        400,
        {"error": "active is invalid"},
    )
    expect(
        call(server, "PATCH", settings_path(project.id), token, data={"active": ""}), 400, {"error": "active is empty"}
    )
    expect(call(server, "GET", settings_path(project.id), token), 200, {**entity, "project_name": "My App"})

    # The active, integrated setting got exactly one key; delete it, then it is gone.
    keys = expect(call(server, "GET", keys_path(project.id), token), 200)
    assert len(keys) == 1
    key = keys[0]
    assert_client_key(server, key, project.id)
    deleted = call(server, "DELETE", f"{keys_path(project.id)}/{key['id']}", token)
    expect(deleted, 200, key)
    expect(call(server, "DELETE", f"{keys_path(project.id)}/{key['id']}", token), 404, KEY_NOT_FOUND)
    expect(call(server, "DELETE", f"{keys_path(project.id)}/987654321", token), 404, KEY_NOT_FOUND)
    assert expect(call(server, "GET", keys_path(project.id), token), 200) == []


def test_delete_of_another_projects_key_is_404_and_touches_nothing(server: Server) -> None:
    mine, theirs = new_project(server, "mine"), new_project(server, "theirs")
    token = server.token
    their_key = expect(call(server, "POST", keys_path(theirs.id), token), 201)
    expect(call(server, "DELETE", f"{keys_path(mine.id)}/{their_key['id']}", token), 404, KEY_NOT_FOUND)
    assert expect(call(server, "GET", keys_path(theirs.id), token), 200) == [their_key]


def test_roles_decide_who_may_call(server: Server) -> None:
    private, internal = new_project(server, "private"), new_project(server, "internal", visibility="internal")
    outsider = new_user_token(server)
    expect(call(server, "GET", keys_path(private.id), outsider), 404, PROJECT_NOT_FOUND)
    expect(call(server, "GET", keys_path(private.encoded), outsider), 404, PROJECT_NOT_FOUND)
    expect(call(server, "GET", keys_path(internal.id), outsider), 403, FORBIDDEN)
    expect(call(server, "GET", keys_path(999999), outsider), 404, PROJECT_NOT_FOUND)
    expect(call(server, "GET", keys_path("no%2Fsuch-project"), outsider), 404, PROJECT_NOT_FOUND)
    developer = new_user_token(server, private, "developer")
    expect(call(server, "GET", keys_path(private.id), developer), 403, FORBIDDEN)
    # A developer sending bad parameters is still told 403: the role is checked first.
    expect(call(server, "PUT", settings_path(private.id), developer, data={"active": "maybe"}), 403, FORBIDDEN)
    expect(call(server, "GET", keys_path(private.id), server.token), 200, [])  # an admin may


# The admin command


def test_cli_creates_identities_that_the_api_honours(server: Server) -> None:
    username = unique("alice")
    user = cli_json(server, "user", "create", username)
    assert set(user) == {"id", "username", "admin", "state"}
    assert user["username"] == username
    assert user["admin"] is False
    assert user["state"] == "active"
    assert isinstance(user["id"], int)

    path = f"{unique('team')}/cli-app"
    project = cli_json(server, "project", "create", path)
    assert set(project) == {"id", "path_with_namespace", "name", "visibility"}
    assert project["path_with_namespace"] == path
    assert project["name"] == "cli-app"
    assert project["visibility"] == "private"
    assert isinstance(project["id"], int)

    member = cli_json(server, "member", "add", path, username, "maintainer")
    assert member == {"project_id": project["id"], "user_id": user["id"], "access_level": 40}

    created = cli_json(server, "token", "create", username)
    token = created["token"]
    assert isinstance(token, str) and token.startswith("glpat-") and len(token) > len("glpat-") + 16
    assert created["scopes"] == ["api"]
    assert created["revoked"] is False

    # The token works against the running API, as a maintainer of the project.
    assert expect(call(server, "GET", "/user", token), 200)["username"] == username
    expect(call(server, "GET", settings_path(project["id"]), token), 404, SETTING_NOT_FOUND)
    expect(
        call(server, "PUT", settings_path(quote(path, safe="")), token, data={"active": "1", "integrated": "1"}), 200
    )
    assert len(expect(call(server, "GET", keys_path(project["id"]), token), 200)) == 1
    expect(call(server, "POST", keys_path(project["id"]), token), 201)

    # The admin command never shows a secret again.
    listed = cli_json(server, "token", "list", "--username", username)
    assert [t["id"] for t in listed] == [created["id"]]
    assert "token" not in listed[0]
    assert token not in json.dumps(listed)


def test_cli_read_api_token_may_read_but_not_write(server: Server) -> None:
    project = new_project(server, "read-api")
    token = new_user_token(server, project, "maintainer", "read_api")
    expect(call(server, "GET", keys_path(project.id), token), 200, [])
    expect(call(server, "GET", settings_path(project.id), token), 404, SETTING_NOT_FOUND)
    form = {"active": "true", "integrated": "true"}
    expect(call(server, "PUT", settings_path(project.id), token, data=form), 403, INSUFFICIENT_SCOPE)
    expect(call(server, "PATCH", settings_path(project.id), token, data=form), 403, INSUFFICIENT_SCOPE)
    expect(call(server, "POST", keys_path(project.id), token), 403, INSUFFICIENT_SCOPE)
    expect(call(server, "DELETE", f"{keys_path(project.id)}/1", token), 403, INSUFFICIENT_SCOPE)
    # The scope is checked before the project is looked up.
    expect(call(server, "PUT", settings_path(999999), token, data=form), 403, INSUFFICIENT_SCOPE)
    expect(call(server, "GET", keys_path(project.id), token), 200, [])  # nothing was written


def test_cli_revoke_and_block_take_effect_at_once(server: Server) -> None:
    project = new_project(server, "revoke-block")
    username = unique("bob")
    cli_json(server, "user", "create", username)
    cli_json(server, "member", "add", str(project.id), username, "maintainer")
    first = cli_json(server, "token", "create", username)
    second = cli_json(server, "token", "create", username, "--name", "second")
    for token in (first["token"], second["token"]):
        expect(call(server, "GET", keys_path(project.id), token), 200)

    revoked = cli_json(server, "token", "revoke", str(first["id"]))
    assert revoked["id"] == first["id"]
    assert revoked["revoked"] is True
    assert "token" not in revoked
    expect(call(server, "GET", keys_path(project.id), first["token"]), 401, REVOKED)
    expect(call(server, "GET", "/user", first["token"]), 401, REVOKED)
    expect(call(server, "GET", keys_path(project.id), second["token"]), 200)  # only that one token

    blocked = cli_json(server, "user", "block", username)
    assert blocked["username"] == username
    assert blocked["state"] == "blocked"
    expect(call(server, "GET", keys_path(project.id), second["token"]), 403, BLOCKED)
    expect(call(server, "GET", "/user", second["token"]), 403, BLOCKED)

    assert cli_json(server, "user", "unblock", username)["state"] == "active"
    expect(call(server, "GET", keys_path(project.id), second["token"]), 200)


def test_cli_refuses_bad_requests_with_a_readable_message(server: Server) -> None:
    project = new_project(server, "cli-errors")
    username = unique("carol")
    cli_json(server, "user", "create", username)

    assert_cli_refuses(cli(server, "user", "create", username), username)
    assert_cli_refuses(
        cli(server, "member", "add", "no-such/project-here", username, "maintainer"), "no-such/project-here"
    )
    assert_cli_refuses(cli(server, "member", "add", str(project.id), username, "boss"), "boss")
    assert_cli_refuses(cli(server, "token", "create", username, "--expires-at", "2030-02-30"), "2030-02-30")

    # Nothing was half-done: the refused member add left no membership.
    assert cli_json(server, "member", "list", str(project.id)) == []
    member = cli_json(server, "member", "add", str(project.id), username, "Maintainer")
    assert member["access_level"] == 40


# DSNs


def test_dsns_name_the_port_the_api_listens_on(server: Server) -> None:
    project = new_project(server, "dsn")
    token = server.token  # root, an instance admin
    # Named by path: the DSN still carries the numeric id a Sentry SDK needs.
    posted = expect(call(server, "POST", keys_path(project.encoded), token), 201)
    assert posted["active"] is True
    assert_client_key(server, posted, project.id)
    other = expect(call(server, "POST", keys_path(project.id), token), 201)
    assert other["public_key"] != posted["public_key"]
    assert other["sentry_dsn"] == dsn(server, other["public_key"], project.id)  # each key its own DSN
    listed = expect(call(server, "GET", keys_path(project.encoded), token), 200)
    assert listed == [posted, other]
    assert all(f"@127.0.0.1:{server.port}/" in key["sentry_dsn"] for key in listed)
    assert all(key["sentry_dsn"].startswith(f"http://{key['public_key']}@") for key in listed)


# Concurrency


def test_parallel_key_creation_gives_distinct_keys(server: Server) -> None:
    project = new_project(server, "parallel-create")
    token = server.token  # root, an instance admin

    def create() -> requests.Response:
        return call(server, "POST", keys_path(project.id), token)

    responses = in_parallel([create] * 50)
    assert [r.status_code for r in responses] == [201] * 50, outcome(server, responses)
    keys = [body_of(r) for r in responses]
    ids = {key["id"] for key in keys}
    assert len(ids) == 50
    assert len({key["public_key"] for key in keys}) == 50
    for key in keys:
        assert key["active"] is True
        assert_client_key(server, key, project.id)

    listed = call(server, "GET", keys_path(project.id), token, params={"per_page": "100"})
    assert [key["id"] for key in expect(listed, 200)] == sorted(ids), outcome(server, responses)
    assert listed.headers["X-Total"] == "50"


def test_parallel_first_puts_create_one_setting_and_one_key(server: Server) -> None:
    project = new_project(server, "parallel-first-put")
    token = server.token  # root, an instance admin
    entity = {"active": True, "project_name": None, "sentry_external_url": None, "api_url": None, "integrated": True}

    def put() -> requests.Response:
        return call(server, "PUT", settings_path(project.id), token, data={"active": "true", "integrated": "true"})

    responses = in_parallel([put] * 10)
    keys = expect(call(server, "GET", keys_path(project.id), token), 200)
    assert len(keys) == 1, f"{len(keys)} keys made automatically; {outcome(server, responses)}"
    assert [r.status_code for r in responses] == [200] * 10, outcome(server, responses)
    assert all(r.json() == entity for r in responses)
    expect(call(server, "GET", settings_path(project.id), token), 200, entity)


def test_parallel_put_and_patch_lose_no_field(server: Server) -> None:
    project = new_project(server, "parallel-settings")
    token = server.token  # root, an instance admin
    path = settings_path(project.id)
    expect(call(server, "PUT", path, token, data={"active": "true", "integrated": "true"}), 200)

    def send(method: str, data: dict[str, str]) -> requests.Response:
        return call(server, method, path, token, data=data)

    for round_number in range(3):
        name = f"Racer {round_number}"
        # Exactly one request of the race sets project_name; no other touches it.
        race: list[tuple[str, dict[str, str]]] = [("PUT", {"active": "true", "integrated": "true"})] * 10
        race += [("PATCH", {"active": "false"})] * 9
        race.append(("PATCH", {"active": "true", "project_name": name}))
        random.Random(round_number).shuffle(race)
        responses = in_parallel([partial(send, method, data) for method, data in race])

        final = expect(call(server, "GET", path, token), 200)
        report = f"round {round_number}: final {final}; {outcome(server, responses)}"
        setter = responses[race.index(("PATCH", {"active": "true", "project_name": name}))]
        if setter.status_code == 200:
            assert final["project_name"] == name, f"the project_name set in the race was lost; {report}"
        assert final["integrated"] is True, report
        assert final in [r.json() for r in responses if r.status_code == 200], f"no request left this state; {report}"
        assert [r.status_code for r in responses] == [200] * 20, report

    # The setting's one key was made before the races; they made no more.
    assert len(expect(call(server, "GET", keys_path(project.id), token), 200)) == 1


def test_racing_deletes_of_one_key_succeed_once(server: Server) -> None:
    project = new_project(server, "parallel-delete")
    token = server.token  # root, an instance admin

    def delete(barrier: threading.Barrier, key_id: int) -> requests.Response:
        barrier.wait()
        return call(server, "DELETE", f"{keys_path(project.id)}/{key_id}", token)

    wrong: list[str] = []
    everything: list[requests.Response] = []
    for _ in range(4):  # rounds of 5 keys, each key deleted by two requests at the same moment
        keys = [expect(call(server, "POST", keys_path(project.id), token), 201) for _ in range(5)]
        barrier = threading.Barrier(2 * len(keys), timeout=30)
        tasks: list[Callable[[], requests.Response]] = []
        for key in keys:
            tasks += [partial(delete, barrier, key["id"])] * 2
        responses = in_parallel(tasks, workers=len(tasks))
        everything += responses
        for index, key in enumerate(keys):
            pair = responses[2 * index : 2 * index + 2]
            if sorted(r.status_code for r in pair) != [200, 404]:
                wrong.append(f"key {key['id']}: {sorted(r.status_code for r in pair)}")
                continue
            for response in pair:
                expect(response, response.status_code, key if response.status_code == 200 else KEY_NOT_FOUND)
        assert expect(call(server, "GET", keys_path(project.id), token), 200) == []
    assert not wrong, f"racing deletes not answered once 200, once 404: {wrong}; {outcome(server, everything)}"

    # The project's count of active keys survived the races: with none left, an active integrated
    # setting gets exactly one new key.
    expect(call(server, "PUT", settings_path(project.id), token, data={"active": "true", "integrated": "true"}), 200)
    keys_now = expect(call(server, "GET", keys_path(project.id), token), 200)
    assert len(keys_now) == 1, f"{len(keys_now)} keys made automatically after every key was deleted"


SMOKE_CHECKS = [
    "GET /user",
    "GET /user without token",
    "PUT settings",
    "PATCH settings",
    "GET settings",
    "POST client_keys",
    "GET client_keys",
    "DELETE client_keys/:key_id",
    "POST envelope to the DSN",
    "GET errors (the event's error listed)",
    "GET errors/:error_id",
    "GET errors/:error_id/events",
    "PUT errors/:error_id status=resolved",
]


def test_smoke_script_passes_every_endpoint_against_the_local_server(server: Server) -> None:
    project = new_project(server, "smoke")
    done = subprocess.run(
        [sys.executable, "scripts/smoke.py", server.url, server.token, "--project", project.path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    checks = [re.fullmatch(r"(PASS|FAIL)  (.+?)  \((.*)\)", line) for line in lines[:-1]]
    assert all(checks), done.stdout
    assert [(m[1], m[2]) for m in checks if m] == [("PASS", name) for name in SMOKE_CHECKS], done.stdout
    assert lines[-1] == f"{len(SMOKE_CHECKS)} passed, 0 failed"
    # It leaves the project tracking errors with a working key, and its error resolved.
    assert expect(call(server, "GET", settings_path(project.id), server.token), 200)["integrated"] is True
    keys = [k for k in expect(call(server, "GET", keys_path(project.id), server.token), 200) if k["active"]]
    assert len(keys) == 1, keys
    index_caught_up()
    resolved = expect(
        call(server, "GET", f"/projects/{project.id}/error_tracking/errors?status=resolved", server.token), 200
    )
    assert [e["title"].split(":")[0] for e in resolved] == ["SmokeTestError"]
    assert expect(call(server, "GET", f"/projects/{project.id}/error_tracking/errors", server.token), 200) == []
    public_key, project_id = keys[0]["public_key"], project.id
    envelope = b'{}\n{"type":"event"}\n{"message":"after the smoke test"}\n'
    sent = requests.post(
        f"{server.url}/errortracking/api/v1/projects/api/{project_id}/envelope/",
        data=envelope,
        headers={"X-Sentry-Auth": f"Sentry sentry_key={public_key}, sentry_version=7"},
        timeout=HTTP_TIMEOUT,
    )
    assert sent.status_code == 200, sent.text
    # And it says FAIL, with a non-zero exit, when a check does not hold.
    refused = subprocess.run(
        [sys.executable, "scripts/smoke.py", server.url, "glpat-not-a-token", "--project", project.path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1 and "FAIL  GET /user" in refused.stdout
