"""transform3d: move and turn a camera through a picture's depth, for animation.

Registered as its own plugin (`transform3d`) by this package; the maths is in
`sc_depth.geometry`, which works on numpy arrays without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import PIL.Image

from sc_depth import geometry
from stablecore import Context, Field, Image, Mask, Numbers, job

MOTION_PARAMS = [f.name for f in fields(geometry.Motion)]
TRANSLATE = {"ge": -1e6, "le": 1e6}
ROTATE = {"ge": -3600, "le": 3600}


@dataclass
class Moved:
    image: Image
    mask: Mask  # white where nothing was there to see (disoccluded or outside): to inpaint


def from_numbers(motion: Numbers, frame: int) -> dict[str, float]:
    """Row `frame` of a per-frame table whose columns are named like the motion params."""
    unknown = set(motion.columns) - set(MOTION_PARAMS) - {"near", "far"}
    if unknown or not motion.columns:
        raise ValueError(f"motion columns must be among {', '.join(MOTION_PARAMS)}, near, far "
                         f"(got {', '.join(sorted(unknown)) or 'no column names'})")
    rows = motion.values.reshape(len(motion.values), -1)
    if not 0 <= frame < len(rows):
        raise ValueError(f"frame {frame} is outside the motion table's {len(rows)} rows")
    return {c: float(v) for c, v in zip(motion.columns, rows[frame], strict=True)}


@job(description="Move and turn the camera in 3D through a depth map (from depth.estimate, "
                 "or a virtual plane or sphere): occlusion is kept, holes are stretched, "
                 "mirrored, or left black with a mask for inpainting.")
def transform(
    ctx: Context,
    image: Image = Field(description="the picture (RGB or RGBA)"),
    depth: Mask | None = Field(None, description="depth, white = near (depth.estimate's mask); "
                               "none: the virtual one"),
    motion: Numbers | None = Field(None, description="optional per-frame values: columns "
                                   "named like the params (translate_x, ..., fov, near, far); "
                                   "row `frame` overrides them"),
    frame: int = Field(0, ge=0, le=10_000_000, description="row of `motion` to use"),
    virtual: Literal["flat", "sphere"] = Field("flat", description="depth without an input: "
                                               "a plane at `far`, or a half sphere"),
    translate_x: float = Field(0.0, **TRANSLATE, description="move the scene right (units of "
                               "near/far)"),
    translate_y: float = Field(0.0, **TRANSLATE, description="move the scene down"),
    translate_z: float = Field(0.0, **TRANSLATE, description="move the scene toward the "
                               "camera (zoom in)"),
    rotate_x: float = Field(0.0, **ROTATE, description="tilt, degrees"),
    rotate_y: float = Field(0.0, **ROTATE, description="pan, degrees"),
    rotate_z: float = Field(0.0, **ROTATE, description="roll counter-clockwise, degrees"),
    fov: float = Field(60.0, gt=0, lt=180, description="horizontal field of view, degrees"),
    near: float = Field(1.0, gt=0, le=1e6, description="distance of depth 1 (white)"),
    far: float = Field(10.0, gt=0, le=1e6, description="distance of depth 0 (black)"),
    fill: Literal["stretch", "mirror", "mask"] = Field("stretch", description="holes: "
                                                       "stretch edge pixels, mirror, or black "
                                                       "(see the mask output)"),
    interpolation: Literal["nearest", "linear", "cubic", "lanczos"] = "cubic",
) -> Moved:
    # 1. the motion, from params or the row of the per-frame table
    values = {"translate_x": translate_x, "translate_y": translate_y,
              "translate_z": translate_z, "rotate_x": rotate_x, "rotate_y": rotate_y,
              "rotate_z": rotate_z, "fov": fov, "near": near, "far": far}
    if motion is not None:
        values |= from_numbers(motion, frame)
    # 2. distances per pixel, from the depth input or the virtual shape
    width, height = image.size
    if depth is not None:
        if depth.size != image.size:
            ctx.log.info("transform3d: depth %dx%d resized to the image's %dx%d",
                         depth.width, depth.height, width, height)
            depth = depth.resize(image.size, PIL.Image.Resampling.BILINEAR)
        normalised = np.asarray(depth.convert("L"), np.float64) / 255
    else:
        normalised = (geometry.sphere if virtual == "sphere" else geometry.flat)(width, height)
    z = geometry.distances(normalised, values.pop("near"), values.pop("far"))
    # 3. the warp
    pixels = np.asarray(image if image.mode in ("RGB", "RGBA") else image.convert("RGB"))
    out, holes = geometry.reproject(pixels, z, geometry.Motion(**values), fill, interpolation)
    ctx.progress(1, 1)
    if holes.any():
        ctx.log.info("transform3d: %.1f%% of the pixels are holes (%s)", 100 * holes.mean(),
                     fill)
    return Moved(PIL.Image.fromarray(out), PIL.Image.fromarray(holes.astype(np.uint8) * 255))
