"""restore through a real server. Model files go where `stable-core models pull` puts them:
random CodeFormer and GFPGAN weights in their real key layout (loaded by spandrel), and a
stand-in YuNet exported to ONNX with YuNet's outputs, loaded by OpenCV's FaceDetectorYN."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from sc_restore import align, detect, models
from spandrel.architectures.GFPGAN import GFPGAN
from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

from stablecore.client import Client
from stablecore.modelfiles import FileCache
from stablecore.testing import ServerProcess, fetch_image, save_image

NOSE = (176, 112)  # the stand-in YuNet finds a face whose nose cell is 160..192 x 96..128


class StandInYuNet(torch.nn.Module):
    """YuNet's twelve outputs (cls, obj, bbox, kps at strides 8, 16, 32). A face is wherever
    a 32 x 32 cell is bright in green: a 128 px box around the cell's centre, with the FFHQ
    landmarks scaled to it. OpenCV decodes these as it decodes the real model's."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cls, box, kps = [], [], []
        for stride in (8, 16, 32):
            pooled = F.avg_pool2d(x[:, 1:2], stride)
            score = torch.sigmoid((pooled - 200) * 0.5) if stride == 32 else pooled * 0
            cls.append(score.flatten(2).transpose(1, 2))
            deltas = torch.tensor([0.5, 0.5, math.log(4), math.log(4)]).view(1, 4, 1, 1)
            box.append((pooled * 0 + deltas).flatten(2).transpose(1, 2))
            marks = 0.5 + (torch.from_numpy(align.TEMPLATE) - 256).reshape(1, 10, 1, 1) / 128
            kps.append((pooled * 0 + marks).flatten(2).transpose(1, 2))
        return (*cls, *cls, *box, *kps)


