"""Model file routes: what plugins declare and what is cached; pulls that report as events.

The server imports no plugin: the workers report each plugin's MODEL_FILES in their catalog.
A pull runs on a thread; its events hop back to the event loop, the only user of the store.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from stablecore.errors import NotFound
from stablecore.modelfiles import (
    FileCache,
    ModelFile,
    ModelFileError,
    local_path,
    models_cache,
    pull,
)
from stablecore.server.auth import require_admin
from stablecore.store import Store

router = APIRouter(prefix="/api/models")
CATALOG_WAIT_S = 60.0
PROGRESS_EVERY_S = 0.25  # at most this often a model.progress event per file


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plugin: str = Field("all", description="plugin name, or 'all'")


async def declared(request: Request) -> dict[str, list[ModelFile]]:
    engine = request.app.state.engine
    await engine.wait_ready(CATALOG_WAIT_S)
    return {p["name"]: [ModelFile.from_dict(m) for m in p.get("models") or []]
            for p in engine.catalog.plugins if p.get("models")}


def rows(files: dict[str, list[ModelFile]], cache: FileCache) -> list[dict[str, Any]]:
    out = []
    for plugin, items in files.items():
        for file in items:
            try:
                path, error = local_path(file, cache), None
            except ModelFileError as e:
                path, error = None, e.message
            out.append({"plugin": plugin, "name": file.name, "source": file.source,
                        **file.to_dict(), "cached": path is not None,
                        "path": str(path) if path else None, "error": error})
    return out


@router.get("")
async def list_models(request: Request) -> list[dict[str, Any]]:
    """Every declared model file, per plugin, and whether it is in the cache."""
    return await asyncio.to_thread(rows, await declared(request), models_cache(os.environ))


@router.post("/pull", status_code=202)
async def pull_models(request: Request, body: PullRequest) -> dict[str, Any]:
    """Start downloading; follow `model.progress`, `model.done`, `model.failed` events."""
    require_admin(request)
    files = await declared(request)
    if body.plugin != "all":
        if body.plugin not in files:
            raise NotFound(f"plugin {body.plugin!r} declares no model files "
                           f"(those that do: {', '.join(files) or 'none'})", field="plugin")
        files = {body.plugin: files[body.plugin]}
    store: Store = request.app.state.store
    since = store.last_seq()
    loop = asyncio.get_running_loop()

    def send(type: str, **data: Any) -> None:
        loop.call_soon_threadsafe(emit, store, type, data)

    work = [(plugin, f) for plugin, items in files.items() for f in items]
    threading.Thread(target=pull_all, args=(work, models_cache(os.environ), send),
                     daemon=True, name="models-pull").start()
    return {"plugin": body.plugin, "since": since,
            "files": [{"plugin": p, "name": f.name} for p, f in work]}


def emit(store: Store, type: str, data: dict[str, Any]) -> None:
    with store.transaction():
        store.emit(type, **data)


def pull_all(work: list[tuple[str, ModelFile]], cache: FileCache, send: Any) -> None:
    """Runs on its own thread: pull each file in turn; one failure does not stop the rest."""
    try:
        for plugin, file in work:
            last = 0.0

            def progress(done: int, total: int | None, plugin: str = plugin,
                         file: ModelFile = file) -> None:
                nonlocal last
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY_S or done == total:
                    last = now
                    send("model.progress", plugin=plugin, file=file.name, done=done, total=total)

            try:
                path = pull(file, cache, progress)
            except Exception as e:
                error = e.message if isinstance(e, ModelFileError) else f"{type(e).__name__}: {e}"
                send("model.failed", plugin=plugin, file=file.name, error=error)
            else:
                send("model.done", plugin=plugin, file=file.name, path=str(path),
                     size=path.stat().st_size)
    except RuntimeError:  # the event loop closed: the server is shutting down
        return
