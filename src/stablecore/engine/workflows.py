"""Workflow graphs: their JSON form, and the checks a graph passes before anything runs.

A graph is `{"name", "nodes": {name: node}}`. A node names a `spec`, literal `params`, and
`inputs`, each an artifact id, a reference `{"node", "output"}` to another node's output, or
a list of either. `links` feed a param from another node's `text`, `json` or `numbers`
output. `map` names a list input: the node then runs once per item, its outputs gathered
into lists in order, and a `numbers` link gives each item its own value (one row per item).

Everything here is pure: `check_graph` reads the catalog and artifact kinds and raises
`InvalidParams` naming the node and field, or returns the nodes in an order that runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stablecore.engine.catalog import Catalog, unencodable
from stablecore.errors import InvalidParams, NotFound
from stablecore.media import accepts

LINKABLE = {"text", "json", "numbers"}  # output kinds a param can be fed from


class Ref(BaseModel):
    """Another node's output, by node name and output name; `column` picks a numbers column."""

    model_config = ConfigDict(extra="forbid")
    node: str
    output: str
    column: str | None = None


InputValue = str | Ref | list[str | Ref]


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: str = Field(description="job name, e.g. `transform2d.transform`")
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, InputValue] = Field(
        default_factory=dict, description="input name -> artifact id, {node, output}, or a list")
    links: dict[str, Ref] = Field(default_factory=dict,
                                  description="param name -> a text/json/numbers output")
    map: str | None = Field(None, description="run once per item of this list input")
    cache: bool = Field(True, description="reuse an earlier identical result")


class Graph(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("workflow", min_length=1, max_length=100)
    nodes: dict[str, Node] = Field(min_length=1, max_length=1000)


def refs_of(node: Node) -> list[tuple[str, Ref]]:
    """(field, reference) for every input and link of `node` that points at another node."""
    out = []
    for key, value in node.inputs.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Ref):
                out.append((f"inputs.{key}", item))
    out += [(f"links.{key}", ref) for key, ref in node.links.items()]
    return out


def check_graph(graph: Graph, catalog: Catalog, artifact_kind: Callable[[str], str]) -> list[str]:
    """Raise InvalidParams for the first problem, naming `nodes.<node>.<field>`; else return
    the node names in dependency order."""
    for name in sorted(graph.nodes):
        _check_node(name, graph.nodes[name], graph, catalog, artifact_kind)
    return order_nodes(graph)


def _check_node(name: str, node: Node, graph: Graph, catalog: Catalog,
                artifact_kind: Callable[[str], str]) -> None:
    where = f"nodes.{name}"
    if "[" in name or "." in name:
        raise InvalidParams(f"{where}: a node name may not contain '[' or '.'", field=where)
    if node.spec not in catalog.specs:
        raise InvalidParams(f"{where}.spec: no job named {node.spec!r}", field=f"{where}.spec")
    spec = catalog.specs[node.spec]
    wanted, props = spec["inputs"], spec["params"].get("properties", {})
    # 1. inputs: known names, the right kinds, lists where lists go, required ones present
    for key, value in node.inputs.items():
        field = f"{where}.inputs.{key}"
        if key not in wanted:
            raise InvalidParams(f"{field}: {node.spec} has no input {key!r} (it takes "
                                f"{sorted(wanted) or 'none'})", field=field)
        items = value if isinstance(value, list) else [value]
        mapped = node.map == key
        if not items:
            raise InvalidParams(f"{field}: an empty list", field=field)
        for item in items:
            kind, many = _source(item, graph, catalog, artifact_kind, field)
            if not accepts(wanted[key]["kind"], kind):
                raise InvalidParams(f"{field}: {node.spec} takes {wanted[key]['kind']!r}, "
                                    f"this gives {kind!r}", field=field)
            if many and not (mapped or wanted[key].get("many")):
                raise InvalidParams(f"{field}: a list goes into one {wanted[key]['kind']} "
                                    f"input; set \"map\": {key!r} to run once per item",
                                    field=field)
        if isinstance(value, list) and len(value) > 1 and not (mapped or wanted[key].get("many")):
            raise InvalidParams(f"{field}: takes one artifact, not a list", field=field)
    for key, spec_in in wanted.items():
        if spec_in["required"] and key not in node.inputs:
            raise InvalidParams(f"{where}.inputs.{key}: required {spec_in['kind']} input "
                                "missing", field=f"{where}.inputs.{key}")
    if node.map is not None and node.map not in node.inputs:
        raise InvalidParams(f"{where}.map: {node.map!r} is not one of its inputs",
                            field=f"{where}.map")
    # 2. links: known params, fed from text/json/numbers outputs (numbers only per item)
    for key, ref in node.links.items():
        field = f"{where}.links.{key}"
        if key not in props:
            raise InvalidParams(f"{field}: {node.spec} has no param {key!r}", field=field)
        kind, _ = _source(ref, graph, catalog, artifact_kind, field)
        if kind not in LINKABLE or (kind == "numbers" and node.map is None):
            raise InvalidParams(f"{field}: a param takes a text or json output (numbers: one "
                                f"value per item of a map), not {kind!r}", field=field)
        given = _output_schema(graph, catalog, ref, kind)
        if not _fits(given, props[key]):
            raise InvalidParams(f"{field}: {ref.node}.{ref.output} gives {given.get('type')}, "
                                f"{key} takes {props[key].get('type')}", field=field)
    # 3. literal params against the schema; linked ones are checked when their value exists
    bad = unencodable(node.params)
    if bad is not None:
        raise InvalidParams(f"{where}.params.{bad}: not valid Unicode text (a lone surrogate)",
                            field=f"{where}.params.{bad}")
    validator = catalog.validators[node.spec]
    for error in validator.iter_errors(node.params):
        missing = error.validator == "required" and str(error.message).split("'")[1]
        if missing and missing in node.links:
            continue
        path = ".".join(str(p) for p in error.absolute_path) or (missing or "")
        if error.validator == "additionalProperties":
            path = next(iter(set(node.params) - set(props)), "")
        raise InvalidParams(f"{where}.params.{path}: {error.message}",
                            field=f"{where}.params.{path}")


