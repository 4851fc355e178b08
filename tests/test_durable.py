"""`make run` keeps its data: every acknowledged write survives each way of stopping it.

A real `make run` (GNU make, scripts/run_local.py, chalice local) on a data folder of its own:
data written through the API and through sentry-sdk, then stopped by Ctrl-C, SIGTERM, ``kill -9``
of the store's process, of the API's process, and of the whole process group, and started again
each time: the same token reads the same bytes, and the same DSN still takes events. Then what a
damaged, foreign or busy folder gets: one clear line, never a traceback, and the data left alone.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import requests
import sentry_sdk

from tests.test_e2e import READY, _base_env, _free_ports, _stop

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 90.0
HTTP_TIMEOUT = 30.0
FOUND = re.compile(r"errortracking: (new store|resumed the store)")


class Run:
    """One `make run`, its output, and the processes it started."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.output: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a process group of its own, as a terminal gives `make run`
        )
        assert self.process.stdout is not None
        self.reader = threading.Thread(target=self._drain, args=(self.process.stdout,), daemon=True)
        self.reader.start()

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.output.append(line)
            if READY.search(line):
                self.ready.set()

    def wait_ready(self) -> re.Match[str]:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.reader.join(timeout=5)
                pytest.fail(f"make run did not get ready (status {self.process.returncode}):\n{self.text()}")
        match = next(m for m in map(READY.search, self.output) if m)
        return match

    def finish(self, timeout: float = 60.0) -> int:
        """Its exit status, once it has stopped by itself (a refusal); failing the test, after
        stopping it, when it keeps running instead."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            pytest.fail(f"it kept running instead of refusing to start:\n{self.text()[-3000:]}")
        self.reader.join(timeout=10)
        return code

    def text(self) -> str:
        return "".join(self.output)

    def pids(self, pattern: str) -> list[int]:
        """Processes of this run's group whose command line matches ``pattern``."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) != self.process.pid:
                    continue
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ProcessLookupError):
                continue
            if re.search(pattern, command):
                found.append(int(entry.name))
        return found


def make_run(port: int, db_port: int, data: Path, *extra: str) -> Run:
    env = _base_env()
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    command = ["make", "--no-print-directory", "run", f"PORT={port}", f"DB_PORT={db_port}", f"DATA_DIR={data}", *extra]
    return Run(command, env)


def store_only(db_port: int, data: Path, env: dict[str, str] | None = None) -> Run:
    """The embedded store alone on ``data`` (as `make run` opens it, without the API)."""
    command = [
        sys.executable,
        "scripts/run_local.py",
        "--store-only",
        "--db-port",
        str(db_port),
        "--data-dir",
        str(data),
    ]
    return Run(command, {**_base_env(), "PYTHONUNBUFFERED": "1", **(env or {})})


