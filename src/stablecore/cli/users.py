"""`stable-core users|tokens|login|logout`: users and roles, API tokens, signing the CLI in.

`users` works on the server machine's data folder (the first admin is made there), or
through the API of the server `--url` names, as an admin. `login` keeps a token for the CLI
and SDK in the user's config (`credentials.py`, mode 0600).
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from stablecore import credentials
from stablecore.cli.common import TokenOpt, UrlOpt, call, client, console, err, fail
from stablecore.client import DEFAULT_URL, ApiError, Client
from stablecore.config import load_settings
from stablecore.errors import StableCoreError
from stablecore.store import Store
from stablecore.users import Users

users_app = typer.Typer(help="Users and their roles (admin, user, viewer).", no_args_is_help=True)
tokens_app = typer.Typer(help="Your API tokens: create (shown once), list, revoke.",
                         no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="user name")]
RoleOpt = Annotated[str | None, typer.Option(
    "--role", help="admin, user or viewer [default: user; admin for the first user]")]
StdinOpt = Annotated[bool, typer.Option("--password-stdin",
                                        help="read the password from the first line of stdin")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir",
                                                 help="the server's data folder (on its machine)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file")]
RemoteOpt = Annotated[str | None, typer.Option(
    "--url", help="change users through this server's API (as an admin) instead of the "
                  "data folder")]


def read_password(from_stdin: bool, confirm: bool, prompt: str = "password") -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


class LocalUsers:
    """`users` on the data folder: what `serve` would open, found the same way."""

    def __init__(self, users: Users) -> None:
        self.users = users
        self.actor = f"{getpass.getuser()}@{socket.gethostname()} (cli)"

    def _audit(self, action: str, target: str, **data: Any) -> None:
        self.users.record(action, self.actor, target, "local", **data)

    def add(self, name: str, password: str, role: str | None) -> dict[str, Any]:
        first = not self.users.exist()
        user = self.users.add(name, password, role)
        self._audit("user.add", user.name, role=str(user.role))
        return {**user.public(), "first": first}

    def list(self) -> list[dict[str, Any]]:
        return [u.public() for u in self.users.list()]

    def passwd(self, name: str, password: str) -> dict[str, Any]:
        user = self.users.set_password(name, password)
        self._audit("user.password", user.name)
        return user.public()

    def role(self, name: str, role: str) -> dict[str, Any]:
        user = self.users.set_role(name, role)
        self._audit("user.role", user.name, role=str(user.role))
        return user.public()

    def rm(self, name: str) -> dict[str, Any]:
        user = self.users.remove(name)
        self._audit("user.remove", user.name)
        return user.public()


class RemoteUsers:
    """`users --url`: the same through the API, as an admin."""

    def __init__(self, c: Client) -> None:
        self.c = c

    def add(self, name: str, password: str, role: str | None) -> dict[str, Any]:
        return {**self.c.add_user(name, password, role), "first": False}

    def list(self) -> list[dict[str, Any]]:
        return self.c.users()

    def passwd(self, name: str, password: str) -> dict[str, Any]:
        return self.c.change_user(name, password=password)

    def role(self, name: str, role: str) -> dict[str, Any]:
        return self.c.change_user(name, role=role)

    def rm(self, name: str) -> dict[str, Any]:
        return self.c.remove_user(name)


@contextmanager
def user_records(url: str | None, token: str | None, data_dir: Path | None,
                 config: Path | None) -> Iterator[LocalUsers | RemoteUsers]:
    """The users of the data folder, or of the server at `url`; errors as one-line exits."""
    try:
        if url:
            with client(url, token) as c:
                yield RemoteUsers(c)
            return
        settings, _ = load_settings(os.environ, {"data_dir": data_dir}, config)
        store = Store(settings.data_dir)
        try:
            yield LocalUsers(Users(store))
        finally:
            store.close()
    except StableCoreError as e:
        raise fail(e.message) from None
    except ApiError as e:
        raise fail(e.detail + (f" (field {e.field})" if e.field else "")) from None
    except httpx.ConnectError:
        raise fail(f"cannot reach {url}; is `stable-core serve` running?") from None


# --- users ----------------------------------------------------------------------------------
@users_app.command("add")
def add(name: NameArg, role: RoleOpt = None, password_stdin: StdinOpt = False,
        url: RemoteOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
        config: ConfigOpt = None) -> None:
    """Add a user; asks for the password twice (or reads it with --password-stdin)."""
    password = read_password(password_stdin, confirm=True)
    with user_records(url, token, data_dir, config) as records:
        user = records.add(name, password, role)
    console.print(f"added {user['name']} ({user['role']})")
    if user["first"]:
        console.print("the first user: from now on every route but /api/health needs a "
                      "sign-in (web UI) or a token (`stable-core login`)")


@users_app.command("list")
def list_users(url: RemoteOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
               config: ConfigOpt = None) -> None:
    """Every user with their role."""
    with user_records(url, token, data_dir, config) as records:
        found = records.list()
    table = Table("name", "role", "created")
    for u in found:
        table.add_row(u["name"], u["role"], time.strftime("%Y-%m-%d %H:%M",
                                                          time.localtime(u["created"])))
    console.print(table)


@users_app.command("passwd")
def passwd(name: NameArg, password_stdin: StdinOpt = False, url: RemoteOpt = None,
           token: TokenOpt = None, data_dir: DataDirOpt = None,
           config: ConfigOpt = None) -> None:
    """Set a user's password; their web sessions end, their API tokens stay."""
    password = read_password(password_stdin, confirm=True, prompt="new password")
    with user_records(url, token, data_dir, config) as records:
        user = records.passwd(name, password)
    console.print(f"password of {user['name']} changed")


