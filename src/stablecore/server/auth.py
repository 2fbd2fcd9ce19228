"""Access-token check for every route but /api/health (and the web UI's static files)."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from stablecore.config import is_loopback
from stablecore.errors import Forbidden

OPEN_PATHS = {"/api/health"}
PROTECTED_PREFIXES = ("/api", "/openapi.json", "/docs", "/redoc")


def require_admin(request: Request) -> None:
    """Until users and roles exist: the token holder, or a caller on this machine if no token."""
    if request.app.state.settings.token:
        return  # TokenAuth has checked it
    if not is_loopback(request.client.host if request.client else ""):
        raise Forbidden("allowed from this machine only while no access token is set")


def token_from_scope(scope: Scope) -> str | None:
    """Bearer header, else `?token=` (for WebSockets, EventSource and <img> tags)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return query.get("token", [None])[0]


class TokenAuth:
    """Pure ASGI middleware, so it guards HTTP and WebSocket routes alike."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] in ("http", "websocket") and path not in OPEN_PATHS
                and path.startswith(PROTECTED_PREFIXES)):
            given = token_from_scope(scope)
            if given is None or not hmac.compare_digest(given.encode(), self.token):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 4401})
                    return
                response = JSONResponse(
                    {"error": "Unauthorized",
                     "detail": "missing or wrong access token (Authorization: Bearer ...)"},
                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
