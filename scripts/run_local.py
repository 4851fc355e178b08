"""`make run`: the service on a laptop, on an embedded DynamoDB-compatible store.

Starts moto's server (DynamoDB and KMS) on 127.0.0.1:DB_PORT, creates the table and the KMS key,
creates an admin user with a token and a demo project, then runs `chalice local` on
127.0.0.1:PORT, through scripts/local_server.py (which reads chunked bodies, and refuses oversized
ones while reading). Ctrl-C stops both. The embedded store keeps everything in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any, TextIO
from urllib.parse import unquote_plus

ROOT = Path(__file__).resolve().parent.parent
READY = "errortracking: ready"
# Credentials a client may put in the query string. `chalice local` logs every request line with
# its query string; GitLab writes such values as [FILTERED] in its logs, and so do we.
_CREDENTIALS = frozenset({"private_token", "access_token", "job_token", "sentry_key", "sentry_secret"})
_QUERY_PARAMETER = re.compile(r"(?<=[?&])([^=&\s#]+)=([^&\s#]*)")
_output = threading.Lock()  # one line at a time from the relays and this script


def redact(line: str) -> str:
    """``line`` with the value of every credential in a query string written [FILTERED], however
    its name is encoded: the server decodes names before it reads them."""

    def filtered(parameter: re.Match[str]) -> str:
        if unquote_plus(parameter[1]).lower() in _CREDENTIALS:
            return f"{parameter[1]}=[FILTERED]"
        return parameter[0]

    return _QUERY_PARAMETER.sub(filtered, line)


def say(text: str, out: TextIO | None = None) -> None:
    with _output:
        stream = out or sys.stdout
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()


def _relay(stream: IO[bytes], out: TextIO) -> None:
    """Copy a child's output line by line, credentials redacted, until the child closes it."""
    for raw in iter(stream.readline, b""):
        # A closed or unwritable terminal must not stop the draining, or the child blocks on its pipe.
        with contextlib.suppress(OSError, ValueError):
            say(redact(raw.decode("utf-8", "replace")), out)


def _relayed(process: subprocess.Popen[bytes]) -> list[threading.Thread]:
    assert process.stdout is not None and process.stderr is not None
    threads = [
        threading.Thread(target=_relay, args=(process.stdout, sys.stdout), daemon=True),
        threading.Thread(target=_relay, args=(process.stderr, sys.stderr), daemon=True),
    ]
    for thread in threads:
        thread.start()
    return threads


def embedded_store(port: int) -> Any:
    """moto's server (DynamoDB and KMS in memory), answering one request at a time.

    moto's backends are not thread-safe: a transaction checks its conditions and writes without a
    lock, and a cancelled one restores a copy of the table taken when it began, wiping other
    threads' writes. DynamoDB serialises conflicting writes; so must our stand-in, or parallel
    requests see races real DynamoDB never has.
    """
    import threading

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    sys.path.insert(0, str(ROOT))
    from scripts import moto_transactions

    moto_transactions.install()  # transactions that cost their items, not a copy of the table
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    class SerializedMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            lock = threading.Lock()

            def one_at_a_time(environ: dict[str, Any], start_response: Any) -> list[bytes]:
                with lock:
                    return [b"".join(app(environ, start_response))]

            self._server = make_server(self._ip_address, self._port, one_at_a_time, threaded=True)
            self._server_ready_event.set()
            self._server.serve_forever()

    return SerializedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"chalice local exited with status {process.returncode} before it listened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"chalice local did not listen on port {port} within {timeout:.0f}s")


def _seed() -> tuple[str, int]:
    """An admin token and a demo project on a store that has none."""
    from chalicelib import accounts

    try:
        accounts.find_user("root")
    except accounts.AccountError:
        accounts.create_user("root", admin=True, name="Administrator")
    _, secret = accounts.create_token("root", scopes=["api"], name="make run")
    try:
        project = accounts.find_project("demo/errors")
    except accounts.AccountError:
        project = accounts.create_project("demo/errors", name="Errors demo")
    return secret, int(project.project_id)


