"""`chalice local`, reading request bodies the way real clients send them.

`chalice local` reads a body only by its Content-Length. @sentry/node posts every envelope with
``Transfer-Encoding: chunked`` and no Content-Length, so chalice local saw an empty body, and then
read the chunks as the next request on the connection: the events were lost, and the SDK's
``flush()`` still said all was sent. This runs `chalice local` itself (same stage config,
environment, logging and route checks), with a request handler that reads bodies as HTTP/1.1 has
them:

- by Content-Length, or by chunked transfer coding (chunk extensions and trailers allowed);
- never more than the service's own body limit (``params.MAX_BODY_BYTES``): a declared length
  over it is answered 413 before anything is read, a chunked body is answered 413 as soon as it
  grows past it; either way the connection is closed, so the unread rest is never taken for a
  request;
- ``Expect: 100-continue`` gets ``100 Continue`` only when the declared length is within the
  limit (else the 413 right away, so the client never sends the body);
- a body the handler cannot frame (a bad Content-Length, a malformed chunk, a transfer coding other
  than chunked, both framings at once) is 400 or 501, and the connection is closed;
- a connection idle for ``IDLE_TIMEOUT`` seconds is closed;
- what the server itself answers (these refusals) is JSON, like the API;
- a path no route has, with any method, and a method the server has no handler for (TRACE,
  CONNECT, PROPFIND, QUERY, ...) on any path, get GitLab's 404 ``{"error":"404 Not Found"}``, as
  the deployed API answers them from its gateway responses (`chalice local` answered its own 403
  "Missing Authentication Token", and the standard library a 501).

Arguments are `chalice local`'s (``--host``, ``--port``, ``--stage``); autoreload is always off.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IDLE_TIMEOUT = 30.0  # seconds a connection may wait for its next request, or for the rest of one
_MAX_LINE = 4096  # a chunk-size line or a trailer line
_MAX_TRAILERS = 64


class Refused(Exception):
    """A request whose body cannot be taken; the connection is closed after the answer."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _too_large() -> Refused:
    return Refused(413, "Payload Too Large")


def _declared_length(headers: Any, limit: int) -> int | None:
    """The Content-Length, None when absent; Refused when it is not one number or over ``limit``."""
    values = headers.get_all("content-length") or []
    if not values:
        return None
    texts = {part.strip() for value in values for part in str(value).split(",")}
    if len(texts) != 1:
        raise Refused(400, "Bad request - conflicting Content-Length values")
    text = texts.pop()
    if not (text.isascii() and text.isdigit()):
        raise Refused(400, "Bad request - Content-Length is not a number")
    if len(text) > 12 or int(text) > limit:
        raise _too_large()
    return int(text)


def _transfer_codings(headers: Any) -> list[str]:
    return [
        coding.strip().lower()
        for value in headers.get_all("transfer-encoding") or []
        for coding in str(value).split(",")
        if coding.strip()
    ]


