"""`stable-core token new`: a random access token for a server bound beyond loopback."""

from __future__ import annotations

import secrets

import typer

token_app = typer.Typer(help="Make access tokens.", no_args_is_help=True)


@token_app.command("new")
def new() -> None:
    """Print a random token (43 URL-safe characters) for --token or STABLECORE_TOKEN."""
    print(secrets.token_urlsafe(32))
