"""Nodes over the API: list, add (admin), show, logs, remove (admin). The work is `nodes.py`;
the router's lifespan brings the recorded nodes back when the server starts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from stablecore.nodes import NodeRequest, Nodes
from stablecore.server.auth import audit, require_admin


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's lifespan, once the engine has started."""
    state = app.state
    state.nodes = Nodes(state.settings, state.store, state.engine)
    await state.nodes.start()
    yield


router = APIRouter(prefix="/api/nodes", lifespan=lifespan)


def nodes_of(request: Request) -> Nodes:
    return request.app.state.nodes


@router.get("")
async def list_nodes(request: Request) -> list[dict[str, Any]]:
    """Every node: state, devices, workers, jobs, models loaded, bytes sent and received."""
    nodes = nodes_of(request)
    return [nodes.public(n) for n in nodes.nodes.values()]


@router.post("", status_code=202)
async def add_node(request: Request, body: NodeRequest) -> dict[str, Any]:
    """Verify the host key, log in and check the machine, then install and start its workers
    in the background: follow `node.log` events until `node.up` or `node.failed`."""
    require_admin(request)
    since = request.app.state.store.last_seq()
    node = await nodes_of(request).add(body)
    audit(request, "node.add", node.record.name, url=node.record.url)
    return {"node": nodes_of(request).public(node), "since": since}


@router.get("/{name}")
async def get_node(request: Request, name: str) -> dict[str, Any]:
    nodes = nodes_of(request)
    return nodes.public(nodes.get(name))


@router.get("/{name}/logs")
async def node_logs(request: Request, name: str) -> dict[str, Any]:
    """The install log and each worker's console, last lines."""
    return {"lines": nodes_of(request).logs(name)}


@router.delete("/{name}")
async def remove_node(request: Request, name: str, uninstall: bool = False) -> dict[str, Any]:
    """Stop the node's workers (their running jobs go back to the queue) and forget it;
    `uninstall` also deletes its folder there."""
    require_admin(request)
    await nodes_of(request).remove(name, uninstall)
    audit(request, "node.remove", name, uninstall=uninstall)
    return {"removed": name, "uninstalled": uninstall}
