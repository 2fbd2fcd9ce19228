"""Workflows over the API: run a graph, follow it, cancel it; save graphs as `workflow.*` jobs."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from stablecore.engine.saved import SavedWorkflow
from stablecore.engine.workflows import Graph
from stablecore.errors import Conflict, NotFound
from stablecore.server.auth import owner_for, seen_by
from stablecore.server.routes import CATALOG_WAIT_S, engine_of, hub_of

FINAL_WORKFLOW_TYPES = {"workflow.succeeded", "workflow.failed", "workflow.cancelled"}

router = APIRouter(prefix="/api/workflows")


class WorkflowRequest(Graph):
    session: str | None = None
    priority: int = 0


@router.post("", status_code=201)
async def run(request: Request, body: WorkflowRequest) -> dict[str, Any]:
    """Check the whole graph against the catalog, then start it; a bad graph queues nothing
    and its 422 names the node and field."""
    engine = engine_of(request)
    await engine.wait_ready(CATALOG_WAIT_S)
    graph = Graph(name=body.name, nodes=body.nodes)
    return engine.submit_workflow(graph, body.session, body.priority, owner_for(request),
                                  seen_by(request))


@router.get("")
async def list_runs(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                    offset: Annotated[int, Query(ge=0, le=2**62)] = 0) -> dict[str, Any]:
    runs, total = engine_of(request).flows.db.list(limit, offset, seen_by(request))
    return {"workflows": runs, "total": total, "limit": limit, "offset": offset}


@router.get("/saved")
async def list_saved(request: Request) -> list[dict[str, Any]]:
    return engine_of(request).flows.db.saved()


@router.post("/saved", status_code=201)
async def save(request: Request, body: SavedWorkflow) -> dict[str, Any]:
    """Keep a named graph; it appears in the catalog as the job `workflow.<name>`."""
    engine = engine_of(request)
    await engine.wait_ready(CATALOG_WAIT_S)
    kept, owner = engine.flows.db.saved_one(body.name), seen_by(request)
    if kept is not None and owner is not None and kept["owner"] != owner:
        raise Conflict(f"a saved workflow {body.name!r} exists, kept by another user",
                       field="name")
    engine.flows.save(body, owner_for(request))
    return engine.catalog.get(f"workflow.{body.name}")


@router.delete("/saved/{name}", status_code=204)
async def delete_saved(request: Request, name: str) -> None:
    flows, owner = engine_of(request).flows, seen_by(request)
    saved = flows.db.saved_one(name)
    if saved is not None and owner is not None and saved["owner"] != owner:
        raise NotFound(f"no saved workflow {name!r} of yours", field="name")
    flows.delete(name)


@router.get("/{workflow_id}")
async def get_run(request: Request, workflow_id: str) -> dict[str, Any]:
    """The run and every node's state, job id, outputs and whether it was cached."""
    engine_of(request).flows.db.get(workflow_id, seen_by(request))
    return engine_of(request).flows.public(workflow_id)


@router.get("/{workflow_id}/events")
async def run_events(request: Request, workflow_id: str,
                     since: Annotated[int, Query(ge=0, le=2**62)] = 0) -> StreamingResponse:
    """Server-Sent Events of every node of a run, from its start (or `since`) to its end."""
    store = engine_of(request).store
    owner = seen_by(request)
    run = engine_of(request).flows.db.get(workflow_id, owner)

    async def stream() -> Any:
        if run["state"] != "running" and not store.events_since(since, limit=1,
                                                                workflow_id=workflow_id):
            return
        async for event in hub_of(request).follow(store, since, workflow_id=workflow_id,
                                                  owner=owner):
            yield f"id: {event.seq}\nevent: {event.type}\ndata: {json.dumps(event.public())}\n\n"
            if event.type in FINAL_WORKFLOW_TYPES:
                return

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/{workflow_id}/cancel")
async def cancel(request: Request, workflow_id: str) -> dict[str, Any]:
    engine_of(request).flows.db.get(workflow_id, seen_by(request))
    return engine_of(request).cancel_workflow(workflow_id)
