"""`make bench`'s bill: what an event, an API request and a month at rest cost on AWS, in dollars.

DynamoDB's request units are not estimated: every request the service sends in these scenarios
goes through the strict layer (scripts/strict_store.py) over the in-process store, which bills
it by DynamoDB's documented rules from the items actually sent and stored (writes per 1 KB,
doubled in transactions; reads per 4 KB, halved when eventually consistent; each index write a
put, a delete, or both, by the size of the index's copy). Time is simulated, so the roll-up rules
see the event rates each scenario names.

Lambda is billed per invocation and per millisecond of duration at the stage's memory. Duration
is not measurable here: it is the CPU the bench measured for the same request against the
zero-latency store, plus ROUND_TRIP_MS for each round trip the request made (DynamoDB answers in
single-digit milliseconds in-region; this is an assumption, printed with the figures).

Prices are us-east-1 list prices, written once in PRICES with their source and the day they were
copied; update them there.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

PRICES_COPIED = "2026-12-02"
# (dollars, unit, source): us-east-1 list prices.
PRICES: dict[str, tuple[float, str, str]] = {
    "dynamodb_write_unit": (
        0.625e-6,
        "write request unit, on-demand",
        "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    ),
    "dynamodb_read_unit": (
        0.125e-6,
        "read request unit, on-demand",
        "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    ),
    "dynamodb_storage": (0.25, "GB-month, Standard table class", "https://aws.amazon.com/dynamodb/pricing/on-demand/"),
    "dynamodb_pitr": (0.20, "GB-month of continuous backup", "https://aws.amazon.com/dynamodb/pricing/on-demand/"),
    "lambda_request": (0.20e-6, "invocation", "https://aws.amazon.com/lambda/pricing/"),
    "lambda_arm64": (0.0000133334, "GB-second, arm64", "https://aws.amazon.com/lambda/pricing/"),
    "api_gateway_rest": (3.50e-6, "REST API request, first 333 million", "https://aws.amazon.com/api-gateway/pricing/"),
    "api_gateway_http": (1.00e-6, "HTTP API request, first 300 million", "https://aws.amazon.com/api-gateway/pricing/"),
    "kms_request": (0.03e-4, "request", "https://aws.amazon.com/kms/pricing/"),
    "kms_key": (1.00, "customer managed key-month", "https://aws.amazon.com/kms/pricing/"),
    "cloudwatch_alarm": (0.10, "standard-resolution alarm-month", "https://aws.amazon.com/cloudwatch/pricing/"),
}
ROUND_TRIP_MS = 6.0  # assumed DynamoDB (or KMS) latency per round trip, seen from Lambda in-region
LAMBDA_MEMORY_MB = 1024  # the prod stage (.chalice/config.json)
ALARMS = 8  # the stack's CloudWatch alarms (a test counts them in the packaged template)
STORAGE_OVERHEAD = 100  # bytes DynamoDB adds to each item (and each index copy) for storage billing
INGESTION = ("new error", "quiet known error", "new user every event", "flood, 1,000 events/s")
TARGETS = {"quiet known error": 2.0, "new user every event": 3.0}  # dollars per million events (issue 14)


def price(name: str) -> float:
    return PRICES[name][0]


@dataclass
class Metered:
    """What one scenario's requests cost DynamoDB and how many calls they made, per request."""

    requests: int
    write_units: float
    read_units: float
    round_trips: float
    kms_calls: float
    where: dict[str, float]  # write units per request, by table or index
    seconds: float = 0.0  # how long the scenario took here (not a cost)

    def dynamodb_dollars(self) -> float:
        return self.write_units * price("dynamodb_write_unit") + self.read_units * price("dynamodb_read_unit")


def lambda_dollars(cpu_ms: float, round_trips: float) -> float:
    billed_ms = math.ceil(cpu_ms + round_trips * ROUND_TRIP_MS)  # billed per started millisecond
    return price("lambda_request") + billed_ms / 1000 * LAMBDA_MEMORY_MB / 1024 * price("lambda_arm64")


