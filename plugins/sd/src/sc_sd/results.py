"""What an SD job returns: the image, its generation parameters, and all images of a seed run."""

from __future__ import annotations

from dataclasses import dataclass

from stablecore import Image, Text


@dataclass
class Generated:
    image: Image
    """The first image: the one that chains into a next job's image input."""
    info: Text
    """The A1111 parameters text of `image`, with the seed used (also inside the PNG)."""
    images: list[Image] | None = None
    """Every image, seeds counting up, when `num_images` > 1 (absent otherwise)."""
