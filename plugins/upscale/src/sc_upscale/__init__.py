"""Upscale: super-resolution with any spandrel model file, or Real-ESRGAN on ncnn; tiled.

torch, spandrel and ncnn are imported inside the jobs: every worker imports every plugin to
list its jobs, and that should not cost seconds of torch import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import PIL.Image

from sc_upscale import models, ncnn, tiles
from stablecore import Context, Field, Image, Numbers, Text, job

TILE = Field(512, ge=0, le=8192, description="tile size in input pixels; 0 = the whole image "
                                             "at once (fastest, most memory)")
OVERLAP = Field(32, ge=0, le=1024, description="input pixels that neighbouring tiles share and "
                                               "blend, hiding seams")
OUTSCALE = Field(0, ge=0, le=16, description="final scale; 0 = the model's own, else its "
                                             "output is resized (Lanczos) to this")
INFO_COLUMNS = ["scale", "width", "height", "tiles"]
PREVIEWS = 8  # about this many tile previews per job


@dataclass
class Upscaled:
    image: Image
    info: Numbers  # one row: scale, width, height, tiles


def upscale(ctx: Context, image: PIL.Image.Image, run: tiles.TileFn, channels: int, tile: int,
            overlap: int, outscale: float, label: str) -> Upscaled:
    """Tile, run, blend; then put back the alpha channel and apply the final scale."""
    # 1. the model's channels; alpha is resized on its own
    tiles.check(tile, overlap)
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels

    # 2. the model, tile by tile
    def progress(step: int, total: int, piece: np.ndarray) -> None:
        show = step == 1 or step % max(1, total // PREVIEWS) == 0  # each preview is an artifact
        ctx.progress(step, total, preview=to_image(piece) if show else None)

    out, count = tiles.upscale(pixels, run, tile, overlap, progress)
    # 3. alpha and the final size
    result = to_image(out)
    if alpha is not None:
        result = result.convert("RGB")
        result.putalpha(alpha.resize(result.size, PIL.Image.Resampling.LANCZOS))
    if outscale:
        size = (max(1, round(image.width * outscale)), max(1, round(image.height * outscale)))
        result = result.resize(size, PIL.Image.Resampling.LANCZOS)
    scale = result.width / image.width
    ctx.log.info("%s: %dx%d -> %dx%d (x%g) in %d tile(s)", label, image.width, image.height,
                 result.width, result.height, scale, count)
    return Upscaled(result, Numbers(np.array([[scale, result.width, result.height, count]]),
                                    INFO_COLUMNS))


def to_image(pixels: np.ndarray) -> PIL.Image.Image:
    data = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)
    return PIL.Image.fromarray(data[..., 0] if data.shape[2] == 1 else data)


@job(description="Upscale with a model file that spandrel loads: ESRGAN, Real-ESRGAN, "
                 "Compact, SwinIR, HAT, DAT, OmniSR, ... (list them with upscale.models).",
     model_param="model")
def spandrel(
    ctx: Context,
    image: Image,
    model: str = Field(..., min_length=1, description="a model file in the models folder's "
                                                      "upscale/ (see upscale.models)"),
    tile: int = TILE,
    overlap: int = OVERLAP,
    outscale: float = OUTSCALE,
) -> Upscaled:
    path = models.find(model, os.environ)
    loaded = ctx.cache(model, lambda: models.load(path, ctx.device),
                       size_mb=path.stat().st_size / 2**20)
    return upscale(ctx, image, models.tile_runner(loaded), loaded.input_channels, tile,
                   overlap, outscale, f"upscale.spandrel {model} ({loaded.architecture.name})")


@job(description="Upscale with Real-ESRGAN on ncnn: weights ship with the plugin; runs on "
                 "the CPU or a Vulkan GPU, no torch.", model_param="model")
def realesrgan(
    ctx: Context,
    image: Image,
    model: ncnn.ModelName = Field("realesrgan-x4plus", description="x4plus: photos; anime: "
                                  "drawings; animevideov3: fast, for video frames"),
    device: str = Field("auto", pattern=ncnn.DEVICE_PATTERN,
                        description="auto (Vulkan GPU 0 on a GPU worker that has one, "
                                    "else the CPU), cpu, vulkan or vulkan:N"),
    tta: bool = Field(False, description="test-time augmentation: 8 runs, slightly better"),
    tile: int = TILE,
    overlap: int = OVERLAP,
    outscale: float = OUTSCALE,
) -> Upscaled:
    gpu = ncnn.gpu_id(device, ctx.device)
    key = model if device == "auto" and not tta else f"{model}/{device}/tta={tta}"
    loaded = ctx.cache(key, lambda: ncnn.load(model, gpu, tta), size_mb=ncnn.size_mb(model))
    return upscale(ctx, image, ncnn.tile_runner(loaded), 3, tile, overlap, outscale,
                   f"upscale.realesrgan {model} ({'cpu' if gpu < 0 else f'vulkan:{gpu}'})")


@job(name="models", description="List the upscaler model files in the models folder and the "
                                 "built-in Real-ESRGAN ncnn models.")
def list_models() -> Text:
    root = models.folder(os.environ)
    files = models.available(os.environ)
    lines = [f"# upscale.spandrel: model files in {root}"]
    lines += files or [f"(none: put .pth/.safetensors files in {root})"]
    lines += ["# upscale.realesrgan: built in", *ncnn.MODELS]
    return "\n".join(lines)
