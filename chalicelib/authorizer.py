"""Who may call what: the HTTP middleware that authenticates every API request and checks its role.

Each route states what it needs with :func:`requires`, right under its ``@app.route``. The
middleware reads that, then decides in GitLab's order: authenticate the token (401), check its
scope and the user's state (403), find the project (404), check the role (403). Only then does the
view run, with everything it needs already loaded (:func:`current`).

Round trips: one read for the token (a BatchGetItem that also resolves a path id), one
BatchGetItem for user, project, membership and whatever the route preloads.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import enum
import functools
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

from chalice.app import Chalice, Request, Response

from chalicelib import errors, models, telemetry
from chalicelib.models import (
    MAINTAINER,
    OWNER,
    AccessToken,
    ClientKey,
    Entity,
    ErrorTrackingSetting,
    Key,
    Membership,
    Project,
    ProjectHook,
    ProjectPathClaim,
    TrackedError,
    User,
)
from chalicelib.params import MAX_BODY_BYTES, raw_body

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD"})
_BEARER = re.compile(r"^\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)
_DIGITS = re.compile(r"\A[0-9]+\Z")  # ASCII only, as Ruby's \d; no trailing newline


class Preload(enum.Enum):
    """Items a route needs besides the project, fetched in the same BatchGetItem."""

    SETTING = "setting"
    CLIENT_KEY = "client_key"
    ERROR = "error"
    HOOK = "hook"


@dataclass(frozen=True)
class Requirement:
    role: int | None  # None: any authenticated user, no project involved
    preload: tuple[Preload, ...] = ()
    public: bool = False  # no token: the route authenticates otherwise (Sentry keys)


@dataclass
class Access:
    """What the middleware established about the request, for the view."""

    user: User
    project: Project | None = None
    setting: ErrorTrackingSetting | None = None
    client_key: ClientKey | None = None
    error: TrackedError | None = None
    hook: ProjectHook | None = None


_current: contextvars.ContextVar[Access | None] = contextvars.ContextVar("access", default=None)


def current() -> Access:
    access = _current.get()
    if access is None:  # a route without @requires: the middleware would have refused it
        raise RuntimeError("no authorized request in progress")
    return access


def current_project() -> Project:
    project = current().project
    if project is None:
        raise RuntimeError("route declared no project role")
    return project


def _guard(view: F, requirement: Requirement) -> F:
    """``view`` carrying its requirement, with store outages raised as 503s.

    Chalice turns any exception a view raises into its own 500 before middleware sees it, unless
    it is a ChaliceUnhandledError; ApiError is one, so a store outage inside a view reaches the
    middleware as the 503 it is.
    """

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except errors.ApiError:
            raise
        except Exception as exc:
            if models.unavailable(exc):
                log.warning("store unavailable in %s: %s", view.__name__, type(exc).__name__)
                raise errors.service_unavailable() from exc
            raise

    guarded.requirement = requirement  # type: ignore[attr-defined]
    return guarded  # type: ignore[return-value]


def requires(role: int | None, *, preload: tuple[Preload, ...] = ()) -> Callable[[F], F]:
    """Declare what a route needs: a project role (``models.MAINTAINER``...) or None for any user."""
    return lambda view: _guard(view, Requirement(role, preload))


def public(view: F) -> F:
    """Declare a route that takes no token: it must authenticate its callers itself."""
    return _guard(view, Requirement(None, public=True))


def undeclared_routes(app: Chalice) -> list[str]:
    """Routes that forgot to say what they need (a test keeps this empty)."""
    return [
        f"{method} {path}"
        for path, methods in app.routes.items()
        for method, entry in methods.items()
        if not isinstance(getattr(entry.view_function, "requirement", None), Requirement)
    ]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def extract_token(request: Request) -> str | None:
    """GitLab's order: ``private_token`` query parameter, ``PRIVATE-TOKEN`` header, Bearer header."""
    query: Mapping[str, str] = request.query_params or {}
    token = query.get("private_token") or request.headers.get("private-token")
    if not token:
        match = _BEARER.match(request.headers.get("authorization", ""))
        token = match.group(1) if match else None
    return token or None


def parse_id(raw: str | None, max_digits: int = 18) -> int | None:
    """A numeric id: ASCII digits, and few enough that no key or int() limit is ever near."""
    return int(raw) if raw and len(raw) <= max_digits and _DIGITS.match(raw) else None


def parse_project_id(raw: str) -> int | str | None:
    """A numeric id, a full path (decoded exactly once), or None for something that is neither."""
    decoded = unquote(raw)
    for candidate in (raw, decoded):
        if _DIGITS.match(candidate):
            return parse_id(candidate)
    return decoded if "/" in decoded.strip("/") else None


def raw_path_parameter(request: Request, name: str) -> str:
    """A path parameter exactly as the client encoded it.

    API Gateway may hand ``pathParameters`` over decoded, and a value must be decoded exactly once,
    so read it from the raw request path, aligned on the route template from the end (a stage or
    base path may precede it); fall back to the parameter as given.
    """
    given = (request.uri_params or {})[name]
    event = request.to_original_event()
    raw_path = event.get("path") or (event.get("requestContext") or {}).get("path")
    template = str(request.path).strip("/").split("/")
    if not isinstance(raw_path, str) or "{" + name + "}" not in template:
        return given
    raw = raw_path.rstrip("/").split("/")
    offset = len(raw) - len(template)
    if offset < 0:
        return given
    return raw[offset + template.index("{" + name + "}")]


def parse_key_id(raw: str | None) -> int | None:
    return parse_id(raw, 12)


def parse_error_id(raw: str | None) -> int | None:
    return parse_id(raw, 16)


