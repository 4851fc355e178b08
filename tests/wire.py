"""What the spec puts on the wire, written once for every test: GitLab's error bodies, in its own
spelling, and the fields of each entity in their order."""

from __future__ import annotations

import re

UNAUTHORIZED = {"message": "401 Unauthorized"}
EXPIRED = {
    "error": "invalid_token",
    "error_description": "Token is expired. You can either do re-authorization or token refresh.",
}
REVOKED = {
    "error": "invalid_token",
    "error_description": "Token was revoked. You have to re-authorize from the user.",
}
BLOCKED = {"message": "403 Forbidden - Your account has been blocked."}
INSUFFICIENT_SCOPE = {
    "error": "insufficient_scope",
    "error_description": "The request requires higher privileges than provided by the access token.",
    "scope": "api",
}
FORBIDDEN = {"message": "403 Forbidden"}
PROJECT_NOT_FOUND = {"message": "404 Project Not Found"}
SETTING_NOT_FOUND = {"message": "404 Error Tracking Setting Not Found"}
KEY_NOT_FOUND = {"message": "404 Not found"}  # lower-case f, as GitLab's client key endpoint writes it
PAYLOAD_TOO_LARGE = {"message": "413 Payload Too Large"}
UNAVAILABLE = {"message": "503 Service Unavailable"}

SETTING_FIELDS = ["active", "project_name", "sentry_external_url", "api_url", "integrated"]
# GitLab's four, then what this service adds.
CLIENT_KEY_FIELDS = [
    "id",
    "active",
    "public_key",
    "sentry_dsn",
    "name",
    "created_at",
    "rate_limit_count",
    "rate_limit_window",
]
PUBLIC_KEY = re.compile(r"^glet_[0-9a-f]{32}$")
