"""The Sentry auth token at rest: AWS KMS envelope, bound to its project by the encryption context.

The KMS client is created on first use, so importing this module costs nothing at cold start.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from chalicelib import budget, clients, config

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient


@functools.cache
def kms_client() -> KMSClient:
    import boto3

    client: KMSClient = boto3.session.Session().client(
        "kms", region_name=config.region(), config=budget.botocore_config()
    )
    return clients.instrument(client)


def _context(project_id: int) -> dict[str, str]:
    return {"errortracking:project_id": str(project_id)}


def encrypt_token(project_id: int, token: str) -> bytes:
    response = kms_client().encrypt(
        KeyId=config.get_config().kms_key_id,
        Plaintext=token.encode("utf-8"),
        EncryptionContext=_context(project_id),
    )
    return bytes(response["CiphertextBlob"])


def decrypt_token(project_id: int, ciphertext: bytes) -> str:
    response = kms_client().decrypt(CiphertextBlob=ciphertext, EncryptionContext=_context(project_id))
    return bytes(response["Plaintext"]).decode("utf-8")
