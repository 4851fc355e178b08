"""The ``errortracking`` admin command: create the identities the API checks.

It talks to whichever store the service is configured for (``AWS_ENDPOINT_URL_DYNAMODB``,
``ERRORTRACKING_TABLE``, ...). Each command prints one JSON object (or, for ``list``, an array)
on stdout; errors go to stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from chalicelib import accounts, bootstrap, entities
from chalicelib.models import VISIBILITIES


def _scopes(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _user_create(a: argparse.Namespace) -> Any:
    return entities.admin_user(accounts.create_user(a.username, admin=a.admin, name=a.name))


def _user_state(state: str) -> Callable[[argparse.Namespace], Any]:
    return lambda a: entities.admin_user(accounts.set_user_state(a.username, state))


def _project_create(a: argparse.Namespace) -> Any:
    return entities.admin_project(accounts.create_project(a.full_path, name=a.name, visibility=a.visibility))


def _token_create(a: argparse.Namespace) -> Any:
    token, secret = accounts.create_token(a.username, scopes=_scopes(a.scopes), expires_at=a.expires_at, name=a.name)
    return entities.admin_token(token, secret)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="errortracking", description=__doc__.split("\n\n")[0])
    groups = parser.add_subparsers(dest="group", required=True)

    def command(group: argparse._SubParsersAction[Any], name: str, run: Callable[..., Any], help: str) -> Any:
        sub = group.add_parser(name, help=help)
        sub.set_defaults(run=run)
        return sub

    store = groups.add_parser("store", help="the table and KMS key").add_subparsers(dest="command", required=True)
    command(store, "init", lambda a: bootstrap.init_store(), "create the table and KMS key if missing")

    user = groups.add_parser("user", help="users").add_subparsers(dest="command", required=True)
    sub = command(user, "create", _user_create, "create a user")
    sub.add_argument("username")
    sub.add_argument("--admin", action="store_true", help="an instance admin: Owner of every project")
    sub.add_argument("--name", help="display name (default: the username)")
    for name, state in (("block", "blocked"), ("unblock", "active")):
        command(user, name, _user_state(state), f"{name} a user").add_argument("username")
    command(user, "list", lambda a: [entities.admin_user(u) for u in accounts.list_users()], "list users")

    project = groups.add_parser("project", help="projects").add_subparsers(dest="command", required=True)
    sub = command(project, "create", _project_create, "create a project")
    sub.add_argument("full_path", help="NAMESPACE/PROJECT")
    sub.add_argument("--name")
    sub.add_argument("--visibility", default="private", choices=VISIBILITIES)
    command(project, "list", lambda a: [entities.admin_project(p) for p in accounts.list_projects()], "list projects")

    member = groups.add_parser("member", help="project members").add_subparsers(dest="command", required=True)
    for name, run in (
        ("add", lambda a: entities.admin_member(accounts.add_member(a.project, a.username, a.role))),
        ("update", lambda a: entities.admin_member(accounts.update_member(a.project, a.username, a.role))),
    ):
        sub = command(member, name, run, f"{name} a member's role")
        sub.add_argument("project", help="numeric id or full path")
        sub.add_argument("username")
        sub.add_argument("role", help="guest, reporter, developer, maintainer or owner")
    sub = command(
        member,
        "remove",
        lambda a: entities.admin_member(accounts.remove_member(a.project, a.username)),
        "remove a member",
    )
    sub.add_argument("project")
    sub.add_argument("username")
    sub = command(
        member,
        "list",
        lambda a: [entities.admin_member(m) for m in accounts.list_members(a.project)],
        "list a project's members",
    )
    sub.add_argument("project")

    token = groups.add_parser("token", help="personal access tokens").add_subparsers(dest="command", required=True)
    sub = command(token, "create", _token_create, "create a token (printed once)")
    sub.add_argument("username")
    sub.add_argument("--scopes", default="api", help="comma-separated: api, read_api (default: api)")
    sub.add_argument("--expires-at", help="YYYY-MM-DD; the token stops working on that day (UTC)")
    sub.add_argument("--name")
    sub = command(token, "revoke", lambda a: entities.admin_token(accounts.revoke_token(a.token_id)), "revoke a token")
    sub.add_argument("token_id", type=int)
    sub = command(
        token,
        "list",
        lambda a: [entities.admin_token(t) for t in accounts.list_tokens(a.username)],
        "list tokens (never their secrets)",
    )
    sub.add_argument("--username")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = args.run(args)
    except accounts.AccountError as exc:
        print(f"errortracking: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the store is unreachable or refuses: say so, without a trace
        print(f"errortracking: the store failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
