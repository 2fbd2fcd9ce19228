"""transform2d through a real server: exactness of quarter turns, flips and crops, sub-pixel
accuracy against an analytic image, border modes, alpha, progress, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stablecore.client import ApiError, Client
from stablecore.testing import fetch_image, save_image

SPEC = "transform2d.transform"


def run(client: Client, inputs: dict, params: dict | None = None) -> dict:
    job = client.run(SPEC, params or {}, inputs)
    assert job["state"] == "succeeded", job
    return job


def fetch(client: Client, job: dict, tmp_path: Path, name: str = "image") -> np.ndarray:
    return fetch_image(client, job["outputs"][name], tmp_path)


def noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_four_quarter_turns_return_the_input(stablecore_client: Client, tmp_path: Path):
    square = noise((48, 48, 3))
    art = stablecore_client.upload(save_image(tmp_path, square))["id"]
    for _ in range(4):  # each turn takes the previous job's output artifact as its input
        job = run(stablecore_client, {"image": art}, {"rotate": 90})
        art = job["outputs"]["image"]["id"]
    assert np.array_equal(fetch(stablecore_client, job, tmp_path), square)

    one = fetch(stablecore_client, run(stablecore_client, {"image": save_image(tmp_path, square)},
                                       {"rotate": 90}), tmp_path)
    assert np.array_equal(one, np.rot90(square))  # counter-clockwise, pixel-exact


def test_quarter_turns_with_expand_keep_every_pixel_of_a_wide_image(stablecore_client, tmp_path):
    wide = noise((30, 53, 3), seed=1)
    art = stablecore_client.upload(save_image(tmp_path, wide))["id"]
    shapes = []
    for _ in range(4):
        job = run(stablecore_client, {"image": art},
                  {"rotate": -90, "expand": True, "interpolation": "lanczos"})
        art = job["outputs"]["image"]["id"]
        out = fetch(stablecore_client, job, tmp_path)
        shapes.append(out.shape[:2])
    assert shapes == [(53, 30), (30, 53), (53, 30), (30, 53)]
    assert np.array_equal(out, wide)


def test_flip_and_crop_are_exact(stablecore_client, tmp_path):
    img = noise((40, 60, 3), seed=2)
    path = save_image(tmp_path, img)
    out = fetch(stablecore_client, run(stablecore_client, {"image": path},
                                       {"flip": "horizontal"}), tmp_path)
    assert np.array_equal(out, img[:, ::-1])
    out = fetch(stablecore_client, run(stablecore_client, {"image": path},
                                       {"flip": "both", "crop_x": 5, "crop_y": 7,
                                        "crop_width": 20, "crop_height": 10}), tmp_path)
    assert np.array_equal(out, img[::-1, ::-1][7:17, 5:25])
    # whole-pixel shifts with wrap are a roll
    out = fetch(stablecore_client, run(stablecore_client, {"image": path},
                                       {"translate_x": 7, "translate_y": -3,
                                        "border": "wrap"}), tmp_path)
    assert np.array_equal(out, np.roll(img, (-3, 7), axis=(0, 1)))


def smooth(width: int, height: int, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """A band-limited pattern sampled at pixel centres, shifted by (dx, dy) pixels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = x - dx, y - dy
    v = (128 + 60 * np.sin(2 * np.pi * x / 37.0) + 50 * np.cos(2 * np.pi * y / 29.0)
         + 15 * np.sin(2 * np.pi * (x + y) / 23.0))
    return np.repeat(v[..., None], 3, axis=2)


@pytest.mark.parametrize("interpolation", ["linear", "cubic", "lanczos"])
def test_subpixel_translation_matches_the_shifted_pattern(stablecore_client, tmp_path,
                                                          interpolation):
    dx, dy = 2.3, -1.55
    src = np.round(smooth(96, 80)).astype(np.uint8)
    job = run(stablecore_client, {"image": save_image(tmp_path, src)},
              {"translate_x": dx, "translate_y": dy, "interpolation": interpolation})
    out = fetch(stablecore_client, job, tmp_path).astype(np.float64)
    truth = smooth(96, 80, dx, dy)
    inner = (slice(6, -6), slice(6, -6))
    err = np.abs(out[inner] - truth[inner]).mean()
    whole_pixel_err = np.abs(smooth(96, 80, 2, -2)[inner] - truth[inner]).mean()
    assert err < 0.9, err  # within rounding to 8 bits, plus the filter's own error
    assert err < whole_pixel_err / 8