def drawn_face(marker: bool = True) -> np.ndarray:
    """A cartoon face drawn with OpenCV; `marker` is the bright cell the stand-in sees."""
    pixels = np.full((200, 300, 3), 70, np.uint8)
    cx, cy = NOSE
    cv2.ellipse(pixels, (cx, cy - 4), (46, 60), 0, 0, 360, (210, 170, 150), -1)
    for dx in (-18, 18):
        cv2.circle(pixels, (cx + dx, cy - 16), 6, (30, 30, 40), -1)
    cv2.ellipse(pixels, (cx, cy + 28), (16, 5), 0, 0, 360, (150, 40, 50), -1)
    if marker:
        pixels[96:128, 160:192, 1] = 255
    pixels[:, :40] = (20, 120, 200)  # something far from the face
    return pixels


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models cache as `models pull` leaves it, with test files of the declared names."""
    root = tmp_path_factory.mktemp("models")
    files = FileCache(root, root / "hub")
    torch.manual_seed(0)
    yunet = files.url_path(detect.YUNET)
    yunet.parent.mkdir(parents=True)
    names = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)]
    torch.onnx.export(StandInYuNet(), (torch.zeros(1, 3, 64, 64),), yunet, dynamo=False,
                      input_names=["input"], output_names=names,
                      dynamic_axes={"input": {2: "height", 3: "width"}})
    small = CodeFormer(dim_embd=64, n_layers=1, codebook_size=64, connect_list=["32"])
    gfpgan = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2,
                    decoder_load_path=None, fix_decoder=False, num_mlp=8,
                    input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    for file, net in ((models.CODEFORMER, small), (models.GFPGAN, gfpgan)):
        path = files.url_path(file)
        path.parent.mkdir(parents=True)  # the real files: {"params_ema": state dict}
        torch.save({"params_ema": {k: v.half() for k, v in net.state_dict().items()}}, path)
    return root


@pytest.fixture(scope="module")
def stablecore_server(tmp_path_factory: pytest.TempPathFactory,
                      cache: Path) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("stablecore") / "data"
    folder = data / "models" / "restore"
    folder.mkdir(parents=True)
    (folder / "garbage.pth").write_bytes(b"not a model" * 10)
    with ServerProcess(data, models_cache=cache) as server:
        yield server


def footprint(face: dict, shape: tuple[int, ...], scale: float = 1) -> np.ndarray:
    """True where the pasted crop of `face` may reach (its 512 x 512 frame, mapped back)."""
    marks = np.array([[face[f"{n}_x"], face[f"{n}_y"]] for n in detect.LANDMARK_NAMES])
    back = cv2.invertAffineTransform(align.matrix(marks)) * scale
    back[:, 2] += (scale - 1) / 2
    frame = cv2.warpAffine(np.ones((512, 512), np.uint8), back, (shape[1], shape[0]))
    return cv2.dilate(frame, np.ones((3, 3), np.uint8)) > 0


def restore(client: Client, tmp_path: Path, pixels: np.ndarray, **params: object) -> tuple:
    job = client.run("restore.faces", params,
                     {"image": client.upload(save_image(tmp_path, pixels))["id"]})
    assert job["state"] == "succeeded", job["error"]
    logs = [e["data"]["msg"] for e in client.events(job["id"]) if e["type"] == "job.log"]
    return fetch_image(client, job["outputs"]["image"], tmp_path), \
        job["outputs"]["faces"]["value"], logs


def test_detect_finds_the_drawn_face(stablecore_client: Client, tmp_path: Path) -> None:
    image = stablecore_client.upload(save_image(tmp_path, drawn_face()))["id"]
    job = stablecore_client.run("restore.detect", {}, {"image": image})
    assert job["state"] == "succeeded", job["error"]
    (face,) = job["outputs"]["json"]["value"]
    assert (face["x"], face["y"], face["width"], face["height"]) == (112, 48, 128, 128)
    assert face["score"] > 0.99
    assert abs(face["nose_x"] - NOSE[0]) < 1 and abs(face["nose_y"] - 126.5) < 1
    assert face["eye_left_x"] < face["eye_right_x"]


def test_paste_back_with_no_restorer_keeps_everything_else(stablecore_client: Client,
                                                           tmp_path: Path) -> None:
    pixels = drawn_face()
    out, faces, _ = restore(stablecore_client, tmp_path, pixels, model="none")
    assert out.shape == pixels.shape and len(faces) == 1
    inside = footprint(faces[0], pixels.shape)
    assert 0.1 < inside.mean() < 0.9
    assert np.array_equal(out[~inside], pixels[~inside])  # bit for bit away from the face
    diff = np.abs(out.astype(int) - pixels)[inside]
    assert np.median(diff) <= 1  # crop and paste back resample twice, nothing more


@pytest.mark.parametrize("model", ["codeformer", "gfpgan"])
def test_random_weights_load_run_and_keep_the_size(stablecore_client: Client, tmp_path: Path,
                                                   model: str) -> None:
    pixels = drawn_face()
    out, faces, logs = restore(stablecore_client, tmp_path, pixels, model=model,
                               fidelity=0.7, upscale=1.5)
    assert out.shape == (300, 450, 3) and len(faces) == 1
    assert f"restore.faces: 1 face(s) restored with {model}" in logs
    inside = footprint(faces[0], out.shape, 1.5)
    big = np.asarray(PIL.Image.fromarray(pixels).resize((450, 300), PIL.Image.Resampling.LANCZOS))
    assert np.array_equal(out[~inside], big[~inside])  # the background: upscaled only
    assert np.abs(out.astype(int) - big)[inside].mean() > 5  # random weights changed the face
    # strength 0 keeps the original face: the crop comes back as it went
    kept, _, _ = restore(stablecore_client, tmp_path, pixels, model=model, strength=0.0)
    assert np.median(np.abs(kept.astype(int) - pixels)) == 0


def test_no_faces_comes_back_unchanged_with_a_log(stablecore_client: Client,
                                                  tmp_path: Path) -> None:
    pixels = drawn_face(marker=False)
    out, faces, logs = restore(stablecore_client, tmp_path, pixels)
    assert faces == [] and np.array_equal(out, pixels)
    assert any("no faces found" in line and "unchanged" in line for line in logs)


def test_errors_name_the_problem(stablecore_client: Client, tmp_path: Path) -> None:
    image = stablecore_client.upload(save_image(tmp_path, drawn_face()))["id"]

    def error(**params: object) -> str:
        job = stablecore_client.run("restore.faces", params, {"image": image})
        assert job["state"] == "failed"
        return job["error"]

    assert "cannot load face model garbage.pth" in error(model="garbage.pth")
    assert "no model 'missing.pth' (models: codeformer, gfpgan, none, garbage.pth" in error(
        model="missing.pth")
    assert "must be codeformer, gfpgan, none or a file name" in error(model="../x.pth")
    if not hasattr(cv2, "CascadeClassifier") or detect.haar_file() is None:
        assert "no face detector" in error(detector="haar")


def test_paste_is_exact_outside_the_face_at_any_scale() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (120, 160, 3), np.uint8)
    marks = align.TEMPLATE / 8 + (40, 10)  # a 64 px face, upright
    to_crop = align.matrix(marks)
    assert np.allclose(to_crop, [[8, 0, -320], [0, 8, -80]], atol=1e-3)
    canvas = pixels.astype(np.float32)
    align.paste(canvas, np.full((512, 512, 3), 255, np.float32), to_crop, 1)
    changed = np.any(canvas != pixels, axis=2)
    ys, xs = np.nonzero(changed)
    assert xs.min() >= 40 and xs.max() < 104 and ys.min() >= 10 and ys.max() < 74
    assert np.all(canvas[42, 72] == 255)  # the face's middle is the face
