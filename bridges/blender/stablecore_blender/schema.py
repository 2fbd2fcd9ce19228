"""A job's JSON Schema as form fields, and form values back as the job's params.

Blender-free, so it is tested outside Blender: `form.py` turns each `Field` into a Blender
property (IntProperty with the range, EnumProperty with the choices, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

INT_LIMIT = 2**31 - 1  # Blender's IntProperty is 32-bit
IMAGE_KINDS = ("image", "mask")


@dataclass
class Field:
    """One param: `kind` is INT, FLOAT, BOOL, ENUM, STRING or JSON (a list or object, or a
    value that may be left unset, typed as text)."""

    name: str
    kind: str
    label: str
    description: str = ""
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: list[Any] = field(default_factory=list)

    @property
    def prop(self) -> str:
        """The Blender property's identifier."""
        return "p_" + self.name


@dataclass
class Input:
    name: str
    kind: str
    required: bool
    many: bool
    description: str = ""

    @property
    def is_image(self) -> bool:
        return self.kind in IMAGE_KINDS


def _options(prop: dict[str, Any]) -> list[dict[str, Any]]:
    return [prop, *prop.get("anyOf", [])]


def field_of(name: str, prop: dict[str, Any]) -> Field:
    types = {t for o in _options(prop) for t in
             (o["type"] if isinstance(o.get("type"), list) else [o.get("type")])} - {None}
    label = prop.get("title") or name.replace("_", " ").capitalize()
    made = Field(name, "JSON", label, prop.get("description") or "", prop.get("default"))
    enum = next((o["enum"] for o in _options(prop) if "enum" in o), None)
    nullable = "null" in types or prop.get("default", 0) is None
    if enum is not None and not nullable:
        made.kind, made.choices = "ENUM", list(enum)
    elif nullable or len(types - {"null"}) != 1:
        made.kind = "JSON"
    elif types == {"boolean"}:
        made.kind = "BOOL"
    elif types == {"string"}:
        made.kind = "STRING"
    elif types <= {"integer", "number"}:
        made.kind = "INT" if types == {"integer"} else "FLOAT"
        low = prop.get("minimum", prop.get("exclusiveMinimum"))
        high = prop.get("maximum", prop.get("exclusiveMaximum"))
        if made.kind == "INT":
            low = max(low, -INT_LIMIT) if low is not None else -INT_LIMIT
            high = min(high, INT_LIMIT) if high is not None else INT_LIMIT
        made.minimum, made.maximum = low, high
    return made


def fields(spec: dict[str, Any]) -> list[Field]:
    return [field_of(k, v) for k, v in spec["params"].get("properties", {}).items()]


def inputs(spec: dict[str, Any]) -> list[Input]:
    return [Input(k, v["kind"], v.get("required", True), v.get("many", False),
                  v.get("description") or "") for k, v in spec["inputs"].items()]


def to_text(made: Field, value: Any) -> str:
    """A JSON field's default as the text the form shows ('' for unset)."""
    if value is None:
        return ""
    return value if isinstance(value, str) and made.kind == "STRING" else json.dumps(value)


def to_param(made: Field, value: Any) -> tuple[bool, Any]:
    """(send it?, the value for the job) from what the form holds."""
    if made.kind == "FLOAT":
        return True, float(f"{value:.7g}")  # Blender floats are 32-bit: 0.1 not 0.100000001
    if made.kind == "ENUM":
        return True, next((c for c in made.choices if str(c) == value), value)
    if made.kind == "JSON":
        if not str(value).strip():
            return False, None  # unset: the job's default
        try:
            return True, json.loads(value)
        except ValueError:
            return True, value  # plain text for an optional string
    return True, value


def params(spec_fields: list[Field], values: dict[str, Any]) -> dict[str, Any]:
    """The job's params from form values keyed by field name."""
    out = {}
    for made in spec_fields:
        if made.name in values:
            send, value = to_param(made, values[made.name])
            if send:
                out[made.name] = value
    return out
