"""Between Blender images and files: a datablock or a render as PNG bytes for a job's input,
a job's output as an Image datablock (packed into the .blend), an image sequence, a texture."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import bpy

MATERIAL_NODE = "stable-core"


def _scratch() -> Path:
    return Path(tempfile.gettempdir()) / f"stablecore-{uuid.uuid4().hex}.png"


def png_of_image(image: Any, scene: Any) -> bytes:
    """An Image datablock as PNG (the Render Result with the scene's colour management)."""
    if image.type == "RENDER_RESULT":
        return png_of_render(scene)
    path, kept = _scratch(), image.file_format
    image.file_format = "PNG"
    try:
        image.save(filepath=str(path), save_copy=True)
        return path.read_bytes()
    finally:
        image.file_format = kept
        path.unlink(missing_ok=True)


def png_of_render(scene: Any) -> bytes:
    """The last render (Render Result) as an 8-bit RGBA PNG, whatever the output settings."""
    result = bpy.data.images.get("Render Result")
    if result is None:
        raise RuntimeError("no render yet: render once (F12) or use the camera view")
    settings = scene.render.image_settings
    names = [n for n in ("media_type", "file_format", "color_mode", "color_depth")
             if hasattr(settings, n)]
    kept = {n: getattr(settings, n) for n in names}
    wanted = {"media_type": "IMAGE", "file_format": "PNG", "color_mode": "RGBA",
              "color_depth": "8"}
    path = _scratch()
    try:
        for n in names:
            setattr(settings, n, wanted[n])
        result.save_render(str(path), scene=scene)
        if not path.is_file():
            raise RuntimeError("the last render has no pixels: render once (F12) first")
        return path.read_bytes()
    finally:
        for n in names:
            setattr(settings, n, kept[n])
        path.unlink(missing_ok=True)


def png_of_camera(scene: Any) -> bytes:
    """Render the scene's active camera now (blocking, as F12 is) and return it as PNG."""
    if scene.camera is None:
        raise RuntimeError(f"scene {scene.name!r} has no active camera")
    bpy.ops.render.render(scene=scene.name)
    return png_of_render(scene)


def as_datablock(path: Path, name: str) -> Any:
    """Load a file as an Image datablock named `name`, packed into the .blend. An older one of
    that name is replaced everywhere it is used (materials, editors), then removed."""
    image = bpy.data.images.load(str(path), check_existing=False)
    image.pack()
    old = bpy.data.images.get(name)
    if old is not None and old != image:
        old.user_remap(image)
        bpy.data.images.remove(old)
    image.name = name
    return image


def as_sequence(first: Path, name: str) -> Any:
    """An image sequence (frame files numbered alike in one folder) as one datablock."""
    image = bpy.data.images.load(str(first), check_existing=False)
    image.source = "SEQUENCE"
    old = bpy.data.images.get(name)
    if old is not None and old != image:
        old.user_remap(image)
        bpy.data.images.remove(old)
    image.name = name
    return image


def as_text(path: Path, name: str) -> Any:
    text = bpy.data.texts.get(name) or bpy.data.texts.new(name)
    text.from_string(path.read_text(errors="replace"))
    return text


def to_material(obj: Any, image: Any) -> None:
    """Show `image` on the object's active material through an Image Texture node (made and
    wired to the base colour the first time)."""
    if obj is None or not hasattr(obj.data, "materials"):
        raise RuntimeError("no active object with materials to put the texture on")
    material = obj.active_material
    if material is None:
        material = bpy.data.materials.new(MATERIAL_NODE)
        obj.data.materials.append(material)
        obj.active_material_index = len(obj.data.materials) - 1
    if material.node_tree is None:
        material.use_nodes = True
    nodes = material.node_tree.nodes
    node = nodes.get(MATERIAL_NODE)
    if node is None:
        node = nodes.new("ShaderNodeTexImage")
        node.name = node.label = MATERIAL_NODE
        bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None)
        if bsdf is not None:
            node.location = (bsdf.location.x - 300, bsdf.location.y)
            material.node_tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    node.image = image
