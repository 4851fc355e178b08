"""The Sentry-backed mode's connection fields: building ``api_url`` and vetting its host.

GitLab only lets its web UI set these; here PUT and PATCH take the same fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chalicelib.config import get_config

_API_URL = re.compile(r"^(?P<host>.+?)/api/0/projects/(?P<org>[^/]+)/(?P<project>[^/]+)/?$")
_SLUG = re.compile(r"^[A-Za-z0-9_.-]+$")
_SLASHES = re.compile(r"(?<!:)/{2,}")


class ConnectionProblem(ValueError):
    """A connection field that cannot be accepted; the message says which and why."""


@dataclass(frozen=True)
class SentryProject:
    api_host: str
    organization_slug: str
    project_slug: str

    @property
    def api_url(self) -> str:
        url = f"{self.api_host}/api/0/projects/{self.organization_slug}/{self.project_slug}/"
        return _SLASHES.sub("/", url)


def parse_api_url(api_url: str | None) -> SentryProject | None:
    match = _API_URL.match(api_url or "")
    if not match:
        return None
    return SentryProject(match["host"], match["org"], match["project"])


def external_url(api_url: str | None) -> str | None:
    """The Sentry UI address of the project: ``api_url`` without its first ``api/0/projects/``."""
    return api_url.replace("api/0/projects/", "", 1) if api_url else None


def titleize(slug: str) -> str:
    """Rails' ``String#titleize`` as GitLab applies it to a project slug."""
    words = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", slug).replace("-", "_").lower()
    words = re.sub(r"_id$", "", words).replace("_", " ").strip()
    return re.sub(r"\b([a-z])", lambda m: m.group(1).upper(), words)


def project_slug(api_url: str | None) -> str | None:
    parsed = parse_api_url(api_url)
    return parsed.project_slug if parsed else None


def check_api_host(api_host: str) -> str:
    """An http(s) URL whose host does not lead into our own network (chalicelib/urlsafety.py).
    Returns it without a trailing /."""
    from chalicelib import urlsafety

    try:
        urlsafety.check(api_host.strip(), name="api_host", allow_local=get_config().allow_local_sentry_hosts)
    except urlsafety.Refused as exc:
        raise ConnectionProblem(str(exc)) from exc
    return api_host.strip().rstrip("/")


def check_slug(name: str, value: str) -> str:
    if not _SLUG.match(value):
        raise ConnectionProblem(f"{name} may only contain letters, digits, '_', '-' and '.'")
    return value
