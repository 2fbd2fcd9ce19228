"""Upscaler model files: where they live, and loading one with spandrel.

Model files go in `<models dir>/upscale/` (subfolders allowed). The models dir is
$STABLECORE_MODELS_DIR, else the user data folder (`~/.local/share/stable-core/models` on
Linux): workers are not told the server's data dir, and big model files are better shared
between servers anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import platformdirs

ENV_VAR = "STABLECORE_MODELS_DIR"
SUBDIR = "upscale"
EXTENSIONS = (".pth", ".pt", ".ckpt", ".safetensors")


def folder(environ: Mapping[str, str]) -> Path:
    base = environ.get(ENV_VAR)
    default = platformdirs.user_data_path("stable-core") / "models"
    return (Path(base).expanduser() if base else default) / SUBDIR


def available(environ: Mapping[str, str]) -> list[str]:
    """Model names (paths relative to the upscale folder, with `/`), sorted."""
    root = folder(environ)
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in EXTENSIONS)


def find(name: str, environ: Mapping[str, str]) -> Path:
    """The file of model `name`; a name outside the folder or not there is a clear error."""
    root = folder(environ)
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"model {name!r} must be a file name inside {root}")
    path = root.joinpath(*rel.parts)
    if not path.is_file():
        known = ", ".join(available(environ)) or "none"
        raise ValueError(f"no model file {name!r} in {root} (models there: {known})")
    if path.suffix.lower() not in EXTENSIONS:
        raise ValueError(f"model {name!r}: the file type must be one of {', '.join(EXTENSIONS)}")
    return path


def load(path: Path, device: str) -> Any:
    """An eval-mode spandrel ImageModelDescriptor on `device`, half precision on CUDA when
    the architecture supports it. Any failure becomes a ValueError naming the file."""
    import torch  # heavy: imported when a model loads, not when the worker lists plugins
    from spandrel import (
        MAIN_REGISTRY,
        ArchRegistry,
        ImageModelDescriptor,
        ModelLoader,
        UnsupportedModelError,
    )
    from spandrel_extra_arches import EXTRA_REGISTRY

    registry = ArchRegistry()  # the main and extra architectures, without touching globals
    registry.add(*MAIN_REGISTRY, *EXTRA_REGISTRY, ignore_duplicates=True)
    try:
        model = ModelLoader(device, registry).load_from_file(path)
    except UnsupportedModelError:
        raise ValueError(f"{path.name} holds weights of no architecture spandrel knows "
                         "(ESRGAN, Real-ESRGAN, Compact, SwinIR, HAT, DAT, ...)") from None
    except Exception as e:
        raise ValueError(f"cannot load model file {path.name}: not a valid model "
                         f"({type(e).__name__}: {e})") from None
    if not isinstance(model, ImageModelDescriptor):
        raise ValueError(f"{path.name} is a {model.architecture.name} {model.purpose} model "
                         "that needs a mask, not an upscaler")
    if model.input_channels not in (1, 3) or model.output_channels not in (1, 3):
        raise ValueError(f"{path.name} takes {model.input_channels} and gives "
                         f"{model.output_channels} channels; only 1 or 3 are supported")
    model.eval()
    if torch.device(device).type == "cuda" and model.supports_half:
        model.half()
    return model


def tile_runner(model: Any) -> Any:
    """A tiles.TileFn that runs a spandrel model on uint8 pixels."""
    import torch

    dtype = next(model.model.parameters()).dtype

    def run(pixels: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(pixels.copy()).to(model.device).permute(2, 0, 1)[None]
        with torch.inference_mode():
            y = model(x.to(dtype) / 255)
        return y[0].permute(1, 2, 0).float().cpu().numpy()

    return run

