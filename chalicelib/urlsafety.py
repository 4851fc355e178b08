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
    """Any address that is not a public unicast one: loopback, private, shared (100.64/10),
    link-local, unspecified, multicast, reserved. An IPv6 address that carries an IPv4 one
    (IPv4-mapped, 6to4, Teredo, NAT64) is judged by that IPv4 address too, whatever the Python
    version thinks of the prefix."""
    import ipaddress

    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates += [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
        if ip.teredo is not None:
            candidates += list(ip.teredo)
        if ip in ipaddress.ip_network("64:ff9b::/96"):
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return any(not a.is_global or a.is_multicast for a in candidates)


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

    try:
        parts = urlsplit(url)
    except ValueError as exc:  # a bracketed host that is not an IPv6 address, say
        raise Refused(f"{name} must be an http or https URL") from exc
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
