"""Sensitive data out of an event before it is stored, as Relay's default data scrubbing does.

Sentry scrubs by default (getsentry/relay ``relay-pii``: ``@common:filter`` and
``@password:filter``, with "scrub data" and "use default scrubbers" on): values under keys that
name a credential (``password``, ``secret``, ``token``, ``auth``, ``api_key``, ...), strings that
mention one, bearer tokens, credit-card-like numbers, PEM keys, passwords in URLs and US social
security numbers become ``[Filtered]``. Like Relay, it reads the fields where SDKs put what users
and requests carry: the request's headers, cookies, query and body, the user, ``extra``,
breadcrumbs' messages and data, and stack frames' local variables. Unlike Relay, every cookie
value is filtered (normalization does that), not only the session cookies it knows, and the key
list also has ``session``, ``cookie``, ``csrf``, ``xsrf`` and ``jwt`` (the JavaScript SDKs' own
list). Messages, exception values and the request's URL keep their text (as in Relay), minus
bearer tokens, card numbers, keys and URL passwords.
"""

from __future__ import annotations

import re
from typing import Any

from chalicelib.ingest import payload as parts

FILTERED = "[Filtered]"
_SENSITIVE_KEY = re.compile(
    r"password|secret|passwd|api[-_]?key|auth|credentials|mysql_pwd|private[-_]?key|token|session|cookie|"
    r"csrf|xsrf|jwt|bearer|^sid$|^otp$|^two[-_]factor$",
    re.IGNORECASE,
)
# Relay's value rule: a string that mentions a credential is filtered whole.
_SENSITIVE_TEXT = re.compile(
    r"password|secret|passwd|api[-_]key|apikey|auth|credentials|mysql_pwd|privatekey|private[-_]key|token[^\s]*[:=]|"
    r"^otp$|^two[-_]factor$",
    re.IGNORECASE,
)
# Patterns replaced where they stand (the rest of the string is kept).
_BEARER = re.compile(r"\b(Bearer\s+)\S+", re.IGNORECASE)
_CREDIT_CARD = re.compile(r"\b(?:3[47]\d|4\d{3}|5[1-5]\d\d|65\d\d|6011)(?:[-\s]?\d){12}\b")
_PEM_KEY = re.compile(
    r"(-----BEGIN[A-Z ]*(?:PRIVATE|PUBLIC) KEY-----).+?(-----END[A-Z ]*(?:PRIVATE|PUBLIC) KEY-----)", re.DOTALL
)
_URL_PASSWORD = re.compile(r"\b((?:[a-z0-9]+:)?//[a-zA-Z0-9%_.-]+:)[a-zA-Z0-9%_.-]+@", re.IGNORECASE)
_US_SSN = re.compile(r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b")
_HARMLESS = frozenset({"", "true", "false", "null", "undefined"})


def sensitive_key(key: Any) -> bool:
    return isinstance(key, str) and bool(_SENSITIVE_KEY.search(key))


def replace_patterns(text: str) -> str:
    """``text`` with bearer tokens, card numbers, PEM key bodies, URL passwords and SSNs filtered."""
    text = _BEARER.sub(lambda m: m[1] + FILTERED, text)
    text = _CREDIT_CARD.sub(FILTERED, text)
    text = _PEM_KEY.sub(lambda m: m[1] + FILTERED + m[2], text)
    text = _URL_PASSWORD.sub(lambda m: m[1] + FILTERED + "@", text)
    return _US_SSN.sub(FILTERED, text)


def scrub(value: Any) -> Any:
    """``value`` (any JSON) with everything sensitive in it filtered; the input is not changed."""
    if isinstance(value, dict):
        return {k: FILTERED if sensitive_key(k) and v is not None else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        if value.strip().lower() in _HARMLESS:
            return value
        return FILTERED if _SENSITIVE_TEXT.search(value) else replace_patterns(value)
    if isinstance(value, int) and not isinstance(value, bool) and _CREDIT_CARD.fullmatch(str(value)):
        return FILTERED
    return value


def _scrubbed_fields(payload: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Where scrubbing reads (Relay's ``pii = true`` fields): (holder, key) pairs."""
    found: list[tuple[dict[str, Any], str]] = []
    request = payload.get("request")
    if isinstance(request, dict):
        found += [(request, k) for k in ("headers", "cookies", "query_string", "data", "env") if k in request]
    found += [(payload, k) for k in ("user", "extra") if k in payload]
    for crumb in parts.breadcrumbs(payload) or []:
        found += [(crumb, k) for k in ("message", "data") if k in crumb]
    found += [(frame, "vars") for frame in parts.all_frames(payload) if "vars" in frame]
    return found


def scrub_event(payload: dict[str, Any]) -> bool:
    """Scrub ``payload`` in place; True when anything changed."""
    changed = False
    for holder, key in _scrubbed_fields(payload):
        scrubbed = scrub(holder[key])
        if scrubbed != holder[key]:
            holder[key], changed = scrubbed, True
    for holder, key in _texts(payload):
        replaced = replace_patterns(holder[key])
        if replaced != holder[key]:
            holder[key], changed = replaced, True
    return changed


def _texts(payload: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Text kept as written but for the patterns replaced in place: the message, exception values,
    the request's URL (Relay does not filter these whole: they name what happened)."""
    found: list[tuple[dict[str, Any], str]] = []
    if isinstance(payload.get("message"), str):
        found.append((payload, "message"))
    request = payload.get("request")
    if isinstance(request, dict) and isinstance(request.get("url"), str):
        found.append((request, "url"))
    for holder in (payload.get("logentry"), payload.get("message"), *parts.exceptions(payload)):
        if isinstance(holder, dict):
            found += [(holder, k) for k in ("formatted", "message", "value") if isinstance(holder.get(k), str)]
    return found
