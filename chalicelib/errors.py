"""Every error body the service sends, in GitLab's shapes, and the one exception that carries them.

Views and services raise :class:`ApiError`; the authorizer middleware turns it into a response.
Chalice's own error responses (bad method, bad content type, crash) are rewritten here too, so no
``{"Code": ..., "Message": ...}`` body and no stack trace ever leaves the service.
"""

from __future__ import annotations

import json
from typing import Any

from chalice.app import ChaliceUnhandledError, Response

JSON_HEADERS = {"Content-Type": "application/json"}


class ApiError(ChaliceUnhandledError):
    """An answer other than success. Subclassing ChaliceUnhandledError lets it reach middleware."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(json.dumps(body))
        self.status = status
        self.body = body
        self.headers = headers or {}

    def to_response(self) -> Response:
        return Response(body=self.body, status_code=self.status, headers={**JSON_HEADERS, **self.headers})


def message(status: int, text: str) -> ApiError:
    """GitLab's ``{"message": "<status> <text>"}`` family (render_api_error!)."""
    return ApiError(status, {"message": f"{status} {text}"})


def unauthorized() -> ApiError:
    return message(401, "Unauthorized")


def invalid_token(description: str) -> ApiError:
    return ApiError(401, {"error": "invalid_token", "error_description": description})


def token_expired() -> ApiError:
    return invalid_token("Token is expired. You can either do re-authorization or token refresh.")


def token_revoked() -> ApiError:
    return invalid_token("Token was revoked. You have to re-authorize from the user.")


def insufficient_scope() -> ApiError:
    return ApiError(
        403,
        {
            "error": "insufficient_scope",
            "error_description": "The request requires higher privileges than provided by the access token.",
            "scope": "api",
        },
    )


def user_blocked() -> ApiError:
    return message(403, "Forbidden - Your account has been blocked.")


def forbidden() -> ApiError:
    return message(403, "Forbidden")


def not_found(what: str | None = None) -> ApiError:
    """``404 <What> Not Found`` (not_found!), or plain ``404 Not Found``."""
    return message(404, f"{what} Not Found" if what else "Not Found")


def route_not_found() -> ApiError:
    """GitLab's answer to a path no route has, whatever the method (Grape's catch-all route). API
    Gateway gives the same from the template's gateway responses (.chalice/merge-template.json), and
    the local server from this; every answer under /api carries GitLab's CORS origin, this one too."""
    return ApiError(404, {"error": "404 Not Found"}, {"Access-Control-Allow-Origin": "*"})


def record_not_found() -> ApiError:
    """GitLab's answer for a record its finder did not find (ActiveRecord::RecordNotFound): a
    lower-case "f"; client keys and hooks answer it."""
    return message(404, "Not found")


client_key_not_found = record_not_found


def bad_request(text: str) -> ApiError:
    """Parameter validation failures, as Grape renders them: ``{"error": "..."}``."""
    return ApiError(400, {"error": text})


def unprocessable(text: str) -> ApiError:
    """A save that cannot be done (we answer 400 where GitLab answers 200 with status error)."""
    return ApiError(400, {"message": text})


def validation_failed(text: str) -> ApiError:
    """GitLab's 422 for a save its model refused (``error!(..., 422)``): ``{"message": text}``."""
    return ApiError(422, {"message": text})


def payload_too_large() -> ApiError:
    return message(413, "Payload Too Large")


def ingest_bad_request(what: str) -> ApiError:
    """Ingestion's 400: no key, or a body that cannot be read."""
    return message(400, f"Bad request - {what}")


def ingest_forbidden(which: str) -> ApiError:
    """Ingestion's 403: the key or the project's setting does not allow this event."""
    return message(403, f"Forbidden - {which}")


def rate_limited(retry_after: int) -> ApiError:
    """Over a client key's rate limit, in the headers every Sentry SDK understands."""
    return ApiError(
        429,
        {"message": "429 Too Many Requests"},
        {"Retry-After": str(retry_after), "X-Sentry-Rate-Limits": f"{retry_after}:error:key"},
    )


def service_unavailable() -> ApiError:
    return ApiError(503, {"message": "503 Service Unavailable"}, {"Retry-After": "1"})


def _chalice_body(status: int, chalice_message: str) -> dict[str, Any]:
    if status == 400:  # malformed JSON body
        return {"error": chalice_message}
    if status == 405:
        return {"message": "405 Method Not Allowed"}
    if status == 415:  # Grape's wording for a body it cannot parse
        content_type = chalice_message.removeprefix("Unsupported media type: ")
        return {"error": f"The provided content-type '{content_type}' is not supported."}
    return {"message": "500 Internal Server Error"}


def normalize(response: Response) -> Response:
    """Rewrite Chalice's built-in error bodies into GitLab's shapes; leave ours alone."""
    body = response.body
    if response.status_code < 400 or not (isinstance(body, dict) and "Code" in body and "Message" in body):
        return response
    status = response.status_code if response.status_code in (400, 405, 415) else 500
    headers = {
        k: v for k, v in response.headers.items() if k.lower() == "allow" or k.lower().startswith("access-control-")
    }
    return Response(
        body=_chalice_body(status, str(body["Message"])), status_code=status, headers={**JSON_HEADERS, **headers}
    )
