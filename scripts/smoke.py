"""Smoke test a running service: every endpoint once, and one event end to end, a PASS/FAIL line each.

    python scripts/smoke.py BASE_URL ADMIN_TOKEN [--project ID_OR_PATH]

BASE_URL is what clients use (http://127.0.0.1:8000, the deployed https://host, or the
https://<id>.execute-api.<region>.amazonaws.com/api that `make deploy` prints). The project
(default: demo/errors, as `make run` seeds it) gets its error tracking switched on and one client
key created and deleted; then an event is sent as a Sentry SDK sends it (gzip envelope, to the URL
the SDK derives from the DSN of the project's other active key), found in the errors list, read
(detail, events) and resolved. Each run leaves one resolved error of its own, and the project with
error tracking on and its key working: point it at a project kept for smoke tests. Standard library
only, so it runs wherever Python does. Exit status 0 when every check passes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

# The errors list reads a DynamoDB index, which follows a write within about a second (eventually
# consistent): a just-ingested error is looked for again until it is listed, this long at most.
LISTED_WITHIN = 10.0
POLL_EVERY = 0.25
ENVELOPE_TYPE = "application/x-sentry-envelope"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


def send(method: str, url: str, headers: dict[str, str], data: bytes | None = None) -> Answer:
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, got, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, got, raw = error.code, dict(error.headers), error.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return Answer(status, {k.lower(): v for k, v in got.items()}, body)


def call(base: str, method: str, path: str, token: str | None, form: str | None = None) -> Answer:
    headers = {} if token is None else {"PRIVATE-TOKEN": token}
    if form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    return send(method, base.rstrip("/") + "/api/v4" + path, headers, form.encode() if form is not None else None)


def envelope_url(dsn: str) -> str:
    """Where a Sentry SDK posts envelopes for ``dsn``: {scheme}://{host}{path}/api/{project_id}/envelope/."""
    parts = urlsplit(dsn)
    path, _, project_id = parts.path.rstrip("/").rpartition("/")
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{path}/api/{project_id}/envelope/"


def post_event(dsn: str, event: dict[str, Any]) -> Answer:
    """``event`` as sentry-sdk sends it: an envelope, gzip, the key in X-Sentry-Auth."""
    payload = json.dumps(event).encode()
    envelope = b"\n".join(
        [
            json.dumps({"event_id": event["event_id"], "sent_at": event["timestamp"]}).encode(),
            json.dumps({"type": "event", "length": len(payload)}).encode(),
            payload,
        ]
    )
    headers = {
        "Content-Type": ENVELOPE_TYPE,
        "Content-Encoding": "gzip",
        "X-Sentry-Auth": f"Sentry sentry_key={urlsplit(dsn).username}, sentry_version=7, "
        "sentry_client=errortracking-smoke/1.0",
    }
    return send("POST", envelope_url(dsn), headers, gzip.compress(envelope))


def smoke_event(run: str) -> dict[str, Any]:
    """An exception event; its transaction (the culprit, which errors are grouped by) is this run's
    own, so each run's event makes a new error rather than reopening an old one."""
    return {
        "event_id": uuid.uuid4().hex,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": "python",
        "level": "error",
        "transaction": f"smoke {run}",
        "sdk": {"name": "errortracking.smoke", "version": "1.0"},
        "exception": {
            "values": [
                {
                    "type": "SmokeTestError",
                    "value": f"smoke check {run}",
                    "mechanism": {"type": "generic", "handled": True},
                    "stacktrace": {
                        "frames": [
                            {"function": "run", "module": "smoke", "filename": "scripts/smoke.py", "in_app": True}
                        ]
                    },
                }
            ]
        },
    }


