"""Who is calling: `Auth` (a pure ASGI middleware, so HTTP and WebSocket routes are covered
alike) finds the shared token, a user's API token or web session, or nobody on an open
loopback server; sign-in with a password, rate-limited; role checks; the audit trail.

Routes read the caller with `principal_of(request)`; `seen_by(request)` is the owner filter
of every listing and lookup (another user's id is not found, never forbidden).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.requests import Request, cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from stablecore.config import Settings, is_loopback
from stablecore.errors import Forbidden, StableCoreError, TooManyRequests, Unauthorized, clip
from stablecore.server.guards import SAFE_METHODS, header, header_values, refuse
from stablecore.users import Role, TokenKind, User, Users, verify_password

OPEN_PATHS = {"/api/health"}
PROTECTED_PREFIXES = ("/api", "/openapi.json", "/docs", "/redoc")
SESSION_COOKIE = "stablecore_session"
CSRF_HEADER = b"x-csrf-token"
SIGN_IN_PATH = "/api/login"  # POST without credentials: name and password in the body
PASSWORD_PATH = "/api/tokens"  # POST with HTTP Basic name:password (`stable-core login`)
ADMIN_PREFIXES = ("/api/users", "/api/audit", "/api/nodes")  # any method
ADMIN_WRITE_PREFIXES = ("/api/plugins", "/api/models")  # installs, removals, pulls, reloads
VIEWER_WRITES = re.compile(r"^/api/(login|logout|tokens(/[^/]+)?|me/password)$")


@dataclass(frozen=True)
class Principal:
    """Who a request comes from, and how it proved it."""

    name: str
    role: Role
    via: str  # "open" (loopback, no users), "shared-token", "token", "session", "password"
    user_id: str | None = None
    token_id: str | None = None
    csrf: str | None = None

    @property
    def scope(self) -> str | None:
        """The owner filter for what this caller sees: None (everything) for admins."""
        return None if self.role == Role.ADMIN else self.user_id

    def public(self) -> dict[str, object]:
        return {"name": self.name, "role": str(self.role), "via": self.via,
                "id": self.user_id, "csrf": self.csrf}


OPEN = Principal("local", Role.ADMIN, "open")
SHARED_TOKEN = Principal("token", Role.ADMIN, "shared-token")


def sign_in_required(settings: Settings, users: Users) -> bool:
    """Loopback with no users and no token: open as it always was. Otherwise every route but
    health (and sign-in) needs a session cookie or a token."""
    return bool(settings.token) or not is_loopback(settings.host) or users.exist()


def principal_of(request: Request | WebSocket) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:
        raise Unauthorized("sign in first", field="authorization")
    return principal


def seen_by(request: Request | WebSocket) -> str | None:
    """The owner whose items the caller sees (None: everyone's, for admins)."""
    return principal_of(request).scope


def owner_for(request: Request | WebSocket) -> str | None:
    """The owner of what the caller makes: their user id (None on an open server)."""
    return principal_of(request).user_id


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def require_admin(request: Request) -> None:
    """Admins only; on an open server (loopback, no users), callers on this machine only."""
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:  # no `Auth` in front: the rule from before users existed
        if request.app.state.settings.token:
            return
        principal = OPEN
    if principal.via == "open":
        if not is_loopback(client_address(request.scope)):
            raise Forbidden("allowed from this machine only while no access token is set")
    elif principal.role != Role.ADMIN:
        raise Forbidden(f"this is for admins; {principal.name} is a {principal.role}",
                        field="role")


def check_role(principal: Principal, scope: Scope) -> None:
    """What a role may do at all, by path; ownership is checked by each route."""
    if principal.role == Role.ADMIN:
        return
    path = scope.get("path", "")
    writes = scope["type"] == "http" and scope.get("method") not in SAFE_METHODS
    if path.startswith(ADMIN_PREFIXES) or (writes and path.startswith(ADMIN_WRITE_PREFIXES)):
        raise Forbidden(f"{clip(path, 100)} is for admins; {principal.name} is a "
                        f"{principal.role}", field="role")
    if writes and principal.role == Role.VIEWER and not VIEWER_WRITES.match(path):
        raise Forbidden(f"{principal.name} is a viewer: viewers read, they do not submit or "
                        "change anything", field="role")


# --- credentials in a request ---------------------------------------------------------------
def token_from_scope(scope: Scope) -> str | None:
    """Bearer header, else `?token=` (for WebSockets, EventSource and <img> tags)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return query.get("token", [None])[0]


def basic_from_scope(scope: Scope) -> tuple[str, str] | None:
    """HTTP Basic `name:password`, if the request carries it."""
    value = header(scope, b"authorization") or ""
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        name, sep, password = decoded.partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("HTTP Basic credentials that do not decode",
                           field="authorization") from None
    if not sep:
        raise Unauthorized("HTTP Basic credentials need name:password", field="authorization")
    return name, password


def session_from_scope(scope: Scope) -> str | None:
    for value in header_values(scope, b"cookie"):
        found = cookie_parser(value).get(SESSION_COOKIE)
        if found:
            return found
    return None


# --- signing in with a password -------------------------------------------------------------
class SignInLimit:
    """Failed sign-ins, counted per user name and per address: past `per_user` failures for
    a name (or `per_address` from an address) within `window_s`, tries are refused with 429
    before any password is checked. A try counts as failed until it succeeds, so parallel
    guesses cannot slip past the count."""

    def __init__(self, per_user: int = 5, per_address: int = 20, window_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = {"user": per_user, "address": per_address}
        self.window_s = window_s
        self.clock = clock
        self.failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self.failures.get(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            self.failures.pop(key, None)
        return times

    def attempt(self, name: str, address: str) -> None:
        """Raise TooManyRequests if either count is full, else count this try as failed."""
        now = self.clock()
        keys = [("user", name.lower()), ("address", address)]
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self.limits[key[0]]:
                wait = max(1, int(times[0] + self.window_s - now + 0.999))
                raise TooManyRequests(
                    f"too many failed sign-ins for this {key[0].replace('user', 'user name')}; "
                    f"try again in {wait} s", retry_after=wait)
        for key in keys:
            self.failures.setdefault(key, deque()).append(now)

    def succeeded(self, name: str, address: str) -> None:
        """The try was right: the name's failures are forgotten, the address's try too."""
        self.failures.pop(("user", name.lower()), None)
        times = self.failures.get(("address", address))
        if times:
            times.pop()


async def sign_in(state: object, name: str, password: str, address: str, how: str) -> User:
    """Check a name and password (rate-limited, audited); the password hash is verified on
    a thread, off the event loop."""
    users: Users = state.users  # type: ignore[attr-defined]
    limit: SignInLimit = state.sign_in_limit  # type: ignore[attr-defined]
    try:
        limit.attempt(name, address)
    except TooManyRequests:
        users.record("sign-in", clip(name, 64), address=address, ok=False, how=how,
                     reason="rate limited")
        raise
    user, stored = users.password_of(name)
    if not await asyncio.to_thread(verify_password, stored, password) or user is None:
        users.record("sign-in", clip(name, 64), address=address, ok=False, how=how,
                     reason="wrong name or password")
        raise Unauthorized("wrong user name or password", field="password")
    limit.succeeded(name, address)
    users.record("sign-in", user.name, address=address, how=how)
    return user


def audit(request: Request, action: str, target: str | None = None, **data: object) -> None:
    """One line of the audit trail, by the request's caller."""
    principal = request.scope.get("state", {}).get("principal")
    request.app.state.users.record(action, principal.name if principal else None, target,
                                   client_address(request.scope), **data)


# --- the middleware -------------------------------------------------------------------------
class Auth:
    """Finds who calls every protected route (`scope["state"]["principal"]`), or answers 401
    (no or wrong credentials), 403 (a role that may not, a missing CSRF token) or 429."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.shared = settings.token.encode() if settings.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] not in ("http", "websocket") or path in OPEN_PATHS
                or not path.startswith(PROTECTED_PREFIXES)):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.identify(scope)
            if principal is not None:
                check_role(principal, scope)
        except StableCoreError as e:
            await refuse(scope, receive, send, e, 4401 if e.status == 401 else 4403)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def identify(self, scope: Scope) -> Principal | None:
        """The caller, or None for a sign-in without credentials; raises if none fit."""
        state = scope["app"].state
        users: Users = state.users
        if not sign_in_required(self.settings, users):
            return OPEN
        path, method = scope.get("path", ""), scope.get("method", "GET")
        # 1. a bearer token: the shared one from the settings, or a user's
        bearer = token_from_scope(scope)
        if bearer is not None:
            if self.shared and hmac.compare_digest(bearer.encode(), self.shared):
                return SHARED_TOKEN
            found = users.resolve(bearer, TokenKind.API)
            if found is None:
                raise Unauthorized("missing or wrong access token (Authorization: Bearer ...): "
                                   "unknown, revoked or expired", field="authorization")
            user, token = found
            return Principal(user.name, user.role, "token", user.id, token.id)
        # 2. a name and password, only to make a token (`stable-core login`)
        basic = basic_from_scope(scope)
        if basic is not None:
            if (path, method) != (PASSWORD_PATH, "POST"):
                raise Unauthorized(f"a name and password are taken by POST {PASSWORD_PATH} "
                                   "only; elsewhere send a token (Authorization: Bearer ...)",
                                   field="authorization")
            user = await sign_in(state, *basic, client_address(scope), "password")
            return Principal(user.name, user.role, "password", user.id)
        # 3. the web UI's session cookie; a change must carry its CSRF token
        secret = session_from_scope(scope)
        found = users.resolve(secret, TokenKind.SESSION) if secret else None
        if found is not None:
            user, token = found
            if scope["type"] == "http" and method not in SAFE_METHODS and path != SIGN_IN_PATH:
                given = (header(scope, CSRF_HEADER) or "").encode()
                if not hmac.compare_digest(given, (token.csrf or "").encode()):
                    raise Forbidden("CSRF token missing or wrong: send the X-CSRF-Token header "
                                    "that sign-in (or GET /api/me) answered", field="csrf")
            return Principal(user.name, user.role, "session", user.id, token.id, token.csrf)
        # 4. nobody: only sign-in itself
        if (path, method) == (SIGN_IN_PATH, "POST"):
            return None
        raise Unauthorized("sign in first: a session (POST /api/login, the web UI) or an "
                           "access token (Authorization: Bearer ...; `stable-core login`)",
                           field="authorization")
