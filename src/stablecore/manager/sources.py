"""Where a plugin comes from: validated names, refs and git URLs, checkouts and their safety.

Everything here runs before any code of the plugin does: a git URL cannot smuggle options or
`ext::` transports, refs and names are checked, and a checkout whose symlinks escape it is
refused.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from stablecore.errors import InvalidParams, StableCoreError


class InstallError(StableCoreError):
    """An install, update or removal failed; the message says why and what was rolled back."""


NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
GIT_URL_RE = re.compile(r"^(https?|ssh|git|file)://[^\s]+$|^[\w.-]+@[\w.-]+:[\w./~-]+$")
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
           "GIT_CONFIG_NOSYSTEM": "1"}

# --- validation: everything that reaches git, uv or the file system -----------------------
def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidParams(f"plugin name {name!r} must be lower-case letters, digits and _, "
                            "starting with a letter", field="name")
    return name


def check_ref(ref: str) -> str:
    if not REF_RE.match(ref) or ".." in ref or ref.endswith((".lock", "/")):
        raise InvalidParams(f"git ref {ref!r} is not a branch, tag or commit name", field="ref")
    return ref


def check_git_url(url: str) -> str:
    """Only plain transports: no `ext::`/`fd::` helpers, no option smuggled as `-u...`."""
    if url.startswith("-") or "::" in url or not GIT_URL_RE.match(url):
        raise InvalidParams(f"{url!r} is not an allowed git URL (https, ssh, git or file)",
                            field="source")
    return url


def check_tree(root: Path) -> None:
    """Refuse a checkout with symlinks that point outside it (or anywhere absolute)."""
    root = root.resolve()
    for path in root.rglob("*"):
        if path.is_symlink():
            target = Path(os.readlink(path))
            resolved = (path.parent / target).resolve()
            if target.is_absolute() or not resolved.is_relative_to(root):
                raise InstallError(f"refusing {root.name}: symlink {path.relative_to(root)} "
                                   f"points outside the plugin ({target})")


# --- git ----------------------------------------------------------------------------------
def git(*args: str, cwd: Path | None = None) -> str:
    cmd = ["git", "-c", "protocol.ext.allow=never", "-c", "protocol.fd.allow=never", *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **GIT_ENV}, timeout=600)
    if result.returncode != 0:
        raise InstallError(f"git {args[0]} failed: {result.stderr.strip() or result.stdout}")
    return result.stdout.strip()


def split_source(spec: str) -> tuple[str, str | None]:
    """`SOURCE@REF` -> (SOURCE, REF); an scp-style `user@host:path` keeps its @."""
    head, at, ref = spec.rpartition("@")
    if at and head and "/" not in ref and ":" not in ref and not ref.startswith(" "):
        return head, check_ref(ref)
    return spec, None


def resolve_ref(checkout: Path, ref: str) -> str:
    """A commit id for a tag, commit, local or remote branch name."""
    for candidate in (ref, f"origin/{ref}"):
        try:
            return git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}",
                       cwd=checkout)
        except InstallError:
            continue
    raise InstallError(f"no branch, tag or commit {ref!r} in {checkout.name}")


def is_branch(checkout: Path, ref: str) -> bool:
    try:
        git("rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{ref}", cwd=checkout)
        return True
    except InstallError:
        return False
