"""palette through a real server: matched histograms move to the reference's, strength and
mask blend, extraction finds known colours and shares, and bad input is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sc_palette.ops import to_space

from stablecore.client import ApiError, Client
from stablecore.testing import fetch_image, fetch_json, save_image


def scene(seed: int, tint: tuple[float, float, float], size: int = 96) -> np.ndarray:
    """Smooth blobs plus grain, coloured by `tint`: a stand-in for a photograph."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.zeros((size, size, 3))
    for _ in range(6):
        cx, cy, r = rng.random(3)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (0.02 + 0.1 * r))
        base += blob[..., None] * rng.random(3)
    base = base / base.max()
    pixels = 255 * base * np.asarray(tint) + rng.normal(0, 4, base.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean 1-D Wasserstein distance between the channels' value distributions."""
    qs = np.linspace(0.01, 0.99, 99)
    return float(np.mean([np.abs(np.quantile(a[..., c], qs) - np.quantile(b[..., c], qs)).mean()
                          for c in range(a.shape[-1])]))


@pytest.fixture
def pair(stablecore_client: Client, tmp_path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    src = scene(1, (0.3, 0.5, 1.0))   # bluish
    ref = scene(2, (1.0, 0.6, 0.2))   # orange
    arts = {"image": stablecore_client.upload(save_image(tmp_path, src, "src.png"))["id"],
            "reference": stablecore_client.upload(save_image(tmp_path, ref, "ref.png"))["id"]}
    return src, ref, arts


def test_rgb_match_takes_the_reference_histograms(stablecore_client, tmp_path, pair):
    src, ref, arts = pair
    job = stablecore_client.run("palette.match", {"space": "rgb"}, arts)
    assert job["state"] == "succeeded", job
    out = fetch_image(stablecore_client, job["outputs"]["image"], tmp_path)
    assert out.shape == src.shape
    before, after = distance(src, ref), distance(out, ref)
    assert after < 0.05 * before, (before, after)
    for c in range(3):
        assert abs(out[..., c].mean() - ref[..., c].mean()) < 1.5


def test_lab_match_moves_lab_and_rgb_histograms_toward_the_reference(stablecore_client,
                                                                      tmp_path, pair):
    src, ref, arts = pair
    job = stablecore_client.run("palette.match", {}, arts)  # lab, strength 1
    assert job["state"] == "succeeded", job
    out = fetch_image(stablecore_client, job["outputs"]["image"], tmp_path)
    lab = [to_space(x, "lab") for x in (src, ref, out)]
    # per-channel matching is exact in Lab; what is left comes from clipping to the sRGB gamut
    assert distance(lab[2], lab[1]) < 0.25 * distance(lab[0], lab[1])
    assert distance(out, ref) < 0.3 * distance(src, ref)
    # colour order is kept: the matched image is still the same picture
    corr = np.corrcoef(src[..., :3].mean(axis=2).ravel(), out.mean(axis=2).ravel())[0, 1]
    assert corr > 0.8


def test_strength_blends_and_preserve_lightness_keeps_l(stablecore_client, tmp_path, pair):
    src, ref, arts = pair
    outs = {}
    for s in (0.0, 0.5, 1.0):
        job = stablecore_client.run("palette.match", {"strength": s}, arts)
        assert job["state"] == "succeeded", job
        outs[s] = fetch_image(stablecore_client, job["outputs"]["image"], tmp_path)
    assert np.array_equal(outs[0.0], src)
    d = {s: distance(to_space(o, "lab"), to_space(ref, "lab")) for s, o in outs.items()}
    assert d[1.0] < d[0.5] < d[0.0]
    job = stablecore_client.run("palette.match", {"preserve_lightness": True}, arts)
    out = fetch_image(stablecore_client, job["outputs"]["image"], tmp_path)
    l_src, l_out = to_space(src, "lab")[..., 0], to_space(out, "lab")[..., 0]
    assert np.abs(l_src - l_out).mean() < 3.0  # gamut clipping aside, L is kept
    assert distance(to_space(out, "lab")[..., 1:], to_space(ref, "lab")[..., 1:]) < 0.5 * \
        distance(to_space(src, "lab")[..., 1:], to_space(ref, "lab")[..., 1:])


def test_mask_limits_the_change(stablecore_client, tmp_path, pair):
    src, _ref, arts = pair
    mask = np.zeros(src.shape[:2], np.uint8)
    mask[:, 48:] = 255
    arts = {**arts, "mask": stablecore_client.upload(save_image(tmp_path, mask, "m.png"))["id"]}
    job = stablecore_client.run("palette.match", {}, arts)
    assert job["state"] == "succeeded", job
    out = fetch_image(stablecore_client, job["outputs"]["image"], tmp_path)
    assert np.array_equal(out[:, :48], src[:, :48])
    assert np.abs(out[:, 48:].astype(int) - src[:, 48:]).mean() > 10


def test_extract_finds_known_colours_and_shares(stablecore_client, tmp_path):
    rng = np.random.default_rng(3)
    img = np.zeros((100, 120, 3), np.float64)
    colours = np.array([[200, 40, 30], [30, 160, 60], [40, 60, 210], [240, 230, 200]])
    img[:50] = colours[0]           # 50 %
    img[50:80] = colours[1]         # 30 %
    img[80:, :72] = colours[2]      # 12 %
    img[80:, 72:] = colours[3]      # 8 %
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    arts = {"image": stablecore_client.upload(save_image(tmp_path, img, "p.png"))["id"]}
    job = stablecore_client.run("palette.extract", {"colors": 4, "seed": 7}, arts)
    assert job["state"] == "succeeded", job
    table = fetch_json(stablecore_client, job["outputs"]["palette"], tmp_path)
    assert table["columns"] == ["r", "g", "b", "share", "lab_l", "lab_a", "lab_b"]
    rows = np.array(table["values"])
    assert np.abs(rows[:, :3] - colours).max() < 4  # sorted by share, as the truth is
    assert np.allclose(rows[:, 3], [0.5, 0.3, 0.12, 0.08], atol=0.01)
    swatch = fetch_image(stablecore_client, job["outputs"]["swatch"], tmp_path)
    assert swatch.shape == (64, 512, 3)
    assert np.array_equal(swatch[10, 10], rows[0, :3].astype(np.uint8))
    # the same seed gives the same palette; lightness order sorts by L
    again = stablecore_client.run("palette.extract", {"colors": 4, "seed": 7}, arts)
    assert fetch_json(stablecore_client, again["outputs"]["palette"], tmp_path) == table
    job = stablecore_client.run("palette.extract", {"colors": 4, "order": "lightness",
                                                     "proportional": True,
                                                     "swatch_width": 100}, arts)
    light = np.array(fetch_json(stablecore_client, job["outputs"]["palette"],
                                   tmp_path)["values"])
    assert np.all(np.diff(light[:, 4]) >= 0)
    swatch = fetch_image(stablecore_client, job["outputs"]["swatch"], tmp_path)
    first_share = light[0, 3]
    width_first = int((swatch[0] == swatch[0, 0]).all(axis=1).sum())
    assert abs(width_first - 100 * first_share) <= 1


def test_extract_ignores_transparent_pixels(stablecore_client, tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = (250, 0, 0)
    rgba[:, 20:, :3] = (0, 0, 250)
    rgba[:, 20:, 3] = 0      # the blue half is invisible
    rgba[:, :20, 3] = 255
    arts = {"image": stablecore_client.upload(save_image(tmp_path, rgba, "a.png"))["id"]}
    job = stablecore_client.run("palette.extract", {"colors": 2}, arts)
    assert job["state"] == "succeeded", job
    rows = np.array(fetch_json(stablecore_client, job["outputs"]["palette"],
                                  tmp_path)["values"])
    assert len(rows) == 1 and np.allclose(rows[0, :4], [250, 0, 0, 1.0], atol=1)


def test_bad_input_is_refused_clearly(stablecore_client, tmp_path, pair):
    _src, _ref, arts = pair
    with pytest.raises(ApiError) as e:
        stablecore_client.submit("palette.match", {"strength": 1.5}, arts)
    assert e.value.status == 422 and e.value.field == "params.strength"
    with pytest.raises(ApiError) as e:
        stablecore_client.submit("palette.match", {}, {"image": arts["image"]})
    assert e.value.field == "inputs.reference" and "missing" in e.value.detail
    with pytest.raises(ApiError) as e:
        stablecore_client.submit("palette.extract", {"colors": 0}, {"image": arts["image"]})
    assert e.value.field == "params.colors"
    job = stablecore_client.run("palette.match", {"space": "rgb", "preserve_lightness": True},
                                arts)
    assert job["state"] == "failed" and "lab or ycrcb" in job["error"]
    small = stablecore_client.upload(save_image(tmp_path, np.zeros((8, 8), np.uint8), "m.png"))
    job = stablecore_client.run("palette.match", {}, {**arts, "mask": small["id"]})
    assert job["state"] == "failed" and "mask is 8x8 but the image is 96x96" in job["error"]


def test_transparent_reference_pixels_are_left_out(stablecore_client, tmp_path, pair):
    src, ref, arts = pair
    rgba = np.dstack([ref, np.full(ref.shape[:2], 255, np.uint8)])
    rgba[:, 48:, :3] = (0, 255, 0)  # loud green, but invisible
    rgba[:, 48:, 3] = 0
    arts = {**arts, "reference": stablecore_client.upload(save_image(tmp_path, rgba, "r.png"))["id"]}
    job = stablecore_client.run("palette.match", {"space": "rgb"}, arts)
    assert job["state"] == "succeeded", job
    out = fetch_image(stablecore_client, job["outputs"]["image"], tmp_path)
    assert distance(out, ref[:, :48]) < 0.05 * distance(src, ref[:, :48])