def test_zoom_and_rotation_about_the_centre(stablecore_client, tmp_path):
    img = np.zeros((64, 64, 3), np.uint8)
    img[28:36, 28:36] = 255  # a centred square stays centred
    img[0:4, 0:4] = (255, 0, 0)
    path = save_image(tmp_path, img)
    out = fetch(stablecore_client, run(stablecore_client, {"image": path},
                                       {"scale": 2.0, "rotate": 30, "border": "constant",
                                        "interpolation": "nearest"}), tmp_path)
    ys, xs = np.nonzero(out[..., 1] > 128)
    assert abs(ys.mean() - 31.5) < 0.6 and abs(xs.mean() - 31.5) < 0.6
    assert len(ys) == pytest.approx(8 * 8 * 4, rel=0.1)  # twice the side: four times the area
    # scale 2 with expand doubles the canvas
    job = run(stablecore_client, {"image": path}, {"scale": 2.0, "expand": True})
    assert fetch(stablecore_client, job, tmp_path).shape == (128, 128, 3)


def test_border_modes_and_fill(stablecore_client, tmp_path):
    img = noise((32, 32, 3), seed=3)
    path = save_image(tmp_path, img)
    out = fetch(stablecore_client, run(stablecore_client, {"image": path},
                                       {"translate_x": 10, "border": "constant",
                                        "fill": "#10ff20"}), tmp_path)
    assert (out[:, :10] == (0x10, 0xFF, 0x20)).all()
    out = fetch(stablecore_client, run(stablecore_client, {"image": path},
                                       {"translate_x": 10, "border": "edge"}), tmp_path)
    assert (out[:, :10] == img[:, :1]).all()
    out = fetch(stablecore_client, run(stablecore_client, {"image": path},
                                       {"translate_x": 10, "border": "reflect"}), tmp_path)
    assert np.array_equal(out[:, :10], img[:, 10:0:-1])


def test_alpha_survives(stablecore_client, tmp_path):
    rgba = noise((20, 30, 4), seed=4)
    out = fetch(stablecore_client, run(stablecore_client, {"image": save_image(tmp_path, rgba)},
                                       {"flip": "vertical"}), tmp_path)
    assert out.shape == (20, 30, 4)
    assert np.array_equal(out, rgba[::-1])
    out = fetch(stablecore_client, run(stablecore_client, {"image": save_image(tmp_path, rgba)},
                                       {"translate_y": 5, "border": "constant",
                                        "fill": "#00000000"}), tmp_path)
    assert (out[:5, :, 3] == 0).all()


def test_large_image_reports_progress(stablecore_client, tmp_path):
    img = noise((700, 64, 3), seed=5)
    job = stablecore_client.submit(
        SPEC, {"rotate": 180}, {"image": stablecore_client.upload(save_image(tmp_path, img))["id"]})
    events: list[dict] = []
    done = stablecore_client.wait(job["id"], on_event=events.append)
    assert done["state"] == "succeeded", done
    steps = [(e["data"]["step"], e["data"]["total"]) for e in events
             if e["type"] == "job.progress"]
    assert steps and steps[-1] == (3, 3)  # 700 rows in strips of 256
    assert np.array_equal(fetch(stablecore_client, done, tmp_path), img[::-1, ::-1])


def test_bad_input_is_refused_clearly(stablecore_client, tmp_path):
    path = save_image(tmp_path, noise((16, 16, 3)))
    art = stablecore_client.upload(path)["id"]
    with pytest.raises(ApiError) as e:
        stablecore_client.submit(SPEC, {"rotate": 1e6}, {"image": art})
    assert e.value.status == 422 and e.value.field == "params.rotate"
    with pytest.raises(ApiError) as e:
        stablecore_client.submit(SPEC, {"border": "mirror"}, {"image": art})
    assert e.value.field == "params.border"
    with pytest.raises(ApiError) as e:
        stablecore_client.submit(SPEC, {"fill": "red"}, {"image": art})
    assert e.value.field == "params.fill"
    with pytest.raises(ApiError) as e:
        stablecore_client.submit(SPEC, {"zoom": 2}, {"image": art})
    assert e.value.field == "params.zoom"
    with pytest.raises(ApiError) as e:
        stablecore_client.submit(SPEC, {}, {})
    assert e.value.field == "inputs.image"
    text = stablecore_client.upload(_text(tmp_path))["id"]
    with pytest.raises(ApiError) as e:
        stablecore_client.submit(SPEC, {}, {"image": text})
    assert e.value.field == "inputs.image" and "text" in e.value.detail
    # a crop window that starts past the canvas is caught when the job runs
    job = stablecore_client.run(SPEC, {"crop_x": 40}, {"image": art})
    assert job["state"] == "failed" and "crop leaves nothing" in job["error"]
    job = stablecore_client.run(SPEC, {"scale": 100, "expand": True}, {"image": art})
    assert job["state"] == "succeeded"
    job = stablecore_client.run(SPEC, {"crop_width": 30000, "crop_height": 30000},
                                {"image": art})
    assert job["state"] == "failed" and "limit" in job["error"]


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "note.txt"
    path.write_text("not an image")
    return path
