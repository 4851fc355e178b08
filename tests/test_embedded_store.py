"""The embedded store (moto, with scripts/moto_transactions.py): transactions as DynamoDB has them,
at a cost that does not grow with the table."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib import config
from tests.conftest import Api, Scene

TABLE = "transactions-probe"


@pytest.fixture
def client(store: None) -> Iterator[Any]:
    dynamodb = boto3.client("dynamodb", region_name=config.region())
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield dynamodb


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The type of everything deep-copied from now on (an object's parts included)."""
    copied: list[str] = []
    original = copy.deepcopy

    def counting(value: Any, memo: Any = None) -> Any:
        copied.append(type(value).__name__)
        return original(value, memo)

    monkeypatch.setattr(copy, "deepcopy", counting)  # the module moto and the patch both call
    return copied


def test_a_transaction_copies_its_items_not_the_table(api: Api, scene: Scene, copies: list[str]) -> None:
    """moto copied every table a transaction touched, whole: each roll-up of an error cost a copy of
    every event stored, so `make run` slowed and grew with its data."""
    project = scene.project("acme/shop")
    token = scene.maintainer(project)
    keys = f"/api/v4/projects/{project.project_id}/error_tracking/client_keys"
    copied = []
    for size in (1, 40):  # each create is a transaction: key, public key claim, project
        while len(api.get(keys + "?per_page=100", token=token).json) < size:
            assert api.post(keys, token=token).status == 201
        copies.clear()
        assert api.post(keys, token=token).status == 201
        assert "Table" not in copies
        copied.append(len(copies))
    assert copied[0] == copied[1], f"copied {copied[0]} objects next to 1 key, {copied[1]} next to 40"


def test_a_cancelled_transaction_writes_nothing(client: Any) -> None:
    client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "n": {"N": "1"}})
    with pytest.raises(ClientError) as raised:
        client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "b"}}}},
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "a"}},
                        "UpdateExpression": "SET n = :two",
                        "ConditionExpression": "n = :zero",
                        "ExpressionAttributeValues": {":two": {"N": "2"}, ":zero": {"N": "0"}},
                    }
                },
            ]
        )
    error = raised.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in error["CancellationReasons"]] == ["None", "ConditionalCheckFailed"]
    items = client.scan(TableName=TABLE)["Items"]
    assert items == [{"pk": {"S": "a"}, "n": {"N": "1"}}]


def test_a_write_failing_midway_puts_back_what_was_written(client: Any) -> None:
    """Conditions hold, but a write fails as it is applied (ADD to a string): the write before it is
    undone, as DynamoDB applies all or nothing."""
    client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "s": {"S": "text"}})
    client.put_item(TableName=TABLE, Item={"pk": {"S": "c"}, "n": {"N": "1"}})
    with pytest.raises(ClientError):
        client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "b"}}}},
                {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "c"}}}},
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "a"}},
                        "UpdateExpression": "ADD s :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )
    items = sorted(client.scan(TableName=TABLE)["Items"], key=lambda i: i["pk"]["S"])
    assert items == [{"pk": {"S": "a"}, "s": {"S": "text"}}, {"pk": {"S": "c"}, "n": {"N": "1"}}]


def test_the_items_a_query_answers_with_are_not_kept(client: Any) -> None:
    """moto kept every item it ever copied (a query's answer, a write's old item) in a list on the
    Item class, which only stopping a mock empties: the store of `make run` grew with every request."""
    import gc

    from moto.dynamodb.models.dynamo_type import Item

    for n in range(30):
        client.put_item(TableName=TABLE, Item={"pk": {"S": f"item-{n}"}, "body": {"S": "x" * 300}})
    gc.collect()
    alive = sum(isinstance(o, Item) for o in gc.get_objects())
    for _ in range(50):
        client.get_item(TableName=TABLE, Key={"pk": {"S": "item-1"}}, ConsistentRead=True)
        client.update_item(
            TableName=TABLE,
            Key={"pk": {"S": "item-2"}},
            UpdateExpression="SET n = :n",
            ExpressionAttributeValues={":n": {"N": "1"}},
        )
    gc.collect()
    assert len(getattr(Item, "instances_tracked", [])) == 0
    assert sum(isinstance(o, Item) for o in gc.get_objects()) <= alive + 2, (
        "items copied by reads and writes stayed alive"
    )
