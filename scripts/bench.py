"""`make bench`: what each request costs, next to the floor no implementation can beat.

Every figure is measured in this one run beside its floor, and reported as a ratio, because the
machine is shared and noisy. Output: a table on stdout and bench.json.

1. Round trips per endpoint (DynamoDB and KMS calls, counted with a botocore hook), vs targets.
2. Cold start: a fresh interpreter without .pyc that imports app.py and serves one authenticated
   GET through the Lambda entry point, vs one that imports chalice and pynamodb and makes the same
   raw botocore calls; both against the embedded store in another process.
3. Warm latency per endpoint through the Lambda entry point (median and p99):
   a. against the embedded store in another process, vs the same raw botocore calls;
   b. against a zero-latency store (botocore answered from memory with recorded responses), vs the
      same raw calls answered the same way: what our own CPU adds.
4. Ingestion: envelopes a second on one core (3 KB gzip event, zero-latency store) vs decompressing
   and making the same calls raw; and what 1,000 events in one second of one error do to the
   hottest item (simulated clock, in-process store).
5. The Lambda bundle `make package` builds: its size, and cold starts from it under the Lambda
   runtime's Python, with and without the .pyc it ships, vs the floor from the same bundle.
6. `make run` itself as data grows: ingestion rate, warm requests, memory, data folder size and
   restart time with 10,000 events stored (scripts/bench_local.py).
7. The bill: dollars per million events of each kind and per million API requests, and per month
   at rest, from the request units DynamoDB would bill for what was sent (scripts/bench_costs.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import io
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
READY = re.compile(r"ready (?P<url>\S+) token=(?P<token>\S+) project_id=(?P<project_id>\d+)")
TARGETS = {
    "GET settings": 2,
    "PUT settings": 3,
    "PATCH settings": 3,
    "GET client_keys": 3,
    "POST client_keys": 4,
    "DELETE client_keys/:key_id": 3,
}
Call = tuple[str, str, dict[str, Any]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def own_env() -> dict[str, str]:
    """This environment without the store endpoints and service settings a started server sets itself."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ENDPOINT_URL", "ERRORTRACKING_"))}


