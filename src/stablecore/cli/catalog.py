"""The shell's and clip jobs' view of the live catalog: job schemas and typed values."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def value_types(prop: dict[str, Any]) -> set[str]:
    """The JSON types a parameter accepts (`anyOf` for optionals included)."""
    found: set[str] = set()
    for option in [prop, *prop.get("anyOf", [])]:
        kind = option.get("type")
        found.update(kind if isinstance(kind, list) else [kind] if kind else [])
        if "enum" in option:
            found.update(type(v).__name__.replace("str", "string") for v in option["enum"])
    return found


def choices(prop: dict[str, Any]) -> list[Any]:
    """Allowed values of an enum (or boolean) parameter, else []."""
    for option in [prop, *prop.get("anyOf", [])]:
        if "enum" in option:
            return list(option["enum"])
    return [True, False] if value_types(prop) == {"boolean"} else []


def coerce(prop: dict[str, Any] | None, raw: str) -> Any:
    """A typed value from the text after `key=`: a string parameter keeps its text as is
    (`prompt=1990` stays "1990"), any other takes JSON (numbers, true, lists) or else text."""
    if prop is not None and value_types(prop) <= {"string", "null"} and raw != "null":
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def describe(prop: dict[str, Any]) -> str:
    """One line for a parameter: type, default, range or choices, description."""
    kinds = sorted(value_types(prop) - {"null"}) or ["any"]
    parts = ["|".join(kinds)]
    if "default" in prop:
        parts.append(f"= {json.dumps(prop['default'])}")
    low, high = prop.get("minimum", prop.get("exclusiveMinimum")), prop.get(
        "maximum", prop.get("exclusiveMaximum"))
    if low is not None or high is not None:
        parts.append(f"[{'' if low is None else low}..{'' if high is None else high}]")
    if options := choices(prop):
        parts.append("{" + ", ".join(json.dumps(v) for v in options) + "}")
    if prop.get("description"):
        parts.append(f"- {prop['description']}")
    return " ".join(parts)


class Catalog:
    """The jobs a server offers (GET /api/specs), looked up by name."""

    def __init__(self, specs: Iterable[dict[str, Any]] = ()) -> None:
        self.specs = {s["name"]: s for s in specs}

    def names(self) -> list[str]:
        return sorted(self.specs)

    def get(self, name: str) -> dict[str, Any] | None:
        return self.specs.get(name)

    def params(self, name: str) -> dict[str, dict[str, Any]]:
        spec = self.specs.get(name)
        return spec["params"].get("properties", {}) if spec else {}

    def inputs(self, name: str) -> dict[str, dict[str, Any]]:
        spec = self.specs.get(name)
        return spec["inputs"] if spec else {}

    def any_param(self, key: str) -> dict[str, Any] | None:
        """The schema of `key` in the first job that has it (for `set key=...`)."""
        return next((self.params(n)[key] for n in self.names() if key in self.params(n)), None)

    def all_params(self) -> list[str]:
        return sorted({k for n in self.specs for k in self.params(n)})
