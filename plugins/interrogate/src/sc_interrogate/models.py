"""CLIP and BLIP through transformers: a Hugging Face repo id whose files `stable-core models
pull interrogate` downloaded, or a folder in the models folder's `interrogate/`. Nothing is
downloaded here: loading is local only."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from stablecore import ModelFile, models_folder
from stablecore.modelfiles import models_cache

CLIP_DEFAULT = "openai/clip-vit-large-patch14"  # the CLIP of SD 1.x and of A1111's interrogator
BLIP_DEFAULT = "Salesforce/blip-image-captioning-base"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MODEL_FILES = [
    *(ModelFile(repo_id=CLIP_DEFAULT, filename=f, licence="MIT") for f in (
        "config.json", "model.safetensors", "preprocessor_config.json", "vocab.json",
        "merges.txt", *_TOKENIZER)),
    *(ModelFile(repo_id=BLIP_DEFAULT, filename=f, licence="BSD-3-Clause") for f in (
        "config.json", "model.safetensors", "preprocessor_config.json", "vocab.txt",
        *_TOKENIZER)),
]


def source(name: str, environ: Mapping[str, str]) -> Path:
    """The local folder of a model: one in the models folder, or the snapshot of a repo id
    in the Hugging Face cache (loading from a folder keeps transformers off the network)."""
    from huggingface_hub import snapshot_download

    folder = models_folder("interrogate", environ)
    if folder is not None and (folder / name).is_dir() and ".." not in Path(name).parts:
        return folder / name
    if not REPO_ID.match(name):
        where = f" or a folder in {folder}" if folder is not None else ""
        raise ValueError(f"model {name!r} must be a Hugging Face repo id (org/name){where}")
    try:
        return Path(snapshot_download(name, cache_dir=models_cache(environ).hub,
                                      local_files_only=True))
    except Exception as e:
        raise OSError(f"{name} is not in the Hugging Face cache ({type(e).__name__})") from None


def load(cls_name: str, name: str, device: str) -> tuple[Any, Any]:
    """(model, processor) of transformers class `cls_name`, eval mode, on `device` (half
    precision on CUDA)."""
    import torch
    import transformers

    try:
        location = source(name, os.environ)
        processor = transformers.AutoProcessor.from_pretrained(location, local_files_only=True)
        model = getattr(transformers, cls_name).from_pretrained(location, local_files_only=True)
    except OSError as e:  # not pulled, or not a model folder
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot load {name}: {first} (declared hub models are downloaded "
                         f"by `stable-core models pull interrogate`)") from None
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return model.to(device, dtype).eval(), processor


def features(output: Any) -> Any:
    """Projected embeddings from get_*_features, which returns a tensor or (transformers 5)
    an output whose pooler_output holds them."""
    return getattr(output, "pooler_output", output)


@dataclass
class Clip:
    """A CLIP model that turns images and texts into unit-length embeddings."""

    model: Any
    processor: Any

    def images(self, images: Sequence[PIL.Image.Image]) -> np.ndarray:
        import torch

        inputs = self.processor(images=[im.convert("RGB") for im in images],
                                return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.model.device, self.model.dtype)
        with torch.inference_mode():
            found = features(self.model.get_image_features(pixel_values=pixels))
        return unit(found.float().cpu().numpy())

    def texts(self, texts: Sequence[str], batch: int = 256) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(texts), batch):
            inputs = self.processor(text=list(texts[start:start + batch]), return_tensors="pt",
                                    padding=True, truncation=True)
            inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
            with torch.inference_mode():
                out.append(features(self.model.get_text_features(**inputs)).float().cpu())
        return unit(torch.cat(out).numpy()) if out else np.zeros((0, 1), np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def caption(model: Any, processor: Any, image: PIL.Image.Image, max_tokens: int) -> str:
    """BLIP's caption of the image (beam search of 3, as A1111 does)."""
    import torch

    inputs = processor(images=image.convert("RGB"), return_tensors="pt")
    inputs["pixel_values"] = inputs["pixel_values"].to(model.device, model.dtype)
    with torch.inference_mode():
        ids = model.generate(**inputs, num_beams=3, min_length=5, max_new_tokens=max_tokens)
    return str(processor.decode(ids[0], skip_special_tokens=True)).strip()
