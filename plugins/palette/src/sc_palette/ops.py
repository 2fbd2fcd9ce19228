"""Colour matching and palette extraction on numpy arrays (H x W x 3 uint8 RGB).

Matching maps each channel's histogram onto the reference's (quantile mapping) in a chosen
colour space; Lab, the default, is roughly perceptual, so the colours move without the hue
shifts that matching R, G and B separately gives. Extraction clusters pixels with k-means
(k-means++ seeding, Lloyd iterations) in Lab or RGB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

SPACES = ("lab", "rgb", "ycrcb")
HIST_BINS = 4096
Progress = Callable[[int, int], None] | None


def _check_rgb(name: str, pixels: np.ndarray) -> None:
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"{name} must be an H x W x 3 uint8 RGB array, got "
                         f"{pixels.dtype} {pixels.shape}")


def to_space(pixels: np.ndarray, space: str) -> np.ndarray:
    """uint8 RGB -> float32 channels of `space` (Lab: L 0..100, a/b about -128..127)."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, not {space!r}")
    f = pixels.astype(np.float32)
    f *= np.float32(1 / 255)
    if space == "lab":
        return cv2.cvtColor(f, cv2.COLOR_RGB2Lab)
    if space == "ycrcb":
        return cv2.cvtColor(f, cv2.COLOR_RGB2YCrCb)
    return f


def from_space(values: np.ndarray, space: str) -> np.ndarray:
    """float32 channels of `space` -> uint8 RGB, rounded and clipped to the gamut."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if space == "lab":
        f = cv2.cvtColor(values, cv2.COLOR_Lab2RGB)
    elif space == "ycrcb":
        f = cv2.cvtColor(values, cv2.COLOR_YCrCb2RGB)
    else:
        f = values.copy()
    f *= 255.0
    f += 0.5
    np.clip(f, 0, 255, out=f)
    return f.astype(np.uint8)


def match_channel(src: np.ndarray, ref: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Values of `src` mapped so their histogram becomes `ref`'s: each value goes to the
    reference value at the same quantile (piecewise linear within histogram bins)."""
    src = np.ascontiguousarray(src, dtype=np.float32)
    lo = float(min(src.min(), ref.min()))
    hi = float(max(src.max(), ref.max()))
    if hi - lo < 1e-6:
        return np.full_like(src, lo)
    # the bin of each source value and where in it the value lies, computed once and used
    # for the source histogram and for the lookup
    pos = src - np.float32(lo)
    pos *= np.float32(bins / (hi - lo))
    idx = pos.astype(np.intp)  # intp: np.bincount would convert anything else (slow)
    np.minimum(idx, bins - 1, out=idx)
    pos -= idx  # now the fraction within the bin
    hs = np.bincount(idx.ravel(), minlength=bins)
    hr, edges = np.histogram(ref, bins, (lo, hi))
    # cumulative share at each bin edge, made strictly increasing for interpolation
    ramp = np.arange(bins + 1) * 1e-12
    cs = np.concatenate([[0.0], np.cumsum(hs) / src.size]) + ramp
    cr = np.concatenate([[0.0], np.cumsum(hr) / ref.size]) + ramp
    lut = np.interp(cs, cr, edges).astype(np.float32)  # reference value at each edge's quantile
    step = np.diff(lut)
    out = lut[idx]
    out += step[idx] * pos
    return out


def match(pixels: np.ndarray, reference: np.ndarray, space: str = "lab", strength: float = 1.0,
          preserve_lightness: bool = False, weight: np.ndarray | None = None,
          progress: Progress = None) -> np.ndarray:
    """`pixels` recoloured so each channel's histogram in `space` matches `reference`'s,
    blended with the original by `strength` (0..1), times `weight` (H x W, 0..1) if given.
    `preserve_lightness` keeps the first channel (L of Lab, Y of YCrCb) as it was."""
    _check_rgb("image", pixels)
    _check_rgb("reference", reference)
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    if preserve_lightness and space == "rgb":
        raise ValueError("preserve_lightness needs a space with a lightness channel "
                         "(lab or ycrcb), not rgb")
    if weight is not None and weight.shape != pixels.shape[:2]:
        raise ValueError(f"mask is {weight.shape[1]}x{weight.shape[0]} but the image is "
                         f"{pixels.shape[1]}x{pixels.shape[0]}")
    src = list(cv2.split(to_space(pixels, space)))
    ref = cv2.split(to_space(reference, space))
    channels = [1, 2] if preserve_lightness else [0, 1, 2]
    for i, c in enumerate(channels):
        matched = match_channel(src[c], ref[c])
        if strength < 1 or weight is not None:
            matched -= src[c]
            matched *= np.float32(strength) if weight is None else strength * weight
            matched += src[c]
        src[c] = matched
        if progress is not None:
            progress(i + 1, len(channels) + 1)
    result = from_space(cv2.merge(src), space)
    if weight is not None or strength < 1:
        # where nothing changed, give back the input exactly (no colour round-trip error)
        keep = (np.full(pixels.shape[:2], strength == 0) if weight is None
                else (weight * strength) <= 0)
        result[keep] = pixels[keep]
    if progress is not None:
        progress(len(channels) + 1, len(channels) + 1)
    return result


