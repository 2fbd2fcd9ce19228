"""Saved workflows as jobs: `workflow.<name>` in the catalog, the "metaplugin".

A saved workflow is a graph plus what it exposes: `{"params": {"prompt": "draw.prompt"},
"inputs": {"image": "big.image"}, "outputs": {"image": "big.image"}}`. Each exposed field is
typed like the node field it stands for, with the graph's value as its default, so every
client renders and checks it as it does any plugin's job.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stablecore.engine.catalog import Catalog
from stablecore.engine.workflows import Graph, order_nodes
from stablecore.errors import InvalidParams

PLUGIN = "workflow"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class Expose(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, str] = Field(default_factory=dict, description="name -> node.param")
    inputs: dict[str, str] = Field(default_factory=dict, description="name -> node.input")
    outputs: dict[str, str] = Field(default_factory=dict, description="name -> node.output")


class SavedWorkflow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="the job becomes `workflow.<name>`: a-z, 0-9, _")
    description: str = ""
    graph: Graph
    expose: Expose = Field(default_factory=Expose)


def check_saved(saved: SavedWorkflow, catalog: Catalog) -> None:
    """Raise InvalidParams unless the name is usable and every exposed field exists."""
    if not NAME_RE.match(saved.name):
        raise InvalidParams(f"name: {saved.name!r} must be a-z, 0-9 and _ (it becomes "
                            f"workflow.{saved.name})", field="name")
    order_nodes(saved.graph)
    for part in ("params", "inputs", "outputs"):
        for key, target in getattr(saved.expose, part).items():
            _target(saved.graph, catalog, part, key, target)


def _target(graph: Graph, catalog: Catalog, part: str, key: str,
            target: str) -> tuple[str, str, dict[str, Any]]:
    """(node, field, the field's schema) of an exposed `node.field`."""
    where = f"expose.{part}.{key}"
    node, _, field = target.partition(".")
    if node not in graph.nodes:
        raise InvalidParams(f"{where}: no node {node!r} in the graph", field=where)
    spec = catalog.specs.get(graph.nodes[node].spec)
    if spec is None:
        raise InvalidParams(f"{where}: no job named {graph.nodes[node].spec!r}", field=where)
    fields = (spec["params"].get("properties", {}) if part == "params" else spec[part])
    if field not in fields:
        raise InvalidParams(f"{where}: {spec['name']} has no {part[:-1]} {field!r}",
                            field=where)
    return node, field, fields[field]


def saved_spec(saved: SavedWorkflow, catalog: Catalog) -> dict[str, Any] | None:
    """The catalog entry of a saved workflow; None while a job it uses is not in the catalog."""
    try:
        check_saved(saved, catalog)
    except InvalidParams:
        return None
    props, required = {}, []
    for key, target in saved.expose.params.items():
        node, field, schema = _target(saved.graph, catalog, "params", key, target)
        prop = dict(schema)
        given = saved.graph.nodes[node].params
        if field in given:
            prop["default"] = given[field]
        elif "default" not in prop:
            required.append(key)
        props[key] = prop
    inputs = {}
    for key, target in saved.expose.inputs.items():
        node, field, schema = _target(saved.graph, catalog, "inputs", key, target)
        inputs[key] = {**schema, "required": field not in saved.graph.nodes[node].inputs}
    outputs = {key: _target(saved.graph, catalog, "outputs", key, target)[2]
               for key, target in saved.expose.outputs.items()}
    return {"name": f"{PLUGIN}.{saved.name}", "plugin": PLUGIN, "version": "",
            "description": saved.description or f"The saved workflow {saved.name!r}.",
            "params": {"type": "object", "properties": props, "required": required,
                       "additionalProperties": False, "title": f"workflow_{saved.name}"},
            "inputs": inputs, "outputs": outputs,
            "resources": {"gpu": False, "memory_mb": 0}, "batch": None, "batch_max": None,
            "model_param": None, "timeout": None, "deterministic": True,
            "workflow": saved.graph.model_dump()}


def graph_for(saved: SavedWorkflow, params: dict[str, Any],
              inputs: dict[str, Any]) -> Graph:
    """The saved graph with a job's params and inputs put where they are exposed."""
    graph = saved.graph.model_copy(deep=True)
    graph.name = saved.name
    for key, value in params.items():
        node, _, field = saved.expose.params[key].partition(".")
        graph.nodes[node].params[field] = value
    for key, value in inputs.items():
        node, _, field = saved.expose.inputs[key].partition(".")
        graph.nodes[node].inputs[field] = value
    return graph
