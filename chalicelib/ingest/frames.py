"""Stack frames: which are the application's own, what module each is in, and the culprit.

The culprit is GitLab's ``function(module)`` of the newest frame the application owns (Sentry
writes JavaScript culprits the same way). A browser frame has no module, only the URL of its
script, and that URL may carry a query string (cache busters, tokens) and a fragment: the module
is derived from the URL's path alone, as Sentry derives it (getsentry/sentry
``lang/javascript/utils.py`` ``generate_module``), so a query string can neither leak into the
culprit nor split one error into many.
"""

from __future__ import annotations

import re
from typing import Any, TypeGuard
from urllib.parse import urlsplit, urlunsplit

from chalicelib.ingest.payload import text

Frame = dict[str, Any]

_URL_SCHEMES = ("http:", "https:", "webpack:", "app:", "file:", "blob:")
# Frames that are never the application's own: dependencies, vendored code, CDNs, the Sentry SDK
# itself (Sentry's default grouping enhancements, plus the SDK's own names).
_NOT_APP = re.compile(
    r"(?:^|/)(?:node_modules|bower_components|vendor)/|@sentry/|"
    r"//(?:unpkg\.com|cdnjs\.cloudflare\.com|cdn\.jsdelivr\.net|esm\.run|browser\.sentry-cdn\.com|js\.sentry-cdn\.com)/",
    re.IGNORECASE,
)
_SDK_FUNCTIONS = re.compile(r"(?:^|\.)(?:sentryWrapped|captureException|captureMessage|captureEvent)$")
_VERSION = re.compile(r"^[a-f0-9]{32}$|^[a-f0-9]{40}$", re.IGNORECASE)
_CLEAN_MODULE = re.compile(
    r"""^
    (?:/|  # leading slashes
        (?:
            (?:java)?scripts?|js|build|static|node_modules|bower_components|[_.~].*?|  # common folders
            v?(?:\d+\.)*\d+|  # version numbers, v1, 1.0.0
            [a-f0-9]{7,8}|  # short sha
            [a-f0-9]{32}|  # md5
            [a-f0-9]{40}  # sha1
        )/)+|
    (?:[-.][a-f0-9]{7,}$)  # a trailing content hash
    """,
    re.IGNORECASE | re.VERBOSE,
)


def is_url(path: Any) -> TypeGuard[str]:
    return isinstance(path, str) and path.lower().startswith(_URL_SCHEMES)


def without_query(url: str) -> str:
    """``url`` without its query string and fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.split(r"[?#]", url, maxsplit=1)[0]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def module_from_url(url: str) -> str:
    """Sentry's module name for a script URL: its path without extension, hashes and the usual
    asset folders (``https://host/static/js/app.3f2a9c1.min.js?v=3`` is ``app``)."""
    try:
        path = urlsplit(url).path
    except ValueError:
        path = re.split(r"[?#]", url, maxsplit=1)[0]
    stem, dot, extension = path.rpartition(".")
    path = stem if dot and "/" not in extension else path
    path = path.removesuffix(".min")
    tokens = path.split("/")
    for index, token in enumerate(tokens):
        if _VERSION.match(token):
            return "/".join(tokens[index + 1 :]) or "<unknown module>"
    return _CLEAN_MODULE.sub("", path) or "<unknown module>"


def location(frame: Frame) -> str | None:
    """Where the frame's code is: its module, else (for scripts on the web) the module of its URL,
    else its file name."""
    module = frame.get("module")
    if isinstance(module, str) and module.strip():
        return module.strip()
    for key in ("abs_path", "filename"):
        path = frame.get(key)
        if is_url(path):
            return module_from_url(path)
    filename = frame.get("filename")
    return filename.strip() if isinstance(filename, str) and filename.strip() else None


def is_app(frame: Frame) -> bool:
    """The application's own code: as the SDK says (``in_app``), but never a dependency's, a CDN's
    or the Sentry SDK's own frames."""
    if frame.get("in_app") is not True:
        return False
    paths = [frame.get(k) for k in ("abs_path", "filename", "module")]
    if any(isinstance(p, str) and _NOT_APP.search(p) for p in paths):
        return False
    function = frame.get("function")
    return not (isinstance(function, str) and _SDK_FUNCTIONS.search(function))


def culprit(frames: list[Frame], limit: int = 255) -> str:
    """``function(module)`` of the newest application frame, else of the newest frame; "" without
    frames. ``frames`` are oldest first, as SDKs send them."""
    chosen = next((f for f in reversed(frames) if is_app(f)), frames[-1] if frames else None)
    if chosen is None:
        return ""
    function = text(chosen.get("function"), 120) or "?"
    where = text(location(chosen), 120) or "?"
    return f"{function}({where})"[:limit]
