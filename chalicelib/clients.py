"""Every botocore client the service creates passes through ``instrument`` once: its calls are
counted for the request log (telemetry) and bounded by the request's deadline (budget)."""

from __future__ import annotations

import threading
import weakref
from typing import Any, TypeVar

from chalicelib import budget, telemetry

C = TypeVar("C")

# Weak, so that a client created after another was dropped is never mistaken for it (ids are reused).
_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()  # chalice local serves requests on threads


def instrument(client: C) -> C:
    if client in _instrumented:  # the models ask on every call: keep this path short
        return client
    with _lock:
        if client not in _instrumented:
            telemetry.watch(client)
            budget.guard(client)
            _instrumented.add(client)
    return client
