"""``altaviz users``: the people who may sign in to the supervisor console."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC
from typing import Any

import psycopg

from altaviz.app.context import App
from altaviz.app.web.auth import MIN_PASSWORD, hash_password
from altaviz.app.web.console_store import upsert_user
from altaviz.app.web.sign_in_link import set_user_contact
from altaviz.core.db import queries, tenant
from altaviz.core.errors import InputError

_EPILOG = """examples:
  altaviz users add --org acme --login sam@acme.example --name "Sam Okafor"
  printf '%s\\n' "$PASSWORD" | altaviz users add --org acme --login sam@acme.example \\
      --name "Sam Okafor" --password-stdin
  # sign-in links sent to the channels of contact sam-okafor (from the contacts file)
  altaviz users add --org acme --login sam@acme.example --name "Sam Okafor" --contact sam-okafor
  altaviz users list --org acme
  altaviz users remove --org acme --login sam@acme.example
"""


def register(sub: Any) -> None:
    """Add ``users add``, ``users list`` and ``users remove``."""
    parser = sub.add_parser(
        "users", help="console users (who may sign in to /console)",
        description="People who sign in to the supervisor console at /console. Each belongs "
                    "to one organization and sees only its alerts, compressors and checks.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    u_sub = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    p = u_sub.add_parser("add", help="create a console user, or reset their name and password "
                                     "(which signs them out everywhere)",
                         epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--org", required=True, help="organization id")
    p.add_argument("--login", required=True,
                   help="sign-in name, unique across organizations (e.g. an email address)")
    p.add_argument("--name", required=True, help="name shown in the console")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input instead of "
                        f"asking (at least {MIN_PASSWORD} characters)")
    p.add_argument("--contact", metavar="CONTACT_ID",
                   help="the contact (of the contacts file) whose channels receive the "
                        "user's one-time sign-in links; without it the user signs in with "
                        "the password only")
    p.set_defaults(handler=_add)
    p = u_sub.add_parser("list", help="list an organization's console users")
    p.add_argument("--org", required=True, help="organization id")
    p.set_defaults(handler=_list)
    p = u_sub.add_parser("remove", help="deactivate a console user (ends their sessions)")
    p.add_argument("--org", required=True, help="organization id")
    p.add_argument("--login", required=True, help="sign-in name")
    p.set_defaults(handler=_remove)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise InputError("no terminal to ask for the password: pass --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise InputError("the two passwords differ")
    return first


def _org_known(conn: psycopg.Connection[Any], org_id: str) -> None:
    with tenant(conn, org_id):
        if conn.execute(queries("notify")["org_exists"]).fetchone() is None:
            raise InputError(f"unknown organization {org_id!r}")


def _add(args: argparse.Namespace, app: App) -> int:
    login = args.login.strip().lower()
    password = _read_password(args.password_stdin)
    try:
        hashed = hash_password(password)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    with app.connect() as conn:
        _org_known(conn, args.org)
        try:
            created = upsert_user(conn, args.org, login, args.name.strip(), hashed)
        except psycopg.errors.UniqueViolation:
            raise InputError(f"login {login!r} is already used by another organization") from None
        except psycopg.errors.CheckViolation:
            raise InputError(f"login {login!r} is not valid: use lower-case letters, digits "
                             "and . _ @ + - (up to 100 characters)") from None
        if args.contact:
            set_user_contact(conn, args.org, login, args.contact.strip())
    print(f"{'created' if created else 'updated'} console user {login} of {args.org}; "
          f"sign in at {app.settings.base_url}/console")
    return 0


def _list(args: argparse.Namespace, app: App) -> int:
    with app.connect() as conn:
        _org_known(conn, args.org)
        with tenant(conn, args.org):
            rows = conn.execute(queries("console")["list_users"]).fetchall()
    if not rows:
        print(f"no console users in {args.org}")
    width = max([len(r[0]) for r in rows] + [5])
    for login, name, active, last, _created in rows:
        seen = (f"last sign-in {last.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if last
                else "never signed in")
        print(f"{login:<{width}}  {'active' if active else 'removed':<7}  {seen:<32}  {name}")
    return 0


def _remove(args: argparse.Namespace, app: App) -> int:
    login = args.login.strip().lower()
    with app.connect() as conn:
        _org_known(conn, args.org)
        with tenant(conn, args.org):
            row = conn.execute(queries("console")["deactivate_user"],
                               {"login": login}).fetchone()
    if row is None:
        raise InputError(f"no active console user {login!r} in {args.org}")
    print(f"removed console user {login} of {args.org}; their sessions have ended")
    return 0