def _gone(run: Run, port: int) -> None:
    """Wait until nothing of ``run`` is left and ``port`` is free again."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run.process.poll()  # reaped, or make's zombie would count as a process of the group
        try:
            os.killpg(run.process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(run.process.pid, signal.SIGKILL)
        pytest.fail(f"processes of make run were still running 30 s after the stop:\n{run.text()[-3000:]}")
    run.process.wait(timeout=10)
    run.reader.join(timeout=10)


def _snapshot_of_api(base: str, token: str, project_id: int) -> dict[str, bytes]:
    """What a client reads: every listing and detail, byte for byte."""
    headers = {"PRIVATE-TOKEN": token}
    api = f"{base}/api/v4/projects/{project_id}/error_tracking"
    seen: dict[str, bytes] = {}
    for path in ("/settings", "/client_keys?per_page=100", "/errors?per_page=100&status=unresolved"):
        answer = requests.get(api + path, headers=headers, timeout=HTTP_TIMEOUT)
        assert answer.status_code == 200, (path, answer.text)
        seen[path] = answer.content
    for error in json.loads(seen["/errors?per_page=100&status=unresolved"]):
        for path in (f"/errors/{error['id']}", f"/errors/{error['id']}/events?per_page=100"):
            answer = requests.get(api + path, headers=headers, timeout=HTTP_TIMEOUT)
            assert answer.status_code == 200, (path, answer.text)
            seen[path] = answer.content
    return seen


def _send_with_sentry_sdk(dsn: str, message: str) -> None:
    sentry_sdk.init(dsn=dsn, default_integrations=False, auto_session_tracking=False)
    try:
        try:
            raise RuntimeError(message)
        except RuntimeError as exc:
            assert sentry_sdk.capture_exception(exc) is not None
        sentry_sdk.flush(timeout=10)
    finally:
        sentry_sdk.get_client().close()


def _wait_for_count(base: str, token: str, project_id: int, total: int) -> None:
    """sentry-sdk sends in the background: wait until the API counts ``total`` events."""
    api = f"{base}/api/v4/projects/{project_id}/error_tracking/errors?per_page=100"
    deadline = time.monotonic() + 20
    counted = -1
    while time.monotonic() < deadline:
        errors = requests.get(api, headers={"PRIVATE-TOKEN": token}, timeout=HTTP_TIMEOUT).json()
        counted = sum(int(error["count"]) for error in errors)
        if counted == total:
            return
        time.sleep(0.2)
    pytest.fail(f"the API counted {counted} events, not {total}")


def _kill(run: Run, pattern: str, signum: int) -> None:
    pids = run.pids(pattern)
    assert pids, f"no process matching {pattern!r} in make run's group"
    for pid in pids:
        os.kill(pid, signum)


STOPS: list[tuple[str, Any]] = [
    ("Ctrl-C", lambda run: os.killpg(run.process.pid, signal.SIGINT)),
    ("SIGTERM to the store's process", lambda run: _kill(run, r"scripts/run_local\.py", signal.SIGTERM)),
    ("kill -9 of the store's process", lambda run: _kill(run, r"scripts/run_local\.py", signal.SIGKILL)),
    ("kill -9 of the API's process", lambda run: _kill(run, r"scripts/local_server\.py", signal.SIGKILL)),
    ("kill -9 of every process", lambda run: os.killpg(run.process.pid, signal.SIGKILL)),
]


def test_every_acknowledged_write_survives_each_way_of_stopping_make_run(tmp_path: Path) -> None:
    port, db_port = _free_ports(2)
    data = tmp_path / "data"
    run = make_run(port, db_port, data)
    ready = run.wait_ready()
    base, token, project_id = ready["url"], ready["token"], int(ready["project_id"])
    assert token.startswith("glpat-")
    assert "errortracking: new store" in run.text()
    headers = {"PRIVATE-TOKEN": token}
    api = f"{base}/api/v4/projects/{project_id}/error_tracking"
    answer = requests.put(f"{api}/settings", headers=headers, data={"active": "true", "integrated": "true"}, timeout=30)
    assert answer.status_code == 200, answer.text
    dsn = requests.get(f"{api}/client_keys", headers=headers, timeout=HTTP_TIMEOUT).json()[0]["sentry_dsn"]
    events = 0
    try:
        for n, (how, stop) in enumerate(STOPS):
            # New acknowledged writes before each stop: a key, and an event through the same DSN.
            answer = requests.post(f"{api}/client_keys", headers=headers, timeout=HTTP_TIMEOUT)
            assert answer.status_code == 201, answer.text
            _send_with_sentry_sdk(dsn, f"before stop {n}: {how}")
            events += 1
            _wait_for_count(base, token, project_id, events)
            before = _snapshot_of_api(base, token, project_id)

            stop(run)
            _gone(run, port)
            run = make_run(port, db_port, data)
            ready = run.wait_ready()
            assert ready["token"] == "-", "a resumed store must not make a new admin token"
            found = next(line for line in run.output if FOUND.search(line))
            assert "resumed the store" in found, (how, found)
            counts = dict((noun, int(count)) for count, noun in re.findall(r"(\d+) (client key|event)s?\b", found))
            assert counts == {"client key": n + 2, "event": events}, (how, found)
            assert "errortracking token create root" in run.text()  # how to get a new token
            after = _snapshot_of_api(base, token, project_id)
            assert after == before, f"after {how}, the API reads differently"
    finally:
        if run.process.poll() is None:
            _stop(run.process)
    # And the DSN handed out before all those stops still takes an event.
    run = make_run(port, db_port, data)
    run.wait_ready()
    try:
        _send_with_sentry_sdk(dsn, "after every stop")
        _wait_for_count(base, token, project_id, events + 1)
    finally:
        _stop(run.process)


def test_a_second_make_run_on_the_same_folder_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first_ports, second_ports = _free_ports(2), _free_ports(2)
    first = make_run(first_ports[0], first_ports[1], data)
    first.wait_ready()
    try:
        second = make_run(second_ports[0], second_ports[1], data)
        assert second.finish() != 0
        assert f"{data} is in use by another `make run`" in second.text(), second.text()
        assert "Traceback" not in second.text()
        assert requests.get(f"http://127.0.0.1:{first_ports[0]}/api/v4/version", timeout=30).status_code in (200, 401)
    finally:
        _stop(first.process)


def test_fresh_says_what_it_removes_and_starts_empty(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port, db_port = _free_ports(2)
    run = make_run(port, db_port, data)
    old_token = run.wait_ready()["token"]
    _stop(run.process)
    _gone(run, port)

    run = make_run(port, db_port, data, "FRESH=1")
    ready = run.wait_ready()
    try:
        removed = next(line for line in run.output if "FRESH=1" in line)
        assert str(data) in removed and "journal-0.log" in removed, removed
        assert "errortracking: new store" in run.text()
        assert ready["token"] not in ("-", old_token)
        gone = requests.get(f"{ready['url']}/api/v4/user", headers={"PRIVATE-TOKEN": old_token}, timeout=30)
        assert gone.status_code == 401
    finally:
        _stop(run.process)


def test_fresh_never_removes_a_folder_that_is_not_a_data_folder(tmp_path: Path) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    port, db_port = _free_ports(2)
    run = make_run(port, db_port, tmp_path, "FRESH=1")
    assert run.finish() == 2
    assert "is not an errortracking data folder" in run.text() and "nothing removed" in run.text(), run.text()
    assert precious.read_text() == "mine"


# A damaged, foreign or newer folder: one clear message, and the data left as it was.


@pytest.fixture
def written_folder(tmp_path: Path) -> Iterator[Path]:
    """A data folder holding a snapshot and a journal of a few writes after it."""
    data = tmp_path / "data"
    db_port = _free_ports(1)[0]
    run = store_only(db_port, data, {"ERRORTRACKING_DATA_COMPACT_BYTES": "1"})  # a snapshot after each write
    run.wait_ready()
    _stop(run.process)
    run = store_only(db_port, data)  # ... and journal lines after the last one
    run.wait_ready()
    client = _dynamodb(db_port)
    for n in range(3):
        client.put_item(TableName="errortracking", Item={"pk": {"S": f"probe#{n}"}, "sk": {"S": "probe"}})
    _stop(run.process)
    assert list(data.glob("snapshot-*.json.gz")) and (data / next(iter(_journals(data)))).stat().st_size
    yield data


def _journals(data: Path) -> list[str]:
    return [p.name for p in data.glob("journal-*.log")]


def _dynamodb(db_port: int) -> Any:
    import boto3

    return boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{db_port}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def _refused(data: Path) -> str:
    run = store_only(_free_ports(1)[0], data)
    code = run.finish()
    assert code == 2, run.text()
    text = run.text()
    assert "Traceback" not in text, text
    assert str(data) in text and "make run FRESH=1" in text and "DATA_DIR=" in text, text
    return text


def _files(data: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in data.iterdir() if p.name != "lock"}


def test_a_journal_cut_in_the_middle_of_its_last_line_loads_without_it(written_folder: Path) -> None:
    journal = written_folder / _journals(written_folder)[0]
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) - 40])  # a stop while the last write was on its way
    db_port = _free_ports(1)[0]
    run = store_only(db_port, written_folder)
    run.wait_ready()
    try:
        assert "an incomplete last write (never acknowledged) was dropped" in run.text(), run.text()
        client = _dynamodb(db_port)
        kept = [
            client.get_item(TableName="errortracking", Key={"pk": {"S": f"probe#{n}"}, "sk": {"S": "probe"}})
            for n in range(3)
        ]
        assert ["Item" in answer for answer in kept] == [True, True, False]
    finally:
        _stop(run.process)


def test_a_damaged_journal_line_is_refused_with_the_way_out(written_folder: Path) -> None:
    journal = written_folder / _journals(written_folder)[0]
    lines = journal.read_bytes().split(b"\n")
    at = next(n for n, line in enumerate(lines) if b"probe#0" in line)
    lines[at] = lines[at].replace(b"probe#0", b"probe#X")  # its checksum no longer matches
    journal.write_bytes(b"\n".join(lines))
    before = _files(written_folder)
    assert f"is damaged at line {at + 1} of" in _refused(written_folder)
    assert _files(written_folder) == before, "a refused folder must be left as it was"


def test_a_damaged_snapshot_is_refused_with_the_way_out(written_folder: Path) -> None:
    snapshot = next(written_folder.glob("snapshot-*.json.gz"))
    snapshot.write_bytes(snapshot.read_bytes()[:-100])
    before = _files(written_folder)
    assert "is damaged" in _refused(written_folder)
    assert _files(written_folder) == before


def test_a_folder_of_another_store_format_is_refused_not_emptied(written_folder: Path) -> None:
    (written_folder / "FORMAT").write_text(json.dumps({"format": 99, "written_by": "errortracking 9.0"}))
    before = _files(written_folder)
    text = _refused(written_folder)
    assert "errortracking 9.0 in store format 99; this version reads format 1" in text, text
    assert _files(written_folder) == before


def test_a_folder_that_is_not_a_data_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8")
    run = store_only(_free_ports(1)[0], tmp_path)
    assert run.finish() == 2
    assert "is not an errortracking data folder" in run.text() and "Traceback" not in run.text()


def test_the_folder_grows_with_the_data_not_with_the_writes(tmp_path: Path) -> None:
    """Rewriting the same 50 items 40 times: the journal is folded into a new snapshot whenever it
    outgrows the last one, so the folder stays a small multiple of the data, and a restart reads
    the last value of each item."""
    data = tmp_path / "data"
    db_port = _free_ports(1)[0]
    run = store_only(db_port, data, {"ERRORTRACKING_DATA_COMPACT_BYTES": str(64 << 10)})
    run.wait_ready()
    client = _dynamodb(db_port)
    payload = os.urandom(1000).hex()  # 2 KB an item that gzip cannot shrink much below 1 KB
    for round_ in range(40):
        for n in range(50):
            item = {"pk": {"S": f"probe#{n}"}, "sk": {"S": "probe"}, "round": {"N": str(round_)}, "v": {"S": payload}}
            client.put_item(TableName="errortracking", Item=item)
    _stop(run.process)
    written = 40 * 50 * 2000
    folder = sum(p.stat().st_size for p in data.iterdir())
    assert folder < written / 10, f"{folder:,} bytes for {written:,} bytes written"
    assert len(list(data.glob("snapshot-*.json.gz"))) == 1 and len(_journals(data)) == 1

    run = store_only(db_port, data)
    run.wait_ready()
    try:
        client = _dynamodb(db_port)
        rounds = {
            client.get_item(TableName="errortracking", Key={"pk": {"S": f"probe#{n}"}, "sk": {"S": "probe"}})["Item"][
                "round"
            ]["N"]
            for n in range(50)
        }
        assert rounds == {"39"}
    finally:
        _stop(run.process)


def test_the_kms_key_survives_so_stored_sentry_tokens_still_decrypt(tmp_path: Path) -> None:
    import boto3

    data = tmp_path / "data"
    db_port = _free_ports(1)[0]
    endpoint: dict[str, Any] = {
        "endpoint_url": f"http://127.0.0.1:{db_port}",
        "region_name": "us-east-1",
        "aws_access_key_id": "local",
        "aws_secret_access_key": "local",
    }
    run = store_only(db_port, data)
    run.wait_ready()
    blob = boto3.client("kms", **endpoint).encrypt(KeyId="alias/errortracking", Plaintext=b"sntrys_secret")
    _stop(run.process)
    run = store_only(db_port, data)
    run.wait_ready()
    try:
        plain = boto3.client("kms", **endpoint).decrypt(CiphertextBlob=blob["CiphertextBlob"])["Plaintext"]
        assert plain == b"sntrys_secret"
    finally:
        _stop(run.process)


def test_a_snapshot_holds_the_items_as_dynamodb_json(written_folder: Path) -> None:
    """The snapshot is readable without this code: gzip'd JSON, items in DynamoDB's own format."""
    snapshot = json.loads(gzip.decompress(next(written_folder.glob("snapshot-*.json.gz")).read_bytes()))
    assert snapshot["format"] == 1
    (table,) = snapshot["tables"]
    assert table["name"] == "errortracking"
    assert all({"pk", "sk", "kind"} <= item.keys() for item in table["items"])
