"""Deployment settings, read from the environment.

The service and the ``errortracking`` admin command read the same variables with the same
defaults, so that with only ``AWS_ENDPOINT_URL_DYNAMODB`` (and ``AWS_ENDPOINT_URL_KMS``) set both
reach the same data. botocore itself honours the ``AWS_ENDPOINT_URL_*`` variables.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

VERSION = "0.1.0"  # the service's, as pyproject.toml has it (a test keeps the two equal)
DEFAULT_REGION = "us-east-1"
DEFAULT_TABLE = "errortracking"
DEFAULT_KMS_KEY = "alias/errortracking"

TRUE_STRINGS = frozenset(["1", "on", "On", "ON", "t", "true", "True", "TRUE", "T", "y", "yes", "Yes", "YES", "Y"])
FALSE_STRINGS = frozenset(["0", "off", "Off", "OFF", "f", "false", "False", "FALSE", "F", "n", "no", "No", "NO", "N"])


def parse_bool(value: object) -> bool | None:
    """GitLab's (Grape's) boolean coercion: the one place it is decided.

    Returns None when ``value`` is neither a JSON boolean nor one of GitLab's strings.
    """
    if isinstance(value, bool):
        return value
    # Grape coerces with value.to_s, so the JSON numbers 1 and 0 pass as "1" and "0".
    text = str(value) if isinstance(value, int | str) else None
    if text in TRUE_STRINGS:
        return True
    if text in FALSE_STRINGS:
        return False
    return None


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def table_name() -> str:
    return os.environ.get("ERRORTRACKING_TABLE") or DEFAULT_TABLE


@dataclass(frozen=True)
class Config:
    """Settings that may change between requests in tests; table and region are fixed at import."""

    kms_key_id: str
    public_url: str | None
    ingest_url: str | None  # the DSNs' base URL, when ingestion has an entry point of its own
    integrated_enabled: bool
    allow_local_sentry_hosts: bool
    retention_days: int
    allow_local_hooks: bool  # webhooks to loopback and private addresses (make run sets it)
    hook_timeout: int  # seconds a webhook receiver has to answer


# GitLab keeps integrated error tracking's events 90 days; DynamoDB's TTL deletes ours after as long.
DEFAULT_RETENTION_DAYS = 90
MAX_RETENTION_DAYS = 3650


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    parsed = parse_bool(raw)
    if parsed is None:
        raise RuntimeError(f"{name}={raw!r} is not a boolean")
    return parsed


def _env_whole(name: str, default: int, maximum: int, unit: str) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise RuntimeError(f"{name}={raw!r} is not a whole number of {unit} from 1 to {maximum}")
    return int(raw)


# GitLab gives a webhook receiver 10 seconds (webhook_timeout's default).
DEFAULT_HOOK_TIMEOUT = 10
MAX_HOOK_TIMEOUT = 30


@functools.cache
def get_config() -> Config:
    return Config(
        kms_key_id=os.environ.get("ERRORTRACKING_KMS_KEY_ID") or DEFAULT_KMS_KEY,
        public_url=(os.environ.get("ERRORTRACKING_PUBLIC_URL") or "").rstrip("/") or None,
        ingest_url=(os.environ.get("ERRORTRACKING_INGEST_URL") or "").rstrip("/") or None,
        integrated_enabled=_env_bool("ERRORTRACKING_INTEGRATED", True),
        allow_local_sentry_hosts=_env_bool("ERRORTRACKING_ALLOW_LOCAL_SENTRY_HOSTS", False),
        retention_days=_env_whole("ERRORTRACKING_RETENTION_DAYS", DEFAULT_RETENTION_DAYS, MAX_RETENTION_DAYS, "days"),
        allow_local_hooks=_env_bool("ERRORTRACKING_ALLOW_LOCAL_HOOKS", False),
        hook_timeout=_env_whole("ERRORTRACKING_HOOK_TIMEOUT", DEFAULT_HOOK_TIMEOUT, MAX_HOOK_TIMEOUT, "seconds"),
    )
