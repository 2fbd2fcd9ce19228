"""flow through a real server, on a textured image and a shifted copy of it: the estimated
flow is the shift, warping the first frame by the flow reproduces the second, a packed flow
round-trips, and mismatched or wrong inputs get clear errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from sc_flow.ops import unpack

from stablecore.client import ApiError
from stablecore.testing import fetch_image, save_image

SHIFT = (3.5, -2.25)  # (dx, dy): content moves right and up from first to second
INNER = (slice(16, -16), slice(16, -16))


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    layers = [cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), s)
              for s in (1.5, 4.0)]
    rgb = np.dstack([layers[0], layers[1], 0.5 * layers[0] + 0.5 * layers[1]])
    rgb = (rgb - rgb.min(axis=(0, 1))) / np.ptp(rgb, axis=(0, 1))
    return (rgb * 255).astype(np.uint8)


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT_101)


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("frames")
    a = texture(192, 256)
    b = shifted(a, *SHIFT)
    other = texture(192, 256, seed=9)
    return {"a": a, "b": b, "other": other, "a_path": save_image(d, a, "a.png"),
            "b_path": save_image(d, b, "b.png"), "other_path": save_image(d, other, "o.png")}


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_warping_first_by_the_flow_reproduces_second(stablecore_client, tmp_path, frames,
                                                     method):
    a, b = frames["a"].astype(float), frames["b"].astype(float)
    job = stablecore_client.run("flow.warp", {"method": method},
                                {"image": frames["a_path"], "first": frames["a_path"],
                                 "second": frames["b_path"]})
    assert job["state"] == "succeeded", job
    warped = fetch_image(stablecore_client, job["outputs"]["image"], tmp_path).astype(float)
    before = np.abs(a[INNER] - b[INNER]).mean()
    after = np.abs(warped[INNER] - b[INNER]).mean()
    assert after < 1.5, after
    assert after < before / 10, (before, after)


def test_estimate_returns_the_shift_packed_a_picture_and_stats(stablecore_client, tmp_path,
                                                               frames):
    job = stablecore_client.run("flow.estimate", {},
                                {"first": frames["a_path"], "second": frames["b_path"]})
    assert job["state"] == "succeeded", job
    out = job["outputs"]
    packed = fetch_image(stablecore_client, out["flow"], tmp_path)
    assert packed.shape == (192, 256, 4)
    flow = unpack(packed)
    assert np.allclose(np.median(flow[INNER], axis=(0, 1)), SHIFT, atol=0.1)
    assert np.abs(flow[INNER] - SHIFT).mean() < 0.2
    doc = json.loads(stablecore_client.download(out["stats"]["id"],
                                                tmp_path / "s.json").read_text())
    stats = dict(zip(doc["columns"], doc["values"][0], strict=True))
    assert stats["mean_dx"] == pytest.approx(SHIFT[0], abs=0.2)
    assert stats["mean_dy"] == pytest.approx(SHIFT[1], abs=0.2)
    visual = fetch_image(stablecore_client, out["visual"], tmp_path)
    assert visual.shape == (192, 256, 3)
    # a uniform shift is one colour: moving right and up is not grey and not white
    centre = visual[INNER].reshape(-1, 3).astype(float)
    assert centre.std(axis=0).max() < 25 and np.ptp(centre.mean(axis=0)) > 60

    # the packed flow drives a warp as well as the frames do
    warp = stablecore_client.run("flow.warp", {}, {"image": frames["a_path"],
                                                   "flow": out["flow"]["id"]})
    assert warp["state"] == "succeeded", warp
    warped = fetch_image(stablecore_client, warp["outputs"]["image"], tmp_path).astype(float)
    assert np.abs(warped[INNER] - frames["b"][INNER]).mean() < 1.5
    pic = stablecore_client.run("flow.visualize", {"arrows": 32}, {"flow": out["flow"]["id"]})
    assert pic["state"] == "succeeded", pic
    arrows = fetch_image(stablecore_client, pic["outputs"]["image"], tmp_path)
    assert arrows.shape == (192, 256, 3) and (arrows.sum(axis=2) < 100).any()  # black arrows


def test_strength_scales_the_displacement(stablecore_client, tmp_path, frames):
    job = stablecore_client.run("flow.warp", {"strength": 0.5, "scale": 0.5},
                                {"image": frames["a_path"], "first": frames["a_path"],
                                 "second": frames["b_path"]})
    assert job["state"] == "succeeded", job
    half = fetch_image(stablecore_client, job["outputs"]["image"], tmp_path).astype(float)
    truth = shifted(frames["a"], SHIFT[0] / 2, SHIFT[1] / 2).astype(float)
    assert np.abs(half[INNER] - truth[INNER]).mean() < 2.0


def test_progress_is_reported(stablecore_client, frames):
    ids = {k: stablecore_client.upload(frames[f"{k}_path"])["id"] for k in ("a", "b")}
    job = stablecore_client.submit("flow.estimate", {}, {"first": ids["a"], "second": ids["b"]})
    events: list[dict] = []
    done = stablecore_client.wait(job["id"], on_event=events.append)
    assert done["state"] == "succeeded"
    assert [e["data"]["step"] for e in events if e["type"] == "job.progress"][-1] == 3


def test_bad_input_is_refused_clearly(stablecore_client, tmp_path, frames):
    small = save_image(tmp_path, frames["a"][:100, :120], "small.png")
    job = stablecore_client.run("flow.estimate", {}, {"first": frames["a_path"],
                                                      "second": small})
    assert job["state"] == "failed"
    assert "first is 256x192 but second is 120x100" in job["error"]
    job = stablecore_client.run("flow.warp", {}, {"image": frames["a_path"]})
    assert job["state"] == "failed" and "needs the inputs first and second" in job["error"]
    job = stablecore_client.run("flow.warp", {}, {"image": small, "first": frames["a_path"],
                                                  "second": frames["b_path"]})
    assert job["state"] == "failed" and "image is 120x100 but first is 256x192" in job["error"]
    # an ordinary picture is not a packed flow
    job = stablecore_client.run("flow.visualize", {}, {"flow": frames["a_path"]})
    assert job["state"] == "failed" and "packed flow" in job["error"]
    with pytest.raises(ApiError) as e:
        stablecore_client.submit("flow.estimate", {"method": "lucas-kanade"},
                                 {"first": stablecore_client.upload(frames["a_path"])["id"],
                                  "second": stablecore_client.upload(frames["b_path"])["id"]})
    assert e.value.status == 422 and e.value.field == "params.method"
    with pytest.raises(ApiError) as e:
        stablecore_client.submit("flow.estimate", {}, {})
    assert e.value.field in ("inputs.first", "inputs.second")
