"""Shared helpers for the core tests; the server fixtures come from `stablecore.testing`."""

from __future__ import annotations

import io
from pathlib import Path

import PIL.Image
import pytest


@pytest.fixture
def png(tmp_path: Path) -> Path:
    """A small RGB PNG on disk."""
    path = tmp_path / "in.png"
    PIL.Image.new("RGB", (16, 8), (10, 200, 30)).save(path)
    return path


def png_bytes(size: tuple[int, int] = (4, 4)) -> bytes:
    buf = io.BytesIO()
    PIL.Image.new("RGB", size, (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()
