"""REST routes under /api, the SSE stream of a job, and the WebSocket of all events.

Every lookup and listing is filtered by `seen_by(request)`: a user sees their own jobs,
sessions, artifacts and events; another user's id answers 404; admins see everything."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import UploadFile

from stablecore import __version__
from stablecore.engine.engine import Engine
from stablecore.engine.intake import JobRequest as EngineJob
from stablecore.errors import (
    InvalidParams,
    PayloadTooLarge,
    StableCoreError,
    UnsupportedMedia,
    clip,
)
from stablecore.media import sniff
from stablecore.server.auth import owner_for, seen_by
from stablecore.server.events import FINAL_TYPES, EventHub
from stablecore.store import JobState, Store

router = APIRouter(prefix="/api")
MAX_INT = 2**63 - 1  # SQLite's largest integer
Offset = Annotated[int, Query(ge=0, le=MAX_INT)]
Since = Annotated[int | None, Query(ge=0, le=MAX_INT, description="resume after this seq")]
CATALOG_WAIT_S = 60.0


def engine_of(request: Request | WebSocket) -> Engine:
    return request.app.state.engine


def store_of(request: Request | WebSocket) -> Store:
    return request.app.state.store


def hub_of(request: Request | WebSocket) -> EventHub:
    return request.app.state.hub


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: str = Field(description="job name, e.g. `palette.match`")
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict, description="input name -> artifact id")
    session: str | None = Field(None, description="session id; default: the newest session")
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first")


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[\w.\- ]+$",
                             description="the session folder's name; default: date and time")

    @field_validator("name")
    @classmethod
    def not_dots(cls, name: str | None) -> str | None:
        if name is not None and name.strip() in (".", ".."):
            raise ValueError(f"{name!r} names no folder of its own")
        return name


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    store = store_of(request)
    return {"ok": True, "version": __version__, "ready": engine.ready.is_set(),
            "jobs": store.counts(), "last_seq": store.last_seq()}


@router.get("/specs")
async def specs(request: Request) -> list[dict[str, Any]]:
    engine = engine_of(request)
    await engine.wait_ready(CATALOG_WAIT_S)
    return list(engine.catalog.specs.values())


@router.get("/specs/{name}")
async def spec(request: Request, name: str) -> dict[str, Any]:
    engine = engine_of(request)
    await engine.wait_ready(CATALOG_WAIT_S)
    return engine.catalog.get(name)


@router.get("/plugins")
async def plugins(request: Request) -> list[dict[str, Any]]:
    engine = engine_of(request)
    await engine.wait_ready(CATALOG_WAIT_S)
    return engine.catalog.plugins


MAX_JOBS_PER_REQUEST = 10_000


@router.post("/jobs", status_code=201)
async def submit(request: Request, body: JobRequest | list[JobRequest],
                 ) -> dict[str, Any] | list[dict[str, Any]]:
    """Queue one job, or a list of jobs in one transaction (all are accepted, or none)."""
    engine = engine_of(request)
    await engine.wait_ready(CATALOG_WAIT_S)
    many = isinstance(body, list)
    requests = body if isinstance(body, list) else [body]
    if not requests or len(requests) > MAX_JOBS_PER_REQUEST:
        raise InvalidParams(f"a list of 1 to {MAX_JOBS_PER_REQUEST} jobs, got {len(requests)}",
                            field="body")
    jobs = engine.submit_many([EngineJob(r.spec, r.params, r.inputs, r.session, r.priority)
                               for r in requests], owner_for(request), seen_by(request))
    return [engine.job_public(j) for j in jobs] if many else engine.job_public(jobs[0])


@router.get("/jobs")
async def list_jobs(request: Request, state: JobState | None = None, session: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                    offset: Offset = 0) -> dict[str, Any]:
    engine = engine_of(request)
    jobs, total = store_of(request).list_jobs(state, session, limit, offset,
                                              seen_by(request))
    return {"jobs": [engine.job_public(j) for j in jobs], "total": total, "limit": limit,
            "offset": offset}


@router.get("/jobs/{job_id}")
async def get_job(request: Request, job_id: str) -> dict[str, Any]:
    return engine_of(request).job_public(store_of(request).get_job(job_id, seen_by(request)))


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    engine = engine_of(request)
    store_of(request).get_job(job_id, seen_by(request))
    return engine.job_public(engine.cancel(job_id))


@router.get("/jobs/{job_id}/events")
async def job_events(request: Request, job_id: str,
                     since: Since = None) -> StreamingResponse:
    """Server-Sent Events of one job, from the start (or `since` / Last-Event-ID) to its end."""
    store = store_of(request)
    job = store.get_job(job_id, seen_by(request))
    last_id = request.headers.get("last-event-id", "")
    start = int(last_id) if last_id.isascii() and last_id.isdigit() else (since or 0)
    start = min(start, MAX_INT)

    async def stream() -> Any:
        if job.state.finished and not store.events_since(start, job_id, limit=1):
            return
        async for event in hub_of(request).follow(store, start, job_id=job_id):
            yield f"id: {event.seq}\nevent: {event.type}\ndata: {json.dumps(event.public())}\n\n"
            if event.type in FINAL_TYPES:
                return

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.websocket("/events")
async def events(ws: WebSocket, since: Since = None, job: str | None = None,
                 session: str | None = None, workflow: str | None = None) -> None:
    """Every event (or one job's, session's, workflow's) as JSON; `since` resumes after a seq.
    A user gets their own events only; worker and plugin events go to admins."""
    hub, store, owner = hub_of(ws), store_of(ws), seen_by(ws)
    try:
        if job:
            store.get_job(job, owner)
        if session:
            store.get_session(session, owner)
    except StableCoreError as e:
        await ws.close(code=4404, reason=e.message[:120])
        return
    await ws.accept()

    async def pump() -> None:
        async for event in hub.follow(store, since, job_id=job, session_id=session,
                                      workflow_id=workflow, owner=owner):
            await ws.send_text(json.dumps(event.public()))

    sender = asyncio.ensure_future(pump())
    try:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass  # clients have nothing to say yet; this loop notices them leaving
    except WebSocketDisconnect:
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await sender


# --- artifacts ----------------------------------------------------------------------------
def _safe_name(name: str | None) -> str:
    """A display name only: artifact paths are never built from client strings."""
    return re.sub(r"[^\w.\- ]", "_", Path(name or "upload").name)[:120] or "upload"


UPLOAD_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "an image, audio, video, text or numbers file"},
        "session": {"type": "string", "description": "session id to file it under"}},
    "additionalProperties": False}}}}


@router.post("/artifacts", status_code=201, openapi_extra={"requestBody": UPLOAD_BODY})
async def upload(request: Request) -> dict[str, Any]:
    """Multipart upload (field `file`, optional `session`); streamed to disk, size-limited."""
    store = store_of(request)
    limit = int(request.app.state.settings.max_upload_mb * 2**20)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise PayloadTooLarge(f"upload of {int(declared)} bytes exceeds the limit of "
                              f"{limit} bytes (max_upload_mb)", limit=limit)
    received = 0

    async def limited_receive() -> Any:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit + 64 * 1024:
            raise PayloadTooLarge(f"upload exceeds the limit of {limit} bytes (max_upload_mb)",
                                  limit=limit)
        return message

    form = await Request(request.scope, limited_receive).form(max_files=1, max_fields=4)
    try:
        for name in form:
            if name not in ("file", "session"):
                raise InvalidParams(f"{clip(name, 100)!r}: unknown field", field=name)
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidParams("multipart field 'file' is missing", field="file")
        session = form.get("session")
        if session is not None:
            store.get_session(str(session), seen_by(request))
        head = await file.read(4096)
        await file.seek(0)
        sniffed = sniff(head)
        if sniffed is None or not head:
            raise UnsupportedMedia(f"{_safe_name(file.filename)!r} is not an image, audio, "
                                   "video, text or numbers file", field="file")
        kind, mime, ext = sniffed
        tmp = store.data_dir / "tmp" / f"upload_{secrets.token_hex(8)}"
        size, digest = await asyncio.to_thread(_copy_hashing, file, tmp)
        if size > limit:
            tmp.unlink()
            raise PayloadTooLarge(f"upload exceeds the limit of {limit} bytes", limit=limit)
        art = store.add_artifact(tmp, digest, kind, mime, ext, _safe_name(file.filename),
                                 session_id=str(session) if session else None,
                                 owner=owner_for(request))
        return art.public()
    finally:
        await form.close()


def _copy_hashing(file: UploadFile, dest: Path) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with dest.open("wb") as out:
        while chunk := file.file.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return size, h.hexdigest()


@router.get("/artifacts/{artifact_id}")
async def download(request: Request, artifact_id: str) -> FileResponse:
    store = store_of(request)
    art = store.get_artifact(artifact_id, seen_by(request))
    return FileResponse(store.artifact_file(art), media_type=art.mime,
                        filename=Path(art.path or art.name).name,
                        content_disposition_type="inline")


@router.get("/artifacts/{artifact_id}/info")
async def artifact_info(request: Request, artifact_id: str) -> dict[str, Any]:
    return store_of(request).get_artifact(artifact_id, seen_by(request)).public()


# --- sessions and workers -------------------------------------------------------------------
@router.get("/sessions")
async def list_sessions(request: Request) -> list[dict[str, Any]]:
    return store_of(request).list_sessions(seen_by(request))


@router.post("/sessions", status_code=201)
async def create_session(request: Request, body: SessionRequest) -> dict[str, Any]:
    return store_of(request).create_session(body.name, owner_for(request))


@router.get("/sessions/{session_id}")
async def get_session(request: Request, session_id: str,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      offset: Offset = 0) -> dict[str, Any]:
    store, owner = store_of(request), seen_by(request)
    session = store.get_session(session_id, owner)
    arts = store.list_artifacts(session_id, limit, offset, owner)
    return {**session, "artifacts": [a.public() for a in arts]}


@router.get("/workers")
async def workers(request: Request) -> list[dict[str, Any]]:
    """The workers; a user sees which of their own jobs each runs, not others'."""
    owner, store = seen_by(request), store_of(request)
    shown = [w.public() for w in engine_of(request).workers.values()]
    if owner is not None:
        for w in shown:
            w["jobs"] = [j for j in w["jobs"] if store.owner_of(j) == owner]
    return shown


class PriorityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: int = Field(ge=-1000, le=1000, description="higher runs first")


@router.patch("/jobs/{job_id}")
async def reprioritize(request: Request, job_id: str, body: PriorityRequest) -> dict[str, Any]:
    """Change a queued job's priority (reorder the queue)."""
    engine = engine_of(request)
    store_of(request).get_job(job_id, seen_by(request))
    return engine.job_public(engine.reprioritize(job_id, body.priority))


@router.post("/jobs/{job_id}/retry", status_code=201)
async def retry(request: Request, job_id: str) -> dict[str, Any]:
    """Queue a new job with the same spec, params, inputs, session and priority."""
    engine = engine_of(request)
    await engine.wait_ready(CATALOG_WAIT_S)
    old = store_of(request).get_job(job_id, seen_by(request))
    job = engine.submit(old.spec, old.params, old.inputs, old.session_id, old.priority,
                        old.owner)
    return engine.job_public(job)
