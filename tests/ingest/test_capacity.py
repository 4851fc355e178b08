"""What DynamoDB's capacity allows: a noisy error must not throttle its partitions (strict store).

DynamoDB serves at most 1,000 write units and 3,000 read units a second on one partition of the
table or of an index; past that it throttles, and a throttled index throttles the table's writes.
The strict layer (scripts/strict_store.py) counts units from item sizes, by DynamoDB's rules, and
refuses as DynamoDB would. Time here is simulated: the ingestion clock and the strict layer's clock
move together, so a thousand events fall within one second.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib import budget, config, models
from chalicelib.ingest import ingestion, tracked_errors
from scripts.strict_store import StrictStore, item_size
from tests.conftest import Api, Scene
from tests.ingest.test_api_ingestion import ERRORS, INGEST, event_envelope, exception_event

START = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


class Second:
    """A simulated clock shared by ingestion and the strict layer."""

    def __init__(self) -> None:
        self.now = START

    def at(self, fraction: float) -> None:
        self.now = START + dt.timedelta(seconds=fraction)

    def monotonic(self) -> float:
        return self.now.timestamp()


@pytest.fixture
def second(strict: StrictStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[Second]:
    clock = Second()
    monkeypatch.setattr(ingestion, "clock", lambda: clock.now)
    strict.time_source = clock.monotonic
    strict.offset = 0.0
    yield clock


def _project(api: Api, scene: Scene) -> tuple[int, str, str]:
    project = scene.project("capacity/flood")
    token = scene.maintainer(project)
    pid = int(project.project_id)
    assert (
        api.put(
            f"/api/v4/projects/{pid}/error_tracking/settings",
            json_body={"active": True, "integrated": True},
            token=token,
        ).status
        == 200
    )
    key = api.get(f"/api/v4/projects/{pid}/error_tracking/client_keys", token=token).json[0]["public_key"]
    return pid, token, key


def _flood(
    api: Api, second: Second, pid: int, key: str, events: int, *, start: float, seconds: float, user: str
) -> list[int]:
    """``events`` events of one error, spread evenly over ``seconds`` from ``start``; each event's user
    is ``user`` formatted with its number (so ``"u{}"`` makes every event a new user)."""
    statuses = []
    for n in range(events):
        second.at(start + seconds * n / events)
        event: dict[str, Any] = exception_event("ValueError", f"flood {n}")
        event["user"] = {"id": user.format(n)}
        reply = api.post(
            INGEST.format(pid, "envelope"),
            headers={"X-Sentry-Auth": f"Sentry sentry_key={key}", "Content-Encoding": "gzip"},
            body=gzip.compress(event_envelope(event)),
        )
        statuses.append(reply.status)
    return statuses


USERS = 100
FLOOD = 300


def test_a_flood_of_one_error_many_users_met_throttles_nothing(
    api: Api, scene: Scene, strict: StrictStore, second: Second
) -> None:
    """A hundred distinct users met over a minute, then 300 events of the error within one second
    (past the roll-ups' burst, so the error item, its three index copies and its shards are written
    as fast as the design ever writes them): no partition of the table or of an index goes past its
    thousand write units, every event is counted, and the error item stays small (users are counted
    on claims of their own, not in the item every roll-up rewrites)."""
    pid, token, key = _project(api, scene)
    assert _flood(api, second, pid, key, USERS, start=0.0, seconds=60.0, user="user-{}") == [200] * USERS
    assert _flood(api, second, pid, key, FLOOD, start=60.0, seconds=1.0, user="flood-user") == [200] * FLOOD
    throttled = [r for r in strict.refused if "ProvisionedThroughputExceeded" in r]
    assert throttled == [], f"{len(throttled)} store requests were throttled: {throttled[:3]}"
    second.at(70.0)
    strict.settle()
    (error,) = api.get(ERRORS.format(pid), token=token).json
    detail = api.get(f"{ERRORS.format(pid)}/{error['id']}", token=token).json
    assert detail["count"] == USERS + FLOOD
    assert detail["user_count"] == USERS + 1
    client = boto3.client("dynamodb", region_name=config.region())
    (item,) = [i for i in client.scan(TableName=models.Entity.Meta.table_name)["Items"] if i["sk"] == {"S": "error"}]
    assert item_size(item) < 2048, f"the error item is {item_size(item)} bytes"


def test_the_strict_store_counts_write_units_from_item_sizes(api: Api, scene: Scene, strict: StrictStore) -> None:
    """The layer's arithmetic, on one known item: DynamoDB's example of a 1.5 KB item is 2 write units."""
    from scripts.strict_store import item_size, read_units, write_units

    item = {"pk": {"S": "x" * 10}, "blob": {"S": "y" * 1500}}
    assert item_size(item) == 2 + 10 + 4 + 1500
    assert write_units(item_size(item)) == 2
    assert read_units(item_size(item), consistent=True) == 1
    assert read_units(9000, consistent=False) == 1.5
    assert json.dumps(item)  # a wire-format item, as the layer sees it


def test_an_event_counted_while_a_roll_up_holds_its_shard_is_still_counted(
    api: Api, scene: Scene, strict: StrictStore, second: Second
) -> None:
    """In a flood a shard is both counted on and rolled up; DynamoDB refuses a write to an item a
    transaction holds (TransactionConflict). The count used to fail the request with a 503, and the
    Python SDK does not send an event again: it was lost."""
    pid, token, key = _project(api, scene)
    # The roll-ups' burst spent at one instant: every further event of that instant is only counted.
    burst = tracked_errors.BURST + models.ERROR_SHARDS + 2
    assert _flood(api, second, pid, key, burst, start=0.0, seconds=0.0, user="user-{}") == [200] * burst
    strict.refused.clear()
    strict.conflict_next(lambda pk: pk.startswith("errorshard#"), times=2)
    assert _flood(api, second, pid, key, 2, start=0.0, seconds=0.0, user="late-{}") == [200, 200]
    assert strict.refused == ["TransactWriteItems: TransactionCanceledException"] * 2  # both conflicts met
    second.at(5.0)
    strict.settle()
    (error,) = api.get(ERRORS.format(pid), token=token).json
    detail = api.get(f"{ERRORS.format(pid)}/{error['id']}", token=token).json
    assert (detail["count"], detail["user_count"]) == (burst + 2, burst + 2)
    # The shards counted on expire a retention period after their last count, like their error.
    shards = [item for item in models.Entity.scan() if isinstance(item, models.ErrorShard)]
    assert shards and {shard.expires for shard in shards} == {START + dt.timedelta(days=90)}


def test_an_event_whose_roll_up_meets_other_transactions_is_still_stored_and_listed(
    api: Api, scene: Scene, strict: StrictStore, second: Second, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events of one new error sent together: each roll-up but the first meets another one's
    transaction (TransactionConflict). They were tried again at once, three times in all, and then
    only counted on a shard: the error was not even listed. Each retry now waits first (a backoff)."""
    pid, token, key = _project(api, scene)
    waits: list[int] = []
    monkeypatch.setattr(budget, "backoff", waits.append)  # the waits, counted instead of slept
    strict.conflict_next(lambda pk: pk.startswith(f"error#{pid}#"), times=3)
    assert _flood(api, second, pid, key, 1, start=0.0, seconds=0.0, user="u{}") == [200]
    assert strict.refused == ["TransactWriteItems: TransactionCanceledException"] * 3
    assert waits == [0, 1, 2]
    strict.settle()  # the list's index caught up
    (error,) = api.get(ERRORS.format(pid), token=token).json
    events = api.get(f"{ERRORS.format(pid)}/{error['id']}/events", token=token).json
    assert (error["count"], error["user_count"], len(events)) == (1, 1, 1)
