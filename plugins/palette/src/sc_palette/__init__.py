"""palette: match an image's colours to a reference, and extract a palette with k-means.

The jobs are thin wrappers over `sc_palette.ops`, which works on numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import PIL.Image

from sc_palette import ops
from stablecore import Context, Field, Image, Mask, Numbers, job

__all__ = ["PaletteOutputs", "extract", "match"]

Space = Literal["lab", "rgb", "ycrcb"]


def split_alpha(image: PIL.Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(H x W x 3 uint8 RGB, H x W alpha or None) of any PIL image."""
    if image.mode == "RGBA":
        a = np.asarray(image)
        return np.ascontiguousarray(a[..., :3]), a[..., 3]
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB")), None


@job(description="Match an image's colours to a reference image: per-channel histogram "
                 "matching in a perceptual colour space, blended by strength.")
def match(
    ctx: Context,
    image: Image = Field(description="the image to recolour"),
    reference: Image = Field(description="the image whose colours to take"),
    mask: Mask | None = Field(None, description="optional: where to apply (white = fully)"),
    space: Space = Field("lab", description="colour space the histograms are matched in: lab "
                         "(perceptual, default), ycrcb (luma/chroma) or rgb"),
    strength: float = Field(1.0, ge=0, le=1, description="0 keeps the image, 1 takes the "
                            "reference's distribution fully"),
    preserve_lightness: bool = Field(False, description="match only the colour channels and "
                                     "keep the lightness (lab or ycrcb only)"),
) -> Image:
    pixels, alpha = split_alpha(image)
    reference_pixels, reference_alpha = split_alpha(reference)
    if reference_alpha is not None:  # transparent reference pixels are no part of its look
        reference_pixels = reference_pixels[reference_alpha >= 128][:, None]
        if reference_pixels.size == 0:
            raise ValueError("the reference has no opaque pixels to take colours from")
    weight = None
    if mask is not None:
        if mask.size != image.size:
            raise ValueError(f"mask is {mask.width}x{mask.height} but the image is "
                             f"{image.width}x{image.height}")
        weight = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    out = ops.match(pixels, reference_pixels, space, strength, preserve_lightness, weight,
                    progress=ctx.progress)
    if alpha is not None:
        out = np.dstack([out, alpha])
    return PIL.Image.fromarray(out)


@dataclass
class PaletteOutputs:
    palette: Numbers  # one row per colour: r, g, b (0..255), share (0..1), lab_l, lab_a, lab_b
    swatch: Image


@job(description="Extract the dominant colours of an image with k-means: a table of colours "
                 "and shares, and a swatch image.")
def extract(
    ctx: Context,
    image: Image = Field(description="the image to take colours from (transparent pixels "
                         "are left out)"),
    colors: int = Field(8, ge=1, le=64, description="how many colours to find"),
    space: Literal["lab", "rgb"] = Field("lab", description="space the clustering measures "
                                         "distances in (lab is perceptual)"),
    samples: int = Field(100_000, ge=1000, le=5_000_000, description="pixels sampled at "
                         "random for clustering; more is slower and steadier"),
    seed: int = Field(0, ge=-1, le=2**32 - 1, description="random seed; -1 picks one"),
    order: Literal["share", "lightness", "hue"] = Field("share", description="how the colours "
                                                        "are sorted"),
    swatch_width: int = Field(512, ge=16, le=8192, description="swatch image width"),
    swatch_height: int = Field(64, ge=4, le=2048, description="swatch image height"),
    proportional: bool = Field(False, description="swatch bars as wide as each colour's "
                               "share (else equal widths)"),
) -> PaletteOutputs:
    pixels, alpha = split_alpha(image)
    seed = ctx.seed(seed)
    palette = ops.extract(pixels, colors, space, samples, seed, order, alpha,
                          progress=ctx.progress)
    if len(palette.colours) < colors:
        ctx.log.info(f"found {len(palette.colours)} distinct colours, fewer than {colors}")
    table = np.column_stack([palette.colours, palette.shares, palette.lab])
    swatch = ops.swatch(palette, swatch_width, swatch_height, proportional)
    return PaletteOutputs(
        Numbers(table, ["r", "g", "b", "share", "lab_l", "lab_a", "lab_b"]),
        PIL.Image.fromarray(swatch))