def per_million(metered: Metered, cpu_ms: float, entry: str = "api_gateway_rest") -> dict[str, float]:
    """Dollars per million such requests, all-in, by part; ``entry``: what the request comes in
    through ("api_gateway_rest", or "function_url", which bills nothing per request)."""
    parts = {
        "dynamodb": metered.dynamodb_dollars(),
        "lambda": lambda_dollars(cpu_ms, metered.round_trips),
        "entry": price(entry) if entry in PRICES else 0.0,
        "kms": metered.kms_calls * price("kms_request"),
    }
    parts = {name: dollars * 1e6 for name, dollars in parts.items()}
    parts["total"] = sum(parts.values())
    # Beside it, the same request through the REST API (as DSNs led before the Function URL).
    parts["total_via_rest_api"] = parts["total"] - parts["entry"] + price("api_gateway_rest") * 1e6
    return parts


# The scenarios, on the in-process store behind the strict layer


class _Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)

    def monotonic(self) -> float:
        return self.now.timestamp()


@contextmanager
def simulated(strict: Any) -> Iterator[_Clock]:
    """One simulated clock for ingestion and the strict layer, for the block."""
    from chalicelib.ingest import ingestion

    clock = _Clock()
    original, source = ingestion.clock, strict.time_source
    ingestion.clock = lambda: clock.now
    strict.time_source = clock.monotonic
    try:
        yield clock
    finally:
        ingestion.clock, strict.time_source = original, source


@contextmanager
def metered_store() -> Iterator[Any]:
    """moto in-process behind a strict layer that bills."""
    import moto

    from chalicelib import bootstrap, models
    from scripts.strict_store import StrictStore

    strict = StrictStore(conflicts=False)
    # moto answers only AWS's own endpoints: a local store's endpoint would be called instead.
    endpoints = {name: os.environ.pop(name) for name in _ENDPOINTS if name in os.environ}
    try:
        with moto.mock_aws():
            strict.install()
            try:
                bootstrap.init_store()
                yield strict
            finally:
                strict.uninstall()
    finally:
        os.environ.update(endpoints)
        models.reset_connections()


_ENDPOINTS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_KMS")


def _envelope(template: dict[str, Any], event_id: str, *, error: str, user: str) -> bytes:
    event = {**template, "event_id": event_id, "user": {"id": user}}
    event["exception"] = {"values": [{**template["exception"]["values"][0], "type": error}]}
    payload = json.dumps(event).encode()
    head = json.dumps({"event_id": event_id}).encode()
    item = json.dumps({"type": "event", "length": len(payload)}).encode()
    return gzip.compress(head + b"\n" + item + b"\n" + payload + b"\n")


def _run(strict: Any, requests: list[Callable[[], dict[str, Any]]], expect: int) -> Metered:
    from scripts.bench import recording

    strict.billed.clear()
    with recording(skip=strict.is_own) as own:
        for request in requests:
            answer = request()
            assert answer["statusCode"] == expect, answer
    where: Counter[str] = Counter()
    for (kind, name), units in strict.billed.items():
        if kind == "write":
            where[name] += units
    n = len(requests)
    return Metered(
        requests=n,
        write_units=sum(where.values()) / n,
        read_units=sum(u for (kind, _), u in strict.billed.items() if kind == "read") / n,
        round_trips=len(own) / n,
        kms_calls=sum(1 for c in own if c[0] == "kms") / n,
        where={name: units / n for name, units in sorted(where.items())},
    )


