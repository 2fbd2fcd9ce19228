"""Build workflow graphs in Python with plain calls; the SDK half of `engine/workflows.py`.

    wf = Workflow("upscaled portrait")
    draw = wf.add("sd.txt2img", prompt="a fox", steps=20)
    big = wf.add("upscale.realesrgan", image=draw.image)
    client.run_workflow(wf)

A keyword whose value is another node's output (`draw.image`) becomes a reference; any other
keyword is a literal param, `inputs=` takes artifact ids. When the graph is sent, the
catalog decides whether a reference feeds an input or a param (a `links` entry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Output:
    """One output of a node, to connect to another node's input or param."""

    node: str
    output: str
    column: str | None = None

    def ref(self) -> dict[str, Any]:
        d: dict[str, Any] = {"node": self.node, "output": self.output}
        if self.column is not None:
            d["column"] = self.column
        return d


@dataclass
class NodeHandle:
    """What `Workflow.add` returns: its outputs are attributes (`node.image`)."""

    name: str

    def __getattr__(self, output: str) -> Output:
        if output.startswith("__"):
            raise AttributeError(output)
        return Output(self.name, output)

    def column(self, output: str, column: str) -> Output:
        """One column of a numbers output, one value per item of a map."""
        return Output(self.name, output, column)


@dataclass
class Workflow:
    name: str = "workflow"
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    wired: dict[str, dict[str, Output | list[Output]]] = field(default_factory=dict)

    def add(self, spec: str, name: str | None = None, *, inputs: dict[str, Any] | None = None,
            map: str | None = None, cache: bool = True, **values: Any) -> NodeHandle:
        name = name or f"{spec.rsplit('.', 1)[-1]}{len(self.nodes) + 1}"
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} exists")
        wired = {k: v for k, v in values.items() if _is_output(v)}
        node: dict[str, Any] = {"spec": spec,
                                "params": {k: v for k, v in values.items() if k not in wired},
                                "inputs": dict(inputs or {})}
        if map is not None:
            node["map"] = map
        if not cache:
            node["cache"] = False
        self.nodes[name], self.wired[name] = node, wired
        return NodeHandle(name)

    def to_dict(self, specs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The JSON graph. With the catalog (`client.specs()`), a reference into a param
        becomes a link; without it, every reference is an input."""
        params_of = {s["name"]: set(s["params"].get("properties", {})) for s in specs or []}
        nodes = {}
        for name, node in self.nodes.items():
            node = {**node, "inputs": dict(node["inputs"])}
            links = {}
            for key, value in self.wired[name].items():
                ref = [v.ref() for v in value] if isinstance(value, list) else value.ref()
                if key in params_of.get(node["spec"], ()) and not isinstance(value, list):
                    links[key] = ref
                else:
                    node["inputs"][key] = ref
            if links:
                node["links"] = links
            nodes[name] = node
        return {"name": self.name, "nodes": nodes}

    def save(self, path: Path, specs: list[dict[str, Any]] | None = None) -> None:
        Path(path).write_text(json.dumps(self.to_dict(specs), indent=2))

    @classmethod
    def load(cls, path: Path) -> dict[str, Any]:
        """A graph file as JSON, ready for `client.run_workflow`."""
        return json.loads(Path(path).read_text())


def _is_output(value: Any) -> bool:
    return isinstance(value, Output) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, Output) for v in value))