def _output_schema(graph: Graph, catalog: Catalog, ref: Ref, kind: str) -> dict[str, Any]:
    """The JSON Schema of what a linked output gives one param."""
    if kind == "text":
        return {"type": "string"}
    if kind == "numbers":
        return {"type": "number"}
    return catalog.specs[graph.nodes[ref.node].spec]["outputs"][ref.output].get("schema", {})


def _fits(given: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the JSON types can meet (integers and numbers meet: 5.0 is a valid integer);
    unknown types pass, and the value is checked in full when the node is released."""
    g, w = given.get("type"), wanted.get("type")
    if g is None or w is None:
        return True
    numeric = {"integer", "number"}
    gs, ws = set([g] if isinstance(g, str) else g), set([w] if isinstance(w, str) else w)
    return bool((gs | (numeric if gs & numeric else set())) & ws)


def _source(item: str | Ref, graph: Graph, catalog: Catalog,
            artifact_kind: Callable[[str], str], field: str) -> tuple[str, bool]:
    """(kind, is a list) of what an input value gives."""
    if isinstance(item, str):
        try:
            return artifact_kind(item), False
        except NotFound as e:
            raise InvalidParams(f"{field}: {e.message}", field=field) from None
    if item.node not in graph.nodes:
        raise InvalidParams(f"{field}: no node {item.node!r} in this graph", field=field)
    upstream = graph.nodes[item.node]
    outputs = catalog.specs[upstream.spec]["outputs"] if upstream.spec in catalog.specs else {}
    if item.output not in outputs:
        raise InvalidParams(f"{field}: node {item.node!r} ({upstream.spec}) has no output "
                            f"{item.output!r} (it gives {sorted(outputs) or 'none'})",
                            field=field)
    out = outputs[item.output]
    return out["kind"], bool(out.get("many")) or upstream.map is not None


def order_nodes(graph: Graph) -> list[str]:
    """Kahn's topological order; a cycle is named by the nodes left in it."""
    deps = {name: {ref.node for _, ref in refs_of(node)} for name, node in graph.nodes.items()}
    order: list[str] = []
    ready = sorted(n for n, d in deps.items() if not d)
    while ready:
        name = ready.pop(0)
        order.append(name)
        for other in sorted(deps):
            if name in deps[other]:
                deps[other].discard(name)
                if not deps[other] and other not in order and other not in ready:
                    ready.append(other)
    if len(order) < len(graph.nodes):
        stuck = sorted(set(graph.nodes) - set(order))
        raise InvalidParams(f"nodes.{stuck[0]}: part of a cycle ({' -> '.join(stuck)})",
                            field=f"nodes.{stuck[0]}")
    return order


def cache_key(spec: dict[str, Any], params: dict[str, Any],
              inputs: dict[str, str | list[str]]) -> str:
    """What makes two runs of a node equal: the spec and plugin version, the params, and the
    inputs' contents (sha256s, not artifact ids)."""
    doc = [spec["name"], spec.get("version", ""), params, inputs]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
