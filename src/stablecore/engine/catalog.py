"""The catalog of jobs, as JSON Schema reported by the workers, and request checking against it.

The server never imports a plugin, so it validates params with the JSON Schema the workers
produced from the job signatures; the worker validates again with pydantic before it runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from stablecore.errors import InvalidParams, NotFound
from stablecore.media import accepts
from stablecore.store import Artifact

CACHED = "(last run)"  # the reporter name of a catalog loaded from the data folder


@dataclass
class CheckedJob:
    """A request that passed every check: full params (defaults filled) and routing keys."""

    spec: str
    params: dict[str, Any]
    inputs: dict[str, str | list[str]]
    model_key: str | None
    batch_key: str | None
    timeout: float | None


@dataclass
class Catalog:
    """The union of what every worker reported; a worker's new report replaces its old one."""

    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugins: list[dict[str, Any]] = field(default_factory=list)
    validators: dict[str, jsonschema.protocols.Validator] = field(default_factory=dict)
    reports: dict[str, tuple[list[dict], list[dict]]] = field(default_factory=dict)

    def update(self, worker: str, specs: list[dict[str, Any]],
               plugins: list[dict[str, Any]]) -> None:
        self.reports[worker] = (specs, plugins)
        self._rebuild()

    def save(self, path: Path) -> None:
        """Keep what the workers reported, so the next start answers before they report."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"specs": list(self.specs.values()), "plugins": self.plugins}))
        tmp.replace(path)

    def load(self, path: Path) -> bool:
        """The catalog of the last run, as if one worker named CACHED had reported it."""
        try:
            saved = json.loads(path.read_text())
            self.update(CACHED, saved["specs"], saved["plugins"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return True

    def forget(self, worker: str) -> None:
        """A worker that is gone for good (its plugin removed) no longer contributes."""
        self.reports.pop(worker, None)
        self._rebuild()

    def _rebuild(self) -> None:
        merged: dict[str, dict[str, Any]] = {}
        known: dict[str, dict[str, Any]] = {}
        for worker_specs, worker_plugins in self.reports.values():
            merged.update({s["name"]: s for s in worker_specs})
            # a plugin that loads in some worker is not "broken" because another lacks it
            for p in worker_plugins:
                if p["name"] not in known or known[p["name"]]["error"]:
                    known[p["name"]] = p
        for name, schema in merged.items():
            if self.specs.get(name) != schema or name not in self.validators:
                cls = jsonschema.validators.validator_for(schema["params"])
                self.validators[name] = cls(schema["params"])
        self.specs = merged
        self.plugins = sorted(known.values(), key=lambda p: p["name"])

    def get(self, name: str) -> dict[str, Any]:
        if name not in self.specs:
            raise NotFound(f"no job named {name!r}; GET /api/specs lists them", field="spec")
        return self.specs[name]

    def check(self, name: str, params: dict[str, Any],
              inputs: dict[str, Artifact | list[Artifact]]) -> CheckedJob:
        """Raise InvalidParams naming the first bad field; return the job ready to queue."""
        schema = self.get(name)
        # 0. text every part can carry: JSON allows a lone surrogate ("\ud800"), UTF-8 not
        bad = unencodable(params)
        if bad is not None:
            raise InvalidParams(f"params.{bad}: not valid Unicode text (a lone surrogate)",
                                field=f"params.{bad}")
        # 1. params against the JSON Schema
        error = jsonschema.exceptions.best_match(self.validators[name].iter_errors(params))
        if error is not None:
            path = ".".join(str(p) for p in error.absolute_path)
            if error.validator == "required":
                path = str(error.message).split("'")[1]
            elif error.validator == "additionalProperties":
                path = next(iter(set(params) - set(schema["params"].get("properties", {}))), "")
            raise InvalidParams(f"params.{path}: {error.message}", field=f"params.{path}")
        # 2. inputs: known names, required present, artifacts of an accepted kind
        wanted = schema["inputs"]
        for key in inputs:
            if key not in wanted:
                raise InvalidParams(f"inputs.{key}: {name} has no input {key!r} "
                                    f"(it takes {sorted(wanted) or 'none'})", field=f"inputs.{key}")
        refs: dict[str, str | list[str]] = {}
        for key, spec in wanted.items():
            given = inputs.get(key)
            if given is None:
                if spec["required"]:
                    raise InvalidParams(f"inputs.{key}: required {spec['kind']} input missing",
                                        field=f"inputs.{key}")
                continue
            if isinstance(given, list) and not spec.get("many"):
                raise InvalidParams(f"inputs.{key}: takes one artifact, not a list",
                                    field=f"inputs.{key}")
            for art in given if isinstance(given, list) else [given]:
                if not accepts(spec["kind"], art.kind):
                    raise InvalidParams(f"inputs.{key}: expects kind {spec['kind']!r}, artifact "
                                        f"{art.id} is {art.kind!r}", field=f"inputs.{key}")
            ids = [a.id for a in given] if isinstance(given, list) else [given.id]
            refs[key] = ids if spec.get("many") else ids[0]  # a list input takes one id too
        # 3. fill defaults, derive routing keys
        props = schema["params"].get("properties", {})
        full = {k: p["default"] for k, p in props.items() if "default" in p} | params
        model_key = (f"{schema['plugin']}/{full.get(schema['model_param'])}"
                     if schema.get("model_param") else None)
        batch_key = None
        if schema.get("batch") is not None:
            batch_key = name + json.dumps([full.get(k) for k in schema["batch"]], default=str)
        return CheckedJob(name, full, refs, model_key, batch_key, schema.get("timeout"))


def unencodable(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string in `value` that UTF-8 cannot encode, else None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "."
        return None
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        found = unencodable(key, path) if isinstance(key, str) else None
        found = found or unencodable(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None
