"""Plugin management over the API: each operation runs `stable-core plugin ...` in a
subprocess (never in the server), streams its log as events, then reloads the workers."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from stablecore.manager.installer import Manager
from stablecore.manager.sources import GIT_URL_RE, check_git_url, check_name, split_source
from stablecore.server.auth import audit, require_admin

router = APIRouter(prefix="/api/plugins")


class InstallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="git URL or index name, optionally @REF")
    isolated: bool = Field(False, description="install into an environment of its own")


async def _run_cli(request: Request, op: str, *args: str) -> dict[str, Any]:
    """Start `stable-core plugin OP ARGS`; its output lines become `plugin.log` events."""
    app = request.app
    settings, store, engine = app.state.settings, app.state.store, app.state.engine
    task = f"t_{secrets.token_hex(6)}"
    env = {**os.environ, "STABLECORE_DATA_DIR": str(settings.data_dir),
           "STABLECORE_PLUGINS_DIR": str(settings.plugins_home),
           "STABLECORE_UV_ARGS": ",".join(settings.uv_args)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stablecore", "plugin", op, *args, "--no-reload",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)

    def emit(type: str, **data: Any) -> None:
        with store.transaction():
            store.emit(type, task=task, op=op, **data)

    async def follow() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            emit("plugin.log", line=line.decode(errors="replace").rstrip())
        code = await proc.wait()
        emit("plugin.done", ok=code == 0, returncode=code)
        if code == 0:
            await engine.reload()

    engine.spawn(follow())
    emit("plugin.started", args=list(args))
    return {"task": task, "op": op, "args": list(args)}


@router.get("/installed")
async def installed(request: Request) -> list[dict[str, Any]]:
    """What the plugin manager installed (sources, commits, environments)."""
    home = request.app.state.settings.plugins_home
    return [e.__dict__ for e in Manager(home).entries().values()]


@router.post("/install", status_code=202)
async def install(request: Request, body: InstallRequest) -> dict[str, Any]:
    require_admin(request)
    base, _ = split_source(body.source)
    if not GIT_URL_RE.match(base):
        check_name(base)  # an index name; folders on the server's disk are CLI-only
    else:
        check_git_url(base)
    args = [body.source, *(["--isolated"] if body.isolated else [])]
    audit(request, "plugin.install", body.source, isolated=body.isolated)
    return await _run_cli(request, "install", *args)


@router.post("/{name}/update", status_code=202)
async def update(request: Request, name: str) -> dict[str, Any]:
    require_admin(request)
    Manager(request.app.state.settings.plugins_home).get(name)
    audit(request, "plugin.update", name)
    return await _run_cli(request, "update", name)


@router.delete("/{name}", status_code=202)
async def remove(request: Request, name: str) -> dict[str, Any]:
    require_admin(request)
    Manager(request.app.state.settings.plugins_home).get(name)
    audit(request, "plugin.remove", name)
    return await _run_cli(request, "remove", name)


@router.post("/reload")
async def reload(request: Request) -> dict[str, Any]:
    """Restart workers (once idle) so they import the installed plugin set."""
    require_admin(request)
    await request.app.state.engine.reload()
    return {"ok": True, "workers": list(request.app.state.engine.workers)}


RESCAN_WAIT_S = 120.0


@router.post("/rescan")
async def rescan(request: Request) -> dict[str, Any]:
    """Restart the workers (each once idle) so they list plugins and model files anew, and
    answer with the new catalog once every worker has reported it."""
    require_admin(request)
    engine = request.app.state.engine
    await engine.rescan(RESCAN_WAIT_S)
    return {"plugins": engine.catalog.plugins, "specs": len(engine.catalog.specs)}
