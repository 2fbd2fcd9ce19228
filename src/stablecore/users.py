"""Users, their roles, passwords, API tokens and web sessions, and the audit trail: plain
records in the store's SQLite, written through its `transaction()`.

Passwords are argon2id hashes (argon2-cffi). API tokens and session cookies are random
secrets of 256 bits, so a sha256 of each is all that is kept: a stolen database yields none.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from stablecore.errors import Conflict, InvalidParams, NotFound
from stablecore.records import new_id
from stablecore.store import Store

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
TOKEN_PREFIX = "sc_"
SESSION_TTL_S = 14 * 86400
TOUCH_EVERY_S = 60.0  # last_used is written at most this often per token
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# tables whose rows with no owner go to the first admin (data from before users existed)
OWNED_TABLES = ("jobs", "sessions", "artifacts", "workflows", "saved_workflows")


class Role(StrEnum):
    ADMIN = "admin"  # everything: every user's jobs, plugins, model files, nodes, users
    USER = "user"  # submits, cancels, retries and reorders their own jobs
    VIEWER = "viewer"  # reads the catalog, their own jobs and results


class TokenKind(StrEnum):
    API = "api"  # `Authorization: Bearer ...` for the CLI, SDK and scripts
    SESSION = "session"  # the web UI's cookie, with its CSRF token


@dataclass
class User:
    id: str
    name: str
    role: Role
    created: float

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": str(self.role),
                "created": self.created}


@dataclass
class Token:
    id: str
    user_id: str
    kind: TokenKind
    name: str
    created: float
    expires: float | None
    last_used: float | None
    csrf: str | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "created": self.created,
                "expires": self.expires, "last_used": self.last_used}


# --- passwords and secrets ------------------------------------------------------------------
@functools.cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()  # argon2id with RFC 9106's low-memory profile


@functools.cache
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Slow on purpose (~50 ms): run it off the event loop. An unknown user (`stored` None)
    is checked against a dummy hash, so timing does not tell which names exist."""
    try:
        return _hasher().verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_duration(text: str) -> float:
    """`30d`, `12h`, `90m`, `2w`, `3600s` (or plain seconds) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not match or float(match[1]) <= 0:
        raise InvalidParams(f"expiry {text!r} is not a duration such as 30d, 12h or 90m",
                            field="expires")
    return float(match[1]) * UNITS[match[2] or "s"]


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise InvalidParams(f"user name {name!r}: 1 to 64 letters, digits or _.@- , starting "
                            "with a letter or digit", field="name")
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidParams(f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters, "
                            f"this one has {len(password)}", field="password")
    return password


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidParams(f"role {role!r} is none of admin, user, viewer",
                            field="role") from None


def any_user_in(data_dir: Path) -> bool:
    """Whether the database in `data_dir` holds a user, without creating or migrating it
    (for `serve`'s safety check before the server starts)."""
    path = data_dir / "stablecore.db"
    if not path.is_file():
        return False
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None
    except sqlite3.OperationalError:  # no users table yet
        return False
    finally:
        db.close()


# --- the records ----------------------------------------------------------------------------
class Users:
    """Users, tokens, sessions and the audit trail of one store."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.db = store.db
        self.clock = clock

    # users
    def exist(self) -> bool:
        return self.db.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None

    def add(self, name: str, password: str, role: Role | str | None = None) -> User:
        """A new user. The first one must be an admin (and is one by default); it inherits
        every job, session and artifact made while the server had no users."""
        check_name(name)
        check_password(password)
        first = not self.exist()
        role = check_role(role) if role is not None else Role.ADMIN if first else Role.USER
        if first and role != Role.ADMIN:
            raise InvalidParams(f"the first user must be an admin, not a {role}: add "
                                f"`--role admin` (or leave the role out)", field="role")
        user = User(new_id("u"), name, role, self.clock())
        hashed = hash_password(password)
        with self.store.transaction() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"a user named {name!r} exists", field="name")
            db.execute("INSERT INTO users (id, name, role, password, created)"
                       " VALUES (?, ?, ?, ?, ?)", (user.id, name, role, hashed, user.created))
            if first:
                self._claim_unowned(db, user.id)
        return user

    def _claim_unowned(self, db: sqlite3.Connection, owner: str) -> None:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in OWNED_TABLES:
            if table in tables:
                db.execute(f"UPDATE {table} SET owner = ? WHERE owner IS NULL", (owner,))
        # events of jobs and sessions; worker and plugin events stay everyone's-admin's
        db.execute("UPDATE events SET owner = ? WHERE owner IS NULL AND"
                   " (job_id IS NOT NULL OR session_id IS NOT NULL)", (owner,))

    def get(self, name: str) -> User:
        row = self.db.execute("SELECT id, name, role, created FROM users WHERE name = ?",
                              (name,)).fetchone()
        if row is None:
            raise NotFound(f"no user {name!r}", field="name")
        return User(row["id"], row["name"], Role(row["role"]), row["created"])

    def by_id(self, user_id: str) -> User | None:
        row = self.db.execute("SELECT id, name, role, created FROM users WHERE id = ?",
                              (user_id,)).fetchone()
        return User(row["id"], row["name"], Role(row["role"]), row["created"]) if row else None

    def list(self) -> list[User]:
        rows = self.db.execute("SELECT id, name, role, created FROM users ORDER BY created")
        return [User(r["id"], r["name"], Role(r["role"]), r["created"]) for r in rows]

    def set_password(self, name: str, password: str) -> User:
        """A new password; the user's web sessions end (API tokens stay)."""
        user = self.get(name)
        hashed = hash_password(check_password(password))
        with self.store.transaction() as db:
            db.execute("UPDATE users SET password = ? WHERE id = ?", (hashed, user.id))
            db.execute("DELETE FROM tokens WHERE user_id = ? AND kind = ?",
                       (user.id, TokenKind.SESSION))
        return user

    def set_role(self, name: str, role: Role | str) -> User:
        user, role = self.get(name), check_role(role)
        with self.store.transaction() as db:
            if user.role == Role.ADMIN and role != Role.ADMIN:
                self._keep_an_admin(db, user, f"make {name!r} a {role}")
            db.execute("UPDATE users SET role = ? WHERE id = ?", (role, user.id))
        user.role = role
        return user

    def remove(self, name: str) -> User:
        """Remove a user and their tokens; their jobs and files stay, seen by admins."""
        user = self.get(name)
        with self.store.transaction() as db:
            if user.role == Role.ADMIN:
                self._keep_an_admin(db, user, f"remove {name!r}")
            db.execute("DELETE FROM tokens WHERE user_id = ?", (user.id,))
            db.execute("DELETE FROM users WHERE id = ?", (user.id,))
        return user

    def _keep_an_admin(self, db: sqlite3.Connection, user: User, what: str) -> None:
        others = db.execute("SELECT COUNT(*) FROM users WHERE role = 'admin' AND id != ?",
                            (user.id,)).fetchone()[0]
        if not others:
            raise Conflict(f"cannot {what}: it is the last admin; make another admin first",
                           field="name")

    def password_of(self, name: str) -> tuple[User | None, str | None]:
        """The user and their password hash (None, None for an unknown name), for checking
        off the event loop with `verify_password`."""
        row = self.db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None, None
        return User(row["id"], row["name"], Role(row["role"]), row["created"]), row["password"]

    def check(self, name: str, password: str) -> User | None:
        """The user if the password is theirs (blocking: for the CLI)."""
        user, stored = self.password_of(name)
        return user if verify_password(stored, password) else None

    # tokens and sessions
    def issue(self, user: User, kind: TokenKind, name: str = "",
              ttl_s: float | None = None) -> tuple[str, Token]:
        """A new secret for `user`: returned once, only its digest is kept. Expired tokens
        and sessions (of anyone) are deleted on the way."""
        if len(name) > 100:
            raise InvalidParams("a token name has at most 100 characters", field="name")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        token = Token(new_id("t"), user.id, kind, name or kind.value, now,
                      now + ttl_s if ttl_s else None, None,
                      secrets.token_urlsafe(32) if kind == TokenKind.SESSION else None)
        with self.store.transaction() as db:
            db.execute("DELETE FROM tokens WHERE expires IS NOT NULL AND expires <= ?", (now,))
            db.execute("INSERT INTO tokens (id, user_id, kind, name, hash, csrf, created,"
                       " expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (token.id, user.id, kind, token.name, digest(secret), token.csrf, now,
                        token.expires))
        return secret, token

    def resolve(self, secret: str, kind: TokenKind) -> tuple[User, Token] | None:
        """The user a live secret belongs to, or None (unknown, revoked or expired)."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        row = self.db.execute(
            "SELECT t.*, u.name AS user_name, u.role, u.created AS user_created FROM tokens t"
            " JOIN users u ON u.id = t.user_id WHERE t.hash = ? AND t.kind = ?",
            (digest(secret), kind)).fetchone()
        now = self.clock()
        if row is None or (row["expires"] is not None and row["expires"] <= now):
            return None
        if row["last_used"] is None or now - row["last_used"] > TOUCH_EVERY_S:
            with self.store.transaction() as db:
                db.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now, row["id"]))
        user = User(row["user_id"], row["user_name"], Role(row["role"]), row["user_created"])
        return user, self._token(row)

    def tokens(self, user_id: str | None = None,
               kind: TokenKind = TokenKind.API) -> list[Token]:
        """Live and expired tokens of one user (None: of everyone), newest first."""
        where, args = "kind = ?", [kind.value]
        if user_id is not None:
            where += " AND user_id = ?"
            args.append(user_id)
        rows = self.db.execute(f"SELECT * FROM tokens WHERE {where} ORDER BY created DESC",
                               args)
        return [self._token(r) for r in rows]

    def revoke(self, token_id: str, user_id: str | None = None) -> Token:
        """Delete a token (or session); with `user_id`, only one of theirs (else NotFound)."""
        with self.store.transaction() as db:
            row = db.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
            if row is None or (user_id is not None and row["user_id"] != user_id):
                raise NotFound(f"no token {token_id!r}", field="token")
            db.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
        return self._token(row)

    @staticmethod
    def _token(row: sqlite3.Row) -> Token:
        return Token(row["id"], row["user_id"], TokenKind(row["kind"]), row["name"],
                     row["created"], row["expires"], row["last_used"], row["csrf"])

    # the audit trail
    def record(self, action: str, actor: str | None, target: str | None = None,
               address: str | None = None, ok: bool = True, **data: Any) -> None:
        """One line of the audit trail: sign-ins, user and token changes, plugin installs."""
        with self.store.transaction() as db:
            db.execute("INSERT INTO audit (ts, action, actor, target, address, ok, data)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (self.clock(), action, actor, target, address, int(ok),
                        json.dumps(data)))

    def audit(self, limit: int = 100, offset: int = 0,
              action: str | None = None) -> tuple[list[dict[str, Any]], int]:
        where, args = ("WHERE action = ?", [action]) if action else ("", [])
        total = self.db.execute(f"SELECT COUNT(*) FROM audit {where}", args).fetchone()[0]
        rows = self.db.execute(f"SELECT * FROM audit {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                               [*args, limit, offset])
        return [{**dict(r), "ok": bool(r["ok"]), "data": json.loads(r["data"])}
                for r in rows], total
