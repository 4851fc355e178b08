"""The time one request may spend waiting for the store, so that it answers 503 before Lambda gives up.

Our Lambda is stopped after 10 s (``lambda_timeout`` in .chalice/config.json). botocore's and
PynamoDB's defaults would wait far longer: 15 s to connect, 30 to 60 s for an answer, then seconds
of backoff before each retry. A request stuck in them ends in a bare 504 from API Gateway, with no
``Retry-After`` and a full timeout billed. So every attempt is bounded (CONNECT_TIMEOUT to connect,
READ_TIMEOUT per socket read), no attempt starts once the request has spent BUDGET, and no backoff
is slept that would end after it: the call raises DeadlineExceeded instead, which the authorizer
middleware answers like any store outage (503 with ``Retry-After``). An attempt started just before
the deadline may still run its course, so a request ends within BUDGET + CONNECT_TIMEOUT +
READ_TIMEOUT, and a test holds that below the Lambda timeout of every stage. (botocore bounds
neither the DNS lookup nor an answer that trickles in over many reads.)

Outside a request (the admin CLI, bootstrap) there is no deadline; the timeouts and the number of
attempts are the same.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError
from chalice.app import Request, Response

CONNECT_TIMEOUT = 1.0  # seconds to open a connection to DynamoDB or KMS
READ_TIMEOUT = 2.0  # seconds to wait for one answer; DynamoDB's own are tens of milliseconds
MAX_ATTEMPTS = 4  # per call, botocore's first try included (PynamoDB's default of 3 retries)
BUDGET = 6.0  # seconds a request may go on starting store calls

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("store_deadline", default=None)


class DeadlineExceeded(BotoCoreError):
    """The request spent its time on the store: not worth another attempt."""

    fmt = "The request's time for the store ran out"


def clock() -> float:
    return time.monotonic()


def middleware(request: Request, get_response: Callable[[Request], Response]) -> Response:
    token = _deadline.set(clock() + BUDGET)
    try:
        return get_response(request)
    finally:
        _deadline.reset(token)


def _check(**_: Any) -> None:
    deadline = _deadline.get()
    if deadline is not None and clock() >= deadline:
        raise DeadlineExceeded()


def guard(client: Any) -> None:
    """Make ``client`` give up at the request's deadline (clients.instrument calls this once per
    client). ``request-created`` fires before every attempt, retries included; an exception there
    leaves the call at once, without a retry."""
    client.meta.events.register("request-created", _check)
    install_retries(client)


def install_retries(client: Any) -> None:
    """botocore's standard retry handler for ``client``, anew (its quota full), with each backoff
    cut short: a retry that could only start after the deadline is not waited for.

    Built from botocore's public retry classes, as ``botocore.retries.standard.register_retry_handler``
    builds it, so that the quota it releases into is ours to unsubscribe (installing again replaces
    what the last install registered). The handler botocore registered when it made the client
    stays subscribed to ``after-call``, releasing into a quota nothing uses.
    """
    from botocore.retries import quota, standard

    service = client.meta.service_model.service_id.hyphenize()
    events = client.meta.events
    retry_event, retry_id = f"needs-retry.{service}", f"retry-config-{service}"
    release_event, release_id = f"after-call.{service}", f"errortracking-retry-quota-{service}"
    attempts = client.meta.config.retries.get("total_max_attempts", MAX_ATTEMPTS)
    adapter = standard.RetryEventAdapter()
    throttling = standard.ThrottlingErrorDetector(adapter)
    retry_quota = standard.RetryQuotaChecker(quota.RetryQuota(), throttling)
    handler = standard.RetryHandler(
        retry_policy=standard.RetryPolicy(
            retry_checker=standard.StandardRetryConditions(max_attempts=attempts),
            retry_backoff=standard.ExponentialBackoff(service_name=service, throttling_detector=throttling),
        ),
        retry_event_adapter=adapter,
        retry_quota=retry_quota,  # type: ignore[arg-type]  # botocore passes the checker too; its stubs say RetryQuota
        service_name=service,
    )
    events.unregister(release_event, unique_id=release_id)
    events.register(release_event, retry_quota.release_retry_quota, unique_id=release_id)
    events.unregister(retry_event, unique_id=retry_id)

    def needs_retry(**kwargs: Any) -> float | None:
        delay: float | None = handler.needs_retry(**kwargs)
        deadline = _deadline.get()
        if delay is not None and deadline is not None and clock() + delay >= deadline:
            raise DeadlineExceeded() from kwargs.get("caught_exception")
        return delay

    events.register(retry_event, needs_retry, unique_id=retry_id)


# A lost race (a conditional write beaten, a transaction conflict, unprocessed keys) is tried again
# after a full-jitter backoff: 5 ms doubling up to 250 ms, so racing writers spread out.
BACKOFF_BASE = 0.005
BACKOFF_CAP = 0.25


def attempts(limit: int) -> Iterator[int]:
    """The tries of a write that may lose a race: 0 at once, each next one after ``backoff``, up
    to ``limit`` tries (a request's deadline may end them sooner, with DeadlineExceeded). The one
    retry loop of the service: a caller re-reads what it needs when the attempt is not 0.

    A transaction refused because another one holds its items (TransactionConflict) must wait
    before it reads again: the other one may not have committed yet, and an immediate re-read
    finds the same state, so the retry meets the same conflict. Trying at once lost every retry
    of the second of two events sent together."""
    for attempt in range(limit):
        if attempt:
            backoff(attempt - 1)
        yield attempt


def backoff(attempt: int) -> None:
    """Wait before try ``attempt + 1`` (``attempt`` counts from 0), or raise DeadlineExceeded when
    that wait would end past the request's deadline: the caller answers 503 having written nothing
    more, instead of Lambda's timeout."""
    import random

    delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
    deadline = _deadline.get()
    if deadline is not None and clock() + delay >= deadline:
        raise DeadlineExceeded()
    time.sleep(delay)


def botocore_config() -> Any:
    """Timeouts and retries for the clients this service creates itself (KMS)."""
    from botocore.config import Config

    return Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    )
