"""A1111's hires fix: make the image at the base size, upscale it (its latent, or the picture
with Lanczos), then redraw it with img2img at `hires_denoise`. A1111 counts `Hires steps` as
the steps actually run, so the img2img call asks for steps / denoise of them."""

from __future__ import annotations

import math
from typing import Any

import PIL.Image
import torch

UPSCALERS = {"latent": "Latent", "lanczos": "Lanczos"}  # param value -> A1111's name


def size(p: dict[str, Any]) -> tuple[int, int]:
    """The final width and height: the base size times hires_scale, in multiples of 8."""
    return tuple(max(8, round(p[k] * p["hires_scale"] / 8) * 8) for k in ("width", "height"))


def steps(p: dict[str, Any]) -> tuple[int, int]:
    """(num_inference_steps to ask img2img for, the steps that it runs)."""
    wanted = p["hires_steps"] or p["steps"]
    asked = max(wanted, math.ceil(wanted / p["hires_denoise"]))
    return asked, min(int(asked * p["hires_denoise"]), asked)


def upscale(images: Any, p: dict[str, Any]) -> Any:
    """A latent batch (N, 4, h, w) upscaled bilinearly, or PIL images with Lanczos."""
    width, height = size(p)
    if isinstance(images, torch.Tensor):
        return torch.nn.functional.interpolate(images, size=(height // 8, width // 8),
                                               mode="bilinear", antialias=False)
    return [im.resize((width, height), PIL.Image.LANCZOS) for im in images]


def fields(p: dict[str, Any]) -> list[tuple[str, Any]]:
    """A1111's parameters of the hires fix, for the PNG text."""
    return [("Denoising strength", f"{p['hires_denoise']:g}"),
            ("Hires upscale", f"{p['hires_scale']:g}"), ("Hires steps", steps(p)[1]),
            ("Hires upscaler", UPSCALERS[p["hires_upscaler"]])]
