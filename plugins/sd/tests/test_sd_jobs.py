"""SD jobs through a real server and CPU worker (conftest.py), on the tiny random models."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from stablecore.client import ApiError, Client

HUB_ID = "nobody-here/not-cached-sd-model"
SMALL = {"width": 32, "height": 32, "steps": 4, "scheduler": "euler_a"}
SLOW = {"model": "tiny-sd", "width": 256, "height": 256, "steps": 150}  # seconds, on CPU


def run_ok(client: Client, spec: str, params: dict, inputs: dict | None = None) -> dict:
    job = client.run(spec, {"model": "tiny-sd", **SMALL, **params}, inputs)
    assert job["state"] == "succeeded", job["error"]
    return job


def pixels(client: Client, job: dict, tmp_path: Path, name: str = "image") -> np.ndarray:
    path = client.download(job["outputs"][name]["id"], tmp_path)
    with PIL.Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def info(client: Client, job: dict, tmp_path: Path) -> str:
    return client.download(job["outputs"]["info"]["id"], tmp_path).read_text()


def worker(client: Client) -> dict:
    (w,) = client.workers()
    return w


def wait_for_step(client: Client, job_id: str, step: int) -> int:
    """Follow the job's events until it reports `step` or more; return the step seen."""
    for event in client.events(job_id):
        if event["type"] == "job.progress" and event["data"]["step"] >= step:
            return event["data"]["step"]
        assert event["type"] in ("job.queued", "job.started", "job.progress", "job.log"), event
    raise AssertionError(f"job {job_id} ended before step {step}")


def test_schema_lists_the_models_folder_and_configured_ids(client: Client) -> None:
    specs = {s["name"]: s for s in client.specs()}
    assert {"sd.txt2img", "sd.img2img", "sd.inpaint"} <= set(specs)
    model = specs["sd.txt2img"]["params"]["properties"]["model"]
    assert model["enum"] == ["broken.safetensors", "tiny-sd", "tiny-sd.safetensors", "tiny-sdxl",
                             "tiny-sdxl-refiner", HUB_ID]
    assert specs["sd.inpaint"]["inputs"]["mask"]["kind"] == "mask"
    assert specs["sd.img2img"]["outputs"]["image"]["kind"] == "image"
    assert "strength" in specs["sd.img2img"]["batch"]


def test_txt2img_writes_a1111_parameters(client: Client, tmp_path: Path) -> None:
    job = run_ok(client, "sd.txt2img", {"prompt": "a red fox", "negative_prompt": "blurry",
                                        "seed": 7, "guidance_scale": 6.5})
    text = info(client, job, tmp_path)
    assert text.splitlines() == [
        "a red fox", "Negative prompt: blurry",
        "Steps: 4, Sampler: Euler a, CFG scale: 6.5, Seed: 7, Size: 32x32, Model: tiny-sd, "
        f"Version: stable-core sd {version('stablecore-sd')}"]
    png = client.download(job["outputs"]["image"]["id"], tmp_path)
    with PIL.Image.open(png) as im:
        assert im.size == (32, 32)
        lines = im.info["parameters"].splitlines()
    # what every A1111 reader needs; the rest of the line depends on the core's writer
    assert lines[:2] == ["a red fox", "Negative prompt: blurry"]
    assert "Steps: 4" in lines[2] and "Seed: 7" in lines[2]


def test_progress_has_previews(client: Client) -> None:
    job = client.submit("sd.txt2img", {"model": "tiny-sd", **SMALL, "steps": 6, "seed": 1})
    events = []
    result = client.wait(job["id"], events.append)
    assert result["state"] == "succeeded", result["error"]
    steps = [e["data"] for e in events if e["type"] == "job.progress"]
    assert steps[-1]["step"] == steps[-1]["total"] == 6
    assert any(s["preview"] for s in steps)


def test_same_seed_same_image_and_random_seed_is_reported(client: Client,
                                                          tmp_path: Path) -> None:
    a = pixels(client, run_ok(client, "sd.txt2img", {"prompt": "x", "seed": 11}), tmp_path)
    b = pixels(client, run_ok(client, "sd.txt2img", {"prompt": "x", "seed": 11}), tmp_path)
    c = pixels(client, run_ok(client, "sd.txt2img", {"prompt": "x", "seed": 12}), tmp_path)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    job = run_ok(client, "sd.txt2img", {"prompt": "x", "seed": -1})
    seed = int(re.search(r"Seed: (\d+)", info(client, job, tmp_path))[1])
    assert client.job(job["id"])["params"]["seed"] == seed  # the core keeps the used seed
    again = run_ok(client, "sd.txt2img", {"prompt": "x", "seed": seed})
    assert np.array_equal(pixels(client, job, tmp_path), pixels(client, again, tmp_path))


def test_num_images_counts_seeds_up(client: Client, tmp_path: Path) -> None:
    many = run_ok(client, "sd.txt2img", {"prompt": "y", "seed": 20, "num_images": 3})
    assert set(many["outputs"]) == {"image", "images", "info"}
    assert len(many["outputs"]["images"]) == 3
    third = client.download(many["outputs"]["images"][2]["id"], tmp_path)
    alone = run_ok(client, "sd.txt2img", {"prompt": "y", "seed": 22})
    with PIL.Image.open(third) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), pixels(client, alone, tmp_path))
    assert "images" not in alone["outputs"]


