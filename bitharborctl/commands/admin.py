"""Admin accounts and API tokens: `admin add|list|remove` and `login`."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from bitharborctl.client import ClientError


def _fail(message: str) -> int:
    print(f"bitharborctl: {message}", file=sys.stderr)
    return 1


def read_password(password_file: str | None, *, confirm: bool) -> str:
    """From --password-file (its first line), else from the terminal without echo (asked twice when setting
    one), else the first line of standard input."""
    if password_file:
        try:
            lines = Path(password_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ClientError(f"cannot read {password_file}: {exc.strerror or exc}") from None
        password = lines[0] if lines else ""
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Password again: ") != password:
            raise ClientError("the two passwords differ; nothing was changed")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ClientError("the password is empty")
    return password


def cmd_admin_add(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for

    password = read_password(args.password_file, confirm=True)
    data = client_for(args).request("POST", "/v1/admins", {"name": args.name, "password": password})
    if data.get("created"):
        print(f"added admin {args.name}: it can log in to the web UI and the API now")
    else:
        print(f"changed the password of admin {args.name}; its earlier tokens no longer work")
    return 0


def cmd_admin_list(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for

    data = client_for(args).request("GET", "/v1/admins")
    admins: list[dict[str, Any]] = data.get("admins", [])
    if not admins:
        print("no admin accounts: add one with `bitharborctl admin add NAME` or in harbor.yaml (admins:)")
    for a in admins:
        print(f"{a['name']:<32} {a['source']}")
    return 0


def cmd_admin_remove(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for

    client_for(args).request("DELETE", f"/v1/admins/{args.name}")
    print(f"removed admin {args.name}; its tokens no longer work")
    return 0


def save_token(path: str, token: str) -> None:
    """Atomically, readable by the owner only (the file works with --token-file)."""
    from bitharbord.system.fsio import write_atomic

    write_atomic(Path(path), token.encode() + b"\n", mode=0o600)


def cmd_login(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for

    if not args.host:
        return _fail("login is for HTTP (--host HOST:PORT); over the Unix socket no token is needed")
    password = read_password(args.password_file, confirm=False)
    data = client_for(args).request("POST", "/v1/auth/login", {"name": args.user, "password": password})
    token = str(data["token"])
    if args.save:
        try:
            save_token(args.save, token)
        except OSError as exc:
            return _fail(f"cannot write {args.save}: {exc.strerror or exc}")
        print(f"saved a token for {args.user} to {args.save} (valid {int(data['expires_in']) // 3600} h); "
              f"use it with --host {args.host} --token-file {args.save}")
    else:
        print(token)
    return 0


def register(sub: Any) -> None:
    admin = sub.add_parser("admin", help="admin accounts for the web UI and the API",
                           description="Manage the admin accounts stored by bitharbord (Argon2id hashes in "
                                       "<config_root>/admins.json). Accounts in harbor.yaml (admins:) are managed "
                                       "there.")
    actions = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add an admin, or change its password",
                             description="Add an admin account, or change its password (which voids its earlier "
                                         "tokens). The password comes from --password-file, from the terminal "
                                         "(asked twice, not echoed), or from the first line of standard input.")
    add.add_argument("name", help="the account name (a-z, 0-9, '-', '_')")
    add.add_argument("--password-file", help="a file whose first line is the password")
    add.set_defaults(func=cmd_admin_add)
    ls = actions.add_parser("list", help="list the admin accounts", description="List the admin accounts and "
                                                                                 "where each is defined.")
    ls.set_defaults(func=cmd_admin_list)
    rm = actions.add_parser("remove", help="remove an admin added with `admin add`",
                            description="Remove an admin account added with `admin add`; its tokens stop working.")
    rm.add_argument("name", help="the account name")
    rm.set_defaults(func=cmd_admin_remove)

    login = sub.add_parser("login", help="get an API token over HTTP (--host)",
                           description="Log in to bitharbord over HTTP (--host HOST:PORT) and print a token, or "
                                       "save it (mode 0600) for --token-file. Failed logins are rate-limited.")
    login.add_argument("-u", "--user", required=True, help="the admin account")
    login.add_argument("--password-file", help="a file whose first line is the password (default: ask, or stdin)")
    login.add_argument("--save", metavar="FILE", help="write the token to FILE (0600) instead of printing it")
    login.set_defaults(func=cmd_login)
