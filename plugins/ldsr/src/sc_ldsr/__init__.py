"""ldsr: 4x super-resolution with latent diffusion (CompVis' LDSR) through diffusers'
LDMSuperResolutionPipeline, tile by tile, with progress and cancel at every step.

diffusers and torch are imported when the model loads, not when the worker lists plugins.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from sc_ldsr import tiles
from stablecore import Context, Field, Image, ModelFile, job, models_folder
from stablecore.modelfiles import models_cache

DEFAULT = "CompVis/ldm-super-resolution-4x-openimages"
MODEL_FILES = [ModelFile(repo_id=DEFAULT, filename=f, licence="Apache-2.0") for f in (
    "model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
    "unet/diffusion_pytorch_model.bin", "vqvae/config.json", "vqvae/diffusion_pytorch_model.bin")]
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MULTIPLE = 8  # tiles are padded (mirrored) to a multiple of this for the UNet's down blocks


def folder_of(name: str) -> Path:
    """A diffusers folder in the models folder's ldsr/, or a pulled repo's snapshot."""
    from huggingface_hub import snapshot_download

    root = models_folder("ldsr", os.environ)
    if root is not None and ".." not in Path(name).parts and (root / name / "model_index.json"
                                                              ).is_file():
        return root / name
    if not REPO_ID.match(name):
        raise ValueError(f"model {name!r} must be a Hugging Face repo id (org/name) or a "
                         f"diffusers folder in {root}")
    try:
        return Path(snapshot_download(name, cache_dir=models_cache(os.environ).hub,
                                      local_files_only=True))
    except Exception:
        raise ValueError(f"model {name} is not downloaded: `stable-core models pull ldsr` "
                         f"fetches {DEFAULT}") from None


def load(name: str, device: str) -> Any:
    import torch
    from diffusers import LDMSuperResolutionPipeline

    pipe = LDMSuperResolutionPipeline.from_pretrained(folder_of(name), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return pipe.to(device, dtype)


def upscale_tile(pipe: Any, pixels: np.ndarray, steps: int, eta: float, seed: int,
                 on_step: tiles.Step) -> np.ndarray:
    """One tile (uint8 H x W x 3, sides a multiple of MULTIPLE) four times larger, as float
    0..1: the steps of LDMSuperResolutionPipeline.__call__, with a report after each."""
    import torch

    # 1. the low-resolution image in [-1, 1] and the starting noise
    dtype, device = pipe.unet.dtype, pipe.unet.device
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device, dtype) / 127.5 - 1
    generator = torch.Generator("cpu").manual_seed(seed)
    shape = (1, pipe.unet.config.in_channels // 2, *image.shape[-2:])
    latents = torch.randn(shape, generator=generator).to(device, dtype)
    # 2. the schedule
    pipe.scheduler.set_timesteps(steps, device=device)
    latents = latents * pipe.scheduler.init_noise_sigma
    accepts = inspect.signature(pipe.scheduler.step).parameters  # eta and its noise: DDIM
    extra = {k: v for k, v in {"eta": eta, "generator": generator}.items() if k in accepts}
    # 3. denoise, conditioned on the image concatenated to the latents
    with torch.inference_mode():
        for i, t in enumerate(pipe.scheduler.timesteps):
            model_input = pipe.scheduler.scale_model_input(torch.cat([latents, image], dim=1), t)
            noise = pipe.unet(model_input, t).sample
            latents = pipe.scheduler.step(noise, t, latents, **extra).prev_sample
            on_step(i + 1, steps)
        # 4. decode with the VQ-VAE
        out = pipe.vqvae.decode(latents).sample
    return ((out[0].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()


@job(description="Upscale 4x with LDSR (latent diffusion super-resolution): slow, detailed; "
                 "tiled for large images, with progress and cancel at every step.",
     model_param="model")
def upscale(
    ctx: Context,
    image: Image = Field(description="the picture to upscale (alpha is resized on its own)"),
    model: str = Field(DEFAULT, min_length=1, description="an LDM super-resolution pipeline: "
                       "repo id or a diffusers folder in the models folder's ldsr/"),
    steps: int = Field(100, ge=1, le=1000, description="denoising steps per tile"),
    eta: float = Field(1.0, ge=0, le=1, description="DDIM eta: 0 deterministic, 1 as LDSR "
                       "was trained"),
    tile: int = Field(128, ge=0, le=2048, description="tile size in input pixels; 0 = the "
                      "whole image at once"),
    overlap: int = Field(16, ge=0, le=512, description="input pixels neighbouring tiles share "
                         "and blend"),
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="noise seed; -1 picks one"),
) -> Image:
    tiles.check(tile, overlap)
    seed = ctx.seed(seed)
    pipe = ctx.cache(model, lambda: load(model, ctx.device))
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    pixels = np.asarray(image.convert("RGB"))

    def run(piece: np.ndarray, on_step: tiles.Step) -> np.ndarray:
        padded = tiles.pad(piece, MULTIPLE)
        out = upscale_tile(pipe, padded, steps, eta, seed, on_step)
        return out[:piece.shape[0] * 4, :piece.shape[1] * 4]

    out, count = tiles.upscale(pixels, run, tile, overlap, steps, ctx.progress)
    result = PIL.Image.fromarray(np.rint(out * 255).astype(np.uint8))
    if alpha is not None:
        result.putalpha(alpha.resize(result.size, PIL.Image.Resampling.LANCZOS))
    ctx.log.info("ldsr.upscale: %dx%d -> %dx%d, %d tile(s) x %d steps", image.width,
                 image.height, result.width, result.height, count, steps)
    return result
