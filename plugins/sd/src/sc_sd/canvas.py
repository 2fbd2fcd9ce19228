"""Outpaint: a bigger canvas around the image, its new border inpainted.

The border starts as the image's edge pixels stretched outwards, the mask is white there, and
the result keeps the original pixels inside the old canvas exactly: the generated border is
blended in over `mask_blur` pixels outside the old edge, never inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import PIL.ImageFilter


@dataclass
class Canvas:
    image: PIL.Image.Image
    """The original in the middle, its edge pixels stretched over the new border."""
    mask: PIL.Image.Image
    """White where the model paints: the border."""
    box: tuple[int, int, int, int]
    """Where the original lies: left, top, right, bottom."""


def extend(image: PIL.Image.Image, left: int, right: int, top: int, bottom: int) -> Canvas:
    """The canvas: each side grown by its amount, right and bottom a little more so that
    the size is a multiple of 8."""
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    right += -(w + left + right) % 8
    bottom += -(h + top + bottom) % 8
    padded = np.pad(rgb, ((top, bottom), (left, right), (0, 0)), mode="edge")
    mask = np.full(padded.shape[:2], 255, np.uint8)
    mask[top:top + h, left:left + w] = 0
    return Canvas(PIL.Image.fromarray(padded), PIL.Image.fromarray(mask),
                  (left, top, left + w, top + h))


def blend(canvas: Canvas, generated: PIL.Image.Image, blur: int) -> PIL.Image.Image:
    """The generated picture over the canvas: fully in the border beyond `blur` pixels from
    the old edge, faded in across those pixels, and not at all inside the old canvas."""
    soft = canvas.mask.filter(PIL.ImageFilter.GaussianBlur(blur / 2)) if blur else canvas.mask
    weight = np.asarray(soft, np.float32) / 255
    left, top, right, bottom = canvas.box
    weight[top:bottom, left:right] = 0
    weight = weight[..., None]
    out = (np.asarray(generated.convert("RGB"), np.float32) * weight
           + np.asarray(canvas.image, np.float32) * (1 - weight))
    result = PIL.Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    result.info.update(generated.info)  # its parameters text
    return result
