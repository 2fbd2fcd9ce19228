"""Loading a model into a warm `Loaded`: one pipeline per task, sharing the same weights.

Every failure becomes a ValueError whose message says what to do: the job fails with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import huggingface_hub
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
)
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from sc_sd.options import Options
from sc_sd.samplers import make_scheduler
from sc_sd.sources import CONFIG_SUFFIX, Source

MODES = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image,
         "inpaint": AutoPipelineForInpainting}
NO_SAFETY_CHECKER = {"safety_checker": None, "requires_safety_checker": False}
SDXL_KEY_PREFIX = "conditioner.embedders.1."  # only SDXL single files have a second encoder


@dataclass
class Loaded:
    """A model in the worker cache: its text-to-image pipeline and views made from it."""

    name: str
    family: str  # "sd" (1.x/2.x) or "sdxl": picks pipelines and preview colours
    base: DiffusionPipeline
    pipes: dict[str, DiffusionPipeline] = field(default_factory=dict)
    schedulers: dict[str, Any] = field(default_factory=dict)
    adapters: dict[tuple[str, int, int], str] = field(default_factory=dict)
    """LoRA (name, mtime, size) -> its PEFT adapter on `base`, least recently used first."""
    adapter_count: int = 0
    embeddings: set[str] = field(default_factory=set)
    """Textual-inversion tokens loaded into the tokenizer and text encoder."""

    @property
    def components(self) -> dict[str, Any]:
        """What the worker cache sizes the entry by."""
        return self.base.components

    def pipeline(self, mode: str, sampler: str, controlnet: Any = None) -> DiffusionPipeline:
        """The pipeline for `mode` with sampler `sampler` (and a ControlNet model); all are
        made once and kept, sharing the base weights. Pipes of one ControlNet at a time are
        kept, so a ControlNet the worker cache dropped is not held here."""
        key = mode if controlnet is None else f"{mode}+{id(controlnet)}"
        if key not in self.pipes:
            if "Img2Img" in type(self.base).__name__:
                raise ValueError(f"model {self.name!r} is an SDXL refiner: choose it as the "
                                 "`refiner` of an SDXL model")
            if self.base.unet.config.in_channels == 9 and mode != "inpaint":
                raise ValueError(f"model {self.name!r} is an inpainting model: use sd.inpaint")
            if controlnet is not None:
                for old in [k for k in self.pipes if "+" in k]:
                    del self.pipes[old]
                self.pipes[key] = MODES[mode].from_pipe(self.base, controlnet=controlnet)
            else:
                self.pipes[key] = (self.base if mode == "txt2img"
                                   else MODES[mode].from_pipe(self.base))
        if sampler not in self.schedulers:
            self.schedulers[sampler] = make_scheduler(sampler, self.base.scheduler.config)
        pipe = self.pipes[key]
        pipe.scheduler = self.schedulers[sampler]
        return pipe


def torch_dtype(options: Options, device: str) -> torch.dtype:
    if options.dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, options.dtype)


def load(name: str, source: Source, options: Options, device: str,
         log: logging.Logger | None = None) -> Loaded:
    """Load `source` onto `device` with the options' dtype and memory savers."""
    dtype = torch_dtype(options, device)
    # 1. read the weights
    if source.kind == "file":
        pipe = _from_file(name, source, dtype)
    elif source.kind == "folder":
        # an SDXL refiner's folder says it is an img2img pipeline: it has no txt2img form
        index = DiffusionPipeline.load_config(source.location)
        auto = (AutoPipelineForImage2Image if "Img2Img" in index.get("_class_name", "")
                else AutoPipelineForText2Image)
        pipe = _guard(name, source.location, lambda: auto.from_pretrained(
            source.location, dtype=dtype, **NO_SAFETY_CHECKER))
    else:
        pipe = _from_hub(name, dtype)
    family = "sdxl" if "XL" in type(pipe).__name__ else "sd"
    if not type(pipe).__name__.startswith("StableDiffusion"):
        raise ValueError(f"model {name!r} is a {type(pipe).__name__}: sd jobs run Stable "
                         "Diffusion 1.x/2.x and SDXL pipelines")
    # 2. place it and switch on memory savers
    if options.offload != "none" and device.startswith("cuda"):
        if options.offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.enable_sequential_cpu_offload(device=device)
    else:
        if options.offload != "none" and log is not None:
            log.warning("STABLECORE_SD_OFFLOAD=%s ignored on %s", options.offload, device)
        pipe.to(device)
    if options.attention_slicing:
        pipe.enable_attention_slicing()
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    loaded = Loaded(name, family, pipe)
    if "Img2Img" in type(pipe).__name__:
        loaded.pipes["img2img"] = pipe
    return loaded