def run(base: str, token: str, project: str) -> list[tuple[str, bool, str]]:
    pid = project if project.isdigit() else quote(project, safe="")
    settings, keys = f"/projects/{pid}/error_tracking/settings", f"/projects/{pid}/error_tracking/client_keys"
    errors = f"/projects/{pid}/error_tracking/errors"
    results: list[tuple[str, bool, str]] = []
    state: dict[str, Any] = {}

    def holds(ok: Callable[[Answer], bool], got: Answer) -> bool:
        try:
            return bool(ok(got))
        except (KeyError, TypeError, IndexError, AttributeError, ValueError):  # not the body expected
            return False

    def check(
        name: str, answer: Callable[[], Answer], ok: Callable[[Answer], bool], *, within: float = 0.0
    ) -> Answer | None:
        """One check; with ``within``, asked again until it holds or that many seconds have passed."""
        deadline = time.monotonic() + within
        try:
            got = answer()
            while not holds(ok, got) and time.monotonic() < deadline:
                time.sleep(POLL_EVERY)
                got = answer()
        except OSError as error:
            results.append((name, False, f"no answer: {error}"))
            return None
        passed = holds(ok, got)
        results.append((name, passed, f"{got.status} {json.dumps(got.body)[:200]}"))
        return got

    check("GET /user", lambda: call(base, "GET", "/user", token), lambda a: a.status == 200 and "username" in a.body)
    check("GET /user without token", lambda: call(base, "GET", "/user", None), lambda a: a.status == 401)
    check(
        "PUT settings",
        lambda: call(base, "PUT", settings, token, "active=true&integrated=true"),
        lambda a: a.status == 200 and a.body["active"] is True,
    )
    check(
        "PATCH settings",
        lambda: call(base, "PATCH", settings, token, "active=true"),
        lambda a: a.status == 200 and a.body["active"] is True,
    )
    check(
        "GET settings",
        lambda: call(base, "GET", settings, token),
        lambda a: a.status == 200 and list(a.body)[:2] == ["active", "project_name"],
    )
    created = check(
        "POST client_keys",
        lambda: call(base, "POST", keys, token),
        lambda a: a.status == 201 and str(a.body.get("public_key", "")).startswith("glet_"),
    )
    if created is not None and created.status == 201:
        state["key"] = created.body
    key_id = state.get("key", {}).get("id", 0)
    listed = check(
        "GET client_keys",
        lambda: call(base, "GET", keys + "?per_page=100", token),
        lambda a: a.status == 200 and "x-total" in a.headers and any(k["id"] == key_id for k in a.body),
    )
    # Events go in with a key this run does not delete: the project's own (PUT settings made one
    # if it had none), so the project is left with a working key.
    if listed is not None and listed.status == 200 and isinstance(listed.body, list):
        state["dsn"] = next((k["sentry_dsn"] for k in listed.body if k["active"] and k["id"] != key_id), None)
    check(
        "DELETE client_keys/:key_id",
        lambda: call(base, "DELETE", f"{keys}/{key_id}", token),
        lambda a: a.status == 200 and a.body["id"] == key_id,
    )

    run_id = uuid.uuid4().hex[:12]
    event = smoke_event(run_id)
    title = f"SmokeTestError: smoke check {run_id}"
    dsn = state.get("dsn")
    if dsn is None:
        results.append(("POST envelope to the DSN", False, "no active client key besides the one deleted"))
    else:
        check(
            "POST envelope to the DSN",
            lambda: post_event(dsn, event),
            lambda a: a.status == 200 and a.body == {"id": event["event_id"]},
        )
    found = check(
        "GET errors (the event's error listed)",
        lambda: call(base, "GET", f"{errors}?search={run_id}", token),
        lambda a: a.status == 200 and any(e["title"] == title for e in a.body),
        within=LISTED_WITHIN,
    )
    if found is not None and found.status == 200 and isinstance(found.body, list):
        state["error_id"] = next((e["id"] for e in found.body if e.get("title") == title), 0)
    error = f"{errors}/{state.get('error_id', 0)}"
    check(
        "GET errors/:error_id",
        lambda: call(base, "GET", error, token),
        lambda a: a.status == 200 and a.body["title"] == title and a.body["count"] == 1,
    )
    check(
        "GET errors/:error_id/events",
        lambda: call(base, "GET", error + "/events", token),
        lambda a: a.status == 200 and [e["event_id"] for e in a.body] == [event["event_id"]],
    )
    check(
        "PUT errors/:error_id status=resolved",
        lambda: call(base, "PUT", error, token, "status=resolved"),
        lambda a: a.status == 200 and a.body["status"] == "resolved",
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("token")
    parser.add_argument("--project", default="demo/errors")
    args = parser.parse_args(argv)
    results = run(args.base_url, args.token, args.project)
    for name, passed, detail in results:
        print(f"{'PASS' if passed else 'FAIL'}  {name}  ({detail})")
    failed = sum(1 for _, passed, _ in results if not passed)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
