"""`make run`: the service on a laptop, on an embedded DynamoDB-compatible store.

Starts moto's server (DynamoDB and KMS) on 127.0.0.1:DB_PORT with its data in a folder
(scripts/durable_store.py: ``.data/`` unless ``--data-dir``), creates the table and the KMS key,
and on a fresh store an admin user with a token and a demo project; then runs `chalice local` on
HOST:PORT (127.0.0.1 unless ``--host``), through scripts/local_server.py (which reads chunked
bodies, and refuses oversized ones while reading), and hands the store's stream to the webhooks'
handler as the deployed stack's event source does (scripts/stream_pump.py). Ctrl-C stops all of
it; the data stays.
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
sys.path.insert(0, str(ROOT))
from scripts.durable_store import DataError, DurableStore, Loaded  # noqa: E402

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


def embedded_store(port: int, durable: DurableStore | None = None) -> Any:
    """moto's server (DynamoDB and KMS) on 127.0.0.1, one request at a time, on kept-alive
    connections (scripts/store_server.py); with ``durable``, each write it acknowledges is recorded
    in the data folder first."""
    from scripts import moto_transactions
    from scripts.store_server import StoreServer

    moto_transactions.install()  # transactions that cost their items, not a copy of the table
    return StoreServer(port, durable.wrap if durable is not None else None)


def _start_hooks(server: Any) -> Any:
    """The webhooks' stream handler (app.deliver_hooks) fed from the embedded store's stream, in
    this process; its log lines (what was sent, what failed) go to stderr."""
    import logging

    from chalicelib import models
    from scripts.stream_pump import StreamPump, moto_trimmer

    log = logging.getLogger("chalicelib.hooks")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("errortracking: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    from app import deliver_hooks

    table = models.Entity.Meta.table_name
    pump = StreamPump(table, deliver_hooks, trim=moto_trimmer(table, server.lock))
    pump.start()
    return pump


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for_port(port: int, process: subprocess.Popen[bytes], host: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"chalice local exited with status {process.returncode} before it listened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"chalice local did not listen on port {port} within {timeout:.0f}s")


def _seed() -> tuple[str | None, int]:
    """The admin user and the demo project, created with a token where they are missing (a fresh
    store, or one whose first start stopped half way). A store that has both keeps its tokens:
    the token is None then, as this process no longer knows one."""
    from chalicelib import accounts

    secret = None
    try:
        accounts.find_user("root")
    except accounts.AccountError:
        accounts.create_user("root", admin=True, name="Administrator")
        _, secret = accounts.create_token("root", scopes=["api"], name="make run")
    try:
        project = accounts.find_project("demo/errors")
    except accounts.AccountError:
        project = accounts.create_project("demo/errors", name="Errors demo")
        if secret is None:
            _, secret = accounts.create_token("root", scopes=["api"], name="make run")
    return secret, int(project.project_id)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _found(loaded: Loaded, folder: Path) -> str:
    """What the store found in its data folder, in one line."""
    if loaded.fresh:
        return f"errortracking: new store, data in {folder}"
    kinds = loaded.items
    counts = ", ".join(
        [
            _plural(kinds["project"], "project"),
            _plural(kinds["clientkey"], "client key"),
            _plural(kinds["error"], "error"),
            _plural(kinds["event"], "event"),
            _plural(kinds["user"], "user"),
        ]
    )
    dropped = "; an incomplete last write (never acknowledged) was dropped" if loaded.dropped_tail else ""
    return f"errortracking: resumed the store in {folder}: {counts} (loaded in {loaded.seconds:.1f} s){dropped}"


def _open_data(folder: Path, fresh: bool) -> DurableStore:
    if fresh:
        removed = DurableStore.remove(folder)
        what = ", ".join(removed) if removed else "nothing was there"
        say(f"errortracking: FRESH=1: starting empty; removed from {folder}: {what}")
    # The tests compact small journals, to see it happen without writing megabytes.
    limit = os.environ.get("ERRORTRACKING_DATA_COMPACT_BYTES")
    durable = DurableStore(folder, min_journal_bytes=int(limit)) if limit else DurableStore(folder)
    durable.open()
    return durable


def _banner(base: str, token: str | None, project_id: int, db_port: int, folder: Path) -> str:
    env = f"""  export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:{db_port} AWS_ENDPOINT_URL_KMS=http://127.0.0.1:{db_port}
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local"""
    if token is None:
        who = f"""The tokens made before still work. This store no longer shows them; for a new one (another shell):
{env}
  .venv/bin/errortracking token create root

