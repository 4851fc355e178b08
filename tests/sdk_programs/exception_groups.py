"""A batch import that fails as a whole, reported with sentry-sdk: ``ExceptionGroup``s, which only
Python's SDK sends (the other SDKs' programs have no such thing).

Run as ``python exception_groups.py`` with the DSN in ``SENTRY_DSN``. Both groups are raised from
the same place: one holds two different failures, the other the same failure twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import sentry_sdk


def parse_row() -> None:
    raise ValueError("bad row")


def parse_type() -> None:
    raise TypeError("bad type")


def import_batch(steps: list[Callable[[], None]]) -> None:
    failures: list[Exception] = []
    for step in steps:
        try:
            step()
        except (ValueError, TypeError) as exc:
            failures.append(exc)
    raise ExceptionGroup("batch failed", failures)


def report_batch(steps: list[Callable[[], None]]) -> None:
    try:
        import_batch(steps)
    except ExceptionGroup as group:
        sentry_sdk.capture_exception(group)


def main() -> None:
    sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], release=os.environ["SENTRY_RELEASE"], environment="e2e")
    report_batch([parse_row, parse_type])
    report_batch([parse_row, parse_row])
    sentry_sdk.flush(timeout=10)


if __name__ == "__main__":
    main()
