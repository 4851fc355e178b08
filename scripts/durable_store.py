"""The embedded store's data on disk: `make run` keeps what it acknowledged across restarts.

moto keeps DynamoDB and KMS in memory. This keeps them in a data folder (``.data/`` unless
``DATA_DIR`` says otherwise) as two files:

- a **snapshot** (``snapshot-<generation>.json.gz``): every table's definition requests and its
  items in DynamoDB's JSON, and every KMS key with its key material (so the Sentry tokens
  encrypted under it still decrypt);
- a **journal** (``journal-<generation>.log``): each write the store answered with success since
  that snapshot, appended before the answer leaves the store, one checksummed line each. A
  DynamoDB write is kept as its request (replaying them in order rebuilds the same items: moto's
  writes are deterministic); a KMS change is kept as the KMS state it left (a new key's id and
  material are random, so its request would not replay to the same key).

A write is in the operating system's hands before it is acknowledged, so stopping any process of
`make run` (Ctrl-C, SIGTERM, ``kill -9``) loses nothing acknowledged; the journal is flushed to the
disk (fsync) every second, so a power cut loses at most the last second.

When the journal outgrows the snapshot (and at least ``MIN_JOURNAL_BYTES``), the store writes a new
snapshot and starts a new journal: restart time and the folder's size follow the data, not the
request history. Each step is atomic (write aside, fsync, rename), and loading takes the newest
complete snapshot with its own journal, so a stop at any moment leaves a folder that loads.

The folder says which format wrote it (``FORMAT``); another format is refused with a message that
names the folder and the ways out, never emptied. A lock (``lock``, flock) keeps a second
`make run` off a folder in use.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import gzip
import io
import json
import os
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

FORMAT = 1
FORMAT_FILE = "FORMAT"
LOCK_FILE = "lock"
MIN_JOURNAL_BYTES = 4 << 20  # below this the journal is never compacted: replaying it takes < 2 s
FSYNC_INTERVAL = 1.0  # seconds: the most a power cut may lose
OUR_FILES = ("snapshot-", "journal-", FORMAT_FILE, LOCK_FILE)

# What only reads: everything else a service answers with success changes its state.
_DYNAMODB_READS = frozenset(
    {
        "BatchGetItem",
        "DescribeContinuousBackups",
        "DescribeEndpoints",
        "DescribeLimits",
        "DescribeTable",
        "DescribeTimeToLive",
        "GetItem",
        "ListTables",
        "ListTagsOfResource",
        "Query",
        "Scan",
        "TransactGetItems",
    }
)
# Writes kept as the items they leave (replayed as puts and deletes, not re-evaluated).
_DYNAMODB_ITEM_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
# Table definitions, replayed before the items on load; kept in every snapshot.
_DYNAMODB_SCHEMA = frozenset({"CreateTable", "UpdateTable", "DeleteTable", "UpdateTimeToLive", "TagResource"})
_KMS_READS = frozenset(
    {
        "Decrypt",
        "DescribeKey",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateRandom",
        "GetKeyPolicy",
        "GetKeyRotationStatus",
        "GetPublicKey",
        "ListAliases",
        "ListKeys",
        "ListResourceTags",
        "ReEncrypt",
        "Sign",
        "Verify",
    }
)


class DataError(Exception):
    """The data folder cannot be used; the message says which folder, why, and the ways out."""


def _ways_out(folder: Path) -> str:
    return (
        f"Your data is left as it is. To start with an empty store instead: `make run FRESH=1` "
        f"(removes {folder}), or keep it and use another folder: `make run DATA_DIR=<another folder>`."
    )


@dataclass
class Loaded:
    """What a start found in the data folder."""

    fresh: bool
    items: Counter[str] = field(default_factory=Counter)  # items by their ``kind``
    journal_entries: int = 0
    dropped_tail: bool = False  # an incomplete last line, from a stop in the middle of writing it
    seconds: float = 0.0


def _checksummed(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, separators=(",", ":"), default=_as_wire_json)
    return f"{zlib.crc32(text.encode()):08x} {text}\n".encode()


def _parse_line(line: bytes) -> dict[str, Any] | None:
    """The record of one journal line; None when its checksum or JSON is wrong."""
    crc, _, text = line.rstrip(b"\n").partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(text):
            return None
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _generation(path: Path) -> int:
    return int(path.name.split("-", 1)[1].split(".", 1)[0])


def _region_of(environ: dict[str, Any]) -> str:
    # The SigV4 credential scope: Credential=<key>/<date>/<region>/<service>/aws4_request
    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    scope = auth.partition("Credential=")[2].split(",", 1)[0].split("/")
    return scope[2] if len(scope) >= 5 else os.environ.get("AWS_DEFAULT_REGION", "us-east-1")


def _account_of(environ: dict[str, Any]) -> str:
    """The account moto files a request under, by moto's own rules."""
    if os.environ.get("MOTO_ACCOUNT_ID"):
        return os.environ["MOTO_ACCOUNT_ID"]
    if environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
        return str(environ["HTTP_X_MOTO_ACCOUNT_ID"])
    from moto.iam.models import get_account_id_from

    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    access_key = auth.partition("Credential=")[2].split("/", 1)[0] or "AKIAEXAMPLE"
    return str(get_account_id_from(access_key))


