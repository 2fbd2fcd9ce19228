"""Operator settings of the SD plugin, read from `STABLECORE_SD_*` environment variables.

The worker inherits the server's environment, so these are set where the server starts.
`Options.from_env` takes the mapping as an argument, so tests pass a dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stablecore.modelfiles import models_folder

PREFIX = "STABLECORE_SD_"
DTYPES = ("auto", "float16", "bfloat16", "float32")
OFFLOADS = ("none", "model", "sequential")


@dataclass(frozen=True)
class Options:
    models_dir: Path | None = None
    """Folder scanned for models: diffusers folders and .safetensors/.ckpt files."""
    extra_models: tuple[str, ...] = ()
    """More model choices: Hugging Face repo ids or absolute paths (comma separated)."""
    dtype: str = "auto"
    """auto = float16 on CUDA, float32 on CPU."""
    offload: str = "none"
    """CUDA only: 'model' moves whole models to the GPU when used, 'sequential' single layers."""
    attention_slicing: bool = False
    vae_tiling: bool = False
    preview_every: int = 5
    """A preview image every N steps (0 = none)."""
    max_batch: int = 8
    """Most images in one diffusers call; a bigger batch runs in several calls."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Options:
        def get(name: str) -> str | None:
            value = environ.get(PREFIX + name, "").strip()
            return value or None

        def choice(name: str, allowed: tuple[str, ...], default: str) -> str:
            value = (get(name) or default).lower()
            if value not in allowed:
                raise ValueError(f"{PREFIX}{name}={value!r}: expected one of {', '.join(allowed)}")
            return value

        def number(name: str, default: int, low: int) -> int:
            raw = get(name)
            try:
                value = default if raw is None else int(raw)
            except ValueError:
                raise ValueError(f"{PREFIX}{name}={raw!r}: expected a whole number") from None
            if value < low:
                raise ValueError(f"{PREFIX}{name}={value}: must be at least {low}")
            return value

        def flag(name: str) -> bool:
            return (get(name) or "0").lower() in ("1", "true", "yes", "on")

        folder = get("MODELS_DIR") or models_folder("sd", environ)
        extra = tuple(x.strip() for x in (get("MODELS") or "").split(",") if x.strip())
        return cls(models_dir=Path(folder).expanduser() if folder else None, extra_models=extra,
                   dtype=choice("DTYPE", DTYPES, "auto"),
                   offload=choice("OFFLOAD", OFFLOADS, "none"),
                   attention_slicing=flag("ATTENTION_SLICING"), vae_tiling=flag("VAE_TILING"),
                   preview_every=number("PREVIEW_EVERY", 5, 0),
                   max_batch=number("MAX_BATCH", 8, 1))
