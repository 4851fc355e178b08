"""Users, projects, memberships and personal access tokens: what operators manage.

Used by the ``errortracking`` admin command (and by tests to set the scene). Names that must be
unique (usernames, project paths) are claimed by an item of their own, written in the same
transaction as the thing they name.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets

from pynamodb.exceptions import PutError, TransactWriteError

from chalicelib import models
from chalicelib.authorizer import parse_project_id, token_digest
from chalicelib.models import (
    ROLES,
    VISIBILITIES,
    AccessToken,
    Entity,
    Membership,
    Project,
    ProjectPathClaim,
    TokenIdClaim,
    User,
    UsernameClaim,
)

TOKEN_PREFIX = "glpat-"
SCOPES = ("api", "read_api")
# GitLab's rules for a username and for each segment of a project path.
_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,254}$")


class AccountError(ValueError):
    """An operator's request that cannot be done; the message says why, for a person."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _save_claimed(claim: Entity, item: Entity, taken: str) -> None:
    """Save ``item`` together with the claim on its unique name; ``taken`` says why if it is."""
    try:
        with models.transaction() as tw:
            tw.save(claim, condition=Entity.pk.does_not_exist())
            tw.save(item, condition=Entity.pk.does_not_exist())
    except TransactWriteError as exc:
        if models.condition_failed(exc):
            raise AccountError(taken) from exc
        raise


def _collection(name: str, number: int) -> dict[str, str]:
    return {"gsi1pk": name, "gsi1sk": f"{number:012d}"}


# Users


def find_user(username: str) -> User:
    claim = models.fetch([UsernameClaim.key(username)]).get(UsernameClaim.key(username))
    user_id = int(claim.user_id) if isinstance(claim, UsernameClaim) else None
    user = models.fetch([User.key(user_id)]).get(User.key(user_id)) if user_id is not None else None
    if not isinstance(user, User):
        raise AccountError(f"no user named {username!r}")
    return user


def create_user(username: str, *, admin: bool = False, name: str | None = None) -> User:
    if not _NAME.match(username) or username.endswith((".git", ".atom")):
        raise AccountError(
            f"{username!r} is not a valid username: use letters, digits, '_', '.' and '-' "
            "(not first), and do not end it with .git or .atom"
        )
    user_id = models.next_id("user")
    user: User = models.build(
        User,
        User.key(user_id),
        user_id=user_id,
        username=username,
        name=name or username,
        admin=admin,
        state="active",
        created_at=_now(),
        **_collection("users", user_id),
    )
    claim = models.build(UsernameClaim, UsernameClaim.key(username), user_id=user_id)
    _save_claimed(claim, user, f"the username {username!r} is already taken")
    return user


def set_user_state(username: str, state: str) -> User:
    """Block or unblock: takes effect on the user's very next request (tokens are not cached)."""
    user = find_user(username)
    user.update(actions=[User.state.set(state)])
    return user


def list_users() -> list[User]:
    return [u for u in Entity.collection.query("users") if isinstance(u, User)]


# Projects


def _check_path(full_path: str) -> str:
    segments = full_path.strip("/").split("/")
    if len(segments) < 2 or not all(_NAME.match(s) for s in segments):
        raise AccountError(
            f"{full_path!r} is not a valid project path: give NAMESPACE/PROJECT, each part of letters, "
            "digits, '_', '.' and '-'"
        )
    return "/".join(segments)


def find_project(ref: str | int) -> Project:
    """A project by numeric id or full path (case-insensitive)."""
    text = str(ref)
    parsed = parse_project_id(text)
    if isinstance(parsed, str):
        claim = models.fetch([ProjectPathClaim.key(parsed)]).get(ProjectPathClaim.key(parsed))
        project_id = int(claim.project_id) if isinstance(claim, ProjectPathClaim) else None
    else:
        project_id = parsed
    project = models.fetch([Project.key(project_id)]).get(Project.key(project_id)) if project_id else None
    if not isinstance(project, Project):
        raise AccountError(f"no project {text!r}")
    return project


def create_project(full_path: str, *, name: str | None = None, visibility: str = "private") -> Project:
    path = _check_path(full_path)
    if visibility not in VISIBILITIES:
        raise AccountError(f"visibility must be one of {', '.join(VISIBILITIES)}, not {visibility!r}")
    project_id = models.next_id("project")
    project: Project = models.build(
        Project,
        Project.key(project_id),
        project_id=project_id,
        path_with_namespace=path,
        name=name or path.rsplit("/", 1)[1],
        visibility=visibility,
        active_keys=0,
        created_at=_now(),
        **_collection("projects", project_id),
    )
    claim = models.build(ProjectPathClaim, ProjectPathClaim.key(path), project_id=project_id)
    _save_claimed(claim, project, f"a project at {path!r} already exists")
    return project


