"""Where the service may send requests of its own: the one rule for URLs a user gives us.

A Sentry API host (chalicelib/sentry.py) and a webhook URL (chalicelib/hooks) are given by a
project's Maintainer, and the service then sends requests there from inside its own network. So
such a URL must be http(s), and its host must not resolve to a loopback, private, link-local or
otherwise special address (AWS's instance metadata at 169.254.169.254 is link-local), unless the
deployment allows local hosts (``make run`` does, for receivers on the laptop).

A name is checked when it is saved and again when it is used, against the addresses it resolves
to then: the request is sent to a checked address, never to a second lookup (DNS rebinding).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit


class Refused(ValueError):
    """The URL is not one the service sends requests to; the message says why, for the user."""


def special_address(address: str) -> bool:
    """An address inside our own network or no one's: loopback, private, link-local, unspecified,
    multicast or reserved (an IPv4-mapped IPv6 address is judged as its IPv4 address)."""
    import ipaddress

    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved


@dataclass(frozen=True)
class Target:
    """A URL that passed, with the addresses its host resolved to (in the resolver's order)."""

    parts: SplitResult
    host: str
    port: int
    addresses: tuple[str, ...]


def check(url: str, *, name: str, allow_local: bool, allow_query: bool = False) -> Target:
    """``url`` parsed and resolved, or :class:`Refused` naming ``name`` and the reason."""
    import socket

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise Refused(f"{name} must be an http or https URL")
    if parts.username or parts.password or parts.fragment or (parts.query and not allow_query):
        what = "credentials or a fragment" if allow_query else "credentials, a query or a fragment"
        raise Refused(f"{name} must not carry {what}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (ValueError, OSError, UnicodeError) as exc:
        raise Refused(f"{name} cannot be resolved or is invalid") from exc
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_local and any(special_address(a) for a in addresses):
        raise Refused(f"{name} resolves to a local or private address, which is not allowed")
    return Target(parts, parts.hostname, port, addresses)
