"""depth: depth maps from Depth Anything, DPT or MiDaS through transformers.

The 3D transform that uses them is the `transform3d` plugin in this package
(`sc_depth.transform3d`). transformers and torch are imported when a model loads.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image

from stablecore import Context, Field, Image, Mask, ModelFile, Numbers, job, models_folder
from stablecore.modelfiles import models_cache

DEFAULT = "depth-anything/Depth-Anything-V2-Small-hf"
MODEL_FILES = [ModelFile(repo_id=DEFAULT, filename=f, licence="Apache-2.0")
               for f in ("config.json", "model.safetensors", "preprocessor_config.json")]
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class Depth:
    depth: Image  # 16-bit grayscale PNG: 65535 nearest, 0 farthest
    mask: Mask  # the same, 8 bits: what transform3d.transform takes as its depth input
    values: Numbers  # the normalised map (1 near .. 0 far), at most `values_size` on a side


def load(name: str, device: str) -> tuple[Any, Any]:
    """(model, image processor) from a folder in the models folder's depth/, or a repo id
    whose files are in the Hugging Face cache; never downloads."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    try:
        location = local_folder(name)
        processor = AutoImageProcessor.from_pretrained(location, local_files_only=True)
        model = AutoModelForDepthEstimation.from_pretrained(location, local_files_only=True)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot load {name}: {first} (`stable-core models pull depth` "
                         f"downloads {DEFAULT})") from None
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return model.to(device, dtype).eval(), processor


def local_folder(name: str) -> Path:
    """A folder in the models folder's depth/, or the snapshot folder of a repo id in the
    Hugging Face cache (loading from a folder keeps transformers off the network)."""
    from huggingface_hub import snapshot_download

    folder = models_folder("depth", os.environ)
    if folder is not None and ".." not in Path(name).parts and (folder / name).is_dir():
        return folder / name
    if not REPO_ID.match(name):
        raise ValueError(f"model {name!r} must be a Hugging Face repo id (org/name) or a "
                         f"folder in {folder}")
    try:
        return Path(snapshot_download(name, cache_dir=models_cache(os.environ).hub,
                                      local_files_only=True))
    except Exception as e:
        raise OSError(f"{name} is not in the Hugging Face cache ({type(e).__name__})") from None


def is_metric(model: Any) -> bool:
    """Metric models predict distance (far = large); relative ones inverse depth."""
    config = model.config
    return getattr(config, "depth_estimation_type", None) == "metric" or \
        config.model_type == "zoedepth"


def predict(model: Any, processor: Any, image: PIL.Image.Image) -> np.ndarray:
    """The raw prediction, resized (bicubic) to the image, as float64 H x W."""
    import torch

    inputs = processor(images=image.convert("RGB"), return_tensors="pt")
    pixels = inputs["pixel_values"].to(model.device, model.dtype)
    with torch.inference_mode():
        raw = model(pixel_values=pixels).predicted_depth
    raw = torch.nn.functional.interpolate(raw[:, None].float(), size=(image.height, image.width),
                                          mode="bicubic", align_corners=False)
    return raw[0, 0].cpu().numpy().astype(np.float64)


def normalise(raw: np.ndarray, metric: bool, low: float, high: float) -> np.ndarray:
    """1 near .. 0 far: the `low` and `high` percentiles of nearness map to 0 and 1."""
    if low >= high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    near = -raw if metric else raw
    lo, hi = np.percentile(near, [low, high])
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros_like(near)
    return np.clip((near - lo) / (hi - lo), 0, 1)


@job(description="Estimate a depth map (near = bright) with Depth Anything, DPT or MiDaS: "
                 "a 16-bit PNG, an 8-bit mask for transform3d, and the values.",
     model_param="model")
def estimate(
    ctx: Context,
    image: Image = Field(description="the picture"),
    model: str = Field(DEFAULT, min_length=1, description="a transformers depth model: repo "
                       "id (e.g. depth-anything/Depth-Anything-V2-Small-hf, Intel/dpt-large, "
                       "Intel/dpt-hybrid-midas) or a folder in the models folder's depth/"),
    low: float = Field(0.0, ge=0, le=100, description="percentile of nearness mapped to 0 "
                       "(far); raise it to clip the farthest pixels"),
    high: float = Field(100.0, ge=0, le=100, description="percentile of nearness mapped to "
                        "1 (near); lower it to clip the nearest pixels"),
    kind: Literal["auto", "relative", "metric"] = Field("auto", description="what the model "
                                                        "predicts: relative (inverse depth) "
                                                        "or metric (distance); auto reads "
                                                        "its config"),
    values_size: int = Field(256, ge=1, le=4096, description="longest side of the `values` "
                             "table (the map is resized to it)"),
) -> Depth:
    net, processor = ctx.cache(model, lambda: load(model, ctx.device))
    metric = is_metric(net) if kind == "auto" else kind == "metric"
    near = normalise(predict(net, processor, image), metric, low, high)
    ctx.progress(1, 1)
    wide = np.rint(near * 65535).astype(np.uint16)
    scale = min(1.0, values_size / max(image.size))
    small = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    values = PIL.Image.fromarray(near.astype(np.float32)).resize(
        small, PIL.Image.Resampling.BILINEAR)
    ctx.log.info("depth.estimate: %s (%s) on %dx%d", model, "metric" if metric else "relative",
                 image.width, image.height)
    return Depth(PIL.Image.fromarray(wide),
                 PIL.Image.fromarray(np.rint(near * 255).astype(np.uint8)),
                 Numbers(np.asarray(values, np.float64)))
