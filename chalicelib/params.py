"""Request parameters as GitLab's Grape API reads them.

Parameters come from the query string, a JSON body or a form body (urlencoded or multipart); the
body wins on conflict. :class:`Params` validates them and gathers every problem into one 400.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from chalice.app import Request

from chalicelib import errors
from chalicelib.config import parse_bool

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON = "application/json"
# What every API route accepts; Chalice answers 415 to anything else.
CONTENT_TYPES = [JSON, FORM, MULTIPART]

MAX_BODY_BYTES = 1024 * 1024  # any request's body, API or Sentry

# Never treated as a parameter: it is a credential.
_CREDENTIALS = frozenset({"private_token"})
# What Grape's ``type: Integer`` takes: a sign and digits, however many.
_INTEGER = re.compile(r"[+-]?[0-9]+")


def require_integer(name: str, raw: str | None) -> None:
    """A path parameter GitLab declares ``type: Integer``: anything that is not an integer is a 400
    ``<name> is invalid`` (after the token, project and role checks, before any lookup); an integer
    that names nothing is the endpoint's own 404."""
    if not _INTEGER.fullmatch(raw or ""):
        raise errors.bad_request(f"{name} is invalid")


def raw_body(request: Request) -> bytes:
    """The request's body as bytes, empty when there is none (Chalice types it str | bytes)."""
    raw = request.raw_body
    return raw.encode("utf-8") if isinstance(raw, str) else (raw or b"")


def _multipart(content_type: str, body: bytes) -> dict[str, Any]:
    # email.parser is loaded anyway (http.client uses it); email.policy costs ~3 ms more at cold
    # start, so only multipart requests pay it.
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise errors.bad_request("The multipart body could not be parsed")
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return fields


def body_params(request: Request) -> dict[str, Any]:
    """The body's parameters, by its content type; a body we cannot read is a 400 that says why."""
    body = raw_body(request)
    if len(body) > MAX_BODY_BYTES:  # sent without a Content-Length, so only known once read
        raise errors.payload_too_large()
    content_type = request.headers.get("content-type", JSON)
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not body.strip():
        return {}
    if media_type == FORM:
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError as exc:
            raise errors.bad_request("The form body is not valid UTF-8") from exc
    if media_type == MULTIPART:
        return _multipart(content_type, body)
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise errors.bad_request(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise errors.bad_request("The request body must be a JSON object")
    return parsed


def request_params(request: Request) -> dict[str, Any]:
    """Query string and body merged, the body winning."""
    merged: dict[str, Any] = dict(request.query_params or {})
    merged.update(body_params(request))
    for name in _CREDENTIALS:
        merged.pop(name, None)
    return merged


class Params:
    """Validates named parameters, collecting Grape-style problems (``active is missing``)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.problems: list[str] = []

    def _present(self, name: str, required: bool) -> bool:
        if name not in self.raw:
            if required:
                self.problems.append(f"{name} is missing")
            return False
        value = self.raw[name]
        if value is None or (isinstance(value, str) and value == ""):
            self.problems.append(f"{name} is empty")
            return False
        return True

    def boolean(self, name: str, *, required: bool = False) -> bool | None:
        if not self._present(name, required):
            return None
        value = parse_bool(self.raw[name])
        if value is None:
            self.problems.append(f"{name} is invalid")
        return value

    def string(self, name: str, *, allow_empty: bool = False, max_length: int = 255) -> str | None:
        """An optional string; ``allow_empty`` lets "" through (meaning "clear it")."""
        if name not in self.raw:
            return None
        value = self.raw[name]
        if allow_empty and (value is None or value == ""):
            return ""
        if not self._present(name, required=False):
            return None
        if not isinstance(value, str) or len(value) > max_length:
            self.problems.append(f"{name} is invalid")
            return None
        return value

    def integer(self, name: str, *, minimum: int, maximum: int, allow_empty: bool = False) -> int | None:
        """An optional whole number in [minimum, maximum]; with ``allow_empty``, "" or null clear it (0)."""
        if name not in self.raw:
            return None
        value = self.raw[name]
        if allow_empty and (value is None or value == ""):
            return 0
        if not self._present(name, required=False):
            return None
        if isinstance(value, float) and value.is_integer():  # JSON's 243.0 is the integer 243
            value = int(value)
        text = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
        # Longer than any bound's digits is out of range (and int() refuses 4,300 digits and more);
        # leading zeros are not digits of the value: "000086400" is 86400, as int() reads it.
        if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 30 or not minimum <= int(text) <= maximum:
            self.problems.append(f"{name} is invalid")
            return None
        return int(text)

    def one_of(
        self, name: str, choices: tuple[str, ...], *, default: str | None = None, required: bool = False
    ) -> str | None:
        """A string from ``choices`` (Grape's ``values:``)."""
        if name not in self.raw and default is not None:
            return default
        if not self._present(name, required):
            return default
        value = self.raw[name]
        if value not in choices:
            self.problems.append(f"{name} does not have a valid value")
            return default
        return str(value)

    def at_least_one(self, names: tuple[str, ...]) -> None:
        if not any(name in self.raw for name in names):
            self.problems.append(f"{', '.join(names)} are missing, at least one parameter must be provided")

    def check(self) -> None:
        """Raise one 400 naming every problem found, in the order the parameters were read."""
        if self.problems:
            raise errors.bad_request(", ".join(self.problems))
