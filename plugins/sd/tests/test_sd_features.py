"""Issue 15 through the real server (conftest.py): prompt weights and long prompts, LoRAs,
embeddings, hires fix, ControlNet, outpaint, reading A1111 parameters, the SDXL refiner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image

from stablecore.client import Client

SMALL = {"model": "tiny-sd", "width": 32, "height": 32, "steps": 3, "scheduler": "euler"}


def run_ok(client: Client, spec: str, params: dict, inputs: dict | None = None) -> dict:
    job = client.run(spec, {**SMALL, **params}, inputs)
    assert job["state"] == "succeeded", job["error"]
    return job


def pixels(client: Client, job: dict, tmp_path: Path, name: str = "image") -> np.ndarray:
    path = client.download(job["outputs"][name]["id"], tmp_path)
    with PIL.Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def image(client: Client, params: dict, tmp_path: Path, spec: str = "sd.txt2img",
          inputs: dict | None = None) -> np.ndarray:
    return pixels(client, run_ok(client, spec, {"seed": 4, **params}, inputs), tmp_path)


def info(client: Client, job: dict, tmp_path: Path) -> str:
    return client.download(job["outputs"]["info"]["id"], tmp_path).read_text()


def loads(client: Client) -> int:
    (w,) = client.workers()
    return w["loads"]


def test_prompt_weights_and_long_prompts(client: Client, tmp_path: Path) -> None:
    plain = image(client, {"prompt": "a red fox"}, tmp_path)
    assert np.array_equal(image(client, {"prompt": "a (red:1) fox"}, tmp_path), plain)
    assert not np.array_equal(image(client, {"prompt": "a (red:1.4) fox"}, tmp_path), plain)
    assert not np.array_equal(image(client, {"prompt": "a [red] fox"}, tmp_path), plain)
    # the tiny tokenizer makes a token of every character: 150 of them are two CLIP windows
    # long, and the words after the first window still count
    long = "x" * 150
    assert not np.array_equal(image(client, {"prompt": long + " red"}, tmp_path),
                              image(client, {"prompt": long + " blue"}, tmp_path))
    job = run_ok(client, "sd.txt2img", {"prompt": "a (red:1.4) fox", "seed": 4})
    assert info(client, job, tmp_path).splitlines()[0] == "a (red:1.4) fox"