def read_chunked(rfile: Any, limit: int) -> bytes:
    """A chunked body (RFC 9112 section 7.1), at most ``limit`` bytes of data; trailers are read
    and dropped."""
    body = bytearray()
    while True:
        line = rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE or not line.endswith(b"\n"):
            raise Refused(400, "Bad request - the chunked body is truncated or malformed")
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
            raise Refused(400, "Bad request - a chunk size is not hexadecimal")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise _too_large()
        chunk = rfile.read(size)
        if len(chunk) < size:
            raise Refused(400, "Bad request - the chunked body is truncated")
        body += chunk
        if rfile.readline(3) not in (b"\r\n", b"\n"):
            raise Refused(400, "Bad request - a chunk does not end where its size says")
    for _ in range(_MAX_TRAILERS):
        line = rfile.readline(_MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return bytes(body)
        if len(line) > _MAX_LINE or not line.endswith(b"\n"):
            break
    raise Refused(400, "Bad request - the chunked body's trailers are truncated or too many")


def read_body(headers: Any, rfile: Any, limit: int) -> bytes | None:
    """The request body however it is framed; None when there is none."""
    codings = _transfer_codings(headers)
    declared = _declared_length(headers, limit)
    if codings:
        if declared is not None:
            raise Refused(400, "Bad request - Content-Length and Transfer-Encoding must not both be sent")
        if codings != ["chunked"]:
            raise Refused(501, "Not Implemented - only the chunked transfer coding is supported")
        return read_chunked(rfile, limit) or None
    if not declared:
        return None
    body = rfile.read(declared)
    if len(body) < declared:
        raise Refused(400, "Bad request - the body is shorter than its Content-Length")
    return bytes(body)


def handler_class() -> type:
    """chalice local's request handler, reading bodies as the module docstring says."""
    from chalice.local import ChaliceRequestHandler, ForbiddenError, LocalGatewayException

    from chalicelib import errors
    from chalicelib.params import MAX_BODY_BYTES

    class BodyReadingHandler(ChaliceRequestHandler):
        timeout = IDLE_TIMEOUT
        # An answer is written as headers, then body: with Nagle's algorithm the body waits for
        # the client's delayed ACK (40 ms on Linux) on every kept-alive connection.
        disable_nagle_algorithm = True

        def handle_expect_100(self) -> bool:
            try:
                _declared_length(self.headers, MAX_BODY_BYTES)
            except Refused as refusal:
                self._refuse(refusal)
                return False
            result: bool = super().handle_expect_100()
            return result

        def _refuse(self, refusal: Refused) -> None:
            self.close_connection = True
            self._send_json(refusal.status, errors.message(refusal.status, refusal.text).body, close=True)

        def _send_json(
            self, status: int, body: dict[str, Any], *, headers: dict[str, str] | None = None, close: bool = False
        ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                if name.lower() != "content-type":
                    self.send_header(name, value)
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _send_api_error(self, error: errors.ApiError, *, close: bool = False) -> None:
            self._send_json(error.status, error.body, headers=error.headers, close=close)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            # The standard library's own answers (unknown method, bad request line) are HTML pages.
            # Its body, if any, is unread: the connection cannot carry another request.
            self.close_connection = True
            if code == HTTPStatus.NOT_IMPLEMENTED:  # only sent for a method with no do_* handler
                self._send_api_error(errors.route_not_found(), close=True)
                return
            phrase = self.responses.get(code, ("Error",))[0]
            self._send_json(code, {"message": f"{code} {phrase}"}, close=True)

        def _send_error_response(self, error: LocalGatewayException) -> None:
            # chalice local's gateway raises ForbiddenError ("Missing Authentication Token") when no
            # route has the path; it raises nothing else here, as the app defines no Chalice authorizer.
            if isinstance(error, ForbiddenError):
                self._send_api_error(errors.route_not_found())
                return
            super()._send_error_response(error)

        def _generic_handle(self) -> None:
            try:
                self._body = read_body(self.headers, self.rfile, MAX_BODY_BYTES)
            except Refused as refusal:
                self._refuse(refusal)
                return
            super()._generic_handle()

        def _parse_payload(self) -> tuple[dict[str, str], bytes | None]:
            return dict(self.headers), self._body

        def _send_http_response_with_body(self, code: int, headers: dict[str, Any], body: str | bytes) -> None:
            if self.command == "HEAD":  # the headers only: a body would be read as the next answer
                data = body.encode() if isinstance(body, str) else body
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
                self._send_headers(headers)
                return
            super()._send_http_response_with_body(code, headers, body)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle

    return BodyReadingHandler


_chalice_create_local_server: Any = None  # chalice.local's own, once install() has replaced it


def create_server(app_obj: Any, config: Any, host: str, port: int) -> Any:
    """`chalice local`'s server (a chalice.local.LocalDevServer) with :func:`handler_class`'s handler."""
    from chalice import local

    server = (_chalice_create_local_server or local.create_local_server)(app_obj, config, host, port)
    server.server.RequestHandlerClass = functools.partial(handler_class(), app_object=app_obj, config=config)
    return server


def install() -> None:
    """Make `chalice local` serve with :func:`handler_class`'s handler."""
    global _chalice_create_local_server
    from chalice import local

    if local.create_local_server is not create_server:
        _chalice_create_local_server = local.create_local_server
        local.create_local_server = create_server


def strict_store() -> Any:
    """The strict layer (scripts/strict_store.py) over the store, when ERRORTRACKING_STRICT_STORE=1
    (``make run STRICT=1``, and the end-to-end tests): DynamoDB's limits, conflicts, unprocessed
    keys, index lag and throttling, on the embedded store. None otherwise."""
    if os.environ.get("ERRORTRACKING_STRICT_STORE") != "1":
        return None
    sys.path.insert(0, str(ROOT))
    from scripts.strict_store import StrictStore

    layer = StrictStore(
        index_lag=float(os.environ.get("ERRORTRACKING_STRICT_INDEX_LAG") or 1.0),
        unprocessed_rate=float(os.environ.get("ERRORTRACKING_STRICT_UNPROCESSED") or 0.05),
        seed=int(time.time()),
    )
    layer.install()
    print(f"errortracking: strict store on: {layer!r}", file=sys.stderr, flush=True)
    return layer


def stop_with_parent() -> None:
    """Exit when the process that started this one (run_local.py, named by ERRORTRACKING_PARENT_PID)
    is gone, even by ``kill -9``: an API left behind would hold the port, answering without a store."""
    parent = os.environ.get("ERRORTRACKING_PARENT_PID")
    if not parent:
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def main() -> int:
    from chalice.cli import main as chalice_main

    stop_with_parent()
    install()
    strict_store()
    # PynamoDB says at import, at INFO, that /etc/pynamodb has no settings: noise before the banner.
    logging.getLogger("pynamodb.settings").setLevel(logging.WARNING)
    sys.argv = ["chalice", "--project-dir", str(ROOT), "local", "--no-autoreload", *sys.argv[1:]]
    return int(chalice_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
