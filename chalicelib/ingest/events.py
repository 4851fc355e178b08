"""A Sentry event, read defensively: its identity, its time, what it says, and the error it belongs to.

The payload is first normalized as it will be stored (``normalization``: URLs without query
strings, credentials and sensitive data scrubbed, ...). Then it is read as Sentry reads it:
the main exception (``exceptions``: the raised one, or what an exception group boils down to)
titles and types the event; a synthetic exception (what JavaScript SDKs attach to
``captureMessage``) stands for a message, so a message reads the same from every SDK.

Grouping follows GitLab's collector, corrected where Sentry knows better: an SDK-sent
``fingerprint`` wins (``{{ default }}`` expands to ours); otherwise exception events group by the
main exception's type, the culprit and the platform, and message events (synthetic exceptions
included) by their message template. Exception values are never part of the key: they often hold
object ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from chalicelib.ingest import exceptions, frames, normalization
from chalicelib.ingest import payload as parts
from chalicelib.ingest.payload import clean, text

# What one stored event may take, compressed, leaving room in the 400 KB DynamoDB item.
MAX_STORED_BYTES = 300 * 1024
_HEX32 = re.compile(r"\A[0-9a-f]{32}\Z")
_DEFAULT_MARKERS = frozenset({"{{ default }}", "{{default}}"})


def given_event_id(payload: dict[str, Any], fallback: Any = None) -> str | None:
    """The event's own id, else the envelope's, as 32 lowercase hex characters; None without either."""
    for candidate in (payload.get("event_id"), fallback):
        if isinstance(candidate, str):
            normalized = candidate.replace("-", "").lower()
            if _HEX32.match(normalized):
                return normalized
    return None


def event_id_of(payload: dict[str, Any], fallback: Any = None) -> str:
    """32 lowercase hex characters: the event's own id, the envelope's, or a new one."""
    return given_event_id(payload, fallback) or uuid.uuid4().hex


def parse_timestamp(value: Any, default: dt.datetime | None) -> dt.datetime | None:
    """ISO-8601 strings, or epoch seconds as a number or a string; anything else is ``default``."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        if isinstance(value, str):
            text = value.strip()
            if re.fullmatch(r"\d+(\.\d+)?", text):
                return dt.datetime.fromtimestamp(float(text), dt.UTC)
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return default


