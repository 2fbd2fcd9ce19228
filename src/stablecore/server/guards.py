"""Request guards that need no caller, each a pure ASGI middleware so HTTP and WebSocket
routes are covered alike: the Host and Origin checks (DNS rebinding, CSRF) and the request
size cap; and the one way all middleware refuses a request."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stablecore.config import is_loopback
from stablecore.engine.catalog import unencodable
from stablecore.errors import (
    Forbidden,
    InvalidParams,
    PayloadTooLarge,
    StableCoreError,
    TooManyRequests,
    Unauthorized,
    clip,
)

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
UPLOAD_PATHS = {"/api/artifacts"}  # they stream to disk under their own limit (max_upload_mb)


def error_headers(error: StableCoreError) -> dict[str, str]:
    if isinstance(error, TooManyRequests):
        return {"Retry-After": str(error.fields.get("retry_after", 60))}
    if isinstance(error, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    return {}


def header(scope: Scope, name: bytes) -> str | None:
    values = header_values(scope, name)
    return values[0] if values else None


def header_values(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers", []) if k == name]


def split_host(value: str) -> tuple[str, int | None]:
    """`example.org:5000` -> ("example.org", 5000); `[::1]:80` -> ("::1", 80); lower case."""
    parts = urlsplit("//" + value.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1  # not a port: matches nothing
    return (parts.hostname or "").rstrip("."), port


def same_origin(origin: str, host: str) -> bool:
    """Whether a browser's `Origin` names the server the `Host` header names."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # e.g. `null` from a sandboxed frame or a file:// page
    default = 443 if parts.scheme == "https" else 80
    try:
        origin_port = parts.port or default
    except ValueError:
        return False
    name, port = split_host(host)
    return name == parts.hostname.rstrip(".") and origin_port in ((port,) if port else (80, 443))


SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # cheap: only such bodies are parsed


def lone_surrogate(body: bytes) -> str | None:
    """The path (`params.text`, `nodes.a.inputs`) of the first key or value in a JSON body
    that UTF-8 cannot encode; None when there is none or the body is not JSON."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None  # the route's own parsing answers with its 422
    return unencodable(doc)


async def refuse(scope: Scope, receive: Receive, send: Send, error: StableCoreError,
                 ws_code: int) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": ws_code, "reason": error.message[:120]})
        return
    await JSONResponse(error.to_dict(), status_code=error.status,
                       headers=error_headers(error))(scope, receive, send)


class HostOriginGuard:
    """Against DNS rebinding and cross-site requests from a browser.

    While the server is open (loopback, no users, no token), only loopback `Host` names (and
    `allowed_hosts`) are served: a page whose name was rebound to 127.0.0.1 is refused. Once
    sign-in is required, a rebound page has no credentials, and any name is served. A
    state-changing request or a WebSocket that carries an `Origin` must come from the
    server's own origin; clients that send no `Origin` (CLI, SDK, curl) pass.
    """

    def __init__(self, app: ASGIApp, check_host: Callable[[Scope], bool],
                 allowed_hosts: list[str]) -> None:
        self.app = app
        self.check_host = check_host
        self.allowed = {h.lower().rstrip(".") for h in allowed_hosts}

    def host_allowed(self, host: str) -> bool:
        if any(c in host for c in "/\\@#?"):
            return False
        name, port = split_host(host)
        return port != -1 and (is_loopback(name) or name in self.allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        hosts = header_values(scope, b"host")  # a second Host header must not hide the first
        host = hosts[0] if hosts else None
        if not all(self.host_allowed(h) for h in hosts) and self.check_host(scope):
            error = Forbidden(
                f"Host {clip(', '.join(hosts), 100)!r} is not served: without an access token only "
                "127.0.0.1, localhost, [::1] and the allowed_hosts setting are "
                "(a guard against DNS rebinding)", field="host")
            await refuse(scope, receive, send, error, 4403)
            return
        changes = scope["type"] == "websocket" or scope.get("method") not in SAFE_METHODS
        foreign = [o for o in header_values(scope, b"origin")
                   if not hosts or not all(same_origin(o, h) for h in hosts)]
        if changes and foreign:
            origin = ", ".join(foreign)
            error = Forbidden(f"cross-origin request refused: Origin {clip(origin, 100)!r} is "
                              f"not this server ({clip(host or '', 100)!r})", field="origin")
            await refuse(scope, receive, send, error, 4403)
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, uploads excepted (their route
    streams them to disk under max_upload_mb). Bodies are read ahead, at most `limit` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def too_large(self, size: int | None = None) -> PayloadTooLarge:
        got = f"of {size} bytes " if size is not None else ""
        return PayloadTooLarge(f"request body {got}exceeds the limit of {self.limit} bytes "
                               "(max_body_mb)", limit=self.limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UPLOAD_PATHS:
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length") or ""
        if declared.isdigit() and int(declared) > self.limit:
            await refuse(scope, receive, send, self.too_large(int(declared)), 1009)
            return
        # 1. read the body ahead, refusing it once it passes the limit
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # http.disconnect: let the app see it
            size += len(message.get("body", b""))
            if size > self.limit:
                await refuse(scope, receive, send, self.too_large(), 1009)
                return
            if not message.get("more_body", False):
                break

        # 2. JSON may carry a lone surrogate ("\ud800") that no UTF-8 file, database or pipe
        # can: refuse it here, naming where, instead of failing deep inside with a 500
        body = b"".join(m.get("body", b"") for m in messages)
        if SURROGATE_ESCAPE.search(body):
            bad = lone_surrogate(body)
            if bad is not None:
                await refuse(scope, receive, send, InvalidParams(
                    f"{bad}: not valid Unicode text (a lone surrogate)", field=bad), 1007)
                return

        # 3. hand it to the app as it came, then the live channel (for disconnects)
        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
