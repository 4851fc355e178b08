"""The Sentry-backed mode's connection fields: building ``api_url`` and vetting its host.

GitLab only lets its web UI set these; here PUT and PATCH take the same fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

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


def _refused(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved


def check_api_host(api_host: str) -> str:
    """An http(s) URL whose host does not lead into our own network. Returns it without a trailing /."""
    import socket

    parts = urlsplit(api_host.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectionProblem("api_host must be an http or https URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConnectionProblem("api_host must not carry credentials, a query or a fragment")
    try:
        port = parts.port
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port or 443)}
    except (ValueError, OSError) as exc:
        raise ConnectionProblem("api_host cannot be resolved or is invalid") from exc
    if not get_config().allow_local_sentry_hosts and any(_refused(str(a)) for a in addresses):
        raise ConnectionProblem("api_host resolves to a local or private address, which is not allowed")
    return api_host.strip().rstrip("/")


def check_slug(name: str, value: str) -> str:
    if not _SLUG.match(value):
        raise ConnectionProblem(f"{name} may only contain letters, digits, '_', '-' and '.'")
    return value
