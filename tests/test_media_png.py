"""The PNG writer behind image and mask outputs: a standard PNG, pixels and text chunks kept,
and the sha256 it reports is the file's."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from stablecore.media import a1111_parameters, sha256_file, write_output

PARAMS = {"prompt": "a snowman ☃ in the fog", "negative_prompt": "blurry", "steps": 20,
          "seed": 7}


def pixels(mode: str, width: int, height: int) -> np.ndarray:
    """Noise over a gradient: wraps every filter's uint8 arithmetic and has smooth runs."""
    bands = len(PIL.Image.new(mode, (1, 1)).getbands())
    rng = np.random.default_rng(width * height)
    ramp = np.add.outer(np.arange(height), np.arange(width)) % 256
    noise = rng.integers(0, 256, (height, width, bands))
    noise[: height // 2] = ramp[: height // 2, :, None]
    return noise.astype(np.uint8).squeeze(axis=2) if bands == 1 else noise.astype(np.uint8)


def chunks(path: Path) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk, checking the signature and every CRC on the way."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        (length,), kind = struct.unpack(">I", data[i:i + 4]), data[i + 4:i + 8]
        body, (crc,) = data[i + 8:i + 8 + length], struct.unpack(">I", data[i + 8 + length:
                                                                          i + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        out.append((kind, body))
        i += 12 + length
    assert out[0][0] == b"IHDR" and out[-1] == (b"IEND", b"")
    return out


def read_back(path: Path) -> PIL.Image.Image:
    with PIL.Image.open(path) as im:
        im.verify()
    im = PIL.Image.open(path)
    im.load()
    return im


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
@pytest.mark.parametrize("size", [(1, 1), (7, 5), (1501, 1400)])  # the last: several slices
def test_png_round_trips_pixels_and_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         mode: str, size: tuple[int, int]) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    array = pixels(mode, *size)
    image = PIL.Image.fromarray(array, mode)
    out = write_output("image", image, tmp_path / "out", "demo.job", PARAMS)

    path = Path(out["path"])
    assert path.suffix == ".png" and out["mime"] == "image/png"
    assert out["meta"] == {"width": size[0], "height": size[1]}
    assert out["sha256"] == sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    back = read_back(path)
    assert back.mode == mode and back.size == size
    assert np.array_equal(np.asarray(back), array)
    assert back.info["parameters"] == a1111_parameters("demo.job", PARAMS)
    assert json.loads(back.info["stablecore"]) == {"job": "demo.job", "params": PARAMS}
    # standard zlib data: the IDAT chunks inflate, Adler-32 checked, to one filtered row each
    idat = b"".join(body for kind, body in chunks(path) if kind == b"IDAT")
    assert len(zlib.decompress(idat)) == size[1] * (1 + array[0].size)


def test_mask_is_written_grey(tmp_path: Path) -> None:
    image = PIL.Image.fromarray(pixels("RGB", 64, 48))
    out = write_output("mask", image, tmp_path / "mask", "demo.job", {})
    back = read_back(Path(out["path"]))
    assert back.mode == "L"
    assert np.array_equal(np.asarray(back), np.asarray(image.convert("L")))
    assert out["sha256"] == sha256_file(Path(out["path"]))


def test_own_parameters_text_and_icc_profile_kept(tmp_path: Path) -> None:
    image = PIL.Image.fromarray(pixels("RGB", 16, 16))
    image.info["parameters"] = "my own words\nSteps: 3, Sampler: Euler, Seed: 5"
    image.info["icc_profile"] = b"not a real profile, kept as bytes"
    back = read_back(Path(write_output("image", image, tmp_path / "o", "demo.job", {})["path"]))
    assert back.info["parameters"] == image.info["parameters"]
    assert back.info["icc_profile"] == image.info["icc_profile"]


@pytest.mark.parametrize("mode", ["I;16", "P", "1"])
def test_other_modes_go_through_pillow(tmp_path: Path, mode: str) -> None:
    image = PIL.Image.fromarray(pixels("L", 33, 17)).convert(mode)
    out = write_output("image", image, tmp_path / "o", "demo.job", PARAMS)
    back = read_back(Path(out["path"]))
    assert back.mode == mode
    assert np.array_equal(np.asarray(back), np.asarray(image))
    assert back.info["parameters"] == a1111_parameters("demo.job", PARAMS)
    assert out["sha256"] == sha256_file(Path(out["path"]))