def _touched_keys(backend: Any, action: str, request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(table, key) of every item a successful item write may have changed."""

    def key_of(table_name: str, attrs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        table = backend.get_table(table_name)
        names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
        return table_name, {name: attrs[name] for name in names}

    if action == "PutItem":
        return [key_of(request["TableName"], request["Item"])]
    if action in ("UpdateItem", "DeleteItem"):
        return [key_of(request["TableName"], request["Key"])]
    if action == "BatchWriteItem":
        return [
            key_of(name, write["PutRequest"]["Item"] if "PutRequest" in write else write["DeleteRequest"]["Key"])
            for name, writes in request["RequestItems"].items()
            for write in writes
        ]
    touched = []
    for entry in request["TransactItems"]:
        for kind, op in entry.items():
            if kind == "Put":
                touched.append(key_of(op["TableName"], op["Item"]))
            elif kind in ("Update", "Delete"):
                touched.append(key_of(op["TableName"], op["Key"]))
    return touched


def _request_environ(target: str, region: str, body: bytes) -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    service = "kms" if target.startswith("TrentService.") else "dynamodb"
    builder = EnvironBuilder(
        method="POST",
        path="/",
        data=body,
        headers=[
            ("Host", f"{service}.{region}.amazonaws.com"),
            ("X-Amz-Target", target),
            ("Content-Type", "application/x-amz-json-1.0"),
            (
                "Authorization",
                f"AWS4-HMAC-SHA256 Credential=local/20260101/{region}/{service}/aws4_request, "
                "SignedHeaders=host, Signature=0",
            ),
        ],
    )
    try:
        return dict(builder.get_environ())
    finally:
        builder.close()


def _backends(backend_dict: Any) -> Iterator[tuple[str, str, Any]]:
    # dict's own items(): the backends that exist, without moto creating one per region.
    for account, regional in dict.items(backend_dict):
        for region, backend in dict.items(regional):
            yield account, region, backend


def _as_wire_json(value: Any) -> str:
    # moto holds a binary value as the request's base64 text, or as bytes once it has decoded it.
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} in a stored item")


# KMS: keys and aliases as data.


def _kms_state() -> list[dict[str, Any]]:
    from moto.kms.models import kms_backends

    keys = []
    for account, region, backend in _backends(kms_backends):
        for key in backend.keys.values():
            private_pem = None
            if key.key_spec != "SYMMETRIC_DEFAULT":
                from cryptography.hazmat.primitives import serialization

                private_pem = key.private_key.private_key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ).decode()
            keys.append(
                {
                    "account": account,
                    "region": region,
                    "id": key.id,
                    "arn": key.arn,
                    "description": key.description,
                    "key_usage": key.key_usage,
                    "key_spec": key.key_spec,
                    "key_state": key.key_state,
                    "enabled": key.enabled,
                    "creation_date": key.creation_date,
                    "policy": key.policy,
                    "origin": key.origin,
                    "multi_region": key.multi_region,
                    "key_rotation_status": key.key_rotation_status,
                    "deletion_date": key.deletion_date.isoformat() if key.deletion_date else None,
                    "key_material": base64.b64encode(key.key_material).decode(),
                    "private_key": private_pem,
                    "aliases": sorted(key.aliases),
                }
            )
    return keys


def _restore_kms(keys: list[dict[str, Any]]) -> None:
    from datetime import datetime

    from moto.kms.models import kms_backends

    for _, _, backend in list(_backends(kms_backends)):
        backend.keys.clear()
    for saved in keys:
        backend = kms_backends[saved["account"]][saved["region"]]
        key = backend.create_key(
            saved["policy"],
            saved["key_usage"],
            saved["key_spec"],
            saved["description"],
            None,
            saved["multi_region"],
            saved["origin"],
        )
        del backend.keys[key.id]
        key.id, key.arn = saved["id"], saved["arn"]
        key.key_state, key.enabled = saved["key_state"], saved["enabled"]
        key.creation_date = saved["creation_date"]
        key.key_rotation_status = saved["key_rotation_status"]
        key.deletion_date = datetime.fromisoformat(saved["deletion_date"]) if saved["deletion_date"] else None
        key.key_material = base64.b64decode(saved["key_material"])
        if saved["private_key"]:
            from cryptography.hazmat.primitives import serialization

            key.private_key.private_key = serialization.load_pem_private_key(  # type: ignore[attr-defined]
                saved["private_key"].encode(), password=None
            )
        backend.keys[key.id] = key
        for alias in saved["aliases"]:
            backend.create_alias(key.id, alias)


# DynamoDB: items as data.


def _dynamodb_items() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    from moto.dynamodb.models import dynamodb_backends

    for account, region, backend in _backends(dynamodb_backends):
        for name, table in backend.tables.items():
            for partition in table.items.values():
                for item in partition.values() if table.range_key_attr else [partition]:
                    yield account, region, name, item.to_json()["Attributes"]


@contextlib.contextmanager
def _streams_paused() -> Iterator[None]:
    """Restoring items is not new writes: nothing reading a table's stream may see them again."""
    from moto.dynamodb.models import dynamodb_backends

    paused = []
    for _, _, backend in _backends(dynamodb_backends):
        for table in backend.tables.values():
            if table.stream_shard is not None:
                paused.append((table, table.stream_shard))
                table.stream_shard = None
    try:
        yield
    finally:
        for table, shard in paused:
            table.stream_shard = shard


class DurableStore:
    """The data folder of one embedded store; see the module docstring.

    Use: :meth:`open` (lock, check the format), :meth:`load` (restore what the folder holds into
    moto's backends, before the store serves), :meth:`wrap` the store's WSGI application (its
    caller must serve one request at a time), and :meth:`close` on the way out.
    """

    def __init__(self, folder: Path, *, min_journal_bytes: int = MIN_JOURNAL_BYTES) -> None:
        self.folder = folder
        self.min_journal_bytes = min_journal_bytes
        self.generation = 0
        self.snapshot_bytes = 0
        self.schema: list[tuple[str, str, str]] = []  # (target, region, body) of table definitions
        self._lock_file: IO[bytes] | None = None
        self._journal: IO[bytes] | None = None
        self._journal_bytes = 0
        self._dirty = False
        self._io = threading.Lock()  # the journal file, between the request thread and the fsync timer
        self._stopping = threading.Event()
        self._syncer: threading.Thread | None = None

    # The folder.

    def open(self) -> None:
        """Create or check the folder and take its lock; DataError when it cannot be used."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"errortracking: cannot create the data folder {self.folder}: {exc.strerror}") from exc
        self._lock()
        format_file = self.folder / FORMAT_FILE
        if not format_file.exists():
            strangers = [p.name for p in self.folder.iterdir() if p.name != LOCK_FILE]
            if strangers:
                raise DataError(
                    f"errortracking: {self.folder} is not an errortracking data folder (it holds "
                    f"{', '.join(sorted(strangers)[:3])}{', ...' if len(strangers) > 3 else ''} and no {FORMAT_FILE} "
                    f"file); choose another: `make run DATA_DIR=<an empty or new folder>`."
                )
            self._write_atomically(format_file, json.dumps(self._format_record(), indent=1).encode() + b"\n")
            return
        try:
            found = json.loads(format_file.read_text())
            written = int(found["format"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"errortracking: {format_file} cannot be read ({exc.__class__.__name__}), so the data in "
                f"{self.folder} cannot be trusted. {_ways_out(self.folder)}"
            ) from exc
        if written != FORMAT:
            raise DataError(
                f"errortracking: {self.folder} was written by {found.get('written_by', 'another version')} in "
                f"store format {written}; this version reads format {FORMAT} only. Run the version that wrote "
                f"it, or: {_ways_out(self.folder)}"
            )

    @staticmethod
    def _format_record() -> dict[str, Any]:
        import moto

        from chalicelib import config

        return {"format": FORMAT, "written_by": f"errortracking {config.VERSION} (moto {moto.__version__})"}

    def _lock(self) -> None:
        handle = open(self.folder / LOCK_FILE, "a+b")  # noqa: SIM115 (held for the process's life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().decode(errors="replace").strip() or "another process"
            handle.close()
            raise DataError(
                f"errortracking: {self.folder} is in use by another `make run` ({holder}). Stop that one "
                f"first, or give this one its own folder: `make run DATA_DIR=<another folder> PORT=... DB_PORT=...`."
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n".encode())
        handle.flush()
        self._lock_file = handle

    @staticmethod
    def remove(folder: Path) -> list[str]:
        """Remove an errortracking data folder (FRESH=1); what was removed, for the user to read.
        Refuses (DataError) a folder that is not one, so a mistyped DATA_DIR never loses a file."""
        if not folder.exists():
            return []
        names = sorted(p.name for p in folder.iterdir())
        if names and FORMAT_FILE not in names:
            raise DataError(
                f"errortracking: FRESH=1 would remove {folder}, but it is not an errortracking data folder "
                f"(no {FORMAT_FILE} file); nothing removed. Check DATA_DIR."
            )
        handle = open(folder / LOCK_FILE, "a+b")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DataError(
                f"errortracking: FRESH=1: {folder} is in use by another `make run`; stop it first."
            ) from None
        removed = []
        try:
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.name.startswith(OUR_FILES) and path.name != LOCK_FILE:
                    removed.append(f"{path.name} ({path.stat().st_size:,} bytes)")
                    path.unlink()
        finally:
            handle.close()
        return removed

    # Loading.

    def _files(self, prefix: str, suffix: str) -> list[Path]:
        found = [
            p
            for p in self.folder.glob(f"{prefix}-*{suffix}")
            if re.fullmatch(rf"{prefix}-\d+{re.escape(suffix)}", p.name)
        ]
        return sorted(found, key=_generation)

    def load(self) -> Loaded:
        """Restore the newest snapshot and replay its journal into moto's backends."""
        started = time.monotonic()
        for unfinished in self.folder.glob("*.writing"):
            unfinished.unlink()  # a snapshot a stop interrupted; the one before it is complete
        snapshots = self._files("snapshot", ".json.gz")
        journals = self._files("journal", ".log")
        loaded = Loaded(fresh=not snapshots and not any(p.stat().st_size for p in journals))
        if snapshots:
            self._restore_snapshot(snapshots[-1])
            self.generation = _generation(snapshots[-1])
            self.snapshot_bytes = snapshots[-1].stat().st_size
        journal = self.folder / f"journal-{self.generation}.log"
        if journal.exists():
            loaded.journal_entries, loaded.dropped_tail = self._replay(journal)
        for stale in snapshots[:-1] + [p for p in journals if _generation(p) != self.generation]:
            stale.unlink()  # superseded by the snapshot just loaded
        for _, _, _, item in _dynamodb_items():
            loaded.items[str(item.get("kind", {}).get("S", "?"))] += 1
        self._open_journal(journal)
        self._syncer = threading.Thread(target=self._sync_every_second, name="journal-fsync", daemon=True)
        self._syncer.start()
        loaded.seconds = time.monotonic() - started
        return loaded

    def _restore_snapshot(self, path: Path) -> None:
        from moto.dynamodb.models import dynamodb_backends

        try:
            with gzip.open(path, "rb") as stream:
                snapshot = json.load(stream)
            if snapshot.get("format") != FORMAT:
                raise ValueError(f"format {snapshot.get('format')!r}")
            schema = [tuple(entry) for entry in snapshot["schema"]]
            tables = snapshot["tables"]
            kms = snapshot["kms"]
        except (OSError, EOFError, ValueError, KeyError, TypeError, zlib.error) as exc:
            raise DataError(
                f"errortracking: the snapshot {path} is damaged ({exc.__class__.__name__}: {exc}), so the data in "
                f"{self.folder} cannot be loaded. {_ways_out(self.folder)}"
            ) from exc
        app = self._replay_app()
        for target, region, body in schema:
            self._apply(app, target, region, body.encode(), where=f"{path} (table definitions)")
        self.schema = [(str(t), str(r), str(b)) for t, r, b in schema]
        try:
            with _streams_paused():
                for entry in tables:
                    table = dynamodb_backends[entry["account"]][entry["region"]].get_table(entry["name"])
                    for item in entry["items"]:
                        table.put_item(item)
            _restore_kms(kms)
        except Exception as exc:  # moto refusing what the snapshot holds: as damaged as a bad checksum
            raise DataError(
                f"errortracking: the snapshot {path} does not load ({exc.__class__.__name__}: {exc}), so the data "
                f"in {self.folder} cannot be used. {_ways_out(self.folder)}"
            ) from exc

    def _replay(self, journal: Path) -> tuple[int, bool]:
        data = journal.read_bytes()
        lines = data.split(b"\n")
        dropped_tail = False
        if lines[-1]:
            # No newline at the end: a stop while this line was being written; it was never acknowledged.
            dropped_tail = True
            with open(journal, "r+b") as handle:
                handle.truncate(len(data) - len(lines[-1]))
        lines = lines[:-1]
        app = self._replay_app()
        for number, line in enumerate(lines, 1):
            record = _parse_line(line)
            if record is None:
                raise DataError(
                    f"errortracking: {journal} is damaged at line {number} of {len(lines)} (its checksum does not "
                    f"match), so the data in {self.folder} cannot be loaded. {_ways_out(self.folder)}"
                )
            self._apply_record(app, record, where=f"{journal} line {number}")
        self._journal_bytes = len(data)
        return len(lines), dropped_tail

    def _apply_record(self, app: Any, record: dict[str, Any], *, where: str) -> None:
        if "kms" in record:
            _restore_kms(record["kms"])
            return
        if "items" in record:
            from moto.dynamodb.models import dynamodb_backends

            entry = record["items"]
            backend = dynamodb_backends[entry["account"]][entry["region"]]
            try:
                with _streams_paused():
                    for table_name, key, item in entry["writes"]:
                        if item is None:
                            backend.delete_item(table_name, key)
                        else:
                            backend.put_item(table_name, item)
            except Exception as exc:  # moto refusing what the journal holds: the folder is not ours to trust
                raise DataError(
                    f"errortracking: replaying {where} failed ({exc.__class__.__name__}: {exc}). The data in "
                    f"{self.folder} does not match what this version of the store rebuilds from it. "
                    f"{_ways_out(self.folder)}"
                ) from exc
            return
        target, region, body = record["dynamodb"]
        self._apply(app, target, region, body.encode(), where=where)
        if target.rpartition(".")[2] in _DYNAMODB_SCHEMA:
            self.schema.append((target, region, body))

    @staticmethod
    def _replay_app() -> Any:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        return DomainDispatcherApplication(create_backend_app)

    def _apply(self, app: Any, target: str, region: str, body: bytes, *, where: str) -> None:
        statuses: list[str] = []

        def start_response(status: str, headers: list[Any], exc_info: Any = None) -> Callable[[bytes], None]:
            statuses.append(status)
            return lambda _: None

        with _streams_paused():
            answer = b"".join(app(_request_environ(target, region, body), start_response))
        if not statuses or not statuses[0].startswith("2"):
            raise DataError(
                f"errortracking: replaying {where} ({target}) failed: the store answered "
                f"{statuses[0] if statuses else 'nothing'}: {answer[:300].decode(errors='replace')}. The data in "
                f"{self.folder} does not match what this version of the store rebuilds from it. "
                f"{_ways_out(self.folder)}"
            )

    # Recording.

    def wrap(self, app: Callable[..., Iterable[bytes]]) -> Callable[[dict[str, Any], Any], list[bytes]]:
        """``app`` recording every successful write before its answer is returned. Not thread-safe:
        the caller serves one request at a time (the embedded store does)."""

        def recording(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
            service, _, action = target.partition(".")
            if service.startswith("DynamoDB_") and action not in _DYNAMODB_READS:
                record: str | None = "dynamodb"
            elif service == "TrentService" and action not in _KMS_READS:
                record = "kms"
            else:
                record = None
            if record is None:
                return [b"".join(app(environ, start_response))]
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            statuses: list[str] = []

            def noting(status: str, headers: Any, exc_info: Any = None) -> Any:
                statuses.append(status)
                return start_response(status, headers, exc_info)

            answer = b"".join(app(environ, noting))
            if statuses and statuses[0].startswith("2"):
                if record == "kms":
                    self._append({"kms": _kms_state()})
                elif action in _DYNAMODB_ITEM_WRITES:
                    self._append({"items": self._items_after(environ, action, body)})
                else:
                    entry = [target, _region_of(environ), body.decode("utf-8")]
                    self._append({"dynamodb": entry})
                    if action in _DYNAMODB_SCHEMA:
                        self.schema.append((entry[0], entry[1], entry[2]))
                if self._journal_bytes > max(self.min_journal_bytes, 2 * self.snapshot_bytes):
                    self.compact()
            return [answer]

        return recording

    @staticmethod
    def _items_after(environ: dict[str, Any], action: str, body: bytes) -> dict[str, Any]:
        """The items a write left, as a record: replaying it costs a put or delete per item,
        where re-evaluating the request's expressions costs moto milliseconds each."""
        from moto.dynamodb.models import dynamodb_backends

        account, region = _account_of(environ), _region_of(environ)
        backend = dynamodb_backends[account][region]
        writes = []
        for table_name, key in _touched_keys(backend, action, json.loads(body)):
            item = backend.get_item(table_name, key)
            writes.append([table_name, key, item.to_json()["Attributes"] if item is not None else None])
        return {"account": account, "region": region, "writes": writes}

    def _open_journal(self, path: Path) -> None:
        self._journal = open(path, "ab", buffering=0)  # noqa: SIM115 (one write per record, unbuffered)
        self._journal_bytes = path.stat().st_size

    def _append(self, record: dict[str, Any]) -> None:
        line = _checksummed(record)
        with self._io:
            assert self._journal is not None
            self._journal.write(line)  # in the OS's hands now: survives any process's death
            self._journal_bytes += len(line)
            self._dirty = True

    def _sync_every_second(self) -> None:
        while not self._stopping.wait(FSYNC_INTERVAL):
            self.sync()

    def sync(self) -> None:
        with self._io:
            if self._dirty and self._journal is not None:
                os.fsync(self._journal.fileno())
                self._dirty = False

    def compact(self) -> None:
        """A new snapshot of everything, then a new, empty journal (the caller holds the store still)."""
        generation = self.generation + 1
        tables: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        from moto.dynamodb.models import dynamodb_backends

        for account, region, backend in _backends(dynamodb_backends):
            for name in backend.tables:
                tables[(account, region, name)] = []
        for account, region, name, item in _dynamodb_items():
            tables[(account, region, name)].append(item)
        snapshot = {
            "format": FORMAT,
            "schema": self.schema,
            "tables": [{"account": a, "region": r, "name": n, "items": items} for (a, r, n), items in tables.items()],
            "kms": _kms_state(),
        }
        path = self.folder / f"snapshot-{generation}.json.gz"
        text = json.dumps(snapshot, separators=(",", ":"), default=_as_wire_json)
        data = gzip.compress(text.encode(), compresslevel=1)
        self._write_atomically(path, data)
        old_journal = self.folder / f"journal-{self.generation}.log"
        with self._io:
            assert self._journal is not None
            self._journal.close()
            self._open_journal(self.folder / f"journal-{generation}.log")
            self._dirty = False
        _fsync_dir(self.folder)
        for stale in [old_journal, self.folder / f"snapshot-{self.generation}.json.gz"]:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        self.generation = generation
        self.snapshot_bytes = len(data)

    def _write_atomically(self, path: Path, data: bytes) -> None:
        aside = path.with_name(path.name + ".writing")
        with open(aside, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(aside, path)
        _fsync_dir(self.folder)

    def folder_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())

    def close(self) -> None:
        """Flush the journal to the disk and let the folder go."""
        self._stopping.set()
        if self._syncer is not None:
            self._syncer.join(timeout=5)
        self.sync()
        with self._io:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