def _check_token(token: AccessToken | None, method: str) -> None:
    # GitLab's AccessTokenValidationService order: expired, revoked, then scope.
    if token is None:
        raise errors.unauthorized()
    if token.expires_at and token.expires_at <= dt.datetime.now(dt.UTC).date().isoformat():
        raise errors.token_expired()
    if token.revoked:
        raise errors.token_revoked()
    scopes = set(token.scopes or [])
    if "api" not in scopes and not (method in READ_METHODS and "read_api" in scopes):
        raise errors.insufficient_scope()


def _check_user(user: Entity | None) -> User:
    if not isinstance(user, User):
        raise errors.unauthorized()
    if user.state == "blocked":
        raise errors.user_blocked()
    return user


def _role(user: User, membership: Entity | None) -> int:
    if user.admin:
        return OWNER
    return int(membership.access_level) if isinstance(membership, Membership) else 0


def authorize(request: Request, requirement: Requirement) -> Access:
    """Decide whether ``request`` may run; the Access it returns holds what was loaded."""
    token_value = extract_token(request)
    if token_value is None:
        raise errors.unauthorized()
    params = request.uri_params or {}
    project_ref = parse_project_id(raw_path_parameter(request, "id")) if requirement.role is not None else None
    if isinstance(project_ref, str) and not models.key_fits(ProjectPathClaim.key(project_ref)):
        project_ref = None  # no project has such a path: 404, once the token is known good

    # Round trip 1: the token, and the path claim when the project is named by path.
    token_key = AccessToken.key(token_digest(token_value))
    first = [token_key]
    if isinstance(project_ref, str):
        first.append(ProjectPathClaim.key(project_ref))
    found = models.fetch(first)
    token = found.get(token_key)
    _check_token(token if isinstance(token, AccessToken) else None, request.method)
    assert isinstance(token, AccessToken)
    if isinstance(project_ref, str):
        claim = found.get(ProjectPathClaim.key(project_ref))
        project_ref = int(claim.project_id) if isinstance(claim, ProjectPathClaim) else None

    # Round trip 2: user, project, membership and the route's preloads.
    user_key = User.key(int(token.user_id))
    second: list[Key] = [user_key]
    if isinstance(project_ref, int):
        second += [Project.key(project_ref), Membership.key(project_ref, int(token.user_id))]
        if Preload.SETTING in requirement.preload:
            second.append(ErrorTrackingSetting.key(project_ref))
        key_id = parse_key_id(params.get("key_id"))
        if Preload.CLIENT_KEY in requirement.preload and key_id is not None:
            second.append(ClientKey.key(project_ref, key_id))
        error_id = parse_error_id(params.get("error_id"))
        if Preload.ERROR in requirement.preload and error_id is not None:
            second.append(TrackedError.key(project_ref, error_id))
        hook_id = parse_id(params.get("hook_id"), 12)
        if Preload.HOOK in requirement.preload and hook_id is not None:
            second.append(ProjectHook.key(project_ref, hook_id))
    loaded = models.fetch(second)
    user = _check_user(loaded.get(user_key))
    telemetry.set_user(int(user.user_id))
    access = Access(user=user)
    if requirement.role is None:
        return access

    project = loaded.get(Project.key(project_ref)) if isinstance(project_ref, int) else None
    if not isinstance(project, Project):
        raise errors.not_found("Project")
    level = _role(user, loaded.get(Membership.key(int(project.project_id), int(user.user_id))))
    if level == 0 and project.visibility == "private":
        raise errors.not_found("Project")
    if level < requirement.role:
        raise errors.forbidden()
    access.project = project
    for item in loaded.values():
        if isinstance(item, ErrorTrackingSetting):
            access.setting = item
        elif isinstance(item, ClientKey):
            access.client_key = item
        elif isinstance(item, TrackedError):
            access.error = item
        elif isinstance(item, ProjectHook):
            access.hook = item
    return access


def check_body_size(request: Request) -> None:
    """Refuse bodies over 1 MiB on every route: by the declared length when there is one, else by
    the body itself (Lambda holds it whole already), whether or not the route reads it."""
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isascii() and declared.isdigit() else len(raw_body(request))
    if size > MAX_BODY_BYTES:
        raise errors.payload_too_large()


def middleware(app: Chalice) -> Callable[[Request, Callable[[Request], Response]], Response]:
    """The HTTP middleware for ``app``: authorization first, GitLab-shaped errors always."""

    def authorize_request(request: Request, get_response: Callable[[Request], Response]) -> Response:
        token = None
        entries = app.routes.get(request.path, {})
        entry = entries.get(request.method)
        # Every method of a path shares one CORS config (Chalice insists), the 405 of a missing one too.
        cors = next((e.cors for e in entries.values() if e.cors is not None), None)
        try:
            check_body_size(request)
            if entry is not None:  # an unknown method falls through to Chalice's 405
                requirement = getattr(entry.view_function, "requirement", None)
                if not isinstance(requirement, Requirement):
                    raise errors.forbidden()
                if not requirement.public:
                    token = _current.set(authorize(request, requirement))
            response = get_response(request)
        except errors.ApiError as error:
            response = error.to_response()
        except Exception as exc:
            # Never a trace on the wire. The log has it, and never a token: none is in a message.
            if models.unavailable(exc):
                log.warning("store unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
                response = errors.service_unavailable().to_response()
            else:
                log.exception("unhandled error on %s %s", request.method, request.path)
                response = errors.message(500, "Internal Server Error").to_response()
        finally:
            if token is not None:
                _current.reset(token)
        response = errors.normalize(response)
        if cors is not None:  # browsers must read refusals too
            for name, value in cors.get_access_control_headers().items():
                response.headers.setdefault(name, value)
        return response

    return authorize_request


__all__ = ["MAINTAINER", "Access", "Preload", "current", "middleware", "requires"]