def measure(events: int = 200, flood: int = 1000, strict: Any = None) -> dict[str, Any]:
    """Request units and round trips per event for each ingestion scenario, and per request for
    each API endpoint; sizes of what is stored, for the bill at rest. On a fresh in-process store,
    or on the one ``strict`` (a StrictStore, installed) stands before."""
    if strict is None:
        with metered_store() as fresh:
            return measure(events, flood, fresh)
    from chalicelib import accounts
    from scripts.bench import invoke, lambda_event, sample_envelope

    results: dict[str, Any] = {}
    with simulated(strict) as clock:
        accounts.create_user("bench", admin=True)
        _, token = accounts.create_token("bench")
        project = accounts.create_project("bench/costs")
        pid = int(project.project_id)
        invoke(
            lambda_event(
                "PUT", f"/api/v4/projects/{pid}/error_tracking/settings", token, b"active=true&integrated=true"
            )
        )
        keys = json.loads(
            invoke(lambda_event("GET", f"/api/v4/projects/{pid}/error_tracking/client_keys", token))["body"]
        )
        public_key = keys[0]["public_key"]
        body, headers = sample_envelope(public_key)
        template = json.loads(gzip.decompress(body).split(b"\n")[2])
        path = f"/errortracking/api/v1/projects/api/{pid}/envelope"
        serial = iter(range(10**9))

        def send(error: str, user: str, step: float) -> Callable[[], dict[str, Any]]:
            def request() -> dict[str, Any]:
                clock.now += dt.timedelta(seconds=step)
                raw = _envelope(template, f"{next(serial):032x}", error=error, user=user)
                return invoke(lambda_event("POST", path, None, raw, headers))

            return request

        scenarios = {
            # every event the first of its error
            "new error": [send(f"NewError{n}", "42", 2.0) for n in range(events)],
            # one known error, three users, an event every 2 s: each one rolls up and is stored
            "quiet known error": [send("QuietError", f"user-{n % 3}", 2.0) for n in range(events)],
            # one error, every event from a user it has not met: an error meeting 1,000 users costs
            # the same per event, as users are counted by claims and the error item does not grow
            "new user every event": [send("UsersError", f"user-{n}", 2.0) for n in range(events)],
            # events of one error at 1,000 a second (``flood`` of them), ten users
            "flood, 1,000 events/s": [send("FloodError", f"user-{n % 10}", 0.001) for n in range(flood)],
        }
        for user in range(3):  # the error, and its three users, exist before its scenario
            send("QuietError", f"user-{user}", 2.0)()
        send("UsersError", "user-first", 2.0)()
        send("FloodError", "user-0", 2.0)()
        clock.now += dt.timedelta(seconds=10)
        for name, requests in scenarios.items():
            started = time.perf_counter()
            results[name] = _run(strict, requests, 200)
            results[name].seconds = time.perf_counter() - started
            clock.now += dt.timedelta(seconds=10)
            strict.settle(0.0)
        listed = json.loads(invoke(lambda_event("GET", f"/api/v4/projects/{pid}/error_tracking/errors", token))["body"])
        errors_path = f"/api/v4/projects/{pid}/error_tracking/errors"
        error = f"{errors_path}/{listed[0]['id']}"
        api: dict[str, tuple[str, str, bytes]] = {
            "GET errors": ("GET", errors_path, b""),
            "GET errors/:id": ("GET", error, b""),
            "GET errors/:id/events": ("GET", f"{error}/events", b""),
            "PUT errors/:id": ("PUT", error, b"status=unresolved"),
            "GET settings": ("GET", f"/api/v4/projects/{pid}/error_tracking/settings", b""),
            "GET client_keys": ("GET", f"/api/v4/projects/{pid}/error_tracking/client_keys", b""),
        }
        for name, (method, url, form) in api.items():
            event = lambda_event(method, url, token, form)

            def request(event: dict[str, Any] = event) -> dict[str, Any]:
                return invoke(event)

            results[name] = _run(strict, [request] * 20, 200)
        results["sizes"] = _stored_sizes(strict)
    return results


def _stored_sizes(strict: Any) -> dict[str, float]:
    """Average billed bytes of a stored event and of an error with its index copies (a scan: the
    bench's own look at the store, never a request path)."""
    from scripts.strict_store import item_size

    raw = strict._raw
    table = strict._table(raw.list_tables()["TableNames"][0])
    sizes: dict[str, list[int]] = {"event": [], "error": [], "eventid": []}
    pages = raw.get_paginator("scan").paginate(TableName=table.name)
    for page in pages:
        for item in page["Items"]:
            kind = item.get("kind", {}).get("S")
            if kind not in sizes:
                continue
            size = item_size(item) + STORAGE_OVERHEAD
            if kind == "error":
                for index in table.indexes:
                    copy = index.projected(item, table.keys)
                    if copy is not None:
                        size += item_size(copy) + STORAGE_OVERHEAD
            sizes[kind].append(size)
    return {kind: sum(found) / len(found) for kind, found in sizes.items() if found}