def _banner(base: str, token: str, project_id: int, db_port: int) -> str:
    h = f"--header 'PRIVATE-TOKEN: {token}'"
    api = f"{base}/api/v4/projects/{project_id}/error_tracking"
    return f"""
Error tracking API: {base}/api/v4   (embedded store: http://127.0.0.1:{db_port})
The embedded store keeps its data IN MEMORY: everything is gone when this stops.

Admin user 'root', token (shown once): {token}
Demo project 'demo/errors' has id {project_id}. Try:

  curl {h} {base}/api/v4/user
  curl {h} --request PUT --data 'active=true&integrated=true' {api}/settings
  curl {h} --request PATCH --data 'active=false' {api}/settings
  curl {h} --request PATCH --data 'active=true' {api}/settings
  curl {h} {base}/api/v4/projects/demo%2Ferrors/error_tracking/settings
  curl {h} --request POST {api}/client_keys
  curl {h} --request DELETE {api}/client_keys/2
  curl {h} {api}/client_keys        # the sentry_dsn to give an SDK

Run top to bottom, these leave error tracking on with one working DSN.

Admin command against this store (another shell):
  export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:{db_port} AWS_ENDPOINT_URL_KMS=http://127.0.0.1:{db_port}
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
  .venv/bin/errortracking user create alice && .venv/bin/errortracking token create alice

Ctrl-C stops the API and the store.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument("--db-port", type=int, default=int(os.environ.get("DB_PORT") or 8001))
    parser.add_argument("--store-only", action="store_true", help="the seeded embedded store, without the API")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="serve on the strict layer (scripts/strict_store.py): the store answers as DynamoDB would",
    )
    args = parser.parse_args()
    for name, port in (("PORT", args.port), ("DB_PORT", args.db_port))[1 if args.store_only else 0 :]:
        if not _port_free(port):
            print(
                f"errortracking: port {port} ({name}) is in use; choose another: make run {name}=...", file=sys.stderr
            )
            return 2

    store = f"http://127.0.0.1:{args.db_port}"
    base = f"http://127.0.0.1:{args.port}"
    env = os.environ
    env["AWS_ENDPOINT_URL_DYNAMODB"] = store
    env["AWS_ENDPOINT_URL_KMS"] = store
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.setdefault("AWS_ACCESS_KEY_ID", "local")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    env["ERRORTRACKING_PUBLIC_URL"] = base  # DSNs name the port the API really listens on
    env["PYTHONUNBUFFERED"] = "1"  # its output goes through a pipe to _relay: line by line, not at exit
    if args.strict:
        env["ERRORTRACKING_STRICT_STORE"] = "1"

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one line per store request
    server = embedded_store(args.db_port)
    server.start()
    chalice: subprocess.Popen[bytes] | None = None
    relays: list[threading.Thread] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    # Ctrl-C stops everything even when this was started with SIGINT ignored (a shell's background
    # job, nohup): Python then leaves it ignored rather than raising KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        from chalicelib import bootstrap

        bootstrap.init_store()
        token, project_id = _seed()
        if args.store_only:
            say(f"{READY} {store} token={token} project_id={project_id}")
            signal.pause()
            return 0
        chalice = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "scripts" / "local_server.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(args.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        relays = _relayed(chalice)
        _wait_for_port(args.port, chalice)
        say(_banner(base, token, project_id, args.db_port))
        say(f"{READY} {base} token={token} project_id={project_id}")
        chalice.wait()
        return chalice.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        if chalice is not None and chalice.poll() is None:
            chalice.terminate()
            try:
                chalice.wait(timeout=10)
            except subprocess.TimeoutExpired:
                chalice.kill()
        for relay in relays:  # the child's last lines, before this process exits
            relay.join(timeout=5)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