def test_single_file_loads_the_same_weights_as_the_folder(client: Client,
                                                          tmp_path: Path) -> None:
    params = {"prompt": "same weights", "seed": 3}
    folder = run_ok(client, "sd.txt2img", params)
    single = run_ok(client, "sd.txt2img", {**params, "model": "tiny-sd.safetensors"})
    assert np.array_equal(pixels(client, folder, tmp_path), pixels(client, single, tmp_path))


def test_img2img_and_inpaint(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    PIL.Image.new("RGB", (48, 40), (200, 30, 30)).save(source)
    mask = tmp_path / "mask.png"
    m = PIL.Image.new("L", (48, 40), 0)
    m.paste(255, (0, 0, 24, 40))
    m.save(mask)
    redo = run_ok(client, "sd.img2img", {"prompt": "p", "strength": 0.5, "seed": 1},
                  {"image": source})
    assert pixels(client, redo, tmp_path).shape == (32, 32, 3)
    assert "Denoising strength: 0.5" in info(client, redo, tmp_path)
    paint = run_ok(client, "sd.inpaint", {"prompt": "p", "seed": 1},
                   {"image": source, "mask": mask})
    assert pixels(client, paint, tmp_path).shape == (32, 32, 3)


def test_sdxl_runs_every_mode(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    PIL.Image.new("RGB", (32, 32), (20, 90, 200)).save(source)
    mask = tmp_path / "mask.png"
    PIL.Image.new("L", (32, 32), 255).save(mask)
    params = {"model": "tiny-sdxl", "prompt": "p", "seed": 5}
    for spec, inputs in (("sd.txt2img", None), ("sd.img2img", {"image": source}),
                         ("sd.inpaint", {"image": source, "mask": mask})):
        job = run_ok(client, spec, params, inputs)
        assert pixels(client, job, tmp_path).shape == (32, 32, 3)
        assert "Model: tiny-sdxl" in info(client, job, tmp_path)


def test_second_job_loads_nothing(client: Client) -> None:
    run_ok(client, "sd.txt2img", {"seed": 1})
    before = worker(client)
    run_ok(client, "sd.txt2img", {"seed": 2})
    after = worker(client)
    assert after["loads"] == before["loads"]
    assert after["hits"] == before["hits"] + 1
    assert "sd/tiny-sd" in {m["key"] for m in after["models"]}


def test_batch_of_four_equals_each_alone(client: Client, tmp_path: Path) -> None:
    # a long job holds the worker while four compatible jobs queue; cancelling it frees the
    # worker, which then takes the four as one batch
    blocker = client.submit("sd.txt2img", SLOW)
    wait_for_step(client, blocker["id"], 1)
    params = [{"model": "tiny-sd", **SMALL, "prompt": f"thing {i}", "seed": 100 + i}
              for i in range(4)]
    queued = [client.submit("sd.txt2img", p)["id"] for p in params]
    client.cancel(blocker["id"])
    batched = [client.wait(i) for i in queued]
    for job in batched:
        assert job["state"] == "succeeded", job["error"]
        events = list(client.events(job["id"]))
        assert [e["data"]["batch"] for e in events if e["type"] == "job.started"] == [4]
    for job, p in zip(batched, params, strict=True):
        alone = client.run("sd.txt2img", p)
        together, single = pixels(client, job, tmp_path), pixels(client, alone, tmp_path)
        # equal up to float rounding, which may differ with the batch size in CPU kernels
        assert np.abs(together - single).max() <= 2
        assert info(client, job, tmp_path) == info(client, alone, tmp_path)


def test_cancel_stops_within_a_step(client: Client) -> None:
    before = worker(client)
    job = client.submit("sd.txt2img", SLOW)
    wait_for_step(client, job["id"], 2)
    client.cancel(job["id"])
    events: list[dict] = []
    result = client.wait(job["id"], events.append)
    assert result["state"] == "cancelled"
    last = max(e["data"]["step"] for e in events if e["type"] == "job.progress")
    assert last < SLOW["steps"]
    after = worker(client)
    # the job stopped itself at a step: the worker was not killed and keeps its model
    assert (after["pid"], after["restarts"]) == (before["pid"], before["restarts"])
    assert "sd/tiny-sd" in {m["key"] for m in after["models"]}


def test_offline_hub_id_fails_clearly(client: Client) -> None:
    job = client.run("sd.txt2img", {**SMALL, "model": HUB_ID})
    assert job["state"] == "failed"
    assert HUB_ID in job["error"] and "HF_HUB_OFFLINE" in job["error"]


def test_corrupt_file_fails_clearly(client: Client) -> None:
    job = client.run("sd.txt2img", {**SMALL, "model": "broken.safetensors"})
    assert job["state"] == "failed"
    assert "broken.safetensors is not a valid safetensors file" in job["error"]


def test_bad_params_are_refused_at_submit(client: Client) -> None:
    with pytest.raises(ApiError) as e:
        client.submit("sd.txt2img", {**SMALL, "width": 33})
    assert e.value.field == "params.width"
    with pytest.raises(ApiError) as e:
        client.submit("sd.txt2img", {**SMALL, "model": "not-a-model"})
    assert e.value.field == "params.model"


def test_strength_without_steps_fails_clearly(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    PIL.Image.new("RGB", (32, 32)).save(source)
    job = client.run("sd.img2img", {"model": "tiny-sd", **SMALL, "steps": 1, "strength": 0.5},
                     {"image": source})
    assert job["state"] == "failed"
    assert "strength 0.5 with 1 steps leaves no denoising step" in job["error"]
