"""`make bench`'s figures for `make run` itself: ingestion rate, warm requests, memory and restart,
as data grows in the data folder.

A real scripts/run_local.py (the API on chalice local, the embedded store on its data folder) is
filled through HTTP, as one SDK would (one envelope after another), with ``--events`` events over
``--errors`` errors and ``--keys`` client keys. Measured side by side in this one run:

- envelopes a second, first ones (empty store) vs last ones (full store);
- warm GETs of a page of the errors list and of one error, early (every error seen once, few
  events stored) vs on the full store;
- the store process's resident memory, empty and full;
- the data folder's size vs the data's own size (DynamoDB's item sizes);
- after SIGTERM, the seconds until the same folder is ready again, and what it found.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"ready (?P<url>\S+) token=(?P<token>\S+) project_id=(?P<project_id>\d+)")


def _start(folder: Path, port: int, db_port: int) -> tuple[subprocess.Popen[str], re.Match[str], float, list[str]]:
    from scripts.bench import own_env

    env = own_env()
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "scripts/run_local.py",
            "--port",
            str(port),
            "--db-port",
            str(db_port),
            "--data-dir",
            str(folder),
        ],
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        match = READY.search(line)
        if match:
            seconds = time.monotonic() - started
            # Keep draining, or the server blocks on a full pipe.
            import threading

            threading.Thread(target=lambda: [None for _ in process.stdout or []], daemon=True).start()
            return process, match, seconds, lines
    raise SystemExit("make run did not start:\n" + "".join(lines))


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _envelope(n: int, errors: int) -> bytes:
    event_id = uuid.uuid4().hex
    event = {
        "event_id": event_id,
        "platform": "python",
        "level": "error",
        "release": "shop@1.2.3",
        "user": {"id": str(n % 50)},
        "exception": {
            "values": [
                {
                    "type": f"KeyError{n % errors}",
                    "value": "'sku'",
                    "stacktrace": {
                        "frames": [
                            {"filename": "shop/cart.py", "function": f"add_{n % errors}", "lineno": 10, "in_app": True}
                        ]
                    },
                }
            ]
        },
    }
    payload = json.dumps(event).encode()
    header = json.dumps({"event_id": event_id}).encode()
    item = json.dumps({"type": "event", "length": len(payload)}).encode()
    return gzip.compress(header + b"\n" + item + b"\n" + payload + b"\n")


def _rate(session: requests.Session, url: str, headers: dict[str, str], first: int, count: int, errors: int) -> float:
    started = time.perf_counter()
    for n in range(first, first + count):
        answer = session.post(url, data=_envelope(n, errors), headers=headers, timeout=60)
        if answer.status_code != 200:
            raise SystemExit(f"an envelope was answered {answer.status_code}: {answer.text[:200]}")
    return count / (time.perf_counter() - started)


def _warm(session: requests.Session, url: str, headers: dict[str, str], count: int = 50) -> float:
    session.get(url, headers=headers, timeout=60)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        answer = session.get(url, headers=headers, timeout=60)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text
    return statistics.median(times)


def _data_bytes(db_port: int) -> tuple[int, int]:
    """(items, their DynamoDB size), read from the store (a scan: this is a benchmark, not a request path)."""
    import boto3

    from scripts.strict_store import item_size

    client = boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{db_port}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    items = size = 0
    for page in client.get_paginator("scan").paginate(TableName="errortracking"):
        for item in page["Items"]:
            items += 1
            size += item_size(item)
    return items, size


def _reads(session: requests.Session, api: str, headers: dict[str, str], count: int) -> None:
    """``count`` GETs over what a person and a script read: lists, pages, details, keys, settings."""
    ids = [error["id"] for error in session.get(f"{api}/errors?per_page=100", headers=headers, timeout=60).json()]
    paths = ["/errors", "/errors?sort=frequency", "/errors?status=resolved", "/client_keys", "/settings"]
    paths += [f"/errors/{i}" for i in ids[:20]]
    for n in range(count):
        answer = session.get(api + paths[n % len(paths)], headers=headers, timeout=60)
        if answer.status_code != 200:
            raise SystemExit(f"a read was answered {answer.status_code}: {answer.text[:200]}")


def measure(events: int, errors: int, keys: int, total_requests: int = 0, sample: int = 300) -> dict[str, Any]:
    from scripts.bench import _free_port

    folder = Path(tempfile.mkdtemp(prefix="errortracking-bench-"))
    port, db_port = _free_port(), _free_port()
    process, ready, first_start, _ = _start(folder, port, db_port)
    base, token = ready["url"], ready["token"]
    headers = {"PRIVATE-TOKEN": token}
    api = f"{base}/api/v4/projects/{ready['project_id']}/error_tracking"
    session = requests.Session()
    session.put(f"{api}/settings", headers=headers, data={"active": "true", "integrated": "true"}, timeout=60)
    for _ in range(keys - 1):
        session.post(f"{api}/client_keys", headers=headers, timeout=60)
    public_key = session.get(f"{api}/client_keys", headers=headers, timeout=60).json()[0]["public_key"]
    sentry = {
        "X-Sentry-Auth": f"Sentry sentry_key={public_key}",
        "Content-Encoding": "gzip",
        "Content-Type": "application/x-sentry-envelope",
    }
    ingest = f"{base}/errortracking/api/v1/projects/api/1/envelope/"
    empty_rss = _rss_mb(process.pid)
    first_rate = _rate(session, ingest, sentry, 0, sample, errors)
    # The same pages early (every error seen, few events) and full: a page of an empty store is
    # cheaper only because it holds nothing.
    early_list = _warm(session, f"{api}/errors", headers)
    one_error = session.get(f"{api}/errors", headers=headers, timeout=60).json()[0]["id"]
    early_detail = _warm(session, f"{api}/errors/{one_error}", headers)
    _rate(session, ingest, sentry, sample, events - 2 * sample, errors)
    last_rate = _rate(session, ingest, sentry, events - sample, sample, errors)
    full_list = _warm(session, f"{api}/errors", headers)
    full_detail = _warm(session, f"{api}/errors/{one_error}", headers)
    # Requests so far: 4 warm series of 51, the settings PUT, the keys and the envelopes.
    made = 4 * 51 + 1 + keys + events
    _reads(session, api, headers, max(0, total_requests - made))
    made = max(made, total_requests)
    full_rss = _rss_mb(process.pid)
    items, data_size = _data_bytes(db_port)
    _stop(process)
    folder_bytes = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    process, ready, restart, lines = _start(folder, port, db_port)
    found = next((line.strip() for line in lines if "resumed the store" in line), "")
    _stop(process)
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "events": events,
        "errors": errors,
        "keys": keys,
        "envelopes_per_second_empty": round(first_rate, 1),
        "envelopes_per_second_full": round(last_rate, 1),
        "target_per_second": 100,
        "errors_list_ms_early": round(early_list, 2),
        "errors_list_ms_full": round(full_list, 2),
        "error_detail_ms_early": round(early_detail, 2),
        "error_detail_ms_full": round(full_detail, 2),
        "warm_ratio_target": 2.0,
        "store_rss_mb_empty": round(empty_rss, 1),
        "store_rss_mb_full": round(full_rss, 1),
        "items": items,
        "data_bytes": data_size,
        "folder_bytes": folder_bytes,
        "folder_to_data": round(folder_bytes / data_size, 2),
        "folder_target": 3.0,
        "first_start_s": round(first_start, 1),
        "restart_s": round(restart, 1),
        "restart_target_s": 15.0,
        "restart_found": found,
        "requests_before_restart": made,
    }


def print_report(r: dict[str, Any]) -> None:
    print(
        f"\nmake run, {r['events']:,} events over {r['errors']} errors, {r['keys']} keys"
        " (one SDK, one envelope at a time)"
    )
    print(
        f"  envelopes/s: empty store {r['envelopes_per_second_empty']:.1f}, full {r['envelopes_per_second_full']:.1f}"
        f" (target >= {r['target_per_second']})"
    )
    print(
        f"  warm GET errors (a page of 20): early {r['errors_list_ms_early']:.1f} ms,"
        f" full {r['errors_list_ms_full']:.1f} ms;"
        f" GET one error: early {r['error_detail_ms_early']:.1f} ms, full {r['error_detail_ms_full']:.1f} ms"
        f" (target: full within {r['warm_ratio_target']}x)"
    )
    print(f"  store memory: empty {r['store_rss_mb_empty']:.0f} MB, full {r['store_rss_mb_full']:.0f} MB")
    print(
        f"  data folder {r['folder_bytes'] / 1e6:.1f} MB for {r['items']:,} items of {r['data_bytes'] / 1e6:.1f} MB:"
        f" {r['folder_to_data']:.2f}x (target <= {r['folder_target']}x)"
    )
    print(
        f"  restart to ready after {r['requests_before_restart']:,} requests: {r['restart_s']:.1f} s"
        f" (target <= {r['restart_target_s']:.0f} s); {r['restart_found']}"
    )


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--errors", type=int, default=200)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--requests", type=int, default=0, help="total requests before the restart (reads fill up)")
    args = parser.parse_args()
    report = measure(args.events, args.errors, args.keys, args.requests)
    print_report(report)
    print(json.dumps(report, indent=2))
