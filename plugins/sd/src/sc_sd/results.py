"""What an SD job returns: the image, its generation parameters, and any further images."""

from __future__ import annotations

from dataclasses import dataclass

from stablecore import Image, Text


@dataclass
class Generated:
    image: Image
    info: Text
    """The A1111 parameters text of `image`, with the seed used (also inside the PNG)."""
    image_2: Image | None = None
    image_3: Image | None = None
    image_4: Image | None = None
