"""The table as DynamoDB holds it, read past the service's code: for tests that must prove what was
stored (or not), whatever the API would show."""

from __future__ import annotations

import base64
from typing import Any

import boto3
from boto3.dynamodb.types import Binary, TypeDeserializer

from chalicelib import config, models


def raw_items() -> list[dict[str, Any]]:
    """Every item of the table as DynamoDB holds it."""
    client = boto3.client("dynamodb", region_name=config.region())
    deserializer = TypeDeserializer()
    items = []
    for page in client.get_paginator("scan").paginate(TableName=models.Entity.Meta.table_name, ConsistentRead=True):
        items += [{name: deserializer.deserialize(value) for name, value in raw.items()} for raw in page["Items"]]
    return items


def as_text(value: Any) -> str:
    """Everything an item holds, binary values included, as one searchable text."""
    if isinstance(value, Binary):
        wrapped: Any = value  # its stub misses .value
        value = wrapped.value
    if isinstance(value, bytes):
        return value.decode("latin-1") + " " + base64.b64encode(value).decode()
    if isinstance(value, dict):
        return " ".join(f"{k} {as_text(v)}" for k, v in value.items())
    if isinstance(value, list | set | tuple):
        return " ".join(as_text(v) for v in value)
    return str(value)