def list_projects() -> list[Project]:
    return [p for p in Entity.collection.query("projects") if isinstance(p, Project)]


# Memberships


def _role_level(role: str) -> int:
    level = ROLES.get(role.lower())
    if level is None:
        raise AccountError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return level


def add_member(project_ref: str | int, username: str, role: str) -> Membership:
    level = _role_level(role)
    project, user = find_project(project_ref), find_user(username)
    member: Membership = models.build(
        Membership,
        Membership.key(int(project.project_id), int(user.user_id)),
        project_id=int(project.project_id),
        user_id=int(user.user_id),
        access_level=level,
    )
    try:
        member.save(condition=Membership.pk.does_not_exist())
    except PutError as exc:
        if models.condition_failed(exc):
            raise AccountError(
                f"{username!r} is already a member of {project.path_with_namespace!r}; use 'member update'"
            ) from exc
        raise
    return member


def _membership(project: Project, user: User) -> Membership:
    key = Membership.key(int(project.project_id), int(user.user_id))
    member = models.fetch([key]).get(key)
    if not isinstance(member, Membership):
        raise AccountError(f"{user.username!r} is not a member of {project.path_with_namespace!r}")
    return member


def update_member(project_ref: str | int, username: str, role: str) -> Membership:
    level = _role_level(role)
    member = _membership(find_project(project_ref), find_user(username))
    member.update(actions=[Membership.access_level.set(level)])
    return member


def remove_member(project_ref: str | int, username: str) -> Membership:
    member = _membership(find_project(project_ref), find_user(username))
    member.delete()
    return member


def list_members(project_ref: str | int) -> list[Membership]:
    project = find_project(project_ref)
    pk = Project.key(int(project.project_id))[0]
    return list(Membership.query(pk, Membership.sk.startswith("member#")))


# Personal access tokens


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(24)  # 192 bits


def create_token(
    username: str, *, scopes: list[str] | None = None, expires_at: str | None = None, name: str | None = None
) -> tuple[AccessToken, str]:
    """A new token for ``username``: (the stored token, the secret, shown this once)."""
    scopes = scopes or ["api"]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise AccountError(f"unknown scope {', '.join(unknown)!r}: use {' or '.join(SCOPES)}")
    if expires_at is not None:
        try:
            expires_at = dt.date.fromisoformat(expires_at).isoformat()
        except ValueError as exc:
            raise AccountError(f"expires_at must be a date as YYYY-MM-DD, not {expires_at!r}") from exc
    user = find_user(username)
    secret = new_token_secret()
    token_id = models.next_id("token")
    token: AccessToken = models.build(
        AccessToken,
        AccessToken.key(token_digest(secret)),
        token_id=token_id,
        user_id=int(user.user_id),
        name=name or "errortracking",
        scopes=set(scopes),
        expires_at=expires_at,
        revoked=False,
        created_at=_now(),
        **_collection("tokens", token_id),
    )
    claim = models.build(TokenIdClaim, TokenIdClaim.key(token_id), digest=token_digest(secret))
    _save_claimed(claim, token, f"token id {token_id} is taken")
    return token, secret


def find_token(token_id: int) -> AccessToken:
    """The token with this id: two reads by key (its id's claim, then the token), so a token made a
    moment ago is found (the listing index may not have it yet)."""
    claim = models.fetch([TokenIdClaim.key(token_id)]).get(TokenIdClaim.key(token_id))
    token = (
        models.fetch([AccessToken.key(claim.digest)]).get(AccessToken.key(claim.digest))
        if isinstance(claim, TokenIdClaim)
        else None
    )
    if not isinstance(token, AccessToken):
        raise AccountError(f"no token with id {token_id}")
    return token


def revoke_token(token_id: int) -> AccessToken:
    token = find_token(token_id)
    token.update(actions=[AccessToken.revoked.set(True)])
    return token


def list_tokens(username: str | None = None) -> list[AccessToken]:
    user_id = int(find_user(username).user_id) if username else None
    return [
        t
        for t in Entity.collection.query("tokens")
        if isinstance(t, AccessToken) and (user_id is None or int(t.user_id) == user_id)
    ]
