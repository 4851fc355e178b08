"""What an event is stored as: the payload an SDK sent, normalized in small named steps before it is
stored, as Relay normalizes an event before Sentry stores it.

Each step changes the payload in place and says whether it changed anything (so a payload no step
touched is stored as the bytes it came as). Every step takes any JSON: an event is written by
whoever holds a DSN.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from chalicelib.ingest import frames, scrubbing
from chalicelib.ingest import payload as parts
from chalicelib.ingest.payload import Payload, text

MAX_BREADCRUMBS = 100  # what the SDKs keep by default
# Headers that carry credentials: never stored. Cookie names are kept (in ``request.cookies``).
_CREDENTIAL_HEADERS = frozenset({"cookie", "set-cookie", "authorization", "proxy-authorization"})


def split_request_url(payload: Payload) -> bool:
    """``request.url`` without its query string and fragment; the query goes to ``query_string``
    (unless the SDK sent one) as an object, where scrubbing can read it by name."""
    request = payload.get("request")
    if not isinstance(request, dict):
        return False
    changed = False
    url = request.get("url")
    if isinstance(url, str) and ("?" in url or "#" in url):
        if not request.get("query_string"):
            try:
                request["query_string"] = urlsplit(url).query
            except ValueError:
                request["query_string"] = url.partition("?")[2].partition("#")[0]
        request["url"], changed = frames.without_query(url), True
    query = request.get("query_string")
    if isinstance(query, str):
        request["query_string"], changed = dict(parse_qsl(query.lstrip("?"), keep_blank_values=True)), True
    elif isinstance(query, list):
        request["query_string"], changed = dict(parts.pairs(query) or []), True
    return changed


def drop_credential_headers(payload: Payload) -> bool:
    """No ``Cookie``, ``Set-Cookie`` or ``Authorization`` header is kept; the cookies' names are
    (their values filtered), in ``request.cookies``."""
    request = payload.get("request")
    if not isinstance(request, dict):
        return False
    changed = False
    headers = parts.pairs(request.get("headers"))
    if headers is not None:
        kept = {name: value for name, value in headers if name.strip().lower() not in _CREDENTIAL_HEADERS}
        cookie_header = next((v for n, v in headers if n.strip().lower() == "cookie" and isinstance(v, str)), None)
        if cookie_header and not request.get("cookies"):
            request["cookies"] = cookie_header
        if kept != request.get("headers"):
            request["headers"], changed = kept, True
    cookies = request.get("cookies")
    if isinstance(cookies, str):
        cookies = [tuple(part.strip().split("=", 1)) for part in cookies.split(";") if "=" in part]
    named = parts.pairs(cookies)
    if named is not None:
        filtered = {name: scrubbing.FILTERED for name, _ in named}
        if filtered != request.get("cookies"):
            request["cookies"], changed = filtered, True
    elif "cookies" in request:
        del request["cookies"]
        changed = True
    return changed


def strip_frame_urls(payload: Payload) -> bool:
    """Frames of scripts on the web name their URL without query string and fragment: a query may
    hold a secret, and would split one error into many."""
    changed = False
    for frame in parts.all_frames(payload):
        for key in ("abs_path", "filename"):
            path = frame.get(key)
            if frames.is_url(path) and ("?" in path or "#" in path):
                frame[key], changed = frames.without_query(path), True
    return changed


def bound_breadcrumbs(payload: Payload) -> bool:
    """The newest MAX_BREADCRUMBS breadcrumbs, as a list (Python SDKs send ``{"values": [...]}``)."""
    if "breadcrumbs" not in payload:
        return False
    kept = (parts.breadcrumbs(payload) or [])[-MAX_BREADCRUMBS:]
    if kept == payload["breadcrumbs"]:
        return False
    payload["breadcrumbs"] = kept
    return True


_BROWSERS = (
    ("Edge", re.compile(r"\bEdgA?/([\d.]+)")),
    ("Opera", re.compile(r"\bOPR/([\d.]+)")),
    ("Firefox", re.compile(r"\bFirefox/([\d.]+)")),
    ("Chrome Headless", re.compile(r"\bHeadlessChrome/([\d.]+)")),
    ("Chrome", re.compile(r"\b(?:Chrome|CriOS)/([\d.]+)")),
    ("Safari", re.compile(r"\bVersion/([\d.]+).*\bSafari/")),
)
_SYSTEMS = (
    ("Windows", re.compile(r"\bWindows NT ([\d.]+)")),
    ("iOS", re.compile(r"\b(?:iPhone|CPU) OS ([\d_]+)")),
    ("Mac OS X", re.compile(r"\bMac OS X ([\d_.]+)")),
    ("Android", re.compile(r"\bAndroid ([\d.]+)")),
    ("Chrome OS", re.compile(r"\bCrOS \S+ ([\d.]+)")),
    ("Linux", re.compile(r"\bLinux\b()")),
)


def _user_agent(payload: Payload) -> str | None:
    request = payload.get("request")
    headers = parts.pairs(request.get("headers")) if isinstance(request, dict) else None
    found = next((v for n, v in headers or [] if n.strip().lower() == "user-agent"), None)
    return found if isinstance(found, str) else None


def infer_browser_contexts(payload: Payload) -> bool:
    """``contexts.browser`` and ``contexts.os`` from the request's User-Agent, when the SDK did not
    send them (browser SDKs never do; Relay infers them the same way)."""
    agent = _user_agent(payload)
    if not agent:
        return False
    contexts = payload.get("contexts")
    if contexts is not None and not isinstance(contexts, dict):
        return False
    contexts = {} if contexts is None else contexts
    added = {}
    for key, table in (("browser", _BROWSERS), ("os", _SYSTEMS)):
        if key in contexts:
            continue
        for name, pattern in table:
            match = pattern.search(agent[:1024])
            if match:
                added[key] = {"name": name, **({"version": match[1].replace("_", ".")} if match[1] else {})}
                break
    if not added:
        return False
    payload["contexts"] = {**contexts, **added}
    return True


def drop_auto_ip(payload: Payload) -> bool:
    """``{{auto}}`` asks Sentry to fill in the sender's address; we keep none rather than a placeholder."""
    user = payload.get("user")
    if isinstance(user, dict) and text(user.get("ip_address"), 64) == "{{auto}}":
        del user["ip_address"]
        return True
    return False


# In order: the shape first, then what the shape lets scrubbing find.
STEPS: tuple[Callable[[Payload], bool], ...] = (
    split_request_url,
    drop_credential_headers,
    strip_frame_urls,
    bound_breadcrumbs,
    infer_browser_contexts,
    drop_auto_ip,
    scrubbing.scrub_event,
)


def normalize_payload(payload: Payload) -> bool:
    """Run every step on ``payload`` (in place); True when any changed it."""
    changed = False
    for step in STEPS:
        changed = step(payload) or changed
    return changed
