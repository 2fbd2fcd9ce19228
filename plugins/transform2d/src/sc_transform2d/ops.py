"""2-D affine transforms of images as one resampling: flip, zoom, rotate, translate, crop.

Everything here works on numpy arrays (H x W x C, uint8) and plain numbers, so it can be used
without a server. Coordinates are pixel indices: pixel (0, 0) is the centre of the top-left
pixel, and the image spans -0.5 .. W-0.5 horizontally. With that convention a rotation by a
multiple of 90 degrees maps pixel centres onto pixel centres and is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

BORDERS = {
    "reflect": cv2.BORDER_REFLECT_101,  # gfedcb|abcdefgh|gfedcb (numpy.pad's "reflect")
    "wrap": cv2.BORDER_WRAP,            # cdefgh|abcdefgh|abcdef
    "constant": cv2.BORDER_CONSTANT,    # fill colour
    "edge": cv2.BORDER_REPLICATE,       # aaaaaa|abcdefgh|hhhhhh
}
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}
MAX_SIDE = 32767  # OpenCV's remap works with 16-bit coordinates
MAX_PIXELS = 16384 * 16384
STRIP_ROWS = 256


@dataclass(frozen=True)
class Transform:
    """The parameters of one combined transform (see `transform` for their meaning)."""

    translate_x: float = 0.0
    translate_y: float = 0.0
    rotate: float = 0.0
    scale: float = 1.0
    center_x: float = 0.5
    center_y: float = 0.5
    flip: str = "none"
    expand: bool = False
    crop_x: int = 0
    crop_y: int = 0
    crop_width: int = 0
    crop_height: int = 0


def _snap(m: np.ndarray) -> np.ndarray:
    """Round entries that are integers up to float noise (cos 90 degrees = 6e-17), so exact
    quarter turns and whole-pixel shifts sample pixel centres exactly."""
    r = np.round(m)
    return np.where(np.abs(m - r) < 1e-9, r, m)


def forward_matrix(width: int, height: int, t: Transform) -> tuple[np.ndarray, int, int]:
    """The 3x3 matrix mapping input pixel coordinates to output ones, and the output size."""
    if t.flip not in ("none", "horizontal", "vertical", "both"):
        raise ValueError(f"flip must be none, horizontal, vertical or both, not {t.flip!r}")
    if not t.scale > 0:
        raise ValueError(f"scale must be positive, got {t.scale}")
    f = np.eye(3)
    if t.flip in ("horizontal", "both"):
        f[0, 0], f[0, 2] = -1.0, width - 1.0
    if t.flip in ("vertical", "both"):
        f[1, 1], f[1, 2] = -1.0, height - 1.0
    cx, cy = t.center_x * width - 0.5, t.center_y * height - 0.5
    a = np.deg2rad(t.rotate)
    c, s = np.cos(a) * t.scale, np.sin(a) * t.scale
    # Counter-clockwise on screen (y points down), about (cx, cy), as cv2.getRotationMatrix2D.
    rs = np.array([[c, s, cx - c * cx - s * cy],
                   [-s, c, cy + s * cx - c * cy],
                   [0.0, 0.0, 1.0]])
    m = rs @ f
    m[0, 2] += t.translate_x
    m[1, 2] += t.translate_y
    out_w, out_h = width, height
    if t.expand:  # the canvas becomes the bounding box of the transformed image
        corners = np.array([[-0.5, -0.5, 1], [width - 0.5, -0.5, 1], [-0.5, height - 0.5, 1],
                            [width - 0.5, height - 0.5, 1]]).T
        moved = (m @ corners)[:2]
        lo, hi = moved.min(axis=1), moved.max(axis=1)
        size = np.maximum(np.round(hi - lo - 1e-6), 1).astype(int)
        out_w, out_h = int(size[0]), int(size[1])
        m[0, 2] -= lo[0] + 0.5
        m[1, 2] -= lo[1] + 0.5
    # crop: a window on the transformed plane; it may reach past the edges (border fills it)
    cw = t.crop_width or out_w - t.crop_x
    ch = t.crop_height or out_h - t.crop_y
    if cw <= 0 or ch <= 0:
        raise ValueError(f"crop leaves nothing: the canvas is {out_w}x{out_h}, crop starts at "
                         f"({t.crop_x}, {t.crop_y}); give crop_width/crop_height or a "
                         "smaller crop_x/crop_y")
    m[0, 2] -= t.crop_x
    m[1, 2] -= t.crop_y
    if max(cw, ch) > MAX_SIDE or cw * ch > MAX_PIXELS:
        raise ValueError(f"the output would be {cw}x{ch} pixels; the limit is {MAX_SIDE} per "
                         f"side and {MAX_PIXELS} in all (lower scale, or crop)")
    return _snap(m), cw, ch


def parse_colour(text: str) -> tuple[float, float, float, float]:
    """'#rrggbb' or '#rrggbbaa' as (r, g, b, a); alpha is 255 when not given."""
    h = text.strip().removeprefix("#")
    if len(h) not in (6, 8) or any(ch not in "0123456789abcdefABCDEF" for ch in h):
        raise ValueError(f"colour must be '#rrggbb' or '#rrggbbaa', got {text!r}")
    values = [float(int(h[i:i + 2], 16)) for i in range(0, len(h), 2)]
    r, g, b, a = (*values, 255.0)[:4]
    return r, g, b, a


def warp(pixels: np.ndarray, matrix: np.ndarray, out_w: int, out_h: int,
         border: str = "reflect", interpolation: str = "cubic",
         fill: tuple[float, ...] = (0, 0, 0, 255),
         progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Resample `pixels` (H x W or H x W x C) by the forward 3x3 `matrix`, in row strips so
    progress can be reported. Every output pixel is sampled once, from the input."""
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected an H x W x (1, 3 or 4) image array, got shape {pixels.shape}")
    if border not in BORDERS:
        raise ValueError(f"border must be one of {sorted(BORDERS)}, not {border!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, "
                         f"not {interpolation!r}")
    if max(pixels.shape[:2]) > MAX_SIDE:
        raise ValueError(f"input of {pixels.shape[1]}x{pixels.shape[0]} is larger than "
                         f"{MAX_SIDE} pixels per side")
    inverse = _snap(np.linalg.inv(matrix))[:2]
    flags = INTERPOLATIONS[interpolation] | cv2.WARP_INVERSE_MAP
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    value = tuple(fill[:channels]) + (0.0,) * max(0, 4 - channels)
    out = np.empty((out_h, out_w, *pixels.shape[2:]), dtype=pixels.dtype)
    strips = range(0, out_h, STRIP_ROWS)
    for i, y0 in enumerate(strips):
        rows = min(STRIP_ROWS, out_h - y0)
        m = inverse.copy()
        m[:, 2] += m[:, 1] * y0  # output row y0 + r samples where row r of a strip does
        strip = cv2.warpAffine(pixels, m, (out_w, rows), flags=flags,
                               borderMode=BORDERS[border], borderValue=value)
        out[y0:y0 + rows] = strip.reshape(out[y0:y0 + rows].shape)
        if progress is not None:
            progress(i + 1, len(strips))
    return out


def transform(pixels: np.ndarray, t: Transform, border: str = "reflect",
              interpolation: str = "cubic", fill: str = "#000000",
              progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Apply, in this order and as one resampling: flip the input; zoom by `scale` and rotate
    by `rotate` degrees counter-clockwise about the centre (fractions of width and height);
    shift by `translate_x/y` pixels (right, down); then keep the crop window of the canvas.
    The canvas is the input's size, or with `expand` the bounding box of the result."""
    height, width = pixels.shape[:2]
    m, out_w, out_h = forward_matrix(width, height, t)
    return warp(pixels, m, out_w, out_h, border, interpolation, parse_colour(fill), progress)
