"""Dense optical flow on numpy arrays: estimate (OpenCV DIS or Farneback), warp, invert,
visualise, and pack a flow field losslessly into an RGBA image so it can travel as an artifact.

A flow is an H x W x 2 float32 array: flow[y, x] = (dx, dy) says where the content at pixel
(x, y) of the first image is found in the second: at (x + dx, y + dy).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

METHODS = ("dis", "farneback")
DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
               "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "wrap": cv2.BORDER_WRAP,
           "constant": cv2.BORDER_CONSTANT, "edge": cv2.BORDER_REPLICATE}
INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR,
                  "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
MAX_SIDE = 32767  # cv2.remap keeps coordinates in 16 bits


def _check_image(name: str, pixels: np.ndarray) -> None:
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and not 1 <= pixels.shape[2] <= 4):
        raise ValueError(f"{name} must be an H x W (x 1 to 4 channels) array, got shape "
                         f"{pixels.shape}")
    if max(pixels.shape[:2]) > MAX_SIDE:
        raise ValueError(f"{name} is {pixels.shape[1]}x{pixels.shape[0]}; at most {MAX_SIDE} "
                         "pixels per side")


def check_flow(flow: np.ndarray, name: str = "flow") -> None:
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"{name} must be an H x W x 2 array, got shape {flow.shape}")
    if not np.isfinite(flow).all():
        raise ValueError(f"{name} holds NaN or infinite values")


def same_size(names: tuple[str, str], a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"{names[0]} is {a.shape[1]}x{a.shape[0]} but {names[1]} is "
                         f"{b.shape[1]}x{b.shape[0]}; they must be the same size")


def gray(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels if pixels.dtype == np.uint8 else np.clip(pixels, 0, 255).astype(np.uint8)
    if pixels.shape[2] == 1:
        return pixels[..., 0]
    return cv2.cvtColor(np.ascontiguousarray(pixels[..., :3]), cv2.COLOR_RGB2GRAY)


def estimate(first: np.ndarray, second: np.ndarray, method: str = "dis",
             preset: str = "medium", scale: float = 1.0,
             progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The flow from `first` to `second` (H x W x 2, pixels of the full-size images).
    `scale` < 1 estimates on downscaled images (faster, coarser) and scales the result up."""
    _check_image("first", first)
    _check_image("second", second)
    same_size(("first", "second"), first, second)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    h, w = first.shape[:2]
    a, b = gray(first), gray(second)
    if scale < 1:
        sw, sh = max(8, round(w * scale)), max(8, round(h * scale))
        a = cv2.resize(a, (sw, sh), interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, (sw, sh), interpolation=cv2.INTER_AREA)
    if progress is not None:
        progress(1, 3)
    if method == "dis":
        if preset not in DIS_PRESETS:
            raise ValueError(f"preset must be one of {sorted(DIS_PRESETS)}, not {preset!r}")
        dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
        flow = dis.calc(a, b, None)
    else:
        flow = cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=5, winsize=15,
                                            iterations=5, poly_n=7, poly_sigma=1.5, flags=0)
    if progress is not None:
        progress(2, 3)
    if flow.shape[:2] != (h, w):
        fx, fy = w / flow.shape[1], h / flow.shape[0]
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= fx
        flow[..., 1] *= fy
    if progress is not None:
        progress(3, 3)
    return flow.astype(np.float32, copy=False)


def warp(pixels: np.ndarray, backward: np.ndarray, border: str = "reflect",
         interpolation: str = "cubic", fill: tuple[float, ...] = (0, 0, 0, 0)) -> np.ndarray:
    """Resample `pixels` so output pixel p takes the input at p + backward[p]."""
    _check_image("image", pixels)
    check_flow(backward)
    same_size(("image", "flow"), pixels, backward)
    if border not in BORDERS:
        raise ValueError(f"border must be one of {sorted(BORDERS)}, not {border!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}")
    h, w = backward.shape[:2]
    grid = np.empty_like(backward)
    grid[..., 0] = np.arange(w, dtype=np.float32)[None, :]
    grid[..., 1] = np.arange(h, dtype=np.float32)[:, None]
    grid += backward
    return cv2.remap(pixels, grid, None, INTERPOLATIONS[interpolation],
                     borderMode=BORDERS[border], borderValue=tuple(fill))