def _guard(name: str, where: str, fn: Any) -> DiffusionPipeline:
    try:
        return fn()
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"cannot load model {name!r} from {where}: {type(e).__name__}: "
                         f"{_first_line(e)}") from e


def _from_file(name: str, source: Source, dtype: torch.dtype) -> DiffusionPipeline:
    path = Path(source.location)
    # 1. a damaged file gets its own message, before diffusers reports something vaguer
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
        except Exception as e:
            raise ValueError(f"model file {path} is not a valid safetensors file (damaged or "
                             f"incomplete download?): {_first_line(e)}") from e
        if not keys:
            raise ValueError(f"model file {path} holds no tensors")
        is_xl = any(k.startswith(SDXL_KEY_PREFIX) for k in keys)
    else:
        is_xl = False
    # 2. the pipeline class: from the config folder when there is one, else from the keys
    class_name = "StableDiffusionXLPipeline" if is_xl else "StableDiffusionPipeline"
    if source.config is not None:
        class_name = DiffusionPipeline.load_config(str(source.config))["_class_name"]
    cls = getattr(diffusers, class_name, None)
    if cls is None or not hasattr(cls, "from_single_file"):
        raise ValueError(f"model {name!r}: {class_name} cannot load single files")
    kwargs: dict[str, Any] = {"dtype": dtype, **NO_SAFETY_CHECKER}
    if source.config is not None:
        kwargs["config"] = str(source.config)
    try:
        return cls.from_single_file(str(path), **kwargs)
    except Exception as e:
        hint = "" if source.config is not None else (
            f" (diffusers needs the pipeline's configs: put a diffusers folder without weights "
            f"at {path.with_suffix(CONFIG_SUFFIX)}, or go online once so it can fetch them)")
        raise ValueError(f"cannot load model file {path}: {type(e).__name__}: "
                         f"{_first_line(e)}{hint}") from e


def _from_hub(repo: str, dtype: torch.dtype) -> DiffusionPipeline:
    try:
        return AutoPipelineForText2Image.from_pretrained(repo, dtype=dtype,
                                                         **NO_SAFETY_CHECKER)
    except Exception as e:
        raise ValueError(hub_error(repo, e)) from e


def hub_error(repo: str, e: BaseException) -> str:
    """Why a hub model could not be had, and what to do about it."""
    causes = [e, *_causes(e)]
    if any(isinstance(c, GatedRepoError) for c in causes):
        return (f"model {repo!r} on the Hugging Face hub is gated: accept its licence on the "
                "hub and log in (`hf auth login`) on the server machine")
    if any(isinstance(c, RepositoryNotFoundError) for c in causes):
        return (f"no model {repo!r} on the Hugging Face hub (or it is private: log in with "
                "`hf auth login` on the server machine)")
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return (f"model {repo!r} is not in the local Hugging Face cache and the hub is switched "
                "off (HF_HUB_OFFLINE=1): download it where there is a network (`hf download "
                f"{repo}`) or put it in the models folder (STABLECORE_SD_MODELS_DIR)")
    unreachable = [c for c in causes if "Connect" in type(c).__name__ or "Timeout" in
                   type(c).__name__]
    if unreachable:
        return (f"cannot reach the Hugging Face hub to download model {repo!r}, and it is not "
                f"in the local cache ({_first_line(unreachable[0])}): download it where there "
                "is a network, or set HF_HUB_OFFLINE=1 to fail at once on an offline machine")
    return (f"cannot get model {repo!r} from the Hugging Face hub: {type(e).__name__}: "
            f"{_first_line(e)}")


def _causes(e: BaseException) -> list[BaseException]:
    out = []
    while (e := e.__cause__ or e.__context__) is not None and len(out) < 10:
        out.append(e)
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"
