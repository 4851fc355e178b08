"""What the spec puts on the wire, written once for every test: GitLab's error bodies, in its own
spelling, and the fields of each entity in their order."""

from __future__ import annotations

import json
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
ERROR_NOT_FOUND = {"message": "404 Error Not Found"}
METHOD_NOT_ALLOWED = {"message": "405 Method Not Allowed"}
ROUTE_NOT_FOUND = {"error": "404 Not Found"}  # GitLab's catch-all, for a path no route has
# Paths no route has, each under every method: what GitLab answers ROUTE_NOT_FOUND to.
UNROUTED_PATHS = [
    "/api/v4/nope",
    "/api/v4/projects/group/project/error_tracking/settings",  # the path id's slash not encoded
    "/api/v4/projects/1/error_tracking/nope",
    "/api/v4/projects",
    "/api/v4",
    "/",
    "/errortracking/api/v1/projects/api/1/nope/",
]
# Methods API Gateway can route (a REST API method is one of these, or ANY).
GATEWAY_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
NOT_AN_OBJECT = {"error": "The request body must be a JSON object"}


def not_json(body: str) -> dict[str, str]:
    """The 400 for a JSON body that does not parse: the decoder's own account of where follows."""
    try:
        json.loads(body)
    except ValueError as exc:
        return {"error": f"The request body is not valid JSON: {exc}"}
    raise AssertionError(f"{body!r} is valid JSON")


# What a DSN's endpoint refuses with, each naming the reason the SDK's user reads in its log
# (GitLab's collector answers a bare 404 instead; see README, "Where we differ").
NO_SENTRY_KEY = {"message": "400 Bad request - no sentry_key in the X-Sentry-Auth header or the query string"}
UNKNOWN_PROJECT = {"message": "403 Forbidden - unknown project"}  # a project id that is not a number
UNKNOWN_KEY = {"message": "403 Forbidden - unknown client key"}
OTHER_PROJECTS_KEY = {"message": "403 Forbidden - the client key belongs to another project"}
INACTIVE_KEY = {"message": "403 Forbidden - the client key is inactive"}
NO_SETTING = {"message": "403 Forbidden - error tracking is not set up for this project"}
TRACKING_DISABLED = {"message": "403 Forbidden - error tracking is disabled for this project"}
NOT_INTEGRATED = {"message": "403 Forbidden - integrated error tracking is not enabled for this project"}
RATE_LIMITED = {"message": "429 Too Many Requests"}

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


# GitLab's CORS for token-authenticated /api calls (config/application.rb): what a page may send and read.
CORS_REQUEST_HEADERS = {"private-token", "authorization", "content-type"}
CORS_EXPOSED_HEADERS = {"link", "x-total", "x-total-pages", "x-per-page", "x-page", "x-next-page", "x-prev-page"}


def cors_list(headers: dict[str, str], name: str) -> set[str]:
    """A comma-separated CORS header's values, lower-cased (header names are case-insensitive)."""
    return {value.strip().lower() for value in headers.get(name, "").split(",") if value.strip()}
