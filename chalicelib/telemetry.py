"""One structured JSON log line per request, and the count of AWS calls it made.

The line carries the request id, route, status, latency, AWS round trips and user id, never a
token or a body. Round trips are counted by a botocore ``before-call`` hook on the service's own
clients, so the count is the number of DynamoDB and KMS requests actually sent.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from chalice.app import Request, Response

# These loggers write whole requests and responses at DEBUG: item keys (public keys), KMS
# plaintext (Sentry tokens), signing material. Their DEBUG lines are dropped even when someone
# turns DEBUG on, so no secret can reach CloudWatch through them.
_WIRE_LOGGERS = ("botocore.endpoint", "botocore.parsers", "botocore.auth", "pynamodb.connection.base")


def _not_debug(record: logging.LogRecord) -> bool:
    return record.levelno > logging.DEBUG


for _name in _WIRE_LOGGERS:
    logging.getLogger(_name).addFilter(_not_debug)

_calls: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("aws_calls", default=None)
_user_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("user_id", default=None)


def _count(**_: Any) -> None:
    counter = _calls.get()
    if counter is not None:
        counter[0] += 1


def watch(client: Any) -> None:
    """Count the calls ``client`` makes (clients.instrument calls this once per client)."""
    client.meta.events.register("before-call", _count)


def in_request() -> bool:
    return _calls.get() is not None


def set_user(user_id: int) -> None:
    _user_id.set(user_id)


def middleware(request: Request, get_response: Callable[[Request], Response]) -> Response:
    started = time.perf_counter()
    counter = [0]
    calls_token = _calls.set(counter)
    user_token = _user_id.set(None)
    response: Response | None = None
    try:
        response = get_response(request)
        return response
    finally:
        context = request.context or {}
        line = {
            "request_id": context.get("requestId"),
            "method": request.method,
            "route": request.path,
            "status": response.status_code if response is not None else 500,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "aws_calls": counter[0],
            "user_id": _user_id.get(),
        }
        _calls.reset(calls_token)
        _user_id.reset(user_token)
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
