"""ControlNet: models from the models folder's controlnet/ (diffusers folders with a
config.json, or single files), and the canny preprocessor, a job of its own so it chains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from sc_sd.options import Options
from sc_sd.sources import find_extra


def load_controlnet(name: str, options: Options, device: str, dtype: Any) -> Any:
    """The ControlNet model `name` on `device`; ValueError naming the file when it is bad."""
    from diffusers import ControlNetModel

    path = find_extra(options, "controlnet", name)
    try:
        if path.is_dir():
            model = ControlNetModel.from_pretrained(str(path), dtype=dtype)
        else:
            config = path.with_suffix(".config")
            model = ControlNetModel.from_single_file(
                str(path), dtype=dtype, **({"config": str(config)} if config.is_dir() else {}))
    except Exception as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else "(no message)"
        hint = "" if path.is_dir() else (
            " (a single file needs its diffusers config: put a folder with the ControlNet's "
            f"config.json at {path.with_suffix('.config')})")
        raise ValueError(f"cannot load ControlNet {Path(path)}: {type(e).__name__}: "
                         f"{text}{hint}") from e
    return model.to(device)


def canny(image: PIL.Image.Image, low: int, high: int) -> PIL.Image.Image:
    """White edges on black, as ControlNet's canny models were trained on."""
    import cv2

    gray = np.asarray(image.convert("L"))
    edges = cv2.Canny(gray, low, high)
    return PIL.Image.fromarray(np.stack([edges] * 3, axis=-1), "RGB")