def frames_of(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The frames that locate the event (oldest call first): the main exception's, else those of the
    last exception that has any, else the event's own stack trace."""
    main = exceptions.main_exception(payload)
    for holder in (main, *reversed(parts.exceptions(payload)), payload):
        found = parts.frames(holder)
        if found:
            return found
    return []


def _culprit(payload: dict[str, Any], synthetic: bool) -> str:
    """The transaction, else (but for a synthetic exception, whose stack is the SDK's) the newest
    application frame: GitLab's ``function(module)``."""
    transaction = text(payload.get("transaction"), 255)
    if transaction:
        return transaction
    return "" if synthetic else frames.culprit(frames_of(payload))


def _message(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the message as shown, its template for grouping)."""
    for source in (payload.get("logentry"), payload.get("message")):
        if isinstance(source, dict):
            formatted = text(source.get("formatted"), 1024) or text(source.get("message"), 1024)
            template = text(source.get("message"), 1024) or formatted
            if formatted:
                return formatted, template
        elif isinstance(source, str) and source.strip():
            found = clean(source).strip()[:1024]
            return found, found
    return None, None


@dataclass(frozen=True)
class Event:
    event_id: str
    timestamp: dt.datetime
    # The SDK sent the event's own id and time: the key they make names this event only, so a
    # delivery of it again finds its stored item (no claim of the id is needed to know it).
    identified: bool
    error_id: int
    type: str  # "error" for exceptions, "default" otherwise, as Sentry says
    title: str
    message: str
    culprit: str
    platform: str
    level: str
    environment: str | None
    release: str | None
    user: str | None  # a digest of the user's identity, for counting distinct users
    payload: dict[str, Any]
    raw: bytes | None = None  # the payload's JSON as received: stored as is when it fits


def _grouping(parts: list[str], fingerprint: Any) -> list[str]:
    if isinstance(fingerprint, list) and fingerprint and all(isinstance(p, str | int | float) for p in fingerprint):
        expanded: list[str] = []
        for part in fingerprint:
            expanded.extend(parts if str(part).strip() in _DEFAULT_MARKERS else [clean(str(part))[:255]])
        return expanded
    return parts


def error_id_for(parts: list[str]) -> int:
    """A stable positive id below 2^53, so JavaScript clients read it exactly."""
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:7], "big") >> 3 or 1


def _user(payload: dict[str, Any]) -> str | None:
    user = payload.get("user")
    if not isinstance(user, dict):
        return None
    for field in ("id", "email", "username", "ip_address"):
        value = text(user.get(field), 255)
        if value:
            return hashlib.sha256(f"{field}:{value}".encode()).hexdigest()[:16]
    return None


_TYPE_IN_VALUE = re.compile(r"^(\w+):(.*)$", re.DOTALL)


def _type_and_value(exception: dict[str, Any]) -> tuple[str, str]:
    """An exception's type and value; a value "Type: text" without a type is split (Relay), and no
    type at all is "Error" (Sentry)."""
    exc_type, value = text(exception.get("type"), 255), text(exception.get("value"), 8192) or ""
    if exc_type is None:
        split = _TYPE_IN_VALUE.match(value)
        exc_type, value = (split[1], split[2].strip()) if split else ("Error", value)
    return exc_type, value


def normalize(
    payload: dict[str, Any], received_at: dt.datetime, envelope_event_id: Any = None, raw: bytes | None = None
) -> Event:
    """Everything the service needs from one event payload (any JSON object is accepted).

    ``payload`` is normalized in place into what is stored; ``raw``, the JSON it came as, is kept
    only when no normalization step changed it."""
    if normalization.normalize_payload(payload):
        raw = None
    main = exceptions.main_exception(payload)
    synthetic = exceptions.is_synthetic(main)
    culprit = _culprit(payload, synthetic)
    platform = text(payload.get("platform"), 64) or "other"
    message, template = _message(payload)
    if synthetic and main is not None and not template:
        message = template = text(main.get("value"), 1024)
    if main is not None and not synthetic:
        exc_type, value = _type_and_value(main)
        title = f"{exc_type}: {value.splitlines()[0]}" if value.strip() else exc_type
        kind, shown = "error", value or message or ""
        parts = ["exception", exc_type, culprit, platform]
    elif template:
        title, kind, shown = (message or template).splitlines()[0], "default", message or template
        parts = ["message", template]
    else:
        title, kind, shown = "<unlabeled event>", "default", ""
        parts = ["event", platform, culprit]
    given_id, timestamp = given_event_id(payload, envelope_event_id), parse_timestamp(payload.get("timestamp"), None)
    return Event(
        event_id=given_id or uuid.uuid4().hex,
        timestamp=timestamp or received_at,
        identified=given_id is not None and timestamp is not None,
        error_id=error_id_for(_grouping(parts, payload.get("fingerprint"))),
        type=kind,
        title=title[:255],
        message=shown[:1024],
        culprit=culprit,
        platform=platform,
        level=text(payload.get("level"), 32) or ("error" if main is not None and not synthetic else "info"),
        environment=text(payload.get("environment"), 255),
        release=text(payload.get("release"), 255),
        user=_user(payload),
        payload=payload,
        raw=raw,
    )


def _compress(payload: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(payload, separators=(",", ":"), default=str).encode("utf-8"), 6)


def _without_frame_vars(payload: dict[str, Any]) -> None:
    for frame in parts.all_frames(payload):
        frame.pop("vars", None)


_FRAME_ESSENTIALS = ("filename", "abs_path", "function", "module", "lineno", "colno", "in_app", "context_line")
_EVENT_ESSENTIALS = ("event_id", "timestamp", "level", "platform", "environment", "release", "transaction")


def _bare(frame: dict[str, Any], limit: int) -> dict[str, Any]:
    return {
        k: frame[k] if isinstance(frame[k], bool | int) else text(frame[k], limit)
        for k in _FRAME_ESSENTIALS
        if k in frame
    }


def _essentials(payload: dict[str, Any], frames_kept: int, limit: int) -> dict[str, Any]:
    """The last resort: the event's identity, and its last five exceptions with a few bare frames."""
    kept: dict[str, Any] = {k: text(payload[k], limit) for k in _EVENT_ESSENTIALS if k in payload}
    message, _ = _message(payload)
    if message:
        kept["message"] = message[:limit]
    values = []
    for exception in parts.exceptions(payload)[-5:]:
        kept_frames = parts.frames(exception)[-frames_kept:] if frames_kept else []
        mechanism = {k: v for k, v in exceptions.mechanism(exception).items() if isinstance(v, bool | int)}
        values.append(
            {
                "type": text(exception.get("type"), limit),
                "value": text(exception.get("value"), limit),
                "mechanism": mechanism,
                "stacktrace": {"frames": [_bare(frame, limit) for frame in kept_frames]},
            }
        )
    if values:
        kept["exception"] = {"values": values}
    return kept


# What goes, in this order, when an event is too big to store whole.
_TRIM_ORDER = ("frame vars", "breadcrumbs", "modules extra contexts request debug_meta spans threads")


def fit_for_storage(payload: dict[str, Any], raw: bytes | None = None) -> tuple[bytes, bool]:
    """The payload compressed to fit one DynamoDB item: (bytes, whether anything was trimmed).

    ``raw``, the JSON as received, is stored as it came when it fits (no re-encoding). What goes
    first when it must: frame variables, then breadcrumbs, then the bulky extras (modules, extra,
    contexts, request bodies); at last only the essentials of the exceptions.
    """
    stored = zlib.compress(raw, 6) if raw is not None else _compress(payload)
    if len(stored) <= MAX_STORED_BYTES:
        return stored, False
    trimmed = json.loads(json.dumps(payload, default=str))
    for drop in _TRIM_ORDER:
        if drop == "frame vars":
            _without_frame_vars(trimmed)
        else:
            for name in drop.split():
                trimmed.pop(name, None)
        trimmed["_trimmed"] = True
        stored = _compress(trimmed)
        if len(stored) <= MAX_STORED_BYTES:
            return stored, True
    # Text limits count characters, and a character may cost several bytes even compressed: shrink
    # until it fits. The last step keeps no frames and short texts, which always fits.
    for frames_kept, limit in ((50, 1024), (10, 255), (0, 128)):
        essentials = _essentials(trimmed, frames_kept, limit)
        essentials["_trimmed"] = True
        stored = _compress(essentials)
        if len(stored) <= MAX_STORED_BYTES:
            break
    return stored, True


def load_stored(data: bytes) -> dict[str, Any]:
    value = json.loads(zlib.decompress(data))
    return value if isinstance(value, dict) else {}