# --- palette extraction -----------------------------------------------------------------------
@dataclass
class Palette:
    colours: np.ndarray  # k x 3 uint8-valued floats, RGB
    shares: np.ndarray   # k, sums to 1
    lab: np.ndarray      # k x 3, the same colours in Lab


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, max_iter: int = 100,
           tol: float = 0.01, progress: Progress = None) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding: (centres k x d, labels n). Stops when no centre
    moves more than `tol` (in the points' units: 0.01 in Lab or 0..1 RGB is invisible)."""
    n = len(points)
    k = min(k, n)
    centres = np.empty((k, points.shape[1]), dtype=np.float64)
    centres[0] = points[rng.integers(n)]
    d2 = ((points - centres[0]) ** 2).sum(axis=1)
    for i in range(1, k):
        total = d2.sum()
        pick = rng.integers(n) if total <= 0 else rng.choice(n, p=d2 / total)
        centres[i] = points[pick]
        d2 = np.minimum(d2, ((points - centres[i]) ** 2).sum(axis=1))
    labels = np.zeros(n, dtype=np.int64)
    p32 = points.astype(np.float32)  # float32 products are many times faster, and exact enough
    p2 = (p32 ** 2).sum(axis=1)[:, None]
    for it in range(max_iter):
        c32 = centres.astype(np.float32)
        dist = p2 - 2 * (p32 @ c32.T) + (c32 ** 2).sum(axis=1)[None, :]
        labels = dist.argmin(axis=1)
        sums = np.column_stack([np.bincount(labels, weights=points[:, d], minlength=k)
                                for d in range(points.shape[1])])
        counts = np.bincount(labels, minlength=k)[:, None]
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        shift = float(np.abs(moved - centres).max())
        centres = moved
        if progress is not None:
            progress(it + 1, max_iter)
        if shift < tol:
            break
    if progress is not None:
        progress(max_iter, max_iter)  # converged early: the bar still ends full
    return centres, labels


def extract(pixels: np.ndarray, k: int = 8, space: str = "lab", samples: int = 100_000,
            seed: int = 0, order: str = "share", alpha: np.ndarray | None = None,
            progress: Progress = None) -> Palette:
    """The `k` dominant colours of `pixels` (pixels with alpha < 128 are left out), from a
    random sample of at most `samples` pixels, ordered by share, lightness or hue."""
    _check_rgb("image", pixels)
    flat = pixels.reshape(-1, 3)
    if alpha is not None:
        flat = flat[alpha.reshape(-1) >= 128]
    if len(flat) == 0:
        raise ValueError("the image has no opaque pixels to take colours from")
    rng = np.random.default_rng(seed)
    if len(flat) > samples:
        flat = flat[rng.choice(len(flat), samples, replace=False)]
    points = to_space(flat[None], space)[0].astype(np.float64)
    centres, labels = kmeans(points, k, rng, progress=progress)
    shares = np.bincount(labels, minlength=len(centres)) / len(labels)
    keep = shares > 0
    centres, shares = centres[keep], shares[keep]
    rgb = from_space(centres[None].astype(np.float32), space)[0]
    lab = to_space(rgb[None], "lab")[0]
    if order == "share":
        idx = np.argsort(-shares, kind="stable")
    elif order == "lightness":
        idx = np.argsort(lab[:, 0], kind="stable")
    elif order == "hue":
        idx = np.argsort(np.arctan2(lab[:, 2], lab[:, 1]), kind="stable")
    else:
        raise ValueError(f"order must be share, lightness or hue, not {order!r}")
    return Palette(rgb[idx].astype(np.float64), shares[idx], lab[idx].astype(np.float64))


def swatch(palette: Palette, width: int = 512, height: int = 64,
           proportional: bool = False) -> np.ndarray:
    """An image of vertical colour bars, equal or as wide as each colour's share."""
    k = len(palette.colours)
    weights = palette.shares if proportional else np.full(k, 1.0 / k)
    edges = np.round(np.concatenate([[0.0], np.cumsum(weights)]) * width).astype(int)
    edges[-1] = width
    column = np.zeros(width, dtype=np.int64)
    for i in range(k):
        column[edges[i]:edges[i + 1]] = i
    row = palette.colours.astype(np.uint8)[column]
    return np.ascontiguousarray(np.broadcast_to(row[None], (height, width, 3)))
