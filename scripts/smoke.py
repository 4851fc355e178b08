"""Smoke test a running service: every endpoint once, a PASS/FAIL line each.

    python scripts/smoke.py BASE_URL ADMIN_TOKEN [--project ID_OR_PATH]

BASE_URL is what clients use (http://127.0.0.1:8000, or the deployed https://host). The project
(default: demo/errors, as `make run` seeds it) gets its error tracking switched on and one client
key created and deleted: point it at a project kept for smoke tests. Standard library only, so it
runs wherever Python does. Exit status 0 when every check passes.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


def call(base: str, method: str, path: str, token: str | None, form: str | None = None) -> Answer:
    data = form.encode() if form is not None else None
    request = urllib.request.Request(base.rstrip("/") + "/api/v4" + path, data=data, method=method)
    if token is not None:
        request.add_header("PRIVATE-TOKEN", token)
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, dict(error.headers), error.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return Answer(status, {k.lower(): v for k, v in headers.items()}, body)


def run(base: str, token: str, project: str) -> list[tuple[str, bool, str]]:
    pid = project if project.isdigit() else quote(project, safe="")
    settings, keys = f"/projects/{pid}/error_tracking/settings", f"/projects/{pid}/error_tracking/client_keys"
    results: list[tuple[str, bool, str]] = []
    state: dict[str, Any] = {}

    def check(name: str, answer: Callable[[], Answer], ok: Callable[[Answer], bool]) -> Answer | None:
        try:
            got = answer()
        except OSError as error:
            results.append((name, False, f"no answer: {error}"))
            return None
        passed = ok(got)
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
    check(
        "GET client_keys",
        lambda: call(base, "GET", keys + "?per_page=100", token),
        lambda a: (
            a.status == 200
            and "x-total" in a.headers
            and any(k["id"] == state.get("key", {}).get("id") for k in a.body)
        ),
    )
    key_id = state.get("key", {}).get("id", 0)
    check(
        "DELETE client_keys/:key_id",
        lambda: call(base, "DELETE", f"{keys}/{key_id}", token),
        lambda a: a.status == 200 and a.body["id"] == key_id,
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