def at_rest(
    sizes: dict[str, float], events: int = 1_000_000, errors: int = 10_000, alarms: int = ALARMS
) -> dict[str, float]:
    """Dollars a month with ``events`` stored events and ``errors`` errors (their event id claims
    expire after 30 days; at most a month of them is held)."""
    stored = events * (sizes["event"] + sizes.get("eventid", 0)) + errors * sizes["error"]
    gb = stored / 1e9
    parts = {
        "storage": gb * price("dynamodb_storage"),
        "pitr": gb * price("dynamodb_pitr"),
        "kms_key": price("kms_key"),
        "alarms": alarms * price("cloudwatch_alarm"),
    }
    parts["gb"] = gb
    parts["total"] = parts["storage"] + parts["pitr"] + parts["kms_key"] + parts["alarms"]
    return parts


def report(measured: dict[str, Any], cpu_ms: dict[str, float]) -> dict[str, Any]:
    """The bill: ``measured`` priced with ``cpu_ms`` (request name -> our CPU per request)."""
    rows: dict[str, Any] = {}
    for name, metered in measured.items():
        if not isinstance(metered, Metered):
            continue
        cpu = cpu_ms.get(name) or cpu_ms["ingest" if name in INGESTION else "api"]
        rows[name] = {
            "write_units": round(metered.write_units, 2),
            "read_units": round(metered.read_units, 2),
            "round_trips": round(metered.round_trips, 2),
            "kms_calls": round(metered.kms_calls, 2),
            "write_units_by_table_or_index": {k: round(v, 2) for k, v in metered.where.items()},
            "cpu_ms": round(cpu, 2),
            # DSNs lead to the Function URL (scripts/package.py); the API is behind the REST API.
            "entry": "function_url" if name in INGESTION else "api_gateway_rest",
            "dollars_per_million": {
                k: round(v, 2)
                for k, v in per_million(
                    metered, cpu, "function_url" if name in INGESTION else "api_gateway_rest"
                ).items()
            },
            "target_per_million": TARGETS.get(name),
        }
    return {
        "prices_copied": PRICES_COPIED,
        "prices": {name: {"dollars": p, "per": unit, "source": src} for name, (p, unit, src) in PRICES.items()},
        "assumed_round_trip_ms": ROUND_TRIP_MS,
        "lambda_memory_mb": LAMBDA_MEMORY_MB,
        "per_million": rows,
        "sizes_bytes": {k: round(v) for k, v in measured["sizes"].items()},
        "at_rest_month": {k: round(v, 2) for k, v in at_rest(measured["sizes"]).items()},
    }


def print_report(bill: dict[str, Any]) -> None:
    print(
        f"\ndollars per million (us-east-1 list prices of {bill['prices_copied']}; Lambda arm64"
        f" {bill['lambda_memory_mb']} MB, {bill['assumed_round_trip_ms']:.0f} ms assumed per round trip)"
    )
    columns = (("WRU", 6), ("RRU", 6), ("trips", 6), ("DynamoDB", 9), ("Lambda", 7), ("entry", 7), ("total", 7))
    print(f"  {'':30}" + "".join(f" {c:>{width}}" for c, width in columns) + "  via REST API")
    for name, row in bill["per_million"].items():
        d = row["dollars_per_million"]
        target = f"  (target <= {row['target_per_million']:.0f})" if row["target_per_million"] else ""
        print(
            f"  {name:30} {row['write_units']:6.1f} {row['read_units']:6.1f} {row['round_trips']:6.1f}"
            f" {d['dynamodb']:9.2f} {d['lambda']:7.2f} {d['entry']:7.2f} {d['total']:7.2f}"
            f" {d['total_via_rest_api']:13.2f}{target}"
        )
    print("  (entry: the Function URL for events, API Gateway's REST API for the API)")
    r = bill["at_rest_month"]
    print(
        f"  at rest, 1,000,000 events and 10,000 errors: {r['gb']:.2f} GB, ${r['total']:.2f}/month"
        f" (storage {r['storage']:.2f}, PITR {r['pitr']:.2f}, KMS key {r['kms_key']:.2f}, alarms {r['alarms']:.2f})"
    )