@contextmanager
def embedded_store() -> Iterator[tuple[str, str]]:
    """The seeded embedded store in another process: (endpoint, admin token)."""
    port = _free_port()
    env = own_env()
    process = subprocess.Popen(
        [sys.executable, "scripts/run_local.py", "--store-only", "--memory", "--db-port", str(port)],
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            match = READY.search(line)
            if match:
                yield match["url"], match["token"]
                return
        raise SystemExit("the embedded store did not start")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# Driving the app through its Lambda entry point, as API Gateway does.


def lambda_event(
    method: str,
    path: str,
    token: str | None,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    from chalice.local import LambdaEventConverter, RouteMatcher

    from app import app

    all_headers = {"host": "errors.example.test", **(headers or {})}
    if token:
        all_headers["PRIVATE-TOKEN"] = token
    if body and "content-type" not in {k.lower() for k in all_headers}:
        all_headers["Content-Type"] = "application/x-www-form-urlencoded"
    event: dict[str, Any] = LambdaEventConverter(
        RouteMatcher(list(app.routes)), app.api.binary_types
    ).create_lambda_event(
        method, path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""), all_headers, body
    )
    return event


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    from chalice.local import LambdaContext

    from app import app

    response: dict[str, Any] = app(event, LambdaContext("api_handler", 1024))
    return response


@contextmanager
def recording(skip: Callable[[Any], bool] | None = None) -> Iterator[list[Call]]:
    """Every AWS call made inside the block: (service, operation, params); none of a client
    ``skip`` says is not the service's (the strict layer's own reads)."""
    from botocore.client import BaseClient

    calls: list[Call] = []
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def record(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if skip is None or not skip(self):
            calls.append((self.meta.service_model.service_name, operation, params))
        return original(self, operation, params)

    BaseClient._make_api_call = record  # type: ignore[attr-defined]
    try:
        yield calls
    finally:
        BaseClient._make_api_call = original  # type: ignore[attr-defined]


_RAW_CLIENTS: dict[str, Any] = {}


def raw_client(service: str) -> Any:
    if service not in _RAW_CLIENTS:
        import botocore.session

        _RAW_CLIENTS[service] = botocore.session.get_session().create_client(service, region_name="us-east-1")
    return _RAW_CLIENTS[service]


def replay(calls: list[Call], _: bytes = b"") -> None:
    """The floor: the same calls, made directly with botocore (after whatever work is passed in)."""
    for service, operation, params in calls:
        # A replayed conditional write may fail its condition: still one round trip.
        with contextlib.suppress(Exception):
            raw_client(service)._make_api_call(operation, params)


class Endpoint:
    def __init__(
        self,
        name: str,
        make_event: Callable[[], dict[str, Any]],
        ok: int,
        after: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.name, self.make_event, self.ok, self.after = name, make_event, ok, after

    failures: ClassVar[Counter[str]] = Counter()

    def call(self) -> dict[str, Any]:
        response = invoke(self.make_event())
        if response["statusCode"] != self.ok:  # reported beside the figures, not fatal to the run
            Endpoint.failures[f"{self.name}: {response['statusCode']}"] += 1
        elif self.after:
            self.after(response)
        return response


def endpoints(token: str, project: str) -> list[Endpoint]:
    settings = f"/api/v4/projects/{project}/error_tracking/settings"
    keys = f"/api/v4/projects/{project}/error_tracking/client_keys"
    created: list[int] = []

    def keep(response: dict[str, Any]) -> None:  # every key POST creates, DELETE deletes
        created.append(json.loads(response["body"])["id"])

    def delete_event() -> dict[str, Any]:
        if not created:
            keep(invoke(lambda_event("POST", keys, token)))
        return lambda_event("DELETE", f"{keys}/{created.pop()}", token)

    return [
        Endpoint("GET settings", lambda: lambda_event("GET", settings, token), 200),
        Endpoint("PUT settings", lambda: lambda_event("PUT", settings, token, b"active=true&integrated=true"), 200),
        Endpoint("PATCH settings", lambda: lambda_event("PATCH", settings, token, b"active=true"), 200),
        Endpoint("GET client_keys", lambda: lambda_event("GET", keys, token), 200),
        Endpoint("POST client_keys", lambda: lambda_event("POST", keys, token), 201, keep),
        Endpoint("DELETE client_keys/:key_id", delete_event, 200),
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """The app's JSON request lines go where Lambda's would (a fast pipe), not onto this table."""
    saved, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115
    try:
        yield
    finally:
        sys.stdout.close()
        sys.stdout = saved


def timed(run: Callable[[], Any], count: int) -> list[float]:
    times = []
    with quiet_stdout():
        for _ in range(count):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1000)
    return times


# 1. Round trips


def measure_round_trips(token: str) -> dict[str, Any]:
    results = {}
    for ref in ("1", "demo%2Ferrors"):
        for endpoint in endpoints(token, ref):
            if endpoint.name == "DELETE client_keys/:key_id":
                event = endpoint.make_event()  # creates the key to delete, uncounted
                with recording() as calls:
                    invoke(event)
            else:
                with recording() as calls:
                    endpoint.call()
            name = endpoint.name + (" (path id)" if ref != "1" else "")
            target = TARGETS[endpoint.name] + (1 if ref != "1" else 0)
            results[name] = {"calls": len(calls), "target": target, "ops": [op for _, op, _ in calls]}
    return results


# 2. Cold start

COLD_OURS = """
import time, json
start = time.perf_counter()
import app
from chalice.local import LambdaContext
event = {event!r}
response = app.app(event, LambdaContext("api_handler", 1024))
assert response["statusCode"] == 200, response
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""

COLD_FLOOR = """
import time, json
start = time.perf_counter()
import chalice.app, pynamodb.models, botocore.session
client = botocore.session.get_session().create_client("dynamodb", region_name="us-east-1")
for operation, params in {calls!r}:
    client._make_api_call(operation, params)
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""


def reported_ms(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Milliseconds a fresh interpreter reports on its last line (``{"seconds": ...}``)."""
    output = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    return float(json.loads(output.strip().splitlines()[-1])["seconds"]) * 1000


def cold_run(code: str, env: dict[str, str], cwd: Path = ROOT, *flags: str) -> float:
    """Milliseconds ``code`` reports in a fresh interpreter with a fresh pycache (nothing precompiled)."""
    with tempfile.TemporaryDirectory() as cache:
        return reported_ms([sys.executable, *flags, "-X", f"pycache_prefix={cache}", "-c", code], cwd, env)


def measure_cold_start(token: str, store: str, runs: int) -> dict[str, Any]:
    event = lambda_event("GET", "/api/v4/projects/1/error_tracking/settings", token)
    with recording() as calls:
        invoke(event)
    dynamo = [(op, params) for service, op, params in calls if service == "dynamodb"]
    env = {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": store, "AWS_ENDPOINT_URL_KMS": store, "PYTHONPATH": str(ROOT)}
    ours, floor = [], []
    for _ in range(runs):  # interleaved, so both see the same machine
        ours.append(cold_run(COLD_OURS.format(event=event), env))
        floor.append(cold_run(COLD_FLOOR.format(calls=dynamo), env))
    return {
        "ours_ms": statistics.median(ours),
        "floor_ms": statistics.median(floor),
        "ratio": statistics.median(ours) / statistics.median(floor),
        "target": 1.2,
    }


# 3a. Warm latency against the embedded store


def side_by_side(ours: list[float], floor: list[float]) -> dict[str, float]:
    """Median and p99 of both timings, in milliseconds."""
    return {
        "ours_median_ms": statistics.median(ours),
        "ours_p99_ms": percentile(ours, 0.99),
        "floor_median_ms": statistics.median(floor),
        "floor_p99_ms": percentile(floor, 0.99),
    }


def measure_warm(token: str, count: int) -> dict[str, Any]:
    results = {}
    for endpoint in endpoints(token, "1"):
        event = endpoint.make_event()
        with recording() as calls:
            invoke(event)
        ours = timed(endpoint.call, count)
        floor = timed(lambda: replay(calls), count)
        results[endpoint.name] = {
            **side_by_side(ours, floor),
            "ratio": statistics.median(ours) / statistics.median(floor),
            "target": 1.1,
        }
    return results


# 3b. Zero-latency store


class _Raw(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        contents = self.read()
        while contents:
            yield contents
            contents = self.read()


@contextmanager
def on_every_client(event: str, handler: Callable[..., Any], *, first: bool = False) -> Iterator[None]:
    """Register ``handler`` for ``event`` on every botocore client that makes a call in the block."""
    from botocore.client import BaseClient

    hooked: dict[int, Any] = {}
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def hook(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if id(self) not in hooked:
            (self.meta.events.register_first if first else self.meta.events.register)(event, handler)
            hooked[id(self)] = self
        return original(self, operation, params)

    BaseClient._make_api_call = hook  # type: ignore[attr-defined]
    try:
        yield
    finally:
        BaseClient._make_api_call = original  # type: ignore[attr-defined]
        for client in hooked.values():
            client.meta.events.unregister(event, handler)


@contextmanager
def zero_latency(responses: dict[str, list[tuple[int, dict[str, str], bytes]]]) -> Iterator[None]:
    """botocore's HTTP layer answers from memory: each operation's recorded answers, in turn."""
    from botocore.awsrequest import AWSResponse

    turns: Counter[str] = Counter()

    def answer(request: Any, **kwargs: Any) -> AWSResponse:
        operation = request.headers.get("X-Amz-Target", b"")
        operation = (operation.decode() if isinstance(operation, bytes) else operation).split(".")[-1] or "kms"
        recorded = responses[operation]
        status, headers, body = recorded[turns[operation] % len(recorded)]
        turns[operation] += 1
        return AWSResponse(request.url, status, headers, _Raw(body))  # type: ignore[arg-type]

    with on_every_client("before-send", answer, first=True):
        yield


@contextmanager
def capture_responses() -> Iterator[dict[str, list[tuple[int, dict[str, str], bytes]]]]:

    captured: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}

    def keep(http_response: Any, model: Any, **_: Any) -> None:
        captured.setdefault(model.name, []).append(
            (http_response.status_code, dict(http_response.headers), http_response.content)
        )

    with on_every_client("after-call", keep):
        yield captured


def measure_zero_latency(token: str, count: int) -> dict[str, Any]:
    results = {}
    for endpoint in endpoints(token, "1"):
        event = endpoint.make_event()
        with capture_responses() as responses, recording() as calls:
            invoke(event)
        with zero_latency(responses):
            invoke(event)  # warm both paths once
            replay(calls)
            ours = timed(lambda: invoke(event), count)  # noqa: B023
            floor = timed(lambda: replay(calls), count)
        results[endpoint.name] = {
            **side_by_side(ours, floor),
            "added_ms": statistics.median(ours) - statistics.median(floor),
            "target_added_ms": 1.0,
        }
    return results


# 4. Ingestion


def sample_envelope(public_key: str) -> tuple[bytes, dict[str, str]]:
    frames = [
        {
            "filename": f"shop/module{i}.py",
            "function": f"handler_{i}",
            "module": f"shop.module{i}",
            "lineno": 10 + i,
            "in_app": True,
            "context_line": f"    result = step_{i}(order)",
            "vars": {"order": f"<Order {i}>", "attempt": str(i)},
        }
        for i in range(12)
    ]
    event = {
        "event_id": "0" * 32,
        "timestamp": "2026-11-26T11:52:38.511737Z",
        "platform": "python",
        "level": "error",
        "exception": {"values": [{"type": "KeyError", "value": "'sku'", "stacktrace": {"frames": frames}}]},
        "breadcrumbs": {"values": [{"category": "http", "message": f"GET /api/items/{i}"} for i in range(20)]},
        "release": "shop@1.2.3",
        "environment": "production",
        "user": {"id": "42"},
    }
    payload = json.dumps(event).encode()
    body = (
        json.dumps({"event_id": "0" * 32}).encode()
        + b"\n"
        + json.dumps({"type": "event", "length": len(payload)}).encode()
        + b"\n"
        + payload
        + b"\n"
    )
    return gzip.compress(body), {
        "X-Sentry-Auth": f"Sentry sentry_key={public_key}",
        "Content-Encoding": "gzip",
        "Content-Type": "application/x-sentry-envelope",
    }


def measure_ingestion(token: str, seconds: float) -> dict[str, Any]:
    keys = json.loads(invoke(lambda_event("GET", "/api/v4/projects/1/error_tracking/client_keys", token))["body"])
    body, headers = sample_envelope(keys[0]["public_key"])
    event = lambda_event("POST", "/errortracking/api/v1/projects/api/1/envelope", None, body, headers)
    with capture_responses() as responses, recording() as calls:
        invoke(event)
    # With the recorded answers every envelope reads a quiet error and rolls it up: the costlier path.
    with zero_latency(responses):
        invoke(event)

        def rate(run: Callable[[], Any]) -> float:
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                run()
                done += 1
            return done / (time.perf_counter() - start)

        with quiet_stdout():
            ours = rate(lambda: invoke(event))
            floor = rate(lambda: replay(calls, gzip.decompress(body)))
    return {
        "compressed_bytes": len(body),
        "envelopes_per_second": ours,
        "floor_per_second": floor,
        "ratio": floor / ours,
        "target_per_second": 1000,
        "calls": [op for _, op, _ in calls],
    }


def measure_hot_error(events: int = 1000) -> dict[str, Any]:
    """1,000 events of one error within one (simulated) second, on the in-process store."""
    import moto

    from chalicelib import accounts, bootstrap, models
    from chalicelib.ingest import ingestion, tracked_errors

    with moto.mock_aws():
        models.reset_connections()
        bootstrap.ensure_table()
        user = accounts.create_user("bench", admin=True)
        project = accounts.create_project("bench/hot")
        models.build(
            models.ErrorTrackingSetting,
            models.ErrorTrackingSetting.key(int(project.project_id)),
            project_id=int(project.project_id),
            enabled=True,
            integrated=True,
        ).save()
        from chalicelib import client_keys

        key = client_keys.create_key(project)
        body, _ = sample_envelope(key.public_key)
        del user
        start = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
        original_clock = ingestion.clock
        writes: Counter[str] = Counter()
        with recording() as calls:
            for n in range(events):
                ingestion.clock = lambda n=n: start + dt.timedelta(microseconds=n * 1_000_000 // events)  # type: ignore[misc]
                raw = gzip.decompress(body).replace(b"0" * 32, f"{n:032x}".encode())
                ingestion.ingest(
                    str(project.project_id),
                    raw,
                    auth_header=f"sentry_key={key.public_key}",
                    query_key=None,
                    content_encoding=None,
                )
        ingestion.clock = original_clock
        for _, operation, params in calls:
            if operation == "TransactWriteItems":
                for item in params["TransactItems"]:
                    ((_, body_),) = item.items()
                    target = body_.get("Key") or body_.get("Item")
                    writes[target["pk"]["S"].split("#")[0]] += 0  # ensure the kind is listed
                    writes[target["pk"]["S"]] += 1
            elif operation == "UpdateItem":
                writes[params["Key"]["pk"]["S"]] += 1
        error = next(iter(models.TrackedError.by_last_seen.query(f"{project.project_id}#unresolved")))
        assert isinstance(error, models.TrackedError)
        _, pending, _ = tracked_errors.latest_event_and_pending(error)
        item_writes = {k: v for k, v in writes.items() if "#" in k}
        hottest = max(item_writes.items(), key=lambda kv: kv[1])
        error_writes = sum(v for k, v in item_writes.items() if k.startswith("error#"))
        shard_writes = [v for k, v in item_writes.items() if k.startswith("errorshard#")]
        stored = sum(v for k, v in item_writes.items() if k.startswith("events#"))
        models.reset_connections()
    return {
        "events": events,
        "hottest_item": hottest[0].split("#")[0],
        "hottest_item_writes": hottest[1],
        "error_item_writes": error_writes,
        "max_shard_writes": max(shard_writes),
        "events_stored": stored,
        "counted": int(error.events_count) + pending,
        "dynamodb_item_limit_writes_per_second": 1000,
    }


# 5. The bundle


BUNDLE_CONTEXT = """
class Context:  # what Lambda passes; chalice.local is not in the bundle
    function_name, memory_limit_in_mb, aws_request_id = "api_handler", 1024, "1"
    invoked_function_arn = log_group_name = log_stream_name = ""
    def get_remaining_time_in_millis(self): return 10_000
"""

# What Lambda's python3.13 runtime itself provides (with its bytecode): the bundle leaves them out.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")


def measure_bundle(token: str, store: str, runs: int) -> dict[str, Any]:
    """`make package STAGE=prod` as a user runs it, then cold starts from its bundle.

    Under the Lambda runtime's Python when this machine has it: the shipped bundle (with the
    .pyc `make package` compiled), the same bundle without them (every module compiled at import,
    as before), and the floor (chalice, pynamodb and botocore imported from the same bundle, then
    the same raw calls), interleaved so all three see the same machine.
    """
    from scripts.package import runtime_python

    event = lambda_event("GET", "/api/v4/projects/1/error_tracking/settings", token)
    with recording() as calls:
        invoke(event)
    dynamo = [(op, params) for service, op, params in calls if service == "dynamodb"]
    python = runtime_python() or sys.executable
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            ["make", "--no-print-directory", "package", "STAGE=prod", f"PACKAGE_DIR={out}/pkg"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            env={**own_env(), "AWS_DEFAULT_REGION": "us-east-1"},
            timeout=600,
        )
        bundle = Path(out) / "pkg" / "deployment.zip"
        size = bundle.stat().st_size
        shipped, bare, runtime = (Path(out) / name for name in ("shipped", "bare", "runtime"))
        with zipfile.ZipFile(bundle) as archive:
            names = archive.namelist()
            archive.extractall(shipped)
            archive.extractall(bare, members=[n for n in names if "__pycache__/" not in n])
        site = Path(next(p for p in sys.path if p.endswith("site-packages")))
        for package in RUNTIME_PACKAGES:
            copy = shutil.copytree if (site / package).is_dir() else shutil.copy
            copy(site / package, runtime / package)
        subprocess.run([python, "-m", "compileall", "-q", "-j", "0", str(runtime)], capture_output=True, check=True)

        def cold(code: str, root: Path, *flags: str) -> float:
            path = f"import sys; sys.path[:0] = [{str(root)!r}, {str(runtime)!r}]\n"
            return reported_ms([python, "-I", *flags, "-c", path + BUNDLE_CONTEXT + code], Path(out))

        ours_code = COLD_OURS.format(event=event).replace(
            "from chalice.local import LambdaContext", "LambdaContext = lambda *_: Context()"
        )
        with_pyc, without_pyc, floor = [], [], []
        for _ in range(runs):
            with_pyc.append(cold(ours_code, shipped))
            without_pyc.append(cold(ours_code, bare, "-B"))  # -B: nothing written, so every run compiles
            floor.append(cold(COLD_FLOOR.format(calls=dynamo), shipped))
    return {
        "zip_bytes": size,
        "pyc_files": sum(n.endswith(".pyc") for n in names),
        "python": python,
        "runtime_python_found": python != sys.executable,
        "cold_ms_with_pyc": statistics.median(with_pyc),
        "cold_ms_without_pyc": statistics.median(without_pyc),
        "floor_ms": statistics.median(floor),
        "ratio": statistics.median(with_pyc) / statistics.median(floor),
        "target": 1.1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per endpoint, zero-latency store")
    # Each request there costs a few real round trips (~5-40 ms on a shared 2-core machine), so
    # 1,000 per endpoint alone could take 8 minutes: 300 keeps `make bench` near 5 minutes.
    parser.add_argument("--store-requests", type=int, default=300, help="requests per endpoint, embedded store")
    parser.add_argument("--cold-runs", type=int, default=5)
    # At ~30 envelopes a second, 10,000 take about six minutes of the run.
    parser.add_argument("--local-events", type=int, default=10_000, help="events into `make run` (0: skip)")
    # Reads at ~50 a second: 100,000 requests (the restart figure README reports) add ~30 minutes.
    parser.add_argument("--local-requests", type=int, default=0, help="requests into `make run` before its restart")
    parser.add_argument("--cost-events", type=int, default=200, help="events per ingestion scenario of the bill")
    parser.add_argument("--output", default="bench.json")
    args = parser.parse_args()
    started = time.monotonic()
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    report["hot_error"] = measure_hot_error()
    with embedded_store() as (store, token):
        os.environ.update(
            {
                "AWS_ENDPOINT_URL_DYNAMODB": store,
                "AWS_ENDPOINT_URL_KMS": store,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": "us-east-1",
                "ERRORTRACKING_PUBLIC_URL": "http://errors.example.test",
            }
        )
        from chalicelib import models

        models.reset_connections()
        invoke(lambda_event("PUT", "/api/v4/projects/1/error_tracking/settings", token, b"active=true&integrated=true"))
        report["round_trips"] = measure_round_trips(token)
        report["cold_start"] = measure_cold_start(token, store, args.cold_runs)
        report["warm_embedded_store"] = measure_warm(token, args.store_requests)
        report["warm_zero_latency"] = measure_zero_latency(token, args.requests)
        report["ingestion"] = measure_ingestion(token, 3.0)
        report["bundle"] = measure_bundle(token, store, args.cold_runs)
    from scripts import bench_costs

    report["costs"] = bench_costs.report(bench_costs.measure(args.cost_events), _cpu_ms(report))
    if args.local_events:
        from scripts import bench_local

        report["make_run"] = bench_local.measure(
            args.local_events, errors=200, keys=100, total_requests=args.local_requests
        )
    report["unexpected_answers"] = dict(Endpoint.failures)
    report["seconds"] = round(time.monotonic() - started, 1)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    return 0


def _cpu_ms(report: dict[str, Any]) -> dict[str, float]:
    """Our CPU per request as measured against the zero-latency store, for the bill's Lambda
    duration: ingestion from the envelope rate; an endpoint from its median (the errors endpoints
    are not measured there: the costliest measured endpoint stands in for them)."""
    measured = {name: row["ours_median_ms"] for name, row in report["warm_zero_latency"].items()}
    return {"ingest": 1000 / report["ingestion"]["envelopes_per_second"], "api": max(measured.values()), **measured}


def print_table(r: dict[str, Any]) -> None:
    print(f"\nmake bench, {r['date']}, {r['machine']}\n")
    print(f"{'round trips':44} {'calls':>6} {'target':>7}")
    for name, row in r["round_trips"].items():
        mark = "ok" if row["calls"] <= row["target"] else "MISS"
        print(f"  {name:42} {row['calls']:>6} {'<= ' + str(row['target']):>7}  {mark}")
    c = r["cold_start"]
    print(
        f"\ncold start (no .pyc, import + one GET)       ours {c['ours_ms']:7.0f} ms  floor {c['floor_ms']:7.0f} ms"
        f"  ratio {c['ratio']:.2f} (target <= {c['target']})"
    )
    for title, key in (
        ("warm, embedded store", "warm_embedded_store"),
        ("warm, zero-latency store", "warm_zero_latency"),
    ):
        print(f"\n{title:44} {'median':>8} {'p99':>8} {'floor':>8} {'floor p99':>9}")
        for name, row in r[key].items():
            extra = (
                f"ratio {row['ratio']:.2f} (<= {row['target']})"
                if "ratio" in row
                else f"+{row['added_ms']:.2f} ms (<= {row['target_added_ms']} ms)"
            )
            print(
                f"  {name:42} {row['ours_median_ms']:8.2f} {row['ours_p99_ms']:8.2f} {row['floor_median_ms']:8.2f}"
                f" {row['floor_p99_ms']:9.2f}  {extra}"
            )
    i = r["ingestion"]
    print(
        f"\ningestion ({i['compressed_bytes']} B gzip envelope)       {i['envelopes_per_second']:8.0f}/s"
        f"  floor {i['floor_per_second']:8.0f}/s  (target >= {i['target_per_second']}/s)"
    )
    h = r["hot_error"]
    print(
        f"1,000 events of one error in 1 s: hottest item {h['hottest_item']} {h['hottest_item_writes']} writes,"
        f" error item {h['error_item_writes']}, busiest shard {h['max_shard_writes']}, stored {h['events_stored']},"
        f" counted {h['counted']}"
    )
    b = r["bundle"]
    print(
        f"bundle ({b['zip_bytes'] / 1e6:.1f} MB zip, {b['pyc_files']} .pyc), cold start from it under {b['python']}:"
        f" {b['cold_ms_with_pyc']:.0f} ms with .pyc, {b['cold_ms_without_pyc']:.0f} ms without,"
        f" floor {b['floor_ms']:.0f} ms, ratio {b['ratio']:.2f} (target <= {b['target']})"
    )
    from scripts import bench_costs

    bench_costs.print_report(r["costs"])
    if r["unexpected_answers"]:
        print(f"unexpected answers during the run: {r['unexpected_answers']}")
    if "make_run" in r:
        from scripts import bench_local

        bench_local.print_report(r["make_run"])
    print(f"\n({r['seconds']} s; full figures in bench.json)")


if __name__ == "__main__":
    sys.exit(main())
