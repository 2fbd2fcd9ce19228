"""Face restorers: CodeFormer and GFPGAN (declared model files) or any face model file that
spandrel loads, dropped into the plugin's models folder (`<models>/restore/`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from stablecore import ModelFile, models_folder

CODEFORMER = ModelFile(
    url="https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
    sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
    size=376637898, licence="S-Lab License 1.0 (non-commercial)")
GFPGAN = ModelFile(
    url="https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
    sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
    licence="Apache-2.0")
BUILTIN = {"codeformer": CODEFORMER, "gfpgan": GFPGAN}
NONE = "none"  # crop, align and paste back only: shows what detection and alignment do
EXTENSIONS = (".pth", ".pt", ".ckpt", ".safetensors")


def available(environ: Mapping[str, str]) -> list[str]:
    """Model files in the plugin's models folder, relative to it, sorted."""
    root = models_folder("restore", environ)
    if root is None:
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in EXTENSIONS)


def user_file(name: str, environ: Mapping[str, str]) -> Path:
    """A model file in the models folder; anything outside it or missing is a clear error."""
    root = models_folder("restore", environ)
    rel = PurePosixPath(name)
    if root is None or rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"model {name!r} must be codeformer, gfpgan, none or a file name in "
                         "the models folder's restore/")
    path = root.joinpath(*rel.parts)
    if not path.is_file() or path.suffix.lower() not in EXTENSIONS:
        known = ", ".join([*BUILTIN, NONE, *available(environ)])
        raise ValueError(f"no model {name!r} (models: {known}; files go in {root})")
    return path


def load(path: Path, device: str) -> Any:
    """An eval-mode spandrel face model (CodeFormer, GFPGAN, RestoreFormer, ...) on `device`;
    any failure becomes a ValueError naming the file."""
    from spandrel import MAIN_REGISTRY, ArchRegistry, ImageModelDescriptor, ModelLoader
    from spandrel_extra_arches import EXTRA_REGISTRY

    registry = ArchRegistry()  # the main and extra architectures, without touching globals
    registry.add(*MAIN_REGISTRY, *EXTRA_REGISTRY, ignore_duplicates=True)
    try:
        model = ModelLoader(device, registry).load_from_file(path)
    except Exception as e:
        raise ValueError(f"cannot load face model {path.name}: {type(e).__name__}: {e}") \
            from None
    if not isinstance(model, ImageModelDescriptor) or model.purpose != "FaceSR":
        raise ValueError(f"{path.name} is a {model.architecture.name} model, not a face "
                         "restorer (CodeFormer, GFPGAN, RestoreFormer, ...)")
    return model.eval()


def restore(model: Any, face: np.ndarray, fidelity: float) -> np.ndarray:
    """A restored 512 x 512 face (float32 RGB in 0..255) from an aligned uint8 one. The
    models work in [-1, 1]; CodeFormer takes `fidelity` as its weight w."""
    import torch

    x = torch.from_numpy(face.copy()).to(model.device).permute(2, 0, 1)[None].float()
    x = x / 127.5 - 1
    with torch.inference_mode():
        if model.architecture.id == "CodeFormer":
            y = model.model(x, weight=fidelity)[0]
        else:
            y = model.model(x)[0]
    y = (y[0].float().clamp(-1, 1) + 1) * 127.5
    return y.permute(1, 2, 0).cpu().numpy()