def invert(flow: np.ndarray, iterations: int = 8) -> np.ndarray:
    """The backward flow G of a forward flow F (G(q) = -F(q + G(q))), by fixed-point iteration;
    exact for translations, close for smooth flows. Lets a flow first->second drive a
    backward warp, which has no holes."""
    check_flow(flow)
    g = -flow
    for _ in range(iterations):
        g = -warp(flow, g, border="edge", interpolation="linear")
    return g


def displace(image: np.ndarray, first: np.ndarray, second: np.ndarray, strength: float = 1.0,
             method: str = "dis", preset: str = "medium", scale: float = 1.0,
             border: str = "reflect", interpolation: str = "cubic",
             progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Move `image`'s content the way content moved from `first` to `second`: with
    image = first and strength 1 the result approximates `second`. The flow is estimated from
    second to first (backward), so every output pixel is sampled once and there are no holes;
    `strength` scales it (0.5 = half-way, -1 = the other way, approximately)."""
    _check_image("image", image)
    same_size(("image", "first"), image, first)
    backward = estimate(second, first, method, preset, scale, progress)
    if strength != 1:
        backward *= np.float32(strength)
    return warp(image, backward, border, interpolation)


# --- visualisation -----------------------------------------------------------------------------
def visualize(flow: np.ndarray, max_magnitude: float = 0.0, arrows: int = 0) -> np.ndarray:
    """Colour-wheel picture of a flow (H x W x 3 uint8): hue = direction, saturation =
    magnitude relative to `max_magnitude` (0 = the 99th percentile), white = still.
    `arrows` > 0 draws an arrow every that many pixels."""
    check_flow(flow)
    dx, dy = flow[..., 0], flow[..., 1]
    mag, ang = cv2.cartToPolar(dx, dy, angleInDegrees=True)
    top = max_magnitude if max_magnitude > 0 else float(np.percentile(mag, 99))
    hsv = np.empty((*flow.shape[:2], 3), dtype=np.uint8)
    hsv[..., 0] = (ang / 2).astype(np.uint8)  # OpenCV hue is 0..180
    hsv[..., 1] = np.clip(mag * (255.0 / max(top, 1e-6)), 0, 255).astype(np.uint8)
    hsv[..., 2] = 255
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if arrows > 0:
        h, w = dx.shape
        for y in range(arrows // 2, h, arrows):
            for x in range(arrows // 2, w, arrows):
                u, v = float(dx[y, x]), float(dy[y, x])
                if u * u + v * v < 0.25:
                    continue
                cv2.arrowedLine(rgb, (x, y), (round(x + u), round(y + v)), (0, 0, 0), 1,
                                cv2.LINE_AA, tipLength=0.3)
    return rgb


def stats(flow: np.ndarray) -> dict[str, float]:
    mag = np.hypot(flow[..., 0], flow[..., 1])
    return {"mean_dx": float(flow[..., 0].mean()), "mean_dy": float(flow[..., 1].mean()),
            "mean_magnitude": float(mag.mean()), "p99_magnitude": float(np.percentile(mag, 99)),
            "max_magnitude": float(mag.max())}


# --- packing: a flow as an RGBA image ------------------------------------------------------------
def pack(flow: np.ndarray) -> np.ndarray:
    """H x W x 4 uint8: dx and dy as little-endian float16, bytes (R, G) and (B, A). Lossless
    for float16 (3 significant digits: 1/1024 px below 1 px, 1/32 px up to 64 px)."""
    check_flow(flow)
    if np.abs(flow).max(initial=0) > 65000:
        raise ValueError("flow values beyond float16's range (65000 px)")
    half = np.ascontiguousarray(flow, dtype="<f2")
    return half.view(np.uint8).reshape(flow.shape[0], flow.shape[1], 4)


def unpack(rgba: np.ndarray) -> np.ndarray:
    """The flow (H x W x 2 float32) packed by `pack`."""
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"a packed flow is an RGBA image (from flow.estimate); got an array "
                         f"of shape {rgba.shape}")
    flow = np.ascontiguousarray(rgba).view("<f2").reshape(rgba.shape[0], rgba.shape[1], 2)
    flow = flow.astype(np.float32)
    if not np.isfinite(flow).all():
        raise ValueError("this image is not a packed flow (from flow.estimate): it decodes to "
                         "NaN or infinite values")
    return flow
