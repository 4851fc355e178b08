"""The embedded store's HTTP server: moto's DynamoDB and KMS, on kept-alive connections.

moto's own server is werkzeug's development server, which closes the connection after every
answer (and then waits 10 ms for more of the request before it lets the thread go). Every
DynamoDB call of the service then opened a new TCP connection: two to four per request, each
leaving a socket in TIME_WAIT, until connecting itself became the slowest part of `make run` (a
few thousand events in, ``connect()`` took longer than the store's work). botocore keeps its
connections open, as it does with DynamoDB; this server keeps them too.

A request is read whole (Content-Length or chunked, like the API's own dev server) before moto
sees it, so the next request on the connection is never mistaken for the rest of this one; and
requests are served one at a time, because moto's backends are not thread-safe (a transaction
checks its conditions and writes without a lock). DynamoDB serialises conflicting writes; so
must our stand-in, or parallel requests see races real DynamoDB never has.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

MAX_REQUEST_BYTES = 64 << 20  # DynamoDB's largest request is 16 MB
IDLE_TIMEOUT = 120.0  # seconds a kept-alive connection may stay silent

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def _handler(app: WSGIApp, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    from scripts.local_server import Refused, read_body

    class StoreHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = IDLE_TIMEOUT
        # Headers and body are two writes: with Nagle's algorithm the body waits for the client's
        # delayed ACK of the headers, 40 ms on Linux, on every answer of a kept-alive connection.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per store request would drown the API's own log

        def _serve(self) -> None:
            try:
                body = read_body(self.headers, self.rfile, MAX_REQUEST_BYTES) or b""
            except Refused as refusal:
                self.close_connection = True
                self._answer(
                    f"{refusal.status} {refusal.text}", [("Content-Type", "text/plain")], refusal.text.encode()
                )
                return
            answer: list[Any] = []

            def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                answer[:] = [status, headers]
                return lambda data: None

            with lock:
                data = b"".join(app(self._environ(body), start_response))
            self._answer(answer[0], answer[1], data)

        def _environ(self, body: bytes) -> dict[str, Any]:
            import io

            url = urlsplit(self.path)
            environ: dict[str, Any] = {
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(body),
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
                "REQUEST_METHOD": self.command,
                "SCRIPT_NAME": "",
                "PATH_INFO": unquote(url.path, "latin-1"),
                "QUERY_STRING": url.query,
                "REQUEST_URI": self.path,
                "RAW_URI": self.path,
                "REMOTE_ADDR": str(self.client_address[0]),
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": str(self.server.server_address[1]),  # type: ignore[index]
                "SERVER_PROTOCOL": self.request_version,
                "CONTENT_LENGTH": str(len(body)),
            }
            for key, value in self.headers.items():
                name = key.upper().replace("-", "_")
                if name in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                    continue  # the body is already read whole
                if name != "CONTENT_TYPE":
                    name = f"HTTP_{name}"
                environ[name] = f"{environ[name]},{value}" if name in environ else value
            return environ

        def _answer(self, status: str, headers: list[tuple[str, str]], data: bytes) -> None:
            code, _, reason = status.partition(" ")
            self.send_response(int(code), reason)
            for key, value in headers:
                if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    return StoreHandler


class StoreServer:
    """moto's backends behind ``wrap`` (the data folder's recorder, or nothing), on 127.0.0.1."""

    def __init__(self, port: int, wrap: Callable[[WSGIApp], WSGIApp] | None = None) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        app: WSGIApp = DomainDispatcherApplication(create_backend_app)
        if wrap is not None:
            app = wrap(app)
        self.lock = threading.Lock()  # held for each request moto serves, and to trim its stream
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(app, self.lock))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="embedded-store", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