"""
        token = "$TOKEN"
    else:
        who = f"Admin user 'root', token (shown once): {token}\n\n"
    h = f"--header 'PRIVATE-TOKEN: {token}'"
    api = f"{base}/api/v4/projects/{project_id}/error_tracking"
    return f"""
Error tracking API: {base}/api/v4   (embedded store: http://127.0.0.1:{db_port})
Data: {folder}   (kept when this stops; `make run FRESH=1` starts empty)

{who}Demo project 'demo/errors' has id {project_id}. Try:

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
{env}
  .venv/bin/errortracking user create alice && .venv/bin/errortracking token create alice

Ctrl-C stops the API and the store; the data stays in {folder}.
"""


def _public_host(host: str) -> str:
    """The host name DSNs and the banner give for an API bound to ``host``."""
    if host in ("0.0.0.0", "::", ""):
        return socket.getfqdn()  # bound everywhere: name the machine, not an address of it
    return f"[{host}]" if ":" in host else host


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument("--db-port", type=int, default=int(os.environ.get("DB_PORT") or 8001))
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address the API listens on (the embedded store always listens on 127.0.0.1 only)",
    )
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR") or ROOT / ".data"))
    parser.add_argument("--fresh", action="store_true", help="remove the data folder's data first")
    parser.add_argument("--memory", action="store_true", help="keep nothing: no data folder (benchmarks)")
    parser.add_argument("--store-only", action="store_true", help="the seeded embedded store, without the API")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="serve on the strict layer (scripts/strict_store.py): the store answers as DynamoDB would",
    )
    args = parser.parse_args()
    folder = args.data_dir.absolute()
    durable: DurableStore | None = None
    try:
        if not args.memory:
            durable = _open_data(folder, args.fresh)  # first: a second `make run` is told why it cannot start
    except DataError as refusal:
        say(str(refusal), sys.stderr)
        return 2
    for name, port in (("PORT", args.port), ("DB_PORT", args.db_port))[1 if args.store_only else 0 :]:
        if not _port_free(port):
            say(f"errortracking: port {port} ({name}) is in use; choose another: make run {name}=...", sys.stderr)
            return 2

    store = f"http://127.0.0.1:{args.db_port}"
    base = os.environ.get("PUBLIC_URL") or f"http://{_public_host(args.host)}:{args.port}"
    env = os.environ
    env["AWS_ENDPOINT_URL_DYNAMODB"] = store
    env["AWS_ENDPOINT_URL_KMS"] = store
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.setdefault("AWS_ACCESS_KEY_ID", "local")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    env["ERRORTRACKING_PUBLIC_URL"] = base  # DSNs name the host and port the API really listens on
    env["ERRORTRACKING_PARENT_PID"] = str(os.getpid())  # the API stops when this process is gone
    env["PYTHONUNBUFFERED"] = "1"  # its output goes through a pipe to _relay: line by line, not at exit
    # Webhooks to receivers on this machine (a laptop's own test server) are what a laptop needs.
    env.setdefault("ERRORTRACKING_ALLOW_LOCAL_HOOKS", "true")
    if args.strict:
        env["ERRORTRACKING_STRICT_STORE"] = "1"

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one line per store request
    chalice: subprocess.Popen[bytes] | None = None
    relays: list[threading.Thread] = []
    server: Any = None
    pump: Any = None

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    # Ctrl-C stops everything even when this was started with SIGINT ignored (a shell's background
    # job, nohup): Python then leaves it ignored rather than raising KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if durable is not None:
            say(_found(durable.load(), folder))
        server = embedded_store(args.db_port, durable)
        server.start()
        from chalicelib import bootstrap

        bootstrap.init_store()
        token, project_id = _seed()
        pump = _start_hooks(server)
        shown = token or "-"
        if args.store_only:
            say(f"{READY} {store} token={shown} project_id={project_id}")
            signal.pause()
            return 0
        chalice = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "scripts" / "local_server.py"),
                "--host",
                args.host,
                "--port",
                str(args.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        relays = _relayed(chalice)
        _wait_for_port(args.port, chalice, "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host)
        say(_banner(base, token, project_id, args.db_port, folder))
        say(f"{READY} {base} token={shown} project_id={project_id}")
        chalice.wait()
        return chalice.returncode or 0
    except DataError as refusal:
        say(str(refusal), sys.stderr)
        return 2
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
        if pump is not None:
            pump.stop()
        if server is not None:
            server.stop()
        if durable is not None:
            durable.close()


if __name__ == "__main__":
    sys.exit(main())
