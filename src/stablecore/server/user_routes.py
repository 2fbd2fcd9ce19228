"""Sign-in and sign-out, the caller's own tokens and password, and (for admins) users and the
audit trail. Who may call what is decided by `auth.Auth` and `auth.require_admin`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from stablecore.errors import Conflict, Forbidden
from stablecore.server.auth import (
    SESSION_COOKIE,
    Principal,
    audit,
    client_address,
    principal_of,
    require_admin,
    sign_in,
)
from stablecore.users import (
    SESSION_TTL_S,
    Role,
    TokenKind,
    User,
    Users,
    check_password,
    parse_duration,
)

router = APIRouter(prefix="/api")
Name = Annotated[str, Field(min_length=1, max_length=64)]
Password = Annotated[str, Field(min_length=1, max_length=1024)]


def users_of(request: Request) -> Users:
    return request.app.state.users


def user_of(request: Request) -> tuple[Principal, User]:
    """The signed-in user; the shared token and an open server are nobody in particular."""
    principal = principal_of(request)
    user = users_of(request).by_id(principal.user_id) if principal.user_id else None
    if user is None:
        raise Conflict(f"{principal.name!r} ({principal.via}) is no user: sign in as one "
                       "(`stable-core users add` makes the first)", field="authorization")
    return principal, user


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    password: Password


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    old: Password = Field(description="the current password")
    new: Password = Field(description="the new password, 8 characters or more")


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=100, description="what it is for, e.g. laptop")
    expires: str | None = Field(None, max_length=20,
                                description="lifetime such as 30d, 12h, 90m; none: until revoked")


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    password: Password
    role: Role | None = Field(None, description="admin, user or viewer; default user "
                              "(admin for the first user)")


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    password: Password | None = None


# --- signing in and out ---------------------------------------------------------------------
@router.post("/login")
async def login(request: Request, response: Response, body: SignIn) -> dict[str, Any]:
    """Sign in for the web UI: an HttpOnly, SameSite=Strict session cookie, and the CSRF token
    every state-changing request must send as `X-CSRF-Token`."""
    user = await sign_in(request.app.state, body.name, body.password,
                         client_address(request.scope), "web")
    secret, token = users_of(request).issue(user, TokenKind.SESSION, "web",
                                            ttl_s=SESSION_TTL_S)
    response.set_cookie(SESSION_COOKIE, secret, max_age=int(SESSION_TTL_S), path="/",
                        httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return {"user": user.public(), "csrf": token.csrf}


@router.post("/logout")
async def logout(request: Request, response: Response) -> dict[str, Any]:
    """End this web session (its cookie stops working at once)."""
    principal = principal_of(request)
    if principal.via == "session" and principal.token_id:
        users_of(request).revoke(principal.token_id)
        audit(request, "sign-out")
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return {"ok": True}


@router.get("/me")
async def me(request: Request) -> dict[str, Any]:
    """Who the caller is: name, role, how they signed in, and the session's CSRF token."""
    return principal_of(request).public()


@router.put("/me/password")
async def change_password(request: Request, body: PasswordChange) -> dict[str, Any]:
    """Change one's own password (the current one is checked); web sessions end."""
    _, user = user_of(request)
    check_password(body.new)
    await sign_in(request.app.state, user.name, body.old, client_address(request.scope),
                  "password change")
    users_of(request).set_password(user.name, body.new)
    audit(request, "user.password", user.name)
    return user.public()


# --- the caller's API tokens ----------------------------------------------------------------
@router.get("/tokens")
async def list_tokens(request: Request) -> list[dict[str, Any]]:
    """The caller's API tokens (never the secrets: those are shown once)."""
    _, user = user_of(request)
    return [t.public() for t in users_of(request).tokens(user.id)]


@router.post("/tokens", status_code=201)
async def create_token(request: Request, body: TokenRequest | None = None) -> dict[str, Any]:
    """A new API token for the caller (signed in, or HTTP Basic name:password). The secret is
    in this answer only; the server keeps a hash."""
    _, user = user_of(request)
    body = body or TokenRequest()
    ttl = parse_duration(body.expires) if body.expires else None
    secret, token = users_of(request).issue(user, TokenKind.API, body.name, ttl)
    audit(request, "token.create", user.name, token=token.id, name=token.name)
    return {**token.public(), "token": secret, "user": user.public()}


@router.delete("/tokens/{token_id}")
async def revoke_token(request: Request, token_id: str) -> dict[str, Any]:
    """Revoke one of the caller's tokens (an admin: anyone's); it stops working at once."""
    principal = principal_of(request)
    users = users_of(request)
    token = users.revoke(token_id, None if principal.role == Role.ADMIN else principal.user_id)
    holder = users.by_id(token.user_id)
    audit(request, "token.revoke", holder.name if holder else token.user_id, token=token.id,
          name=token.name)
    return token.public()


# --- users and the audit trail (admins) -----------------------------------------------------
@router.get("/users")
async def list_users(request: Request) -> list[dict[str, Any]]:
    require_admin(request)
    return [u.public() for u in users_of(request).list()]


@router.post("/users", status_code=201)
async def add_user(request: Request, body: NewUser) -> dict[str, Any]:
    """Add a user (admins). The first admin is made on the server machine instead, with
    `stable-core users add NAME`: an open server takes no users over HTTP."""
    require_admin(request)
    if principal_of(request).via == "open":
        raise Forbidden("the first admin is made on the server machine: `stable-core users "
                        "add NAME`", field="authorization")
    user = users_of(request).add(body.name, body.password, body.role)
    audit(request, "user.add", user.name, role=str(user.role))
    return user.public()


@router.patch("/users/{name}")
async def change_user(request: Request, name: str, body: UserChange) -> dict[str, Any]:
    """A user's role, or a new password (their web sessions end)."""
    require_admin(request)
    users = users_of(request)
    user = users.get(name)
    if body.password is not None:
        users.set_password(name, body.password)
        audit(request, "user.password", user.name)
    if body.role is not None:
        user = users.set_role(name, body.role)
        audit(request, "user.role", user.name, role=str(user.role))
    return user.public()


@router.delete("/users/{name}")
async def remove_user(request: Request, name: str) -> dict[str, Any]:
    """Remove a user and their tokens; their jobs and files stay, for admins to see."""
    require_admin(request)
    user = users_of(request).remove(name)
    audit(request, "user.remove", user.name)
    return user.public()


@router.get("/audit")
async def audit_trail(request: Request, action: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0) -> dict[str, Any]:
    """Sign-ins (failed ones too), user and token changes, plugin installs: newest first."""
    require_admin(request)
    entries, total = users_of(request).audit(limit, offset, action)
    return {"entries": entries, "total": total, "limit": limit, "offset": offset}
