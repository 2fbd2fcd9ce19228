"""A cheap preview of a latent: a fixed linear map of its 4 channels to RGB, no VAE decode.

The factors are the widely used least-squares fits of each family's VAE decoder output to its
latent channels; a preview only needs to show composition and colour roughly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image

# rows: latent channels 0..3; columns: R, G, B
FACTORS = {
    "sd": np.array([[0.3512, 0.2297, 0.3227],
                    [0.3250, 0.4974, 0.2350],
                    [-0.2829, 0.1762, 0.2721],
                    [-0.2120, -0.2616, -0.7177]], dtype=np.float32),
    "sdxl": np.array([[0.3920, 0.4054, 0.4549],
                      [-0.2634, -0.0196, 0.0653],
                      [0.0568, 0.1687, -0.0755],
                      [-0.3112, -0.2359, -0.2076]], dtype=np.float32),
}


def latent_to_image(latent: Any, family: str = "sd") -> PIL.Image.Image:
    """An RGB image at latent resolution from one (4, h, w) latent tensor."""
    values = latent.detach().float().cpu().numpy()
    rgb = np.einsum("chw,cr->hwr", values, FACTORS.get(family, FACTORS["sd"]))
    pixels = np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return PIL.Image.fromarray(pixels, "RGB")
