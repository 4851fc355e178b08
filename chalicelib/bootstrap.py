"""Creating the table and the KMS key where no infrastructure code does: laptops and tests.

In AWS the CloudFormation stack owns both; the service never creates anything at run time.
"""

from __future__ import annotations

from typing import Any

from chalicelib import config, crypto, models


def ensure_table() -> bool:
    """Create the table (with its indexes and stream) unless it exists; True when it was created.
    A table made before the webhooks (a kept `make run` data folder) gets its stream now."""
    if not models.Entity.exists():
        models.Entity.create_table(wait=True)
        return True
    client = models.connection().client
    described = client.describe_table(TableName=models.Entity.Meta.table_name)["Table"]
    if not described.get("StreamSpecification", {}).get("StreamEnabled"):
        client.update_table(
            TableName=models.Entity.Meta.table_name,
            StreamSpecification={"StreamEnabled": True, "StreamViewType": models.Entity.Meta.stream_view_type},
        )
    return False


def ensure_kms_key() -> str:
    """The key id behind the configured alias, creating key and alias if missing."""
    kms: Any = crypto.kms_client()
    alias = config.get_config().kms_key_id
    if not alias.startswith("alias/"):
        return alias  # a key id or ARN: it must already exist
    for page in kms.get_paginator("list_aliases").paginate():
        for entry in page["Aliases"]:
            if entry["AliasName"] == alias and entry.get("TargetKeyId"):
                return str(entry["TargetKeyId"])
    key_id = str(kms.create_key(Description="errortracking: Sentry auth tokens")["KeyMetadata"]["KeyId"])
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    return key_id


def init_store() -> dict[str, Any]:
    created = ensure_table()
    return {"table": models.Entity.Meta.table_name, "table_created": created, "kms_key_id": ensure_kms_key()}
