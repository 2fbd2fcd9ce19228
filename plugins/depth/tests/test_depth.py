"""depth and transform3d through a real server: tiny random Depth Anything (a pulled repo in
the Hugging Face cache layout) and DPT (a folder in the models folder) load and run; the 3D
transform's geometry is checked exactly against transform2d."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest
import torch
from sc_depth import geometry
from transformers import (
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    DPTConfig,
    DPTForDepthEstimation,
    DPTImageProcessor,
)

from stablecore.client import Client
from stablecore.testing import ServerProcess, fetch_image, fetch_json, save_image

REPO = "test/tiny-depth-anything"
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
NEAR, FAR = 1.0, 10.0


@pytest.fixture(scope="module")
def stablecore_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    torch.manual_seed(0)
    cache = tmp_path_factory.mktemp("cache")
    repo = cache / "hub" / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=64, patch_size=14, image_size=56,
                            out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16, head_hidden_size=8, patch_size=14)).save_pretrained(snapshot)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True,
                      ensure_multiple_of=14).save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    data = tmp_path_factory.mktemp("stablecore") / "data"
    dpt = data / "models" / "depth" / "tiny-dpt"
    DPTForDepthEstimation(DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
        backbone_out_indices=[0, 1, 2, 3])).save_pretrained(dpt)
    DPTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(dpt)
    with ServerProcess(data, models_cache=cache) as server:
        yield server


def picture(width: int = 80, height: int = 60) -> np.ndarray:
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur((rng.random((height, width, 3)) * 255).astype(np.uint8), (0, 0), 1.5)


def run(client: Client, tmp_path: Path, spec: str, params: dict, **inputs: object) -> dict:
    ids = {}
    for name, value in inputs.items():
        if isinstance(value, np.ndarray):
            value = client.upload(save_image(tmp_path, value, f"{name}.png"))["id"]
        ids[name] = value
    job = client.run(spec, params, ids)
    assert job["state"] == "succeeded", job["error"]
    return job


def moved(client: Client, tmp_path: Path, params: dict, **inputs: object) -> tuple:
    job = run(client, tmp_path, "transform3d.transform", {"near": NEAR, "far": FAR, **params},
              **inputs)
    return (fetch_image(client, job["outputs"]["image"], tmp_path),
            fetch_image(client, job["outputs"]["mask"], tmp_path))


@pytest.mark.parametrize("model", [REPO, "tiny-dpt"])
def test_random_depth_models_load_and_run(stablecore_client: Client, tmp_path: Path,
                                          model: str) -> None:
    job = run(stablecore_client, tmp_path, "depth.estimate", {"model": model,
                                                              "values_size": 40},
              image=picture())
    path = stablecore_client.download(job["outputs"]["depth"]["id"], tmp_path / "d.png")
    with PIL.Image.open(path) as im:
        assert im.mode == "I;16" and im.size == (80, 60)
        wide = np.asarray(im, np.int64)
    assert wide.min() == 0 and wide.max() == 65535  # min-max normalised
    mask = fetch_image(stablecore_client, job["outputs"]["mask"], tmp_path)
    assert mask.shape == (60, 80) and np.abs(mask.astype(np.int64) * 257 - wide).max() <= 129
    values = np.array(fetch_json(stablecore_client, job["outputs"]["values"], tmp_path)
                      ["values"])
    assert values.shape == (30, 40) and 0 <= values.min() <= values.max() <= 1


def test_zero_motion_is_the_identity(stablecore_client: Client, tmp_path: Path) -> None:
    pixels = picture()
    depth = (np.random.default_rng(1).random((60, 80)) * 255).astype(np.uint8)
    for inputs in ({}, {"depth": depth}):
        out, holes = moved(stablecore_client, tmp_path, {}, image=pixels, **inputs)
        assert np.array_equal(out, pixels) and not holes.any()
    out, _ = moved(stablecore_client, tmp_path, {"virtual": "sphere"}, image=pixels)
    assert np.array_equal(out, pixels)


def test_x_move_on_flat_depth_is_transform2d_translate(stablecore_client: Client,
                                                       tmp_path: Path) -> None:
    pixels = picture()
    tx = 0.37
    shift = geometry.focal(80, 60) * tx / FAR  # pixels on the plane at `far`
    out, holes = moved(stablecore_client, tmp_path, {"translate_x": tx, "fill": "mirror"},
                       image=pixels)
    job = run(stablecore_client, tmp_path, "transform2d.transform",
              {"translate_x": shift, "border": "reflect"}, image=pixels)
    assert np.array_equal(out, fetch_image(stablecore_client, job["outputs"]["image"],
                                           tmp_path))
    assert holes[:, :2].all() and not holes[:, 3:].any()  # the strip it uncovered: 2.56 px


def test_z_move_toward_the_camera_is_a_zoom(stablecore_client: Client, tmp_path: Path) -> None:
    pixels = picture()
    out, holes = moved(stablecore_client, tmp_path, {"translate_z": 2.0}, image=pixels)
    job = run(stablecore_client, tmp_path, "transform2d.transform",
              {"scale": FAR / (FAR - 2.0), "border": "edge"}, image=pixels)
    assert np.array_equal(out, fetch_image(stablecore_client, job["outputs"]["image"],
                                           tmp_path))
    assert not holes.any()


def test_near_things_move_more_and_leave_holes(stablecore_client: Client,
                                               tmp_path: Path) -> None:
    pixels = np.full((60, 80, 3), 40, np.uint8)
    pixels[20:40, 30:50] = (250, 30, 30)  # a red square ...
    depth = np.zeros((60, 80), np.uint8)
    depth[20:40, 30:50] = 255  # ... at `near`, in front of the wall at `far`
    tx = 0.1
    out, holes = moved(stablecore_client, tmp_path, {"translate_x": tx, "fill": "mask",
                                                     "interpolation": "nearest"},
                       image=pixels, depth=depth)
    f = geometry.focal(80, 60)
    near_shift, far_shift = round(f * tx / NEAR), round(f * tx / FAR)
    assert (near_shift, far_shift) == (7, 1)
    red = np.nonzero(out[30, :, 0] == 250)[0]
    assert (red.min(), red.max()) == (30 + near_shift, 49 + near_shift)
    # behind the square's old place: wall that was hidden, now uncovered, is a hole
    assert holes[30, 31:30 + near_shift].all() and (out[30, 31:30 + near_shift] == 0).all()
    assert holes[:, 0].all() and not holes[5, 2:].any()  # the left strip, and no more
    again, _ = moved(stablecore_client, tmp_path, {"translate_x": tx}, image=pixels,
                     depth=depth)
    assert (again[holes > 0] != 0).all()  # stretch fills them


def test_a_row_of_numbers_drives_a_frame(stablecore_client: Client, tmp_path: Path) -> None:
    pixels = picture()
    table = tmp_path / "motion.json"
    table.write_text(json.dumps({"columns": ["translate_x", "rotate_z"], "rate": 24,
                                 "values": [[0, 0], [0.3, 5.0], [0.6, 10.0]]}))
    motion = stablecore_client.upload(table)["id"]
    by_row, _ = moved(stablecore_client, tmp_path, {"frame": 1}, image=pixels, motion=motion)
    by_params, _ = moved(stablecore_client, tmp_path, {"translate_x": 0.3, "rotate_z": 5.0},
                         image=pixels)
    assert np.array_equal(by_row, by_params) and not np.array_equal(by_row, pixels)


def test_bad_settings_are_refused(stablecore_client: Client, tmp_path: Path) -> None:
    image = stablecore_client.upload(save_image(tmp_path, picture()))["id"]
    job = stablecore_client.run("transform3d.transform", {"near": 5, "far": 2},
                                {"image": image})
    assert job["state"] == "failed" and "need 0 < near < far" in job["error"]
    job = stablecore_client.run("transform3d.transform", {"frame": 9}, {
        "image": image, "motion": stablecore_client.upload(
            save_json(tmp_path, {"columns": ["zoom"], "values": [[1.0]]}))["id"]})
    assert job["state"] == "failed" and "motion columns must be among" in job["error"]
    job = stablecore_client.run("depth.estimate", {"model": "org/not-pulled"}, {"image": image})
    assert job["state"] == "failed" and "stable-core models pull depth" in job["error"]


def save_json(folder: Path, doc: dict) -> Path:
    path = folder / "table.json"
    path.write_text(json.dumps(doc))
    return path
