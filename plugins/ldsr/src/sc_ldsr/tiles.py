"""Tiles for a 4x model that reports progress per step: tiles start every `tile - overlap`
input pixels (the last one flush with the edge), and in their overlaps the outputs are
blended with linear ramps, which hides the seams."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np

SCALE = 4
Step = Callable[[int, int], None]  # (step, steps) within one tile
Run = Callable[[np.ndarray, Step], np.ndarray]  # uint8 tile -> float 0..1, 4x larger
Progress = Callable[[int, int], None]  # (step, total) over the whole image


def check(tile: int, overlap: int) -> None:
    if tile and 2 * overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be under half the tile size ({tile})")


def pad(pixels: np.ndarray, multiple: int) -> np.ndarray:
    """Mirror-pad the bottom and right edges up to a multiple of `multiple`."""
    h, w = pixels.shape[:2]
    extra = ((0, -h % multiple), (0, -w % multiple), (0, 0))
    return np.pad(pixels, extra, mode="symmetric")


def starts(length: int, tile: int, overlap: int) -> list[int]:
    if not tile or length <= tile:
        return [0]
    return [*range(0, length - tile, tile - overlap), length - tile]


def ramp(size: int, fade: int, start: bool, end: bool) -> np.ndarray:
    weights = np.ones(size, np.float32)
    rising = (np.arange(fade, dtype=np.float32) + 0.5) / fade
    if start and fade:
        weights[:fade] = rising
    if end and fade:
        weights[size - fade:] = np.minimum(weights[size - fade:], rising[::-1])
    return weights


def upscale(pixels: np.ndarray, run: Run, tile: int, overlap: int, steps: int,
            progress: Progress) -> tuple[np.ndarray, int]:
    """The image 4x larger (float 0..1) and the number of tiles; progress counts every step
    of every tile."""
    height, width = pixels.shape[:2]
    ys, xs = starts(height, tile, overlap), starts(width, tile, overlap)
    th, tw = min(tile or height, height), min(tile or width, width)
    total = len(ys) * len(xs) * steps
    out = np.zeros((height * SCALE, width * SCALE, 3), np.float32)
    weight = np.zeros((height * SCALE, width * SCALE, 1), np.float32)
    for i, (y, x) in enumerate(product(ys, xs)):
        piece = run(pixels[y:y + th, x:x + tw],
                    lambda step, _steps, done=i * steps: progress(done + step, total))
        window = (ramp(th * SCALE, overlap * SCALE, y > 0, y + th < height)[:, None, None]
                  * ramp(tw * SCALE, overlap * SCALE, x > 0, x + tw < width)[None, :, None])
        area = (slice(y * SCALE, (y + th) * SCALE), slice(x * SCALE, (x + tw) * SCALE))
        out[area] += piece * window
        weight[area] += window
    return out / weight, len(ys) * len(xs)
