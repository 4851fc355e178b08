"""The bill `make bench` prints: DynamoDB's unit rules, and what each kind of event is billed.

The unit rules are checked against the examples of DynamoDB's documentation ("Read/write capacity
mode", "Best practices for storing large items", "Provisioned throughput considerations for
global secondary indexes"). The scenarios run on the in-process store behind the strict layer,
which bills what the service actually sends; the unit counts asserted here are the bill's, so a
change that makes an event dearer fails a test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from scripts import bench_costs
from scripts.strict_store import Index, StrictStore, index_writes, item_size, read_units, write_units

KB = 1024


def test_item_size_is_the_names_and_values_in_bytes() -> None:
    # A number takes one byte per two significant digits plus one; leading and trailing zeros go.
    assert item_size({"n": {"N": "12345"}}) == 1 + 4
    assert item_size({"n": {"N": "0.00100"}}) == 1 + 2
    assert item_size({"n": {"N": "-1200"}}) == 1 + 2
    # UTF-8 bytes, not characters: "é" is two.
    assert item_size({"name": {"S": "café"}}) == 4 + 5
    assert item_size({"ok": {"BOOL": True}}) == 2 + 1


def test_read_and_write_units_follow_the_documented_examples() -> None:
    # "a strongly consistent read of an 8 KB item would require two RCUs, an eventually consistent
    # read of an 8 KB item would require one RCU"
    assert read_units(8 * KB, consistent=True) == 2
    assert read_units(8 * KB, consistent=False) == 1
    # "a standard write request of a 1 KB item would require one WCU, a standard write request of
    # a 3 KB item would require three WCUs"
    assert write_units(1 * KB) == 1
    assert write_units(3 * KB) == 3
    # BatchGetItem rounds each item: a 1.5 KB and a 6.5 KB item read as 4 KB + 8 KB.
    assert read_units(int(1.5 * KB), consistent=True) + read_units(int(6.5 * KB), consistent=True) == 3
    # An item below the unit still costs a whole one.
    assert write_units(1) == 1


INDEX = Index("by_seen", "listing", "seen", "INCLUDE", frozenset({"title"}))
KEYS = ("pk", "sk")


def _item(**attributes: str) -> dict[str, Any]:
    return {"pk": {"S": "p"}, "sk": {"S": "s"}, **{k: {"S": v} for k, v in attributes.items()}}


@pytest.mark.parametrize(
    ("before", "after", "written"),
    [
        # "write a new item to the table that defines an indexed attribute": one put
        (None, _item(listing="a", seen="1"), ["put"]),
        # "changes the value of an indexed key attribute (from A to B)": a delete and a put
        (_item(listing="a", seen="1"), _item(listing="a", seen="2"), ["delete", "put"]),
        # "only changes the value of projected attributes": one write
        (_item(listing="a", seen="1", title="x"), _item(listing="a", seen="1", title="y"), ["put"]),
        # "caused the indexed attribute to be deleted": one delete
        (_item(listing="a", seen="1"), _item(listing="a"), ["delete"]),
        # "not present in the index before or after": nothing
        (_item(other="1"), _item(other="2"), []),
        # an attribute the index does not project changes: its copy is unchanged, nothing is written
        (_item(listing="a", seen="1", body="x"), _item(listing="a", seen="1", body="y"), []),
    ],
)
def test_index_writes_follow_the_documented_rules(
    before: dict[str, Any] | None, after: dict[str, Any], written: list[str]
) -> None:
    copies = index_writes(INDEX, KEYS, before, after)
    old = INDEX.projected(before, KEYS) if before else None
    assert ["delete" if copy == old and before != after else "put" for copy in copies] == written


def test_the_bill_counts_what_each_kind_of_event_is_billed(store: None, strict: StrictStore) -> None:
    strict.unprocessed_rate = 0.0  # no BatchGetItem retried: each count is exact
    measured = bench_costs.measure(events=5, flood=200, strict=strict)
    # Every event, of any kind, is two round trips: the read and the one write (or transaction).
    for name in bench_costs.INGESTION:
        assert measured[name].round_trips == 2, name
        assert measured[name].kms_calls == 0, name
    quiet = measured["quiet known error"]
    # A quiet error's event rolls up at once: the event and the error in one transaction (units
    # doubled; an event with its own id and time needs no claim of its id, and while the error's
    # bucket lasts its shard is not written), and the error's copies in the three list indexes:
    # rewritten (delete and put) in the two whose keys move with each event, put in the third.
    assert quiet.where == {
        "errortracking": 4.0,
        "errortracking/errors_by_count": 2.0,
        "errortracking/errors_by_first_seen": 1.0,
        "errortracking/errors_by_last_seen": 2.0,
    }
    assert measured["new user every event"].write_units == quiet.write_units + 2  # the user's claim
    # The read: the key's claim, the project's setting, the error, a shard (missing: a read's
    # minimum, as on DynamoDB) and the user's claim, strongly consistent, each below 4 KB: one each.
    assert quiet.read_units == 5
    # In a flood most events are only counted on a shard: one write unit, no index write.
    assert measured["flood, 1,000 events/s"].write_units < quiet.write_units / 2


def test_the_dollars_are_the_units_times_the_price_table() -> None:
    metered = bench_costs.Metered(
        requests=1, write_units=10, read_units=4, round_trips=2, kms_calls=0, where={"errortracking": 10}
    )
    bill = bench_costs.per_million(metered, cpu_ms=3.4)
    assert bill["dynamodb"] == pytest.approx(10 * 0.625 + 4 * 0.125)
    # 3.4 ms of CPU and two 6 ms round trips: 16 ms billed at 1 GB, plus the invocation.
    assert bill["lambda"] == pytest.approx(0.20 + 0.016 * 13.3334)
    assert bill["entry"] == pytest.approx(3.50)
    assert bill["total"] == pytest.approx(bill["dynamodb"] + bill["lambda"] + bill["entry"])
    through_url = bench_costs.per_million(metered, cpu_ms=3.4, entry="function_url")
    assert through_url["entry"] == 0  # a Function URL bills no request
    assert (
        through_url["total_via_rest_api"] == pytest.approx(bill["total"]) == pytest.approx(through_url["total"] + 3.50)
    )


def test_the_bill_at_rest_counts_the_stacks_alarms(packaged: Callable[[str], dict[str, Any]]) -> None:
    template = packaged("prod")
    alarms = [r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert len(alarms) == bench_costs.ALARMS
