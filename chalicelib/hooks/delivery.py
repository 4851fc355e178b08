"""Sending one notification to one hook: a signed JSON POST, GitLab's webhook headers, bounded.

The URL is resolved and checked again here (chalicelib/urlsafety.py) and the request goes to the
very address that was checked, so a name that now resolves elsewhere (DNS rebinding) reaches
nothing it should not. Redirects are not followed (http.client follows none), the receiver has
``hook_timeout`` seconds for each step, and at most 64 KB of its answer is read, never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from chalicelib import config, urlsafety
from chalicelib.hooks import payloads
from chalicelib.models import ProjectHook

USER_AGENT = f"errortracking/{config.VERSION} (GitLab-compatible webhooks)"
SIGNATURE_HEADER = "X-Errortracking-Signature"
MAX_ANSWER_BYTES = 64 * 1024
MAX_ADDRESSES = 2  # of a name's checked addresses, tried in turn within the try's time
ATTEMPTS = 3  # a connection that fails, a timeout, a 429 or a 5xx is tried again, after a backoff
_BACKOFF_SECONDS = 1.0


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None  # the receiver's HTTP status, None when there was no answer
    reason: str  # for the person: what happened, without anything the receiver sent back
    final: bool = False  # trying again cannot help (a refused URL)

    @property
    def retryable(self) -> bool:
        return not self.final and (self.status is None or self.status == 429 or self.status >= 500)


def signature(body: bytes, token: str) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of the body, keyed with the hook's secret token."""
    return "sha256=" + hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()


def webhook_uuid(hook: ProjectHook) -> str:
    """The hook's own UUID (X-Gitlab-Webhook-UUID): the same on every delivery of this hook."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"errortracking:hook:{int(hook.project_id)}:{int(hook.hook_id)}"))


def headers_for(
    hook: ProjectHook, body: bytes, event_uuid: str, token: str | None, custom: list[tuple[str, str]], base_url: str
) -> dict[str, str]:
    headers = dict(custom)  # the custom ones first, so none can replace ours (also refused at save)
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Gitlab-Event": payloads.EVENT_HEADER,
            "X-Gitlab-Instance": base_url,
            "X-Gitlab-Webhook-UUID": webhook_uuid(hook),
            "X-Gitlab-Event-UUID": event_uuid,
            "Idempotency-Key": event_uuid,
        }
    )
    if token:
        headers["X-Gitlab-Token"] = token
        headers[SIGNATURE_HEADER] = signature(body, token)
    return headers


def _post_once(hook: ProjectHook, body: bytes, headers: dict[str, str], timeout: float) -> Outcome:
    import http.client
    import socket
    import ssl

    try:
        target = urlsafety.check(
            hook.url, name="url", allow_local=config.get_config().allow_local_hooks, allow_query=True
        )
    except urlsafety.Refused as exc:
        return Outcome(False, None, str(exc), final=True)
    parts = target.parts
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default_port = 443 if parts.scheme == "https" else 80
    # Named as the URL names it (http.client would add :443 to an https host it sends over).
    headers = {"Host": target.host if target.port == default_port else f"{target.host}:{target.port}", **headers}
    deadline = time.monotonic() + timeout
    sock: socket.socket | None = None
    for address in target.addresses[:MAX_ADDRESSES]:  # the checked addresses, in the resolver's order
        try:
            sock = socket.create_connection((address, target.port), timeout=max(0.1, deadline - time.monotonic()))
            break
        except OSError:
            continue
    if sock is None:
        return Outcome(False, None, f"could not connect to {target.host}:{target.port}")
    # One deadline for the whole try: a receiver that answers a byte at a time is cut off at it
    # (the socket's own timeout only bounds each step).
    held = [sock]  # the socket in use: the TLS one once wrapped (wrapping detaches the plain one)
    cutoff = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, args=(held,))
    cutoff.start()
    try:
        if parts.scheme == "https":
            context = ssl.create_default_context()
            if not hook.enable_ssl_verification:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            sock = held[0] = context.wrap_socket(sock, server_hostname=target.host)
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
        connection.sock = sock  # already connected, to the address checked above
        connection.request("POST", path, body=body, headers=headers)
        answer = connection.getresponse()
        answer.read(MAX_ANSWER_BYTES)
        status = int(answer.status)
    except ssl.SSLError as exc:
        return Outcome(False, None, f"TLS failed: {exc.reason or type(exc).__name__}")
    except TimeoutError:
        return Outcome(False, None, f"no answer within {timeout:g} s")
    except (OSError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            return Outcome(False, None, f"no answer within {timeout:g} s")
        return Outcome(False, None, f"the connection failed: {type(exc).__name__}")
    except (UnicodeError, ValueError) as exc:  # a header http.client cannot send (refused at save)
        return Outcome(False, None, f"the request could not be made: {type(exc).__name__}", final=True)
    finally:
        cutoff.cancel()
        sock.close()
    if 200 <= status < 300:
        return Outcome(True, status, f"answered {status}")
    return Outcome(False, status, f"answered {status}")


def _cut(held: list[Any]) -> None:
    """End a try at its deadline: a shutdown wakes the thread blocked reading the socket."""
    import contextlib
    import socket

    with contextlib.suppress(OSError):
        held[0].shutdown(socket.SHUT_RDWR)


def post(
    hook: ProjectHook, body: bytes, headers: dict[str, str], *, attempts: int = ATTEMPTS, timeout: float | None = None
) -> Outcome:
    """POST ``body`` to the hook, tried again after a jittered backoff when it may help."""
    timeout = float(config.get_config().hook_timeout) if timeout is None else timeout
    outcome = Outcome(False, None, "not sent")
    for attempt in range(attempts):
        if attempt:
            time.sleep(_BACKOFF_SECONDS * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
        outcome = _post_once(hook, body, headers, timeout)
        if outcome.ok or not outcome.retryable:
            return outcome
    return outcome
