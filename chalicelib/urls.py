"""Absolute URLs the service hands out: DSNs and pagination links."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

from chalice.app import Request

from chalicelib.config import get_config

DEFAULT_PORTS = {"http": 80, "https": 443}


def public_base_url(request: Request | None) -> str:
    """The configured public URL, or else the one the client called (scheme and Host header)."""
    configured = get_config().public_url
    if configured:
        return configured
    headers = request.headers if request is not None else {}
    host = headers.get("host") or "localhost"
    scheme = (headers.get("x-forwarded-proto") or "http").split(",")[0].strip()
    stage = (request.context or {}).get("stage") if request is not None else None
    # API Gateway's own domain puts the stage first in the path; a custom domain maps it away.
    prefix = f"/{stage}" if stage and host.endswith(".amazonaws.com") else ""
    return f"{scheme}://{host}{prefix}"


def dsn_base_url(request: Request | None) -> str:
    """Where DSNs lead: the ingestion entry point when it has its own (a Lambda Function URL on
    AWS, ERRORTRACKING_INGEST_URL), else the API's public URL."""
    return get_config().ingest_url or public_base_url(request)


def request_path(request: Request) -> str:
    """The path this request was made to, rebuilt from its route so it is the same locally and on
    API Gateway (which may hand path parameters over decoded)."""
    params = {name: quote(unquote(value), safe="") for name, value in (request.uri_params or {}).items()}
    return str(request.path).format(**params)


def split_base(base_url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port or None when it is the scheme's default, base path without trailing /)."""
    parts = urlsplit(base_url)
    scheme = parts.scheme or "http"
    port = parts.port
    if port == DEFAULT_PORTS.get(scheme):
        port = None
    return scheme, parts.hostname or "localhost", port, parts.path.rstrip("/")


def request_url(request: Request) -> str:
    """The URL the client called, as it sees it, without the query: what pagination links extend."""
    return public_base_url(request) + request_path(request)
