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


# What a hook's secrets are encrypted for. Sentry tokens carry no purpose (as they always have);
# the roles that decrypt may only decrypt ciphertexts of this purpose (a condition in their
# policies), so neither Lambda can read a project's Sentry token.
HOOK_SECRET = "hook"


def _context(project_id: int, purpose: str | None) -> dict[str, str]:
    context = {"errortracking:project_id": str(project_id)}
    if purpose:
        context["errortracking:purpose"] = purpose
    return context


def encrypt_token(project_id: int, token: str, purpose: str | None = None) -> bytes:
    response = kms_client().encrypt(
        KeyId=config.get_config().kms_key_id,
        Plaintext=token.encode("utf-8"),
        EncryptionContext=_context(project_id, purpose),
    )
    return bytes(response["CiphertextBlob"])


def decrypt_token(project_id: int, ciphertext: bytes, purpose: str | None = None) -> str:
    # Naming the key (KMS's advice): a ciphertext of any other key is refused, not decrypted.
    response = kms_client().decrypt(
        CiphertextBlob=ciphertext,
        KeyId=config.get_config().kms_key_id,
        EncryptionContext=_context(project_id, purpose),
    )
    return bytes(response["Plaintext"]).decode("utf-8")
