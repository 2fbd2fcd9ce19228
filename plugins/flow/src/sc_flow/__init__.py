"""flow: dense optical flow between two images, flow warping, and flow pictures.

A flow travels between jobs as an RGBA image in which every pixel holds (dx, dy) as two
float16 numbers (see `sc_flow.ops.pack`); `flow.estimate` makes one, `flow.warp` and
`flow.visualize` take one. The maths lives in `sc_flow.ops`, on numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import PIL.Image

from sc_flow import ops
from stablecore import Context, Field, Image, Numbers, job

__all__ = ["FlowOutputs", "estimate", "visualize", "warp"]

Method = Literal["dis", "farneback"]
Preset = Literal["ultrafast", "fast", "medium"]
Border = Literal["reflect", "wrap", "constant", "edge"]
Interpolation = Literal["nearest", "linear", "cubic", "lanczos"]

METHOD = Field("dis", description="dis (OpenCV's Dense Inverse Search: fast, robust) or "
               "farneback (polynomial expansion: slower, smoother)")
PRESET = Field("medium", description="DIS quality preset: ultrafast, fast or medium")
SCALE = Field(1.0, gt=0, le=1, description="estimate on images shrunk by this factor, then "
              "scale the flow up: 0.5 is about 4x faster for large frames")


def pixels(image: PIL.Image.Image) -> np.ndarray:
    return np.asarray(image if image.mode in ("RGB", "RGBA") else image.convert("RGB"))


def flow_of(image: PIL.Image.Image, name: str = "flow") -> np.ndarray:
    if image.mode != "RGBA":
        raise ValueError(f"{name} must be a packed flow image from flow.estimate (RGBA); "
                         f"this one is {image.mode}")
    return ops.unpack(np.asarray(image))


@dataclass
class FlowOutputs:
    flow: Image      # packed flow: RGBA, (dx, dy) as float16 per pixel
    visual: Image    # colour-wheel picture of the flow
    stats: Numbers   # one row: mean_dx, mean_dy, mean_magnitude, p99_magnitude, max_magnitude


@job(description="Estimate dense optical flow from one image to another; returns the flow "
                 "(packed in an RGBA image), a picture of it and summary numbers.")
def estimate(
    ctx: Context,
    first: Image = Field(description="the earlier image"),
    second: Image = Field(description="the later image, the same size"),
    method: Method = METHOD,
    preset: Preset = PRESET,
    scale: float = SCALE,
    max_magnitude: float = Field(0.0, ge=0, le=10000, description="flow length shown fully "
                                 "saturated in the picture; 0 = the 99th percentile"),
) -> FlowOutputs:
    flow = ops.estimate(pixels(first), pixels(second), method, preset, scale,
                        progress=ctx.progress)
    s = ops.stats(flow)
    ctx.log.info("mean flow (%.2f, %.2f) px, 99th percentile %.2f px",
                 s["mean_dx"], s["mean_dy"], s["p99_magnitude"])
    return FlowOutputs(PIL.Image.fromarray(ops.pack(flow)),
                       PIL.Image.fromarray(ops.visualize(flow, max_magnitude)),
                       Numbers(np.array([list(s.values())]), list(s)))


@job(description="Displace an image by optical flow: by the flow between two other images "
                 "(first -> second), or by a packed flow from flow.estimate.")
def warp(
    ctx: Context,
    image: Image = Field(description="the image to displace"),
    first: Image | None = Field(None, description="the earlier frame (with second)"),
    second: Image | None = Field(None, description="the later frame (with first)"),
    flow: Image | None = Field(None, description="a packed flow from flow.estimate, "
                               "instead of first and second"),
    strength: float = Field(1.0, ge=-10, le=10, description="flow multiplier: 1 moves the "
                            "content all the way, 0.5 half-way, negative the other way"),
    method: Method = METHOD,
    preset: Preset = PRESET,
    scale: float = SCALE,
    border: Border = Field("reflect", description="how pixels from outside the image are "
                           "made: reflect, wrap, constant (transparent/black) or edge"),
    interpolation: Interpolation = Field("cubic", description="resampling filter"),
) -> Image:
    src = pixels(image)
    if flow is not None:
        if first is not None or second is not None:
            raise ValueError("give either a flow, or first and second; not both")
        forward = flow_of(flow)
        ops.same_size(("image", "flow"), src, forward)
        ctx.progress(1, 2)
        backward = ops.invert(forward * np.float32(strength))
        out = ops.warp(src, backward, border, interpolation)
        ctx.progress(2, 2)
    elif first is not None and second is not None:
        out = ops.displace(src, pixels(first), pixels(second), strength, method, preset, scale,
                           border, interpolation, progress=ctx.progress)
    else:
        raise ValueError("flow.warp needs the inputs first and second (the flow between them "
                         "moves the image), or a packed flow input")
    return PIL.Image.fromarray(out)


@job(description="Render a packed flow (from flow.estimate) as a colour-wheel picture: hue "
                 "is the direction, saturation the length, white is still.")
def visualize(
    flow: Image = Field(description="a packed flow from flow.estimate"),
    max_magnitude: float = Field(0.0, ge=0, le=10000, description="flow length shown fully "
                                 "saturated; 0 = the 99th percentile"),
    arrows: int = Field(0, ge=0, le=1024, description="draw an arrow every this many pixels "
                        "(0 = none)"),
) -> Image:
    return PIL.Image.fromarray(ops.visualize(flow_of(flow), max_magnitude, arrows))
