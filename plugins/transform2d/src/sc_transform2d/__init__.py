"""transform2d: translate, rotate, zoom, flip and crop an image in one sub-pixel resampling.

One `transform` job takes every parameter, so an animation can call it frame after frame with
per-frame values (a slow zoom, a drift, a spin) and never resample twice. The maths lives in
`sc_transform2d.ops`, which works on numpy arrays without a server.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import PIL.Image

from sc_transform2d.ops import Transform
from sc_transform2d.ops import transform as transform_array
from stablecore import Context, Field, Image, job

__all__ = ["transform", "transform_array"]

Border = Literal["reflect", "wrap", "constant", "edge"]
Interpolation = Literal["nearest", "linear", "cubic", "lanczos"]
COLOUR = r"^#([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$"


def to_array(image: PIL.Image.Image) -> np.ndarray:
    """RGB or RGBA pixels of any PIL image, as H x W x 3|4 uint8."""
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info
                              else "RGB")
    return np.asarray(image)


@job(description="Translate, rotate, zoom, flip and crop an image in one resampling, with "
                 "sub-pixel accuracy and a choice of border mode.")
def transform(
    ctx: Context,
    image: Image = Field(description="the image to transform (RGB or RGBA)"),
    translate_x: float = Field(0.0, ge=-65536, le=65536,
                               description="shift right by this many pixels (fractions allowed)"),
    translate_y: float = Field(0.0, ge=-65536, le=65536,
                               description="shift down by this many pixels (fractions allowed)"),
    rotate: float = Field(0.0, ge=-3600, le=3600,
                          description="rotate counter-clockwise by this many degrees"),
    scale: float = Field(1.0, ge=0.01, le=100,
                         description="zoom factor: above 1 zooms in, below 1 zooms out"),
    center_x: float = Field(0.5, ge=-4, le=5, description="centre of rotation and zoom, as a "
                            "fraction of the width (0 = left edge, 0.5 = middle)"),
    center_y: float = Field(0.5, ge=-4, le=5, description="centre of rotation and zoom, as a "
                            "fraction of the height (0 = top edge, 0.5 = middle)"),
    flip: Literal["none", "horizontal", "vertical", "both"] = Field(
        "none", description="mirror the input first: horizontal swaps left and right"),
    expand: bool = Field(False, description="grow or shrink the canvas to the bounding box of "
                         "the transformed image instead of keeping the input's size"),
    crop_x: int = Field(0, ge=-65536, le=65536,
                        description="left edge of the crop window on the result, in pixels"),
    crop_y: int = Field(0, ge=-65536, le=65536,
                        description="top edge of the crop window on the result, in pixels"),
    crop_width: int = Field(0, ge=0, le=32767,
                            description="width of the crop window; 0 = to the right edge"),
    crop_height: int = Field(0, ge=0, le=32767,
                             description="height of the crop window; 0 = to the bottom edge"),
    border: Border = Field("reflect", description="how pixels from outside the input are made: "
                           "reflect (mirror), wrap (tile), constant (the fill colour), "
                           "edge (repeat the last pixel)"),
    fill: str = Field("#000000", pattern=COLOUR,
                      description="fill colour for border=constant, '#rrggbb' or '#rrggbbaa'"),
    interpolation: Interpolation = Field("cubic", description="resampling filter"),
) -> Image:
    pixels = to_array(image)
    t = Transform(translate_x, translate_y, rotate, scale, center_x, center_y, flip, expand,
                  crop_x, crop_y, crop_width, crop_height)
    out = transform_array(pixels, t, border, interpolation, fill, progress=ctx.progress)
    return PIL.Image.fromarray(out)