@users_app.command("role")
def role(name: NameArg, new_role: Annotated[str, typer.Argument(
             metavar="ROLE", help="admin, user or viewer")],
         url: RemoteOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
         config: ConfigOpt = None) -> None:
    """Change a user's role (the last admin stays an admin)."""
    with user_records(url, token, data_dir, config) as records:
        user = records.role(name, new_role)
    console.print(f"{user['name']} is now {user['role']}")


@users_app.command("rm")
def rm(name: NameArg, url: RemoteOpt = None, token: TokenOpt = None,
       data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Remove a user and their tokens; their jobs and files stay, for admins."""
    with user_records(url, token, data_dir, config) as records:
        user = records.rm(name)
    console.print(f"removed {user['name']}")


# --- tokens ---------------------------------------------------------------------------------
@tokens_app.command("create")
def create(name: Annotated[str, typer.Option("--name", help="what it is for")] = "",
           expires: Annotated[str | None, typer.Option(
               "--expires", help="lifetime, e.g. 30d, 12h, 90m [default: until revoked]")] = None,
           url: UrlOpt = None, token: TokenOpt = None) -> None:
    """A new API token of yours, printed once as the last line: the server keeps a hash."""
    with client(url, token) as c:
        made = call(c.create_token, name, expires)
    until = (time.strftime("%Y-%m-%d %H:%M", time.localtime(made["expires"]))
             if made["expires"] else "revoked")
    err.print(f"token {made['id']} ({made['name']}) for {made['user']['name']}, valid until "
              f"{until}; it is shown only now:")
    print(made["token"])


@tokens_app.command("list")
def list_tokens(url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Your API tokens (not their secrets)."""
    with client(url, token) as c:
        found = call(c.tokens)

    def when(t: float | None, never: str) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else never

    table = Table("id", "name", "created", "expires", "last used")
    for t in found:
        table.add_row(t["id"], t["name"], when(t["created"], ""), when(t["expires"], "never"),
                      when(t["last_used"], "never"))
    console.print(table)


@tokens_app.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(help="the token's id (t_...)")],
           url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Revoke a token: it stops working at once."""
    with client(url, token) as c:
        gone = call(c.revoke_token, token_id)
    console.print(f"revoked {gone['id']} ({gone['name']})")


# --- signing the CLI in ---------------------------------------------------------------------
def login(
    url: Annotated[str | None, typer.Option("--url", envvar="STABLECORE_URL",
                                            help=f"server URL [default: {DEFAULT_URL}]")] = None,
    user: Annotated[str | None, typer.Option("--user", help="user name (asked if left out)")]
    = None,
    password_stdin: StdinOpt = False,
    print_token: Annotated[bool, typer.Option("--print-token",
                                              help="print the new token as the last line")]
    = False,
    expires: Annotated[str | None, typer.Option(
        "--expires", help="token lifetime, e.g. 30d [default: until revoked]")] = None,
) -> None:
    """Sign in: a new API token, kept in your config (mode 0600) for the CLI and the SDK;
    that server becomes the default."""
    url = (url or credentials.default_url() or DEFAULT_URL).rstrip("/")
    name = user or typer.prompt("user")
    password = read_password(password_stdin, confirm=False)
    label = f"login {getpass.getuser()}@{socket.gethostname()}"
    try:
        r = httpx.post(url + "/api/tokens", auth=(name, password), timeout=60,
                       json={"name": label, "expires": expires})
    except httpx.HTTPError as e:
        raise fail(f"cannot reach {url}: {e}") from None
    if r.is_error:
        detail = r.json().get("detail", r.text) if r.headers.get(
            "content-type", "").startswith("application/json") else r.text
        raise fail(f"sign-in refused ({r.status_code}): {detail}")
    made = r.json()
    path = credentials.remember(url, made["user"]["name"], made["token"], made["id"])
    console.print(f"signed in to {url} as {made['user']['name']} ({made['user']['role']}); "
                  f"token {made['id']} kept in {path}")
    if print_token:
        print(made["token"])


def logout(url: Annotated[str | None, typer.Option(
        "--url", envvar="STABLECORE_URL", help="server URL [default: the one signed in to]")]
        = None) -> None:
    """Revoke the token `login` kept for a server, and forget it."""
    url = (url or credentials.default_url() or DEFAULT_URL).rstrip("/")
    kept = credentials.forget(url)
    if kept is None:
        raise fail(f"not signed in to {url}")
    try:
        with Client(url, kept["token"]) as c:
            c.revoke_token(kept["token_id"])
    except (ApiError, httpx.HTTPError) as e:
        err.print(f"[yellow]the server did not revoke the token ({e}); it is forgotten "
                  "here[/yellow]")
    console.print(f"signed out of {url}")
