"""Tiled upscaling: run a model tile by tile and blend the overlaps, so memory stays bounded.

Tiles start every `tile - overlap` pixels; the last tile in a row or column is moved back to
end flush with the image, so every tile has the full size. Where tiles overlap, each output
pixel is a weighted mean: a tile's weight ramps linearly from ~0 to 1 across `overlap` pixels
at each side it shares with a neighbour, which hides the seams a model's border effects make.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np

# A model run on one tile: uint8 HxWxC in, float32 (sH)x(sW)xC' in [0, 1] out.
TileFn = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[int, int, np.ndarray], None]  # (tile, tiles, upscaled tile)


def check(tile: int, overlap: int) -> None:
    if tile and 2 * overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be under half the tile size ({tile})")


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one axis begin; a single tile when it covers the axis."""
    if not tile or length <= tile:
        return [0]
    return [*range(0, length - tile, tile - overlap), length - tile]


def ramp(size: int, fade: int, fade_start: bool, fade_end: bool) -> np.ndarray:
    weights = np.ones(size, np.float32)
    rising = (np.arange(fade, dtype=np.float32) + 0.5) / fade if fade else weights[:0]
    if fade_start:
        weights[:fade] = rising
    if fade_end:
        weights[size - fade:] = np.minimum(weights[size - fade:], rising[::-1])
    return weights


def upscale(pixels: np.ndarray, run: TileFn, tile: int, overlap: int,
            progress: Progress) -> tuple[np.ndarray, int]:
    """The whole image upscaled (float32 in [0, 1]) and the number of tiles it took."""
    check(tile, overlap)
    height, width = pixels.shape[:2]
    ys, xs = starts(height, tile, overlap), starts(width, tile, overlap)
    th, tw = min(tile or height, height), min(tile or width, width)
    total = len(ys) * len(xs)
    out = weight = None
    scale = 0
    for i, (y, x) in enumerate(product(ys, xs)):
        piece = run(pixels[y:y + th, x:x + tw])
        if out is None:
            scale = piece.shape[0] // th
            out = np.zeros((height * scale, width * scale, piece.shape[2]), np.float32)
            weight = np.zeros((height * scale, width * scale, 1), np.float32)
        if piece.shape[:2] != (th * scale, tw * scale):
            raise ValueError(f"the model turned a {tw}x{th} tile into {piece.shape[1]}x"
                             f"{piece.shape[0]}, not a whole multiple")
        wy = ramp(th * scale, overlap * scale, y > 0, y + th < height)
        wx = ramp(tw * scale, overlap * scale, x > 0, x + tw < width)
        window = wy[:, None, None] * wx[None, :, None]
        area = (slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale))
        out[area] += piece * window
        weight[area] += window
        progress(i + 1, total, piece)
    assert out is not None and weight is not None
    out /= weight
    return out, total
