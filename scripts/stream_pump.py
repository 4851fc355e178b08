"""`make run`'s stand-in for Lambda's DynamoDB Stream event source: the embedded store's stream
(moto implements DynamoDB Streams) read every half second and handed to the same handler the
deployed stack runs (app.deliver_hooks), with the same filter (chalicelib/hooks/stream.py).

It starts at the stream's end, as the deployed mapping does (StartingPosition LATEST): what was
written before `make run` started (its data folder replayed) is never notified again. A batch the
handler fails is given again, up to ``MAX_ATTEMPTS`` times, then skipped with a line on stderr
(the deployed mapping sends it to its failure queue).

moto keeps every stream record in memory for as long as it runs; the records read are dropped
from it (``trim``), so `make run`'s memory follows its data, not its history of writes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

MAX_ATTEMPTS = 3
POLL_SECONDS = 0.5
BATCH_SIZE = 100  # the deployed mapping's BatchSize

Handler = Callable[[dict[str, Any], Any], Any]


class StreamPump:
    def __init__(self, table_name: str, handler: Handler, *, trim: Callable[[int], None] | None = None) -> None:
        import os

        import boto3

        from chalicelib import config

        region = config.region()
        # The embedded store serves the streams API at its own address (moto's server); in-process,
        # moto only knows the streams URL with its trailing slash.
        streams = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or f"https://streams.dynamodb.{region}.amazonaws.com/"
        self._dynamodb = boto3.client("dynamodb", region_name=region)
        self._streams = boto3.client("dynamodbstreams", region_name=region, endpoint_url=streams)
        self._table = table_name
        self._handler = handler
        self._trim = trim
        self._iterator: str | None = None
        self._arn = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _open(self) -> None:
        self._arn = self._dynamodb.describe_table(TableName=self._table)["Table"]["LatestStreamArn"]
        shard = self._streams.describe_stream(StreamArn=self._arn)["StreamDescription"]["Shards"][0]["ShardId"]
        self._iterator = self._streams.get_shard_iterator(
            StreamArn=self._arn, ShardId=shard, ShardIteratorType="LATEST"
        )["ShardIterator"]

    def poll_once(self) -> int:
        """Hand every record written since the last poll to the handler; how many passed the filter."""
        from chalicelib.hooks.stream import passes_filter

        if self._iterator is None:
            self._open()
        passed = 0
        while True:
            answer = self._streams.get_records(ShardIterator=self._iterator, Limit=1000)
            records = answer.get("Records", [])
            self._iterator = answer["NextShardIterator"]
            if not records:
                return passed
            wanted = [dict(r, eventSourceARN=self._arn) for r in records if passes_filter(r)]
            for start in range(0, len(wanted), BATCH_SIZE):
                self._deliver(wanted[start : start + BATCH_SIZE])
            passed += len(wanted)
            if self._trim is not None:
                self._trim(int(records[-1]["dynamodb"]["SequenceNumber"]))

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                self._handler({"Records": batch}, None)
                return
            except Exception as exc:  # the deployed mapping retries too, then gives up on the batch
                if attempt == MAX_ATTEMPTS:
                    sys.stderr.write(f"errortracking: hooks skipped {len(batch)} stream records: {exc!r}\n")
                else:
                    time.sleep(attempt)

    def start(self) -> None:
        self._open()
        self._thread = threading.Thread(target=self._run, name="stream-pump", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.poll_once()
            except Exception as exc:  # the store went away (stopping): say so, and go on trying
                sys.stderr.write(f"errortracking: reading the store's stream failed: {exc!r}\n")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def moto_trimmer(table_name: str, lock: Any) -> Callable[[int], None]:
    """Drop the records up to a sequence number from moto's in-memory stream of ``table_name``."""

    def trim(upto: int) -> None:
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        from chalicelib import config

        with lock:
            table = dynamodb_backends[DEFAULT_ACCOUNT_ID][config.region()].get_table(table_name)
            shard = table.stream_shard
            if shard is None:
                return
            count = upto + 1 - shard.starting_sequence_number
            if count > 0:
                # moto numbers a record by its place plus the shard's start: move the start with it.
                del shard.items[:count]
                shard.starting_sequence_number += count

    return trim
