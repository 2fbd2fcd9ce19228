"""What every CLI command shares: the --url/--token options, one-line errors, the client."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from stablecore.client import ApiError, Client

UrlOpt = Annotated[str | None, typer.Option("--url", envvar="STABLECORE_URL",
                                            help="server URL [default: http://127.0.0.1:5000]")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="STABLECORE_TOKEN",
                                              help="access token")]
console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def client(url: str | None, token: str | None) -> Client:
    return Client(url, token)


def call(fn: Any, *args: Any, **kw: Any) -> Any:
    """Run a client call; turn API and connection errors into a one-line CLI error."""
    try:
        return fn(*args, **kw)
    except ApiError as e:
        raise fail(e.detail + (f" (field {e.field})" if e.field else "")) from None
    except httpx.ConnectError:
        raise fail("cannot reach the server; is `stable-core serve` running?") from None
