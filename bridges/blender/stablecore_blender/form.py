"""Each job's form as Blender properties, made from the live catalog.

For every job a PropertyGroup class is built from its schema (an IntProperty with the param's
range, an EnumProperty with its choices, ...) plus, per input, where it comes from; all hang
off `Scene.stablecore_forms`, one pointer per job, so values are kept per job and saved with
the .blend file. Rebuilt whenever the catalog is fetched again.
"""

from __future__ import annotations

import re
from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from . import schema

SOURCES = [("IMAGE", "Image", "an Image datablock"),
           ("RENDER", "Last render", "the Render Result of the last render (F12)"),
           ("CAMERA", "Camera view", "render the active camera now and use that"),
           ("FILE", "File", "a file on disk")]
NO_SOURCE = ("NONE", "None", "leave this optional input out")

catalog: dict[str, dict[str, Any]] = {}  # job name -> spec, as last fetched
_classes: list[type] = []


def attr(job: str) -> str:
    """A job's pointer name under Scene.stablecore_forms (an identifier, < 64 characters)."""
    return "j_" + re.sub(r"\W", "_", job)[:60]


def prop_of(made: schema.Field) -> Any:
    common: dict[str, Any] = {"name": made.label, "description": made.description}
    limits = {k: v for k, v in (("min", made.minimum), ("max", made.maximum)) if v is not None}
    if made.kind == "INT":
        default = int(made.default or 0)
        return IntProperty(default=min(max(default, limits["min"]), limits["max"]), **limits,
                           **common)
    if made.kind == "FLOAT":
        return FloatProperty(default=float(made.default or 0.0), precision=3, **limits, **common)
    if made.kind == "BOOL":
        return BoolProperty(default=bool(made.default), **common)
    if made.kind == "ENUM":
        items = [(str(c), str(c), "") for c in made.choices]
        default = str(made.default) if made.default in made.choices else items[0][0]
        return EnumProperty(items=items, default=default, **common)
    return StringProperty(default=schema.to_text(made, made.default), **common)


def input_props(given: schema.Input) -> dict[str, Any]:
    label = given.name.replace("_", " ").capitalize()
    props: dict[str, Any] = {f"in_{given.name}_path": StringProperty(
        name=label, subtype="FILE_PATH", description=given.description)}
    if given.is_image:
        items = SOURCES if given.required else [NO_SOURCE, *SOURCES]
        props[f"in_{given.name}_source"] = EnumProperty(name=label, items=items,
                                                        default=items[0][0])
        props[f"in_{given.name}_image"] = PointerProperty(name=label, type=bpy.types.Image)
    return props


def build(specs: list[dict[str, Any]]) -> None:
    """(Re)register one PropertyGroup per job and Scene.stablecore_forms over them."""
    clear()
    catalog.update({s["name"]: s for s in specs})
    pointers = {}
    for name, spec in sorted(catalog.items()):
        annotations = {f.prop: prop_of(f) for f in schema.fields(spec)}
        for given in schema.inputs(spec):
            annotations.update(input_props(given))
        cls = type("STABLECORE_PG_" + attr(name), (bpy.types.PropertyGroup,),
                   {"__annotations__": annotations})
        bpy.utils.register_class(cls)
        _classes.append(cls)
        pointers[attr(name)] = PointerProperty(type=cls)
    forms = type("STABLECORE_PG_forms", (bpy.types.PropertyGroup,),
                 {"__annotations__": pointers})
    bpy.utils.register_class(forms)
    _classes.append(forms)
    bpy.types.Scene.stablecore_forms = PointerProperty(type=forms)


def clear() -> None:
    if hasattr(bpy.types.Scene, "stablecore_forms"):
        del bpy.types.Scene.stablecore_forms
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
    _classes.clear()
    catalog.clear()


def form_of(scene: Any, job: str) -> Any:
    forms = getattr(scene, "stablecore_forms", None)
    return getattr(forms, attr(job), None) if forms is not None else None


def params(scene: Any, job: str) -> dict[str, Any]:
    """The job's params from the scene's form."""
    form, spec_fields = form_of(scene, job), schema.fields(catalog[job])
    return schema.params(spec_fields, {f.name: getattr(form, f.prop) for f in spec_fields})


def draw(layout: Any, scene: Any, job: str) -> None:
    form = form_of(scene, job)
    if form is None:
        return
    spec = catalog[job]
    for given in schema.inputs(spec):
        col = layout.column(align=True)
        if given.is_image:
            source = getattr(form, f"in_{given.name}_source")
            col.prop(form, f"in_{given.name}_source")
            if source == "IMAGE":
                col.prop(form, f"in_{given.name}_image", text="")
            elif source == "FILE":
                col.prop(form, f"in_{given.name}_path", text="")
        else:
            col.prop(form, f"in_{given.name}_path")
    for made in schema.fields(spec):
        layout.prop(form, made.prop)
