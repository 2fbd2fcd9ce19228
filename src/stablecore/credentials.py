"""The tokens `stable-core login` keeps for the CLI and the SDK: one per server URL, in the
user's config folder, in a file only that user may read (mode 0600)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import platformdirs

FILE_NAME = "credentials.json"


def credentials_file() -> Path:
    """`~/.config/stable-core/credentials.json` on Linux (XDG_CONFIG_HOME is honoured)."""
    return platformdirs.user_config_path("stable-core") / FILE_NAME


def load(path: Path | None = None) -> dict[str, Any]:
    """`{"default": url, "servers": {url: {"token", "user", "token_id"}}}`; empty if none."""
    path = path or credentials_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"default": None, "servers": {}}
    if not isinstance(data, dict) or not isinstance(data.get("servers"), dict):
        return {"default": None, "servers": {}}
    return data


def save(data: dict[str, Any], path: Path | None = None) -> Path:
    """Write the file whole, created 0600 (and its folder 0700) before any secret is in it."""
    path = path or credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def remember(url: str, user: str, token: str, token_id: str) -> Path:
    """Keep a token for `url`, which becomes the default server."""
    data = load()
    url = url.rstrip("/")
    data["servers"][url] = {"token": token, "user": user, "token_id": token_id}
    data["default"] = url
    return save(data)


def forget(url: str) -> dict[str, Any] | None:
    """Drop the token kept for `url`; returns what was kept, if anything."""
    data = load()
    url = url.rstrip("/")
    entry = data["servers"].pop(url, None)
    if data.get("default") == url:
        data["default"] = next(iter(data["servers"]), None)
    if entry is not None:
        save(data)
    return entry


def token_for(url: str) -> str | None:
    entry = load()["servers"].get(url.rstrip("/"))
    return entry.get("token") if isinstance(entry, dict) else None


def default_url() -> str | None:
    return load().get("default")
