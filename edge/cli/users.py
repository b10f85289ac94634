"""``kairos users add|list|role|reset|remove``: the dashboard's accounts, through a running
engine's API (``/v1/users``, the secret key), so every change takes the one audited path.

A password is never an argument (argv shows in ``ps`` and in shell history): it is asked twice
at a prompt, or read from the first line of stdin with ``--password-stdin``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["parser", "run"]

_ROLES = ("viewer", "editor", "admin")
_ABOUT = """\
roles:
  viewer  results and definitions; a profile's contact fields are hidden
  editor  also placements, segments, journeys, templates, broadcasts (send too), the catalog,
          profiles with their contact fields
  admin   everything: API keys, users, sessions, erasure, SQL

Passwords are at least 12 characters, kept as Argon2id hashes. Resetting a password or
removing a user signs them out everywhere; a role change counts from their next page.
Five wrong passwords lock an account for 15 minutes.

examples:
  kairos users add ada@example.com --role admin
  printf '%s\\n' "$PASSWORD" | kairos users add bob@example.com --role viewer --password-stdin
  kairos users list
  kairos users role bob@example.com editor
  kairos users reset bob@example.com
  kairos users remove bob@example.com
"""


def parser(commands: Any, api_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``users`` and its actions to the ``kairos`` command's subparsers."""
    users = commands.add_parser(
        "users",
        help="dashboard accounts: add, list, change the role, reset the password, remove",
        description="Manage the dashboard's users (email, role, password) through a running "
        "engine's API, with the secret key.",
        epilog=_ABOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    # No abbreviations: --password must not pass for --password-stdin.
    add = actions.add_parser("add", help="add a user (asks for their password)", allow_abbrev=False,
                             description="Add a dashboard user with a role; the password is "
                             "asked twice, or read from stdin with --password-stdin.")  # fmt: skip
    add.add_argument("email", help="their email: how they sign in")
    add.add_argument("--role", choices=_ROLES, required=True, help="what they may do")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of stdin")  # fmt: skip
    listed = actions.add_parser("list", help="every user, their role and live sessions")
    listed.add_argument("--format", choices=["table", "json"], default="table")
    role = actions.add_parser("role", help="change a user's role (from their next page)")
    role.add_argument("email")
    role.add_argument("role", choices=_ROLES)
    reset = actions.add_parser("reset", help="set a new password (signs them out everywhere)",
                               allow_abbrev=False,
                               description="Set a user's new password: asked twice, or read "
                               "from stdin with --password-stdin. Their sessions end.")  # fmt: skip
    reset.add_argument("email")
    reset.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of stdin")  # fmt: skip
    remove = actions.add_parser("remove", help="remove a user (signs them out everywhere)")
    remove.add_argument("email")
    for action in (add, listed, role, reset, remove):
        api_options(action)
        action.set_defaults(run=run)


class _NoPassword(Exception):
    pass


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise _NoPassword("no password on stdin")
        return line
    first = getpass.getpass(f"password for {args.email}: ")
    if getpass.getpass("again: ") != first:
        raise _NoPassword("the two passwords differ")
    return first


def _path(email: str) -> str:
    return "/v1/users/" + urllib.parse.quote(email, safe="@")


def _when(seconds: int) -> str:
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%d %H:%M} UTC"


def _call(args: argparse.Namespace) -> str | None:
    """Do the action; what to print, or None when it printed already."""
    from edge.cli.commands import _api

    if args.action == "list":
        found = _api(args, "/v1/users")["users"]
        if args.format == "json":
            return json.dumps(found, indent=2)
        if not found:
            return "no users yet: kairos users add EMAIL --role admin"
        width = max(len(u["email"]) for u in found)
        lines = [f"{'email'.ljust(width)}  role    sessions  password changed"]
        lines += [f"{u['email'].ljust(width)}  {u['role'].ljust(6)}  {u['sessions']:>8}  "
                  f"{_when(u['password_changed'])}" for u in found]  # fmt: skip
        return "\n".join(lines)
    if args.action == "add":
        body = {"email": args.email, "role": args.role, "password": _password(args)}
        made = _api(args, "/v1/users", body)
        return f"added {made['email']} ({made['role']}): they sign in at /dashboard"
    if args.action == "role":
        changed = _api(args, _path(args.email), {"role": args.role}, "PUT")
        return f"{changed['email']} is {changed['role']} from their next page"
    if args.action == "reset":
        changed = _api(args, _path(args.email), {"password": _password(args)}, "PUT")
        return (f"new password for {changed['email']}; "
                f"{changed['sessions_ended']} session(s) ended")  # fmt: skip
    removed = _api(args, _path(args.email), method="DELETE")
    return f"removed {removed['email']}; {removed['sessions_ended']} session(s) ended"


def run(args: argparse.Namespace) -> int:
    from edge.cli.commands import Failed

    try:
        said = _call(args)
    except (Failed, _NoPassword) as exc:
        print(f"kairos users {args.action}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    if said is not None:
        print(said)
    return 0
