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


def test_loras_switch_without_a_reload(client: Client, tmp_path: Path) -> None:
    spec = client.specs()
    txt = next(s for s in spec if s["name"] == "sd.txt2img")
    assert "loras" in txt["batch"]
    assert set(txt["params"]["$defs"]["LoraWeight"]["properties"]["name"]["enum"]) == {
        "broken", "grain", "grain-kohya", "loha", "xl/grain", "xl/grain-kohya"}
    base = image(client, {"prompt": "fox"}, tmp_path)
    before = loads(client)
    grain = image(client, {"prompt": "fox", "loras": [{"name": "grain", "weight": 1}]}, tmp_path)
    assert not np.array_equal(grain, base)
    zero = image(client, {"prompt": "fox", "loras": [{"name": "grain", "weight": 0}]}, tmp_path)
    assert np.array_equal(zero, base)
    kohya = image(client, {"prompt": "fox", "loras": [{"name": "grain-kohya"}]}, tmp_path)
    assert np.array_equal(kohya, grain)  # the same weights in the A1111/kohya layout
    tagged = image(client, {"prompt": "fox<lora:grain:1>"}, tmp_path)
    assert np.array_equal(tagged, grain)
    half = image(client, {"prompt": "fox<lora:grain:0.5>"}, tmp_path)
    assert not np.array_equal(half, grain) and not np.array_equal(half, base)
    assert np.array_equal(image(client, {"prompt": "fox"}, tmp_path), base)  # bit for bit
    assert loads(client) == before  # no model was loaded again
    xl = {"model": "tiny-sdxl", "prompt": "fox"}
    assert not np.array_equal(image(client, {**xl, "loras": [{"name": "xl/grain-kohya"}]},
                                    tmp_path), image(client, xl, tmp_path))


def test_bad_files_fail_clearly(client: Client) -> None:
    job = client.run("sd.txt2img", {**SMALL, "loras": [{"name": "broken"}]})
    assert job["state"] == "failed"
    assert "cannot load LoRA file" in job["error"] and "broken.safetensors" in job["error"]
    job = client.run("sd.txt2img", {**SMALL, "prompt": "x <lora:loha:1>"})
    assert job["state"] == "failed" and "loha.safetensors: ValueError: it is a LyCORIS LoHa" in \
        job["error"]
    job = client.run("sd.txt2img", {**SMALL, "prompt": "x <lora:nothing-here:1>"})
    assert job["state"] == "failed"
    assert "no LoRA 'nothing-here'" in job["error"] and "grain-kohya" in job["error"]
    job = client.run("sd.txt2img", {**SMALL, "prompt": "fox, broken-words"})
    assert job["state"] == "failed"
    assert "cannot load embedding file" in job["error"] and "broken-words.pt" in job["error"]


def test_embeddings_are_used_by_name(client: Client, tmp_path: Path) -> None:
    plain = image(client, {"prompt": "fox"}, tmp_path)
    glow = image(client, {"prompt": "fox glow"}, tmp_path)
    assert not np.array_equal(glow, plain)
    # shine holds glow's vectors: the words differ, the conditioning does not
    assert np.array_equal(image(client, {"prompt": "fox shine"}, tmp_path), glow)
    assert np.array_equal(image(client, {"prompt": "fox"}, tmp_path), plain)
    xl = {"model": "tiny-sdxl"}
    assert not np.array_equal(image(client, {**xl, "prompt": "fox xlglow"}, tmp_path),
                              image(client, {**xl, "prompt": "fox"}, tmp_path))


def test_hires_fix(client: Client, tmp_path: Path) -> None:
    base = {"prompt": "fox", "seed": 4}
    for upscaler in ("latent", "lanczos"):
        job = run_ok(client, "sd.txt2img", {**base, "hires_scale": 2, "hires_steps": 2,
                                            "hires_denoise": 0.5, "hires_upscaler": upscaler})
        assert pixels(client, job, tmp_path).shape == (64, 64, 3)
        fields = info(client, job, tmp_path).splitlines()[-1]
        assert "Size: 32x32" in fields  # the base size, as A1111 writes it
        assert ("Denoising strength: 0.5, Hires upscale: 2, Hires steps: 2, Hires upscaler: "
                f"{upscaler.capitalize()}") in fields
        events = list(client.events(job["id"]))
        steps = [e["data"] for e in events if e["type"] == "job.progress"]
        assert steps[-1]["step"] == steps[-1]["total"] == 3 + 2


def test_controlnet_with_canny(client: Client, tmp_path: Path) -> None:
    photo = np.zeros((40, 48, 3), np.uint8)
    photo[8:32, 12:36] = (230, 200, 40)  # a yellow square on black
    source = tmp_path / "photo.png"
    PIL.Image.fromarray(photo).save(source)
    edges = client.run("sd.canny", {"low": 50, "high": 150}, {"image": source})
    assert edges["state"] == "succeeded", edges["error"]
    lines = pixels(client, edges, tmp_path)
    assert set(np.unique(lines)) == {0, 255}
    assert lines[20, 10:14].max() == 255 and lines[20, 24].max() == 0  # the square's edge
    control = {"control": edges["outputs"]["image"]["id"]}  # chained by artifact id
    base = image(client, {"prompt": "fox"}, tmp_path)
    on = run_ok(client, "sd.txt2img", {"prompt": "fox", "seed": 4, "controlnet": "tiny-canny"},
                control)
    assert not np.array_equal(pixels(client, on, tmp_path), base)
    assert ("ControlNet 0: \"Model: tiny-canny, Weight: 1, Guidance Start: 0, Guidance End: 1\""
            in info(client, on, tmp_path))
    off = image(client, {"prompt": "fox", "controlnet": "tiny-canny", "control_strength": 0},
                tmp_path, inputs=control)
    assert np.array_equal(off, base)
    late = image(client, {"prompt": "fox", "controlnet": "tiny-canny", "control_start": 0.5},
                 tmp_path, inputs=control)
    assert not np.array_equal(late, base) and not np.array_equal(late, pixels(client, on,
                                                                                tmp_path))
    redo = image(client, {"prompt": "fox", "strength": 0.7, "controlnet": "tiny-canny"},
                 tmp_path, "sd.img2img", {"image": source, **control})
    assert redo.shape == (32, 32, 3)
    xl = {"model": "tiny-sdxl", "prompt": "fox"}
    assert not np.array_equal(image(client, {**xl, "controlnet": "xl/tiny-canny"}, tmp_path,
                                    inputs=control), image(client, xl, tmp_path))
    bad = client.run("sd.txt2img", {**SMALL, "controlnet": "broken"}, control)
    assert bad["state"] == "failed"
    assert "cannot load ControlNet" in bad["error"] and "broken.safetensors" in bad["error"]
    missing = client.run("sd.txt2img", {**SMALL, "controlnet": "tiny-canny"})
    assert missing["state"] == "failed" and "needs a `control` image" in missing["error"]


def test_outpaint_keeps_the_original(client: Client, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    source = tmp_path / "photo.png"
    PIL.Image.fromarray(photo).save(source)
    job = client.run("sd.outpaint", {"model": "tiny-sd", "steps": 3, "scheduler": "euler",
                                     "prompt": "sky", "seed": 1, "left": 16, "top": 8,
                                     "right": 5, "mask_blur": 4}, {"image": source})
    assert job["state"] == "succeeded", job["error"]
    out = pixels(client, job, tmp_path)
    assert out.shape == (32, 56, 3)  # 24+8 high; 16+32+5 = 53 wide, grown to 56
    assert np.array_equal(out[8:32, 16:48], photo)
    assert not np.array_equal(out[:8, :16], np.broadcast_to(photo[0, 0], (8, 16, 3)))
    assert "Size: 56x32" in info(client, job, tmp_path)
    none = client.run("sd.outpaint", {"model": "tiny-sd"}, {"image": source})
    assert none["state"] == "failed" and "at least one side" in none["error"]


def test_read_params_from_png_and_jpeg(client: Client, tmp_path: Path) -> None:
    made = run_ok(client, "sd.txt2img", {"prompt": "a (red:1.2) fox", "seed": 9,
                                         "loras": [{"name": "grain", "weight": 0.5}]})
    job = client.run("sd.read_params", {}, {"image": made["outputs"]["image"]["id"]})
    assert job["state"] == "succeeded", job["error"]
    assert job["outputs"]["json"]["kind"] == "json"
    got = job["outputs"]["json"]["value"]
    assert got["spec"] == "sd.txt2img"
    again = run_ok(client, got["spec"], got["params"])  # "use these again"
    assert np.array_equal(pixels(client, again, tmp_path), pixels(client, made, tmp_path))
    text = "a castle\nNegative prompt: fog\nSteps: 25, Sampler: Euler a, CFG scale: 7, Seed: 3, " \
           "Size: 512x512, Model: sd15"
    exif = PIL.Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + text.encode("utf-16-be")
    jpeg = tmp_path / "a1111.jpg"
    PIL.Image.new("RGB", (16, 16)).save(jpeg, exif=exif)
    job = client.run("sd.read_params", {}, {"image": jpeg})
    assert job["state"] == "succeeded", job["error"]
    assert job["outputs"]["json"]["value"]["params"] == {
        "prompt": "a castle", "negative_prompt": "fog", "steps": 25, "scheduler": "euler_a",
        "guidance_scale": 7.0, "seed": 3, "width": 512, "height": 512, "model": "sd15"}
    plain = tmp_path / "plain.png"
    PIL.Image.new("RGB", (8, 8)).save(plain)
    job = client.run("sd.read_params", {}, {"image": plain})
    assert job["state"] == "failed" and "carries no generation parameters" in job["error"]


def test_sdxl_refiner_takes_over(client: Client, tmp_path: Path) -> None:
    xl = {"model": "tiny-sdxl", "prompt": "fox", "steps": 5}
    base = image(client, xl, tmp_path)
    job = run_ok(client, "sd.txt2img", {**xl, "seed": 4, "refiner": "tiny-sdxl-refiner",
                                        "refiner_switch": 0.6})
    refined = pixels(client, job, tmp_path)
    steps = [e["data"] for e in client.events(job["id"]) if e["type"] == "job.progress"]
    assert steps[-1]["step"] == steps[-1]["total"] == 5  # the model's steps and the refiner's
    assert refined.shape == base.shape and not np.array_equal(refined, base)
    assert "Refiner: tiny-sdxl-refiner, Refiner switch at: 0.6" in info(client, job, tmp_path)
    later = image(client, {**xl, "refiner": "tiny-sdxl-refiner", "refiner_switch": 0.8},
                  tmp_path)
    assert not np.array_equal(later, refined)
    alone = client.run("sd.txt2img", {**SMALL, "model": "tiny-sdxl-refiner"})
    assert alone["state"] == "failed" and "is an SDXL refiner" in alone["error"]
    sd15 = client.run("sd.txt2img", {**SMALL, "refiner": "tiny-sdxl-refiner"})
    assert sd15["state"] == "failed" and "a refiner works with SDXL models" in sd15["error"]


def test_lora_sets_never_share_a_diffusers_call(client: Client, tmp_path: Path) -> None:
    # a long job holds the worker while three jobs queue; cancelling it frees the worker
    blocker = client.submit("sd.txt2img", {"model": "tiny-sd", "width": 256, "height": 256,
                                           "steps": 150})
    for event in client.events(blocker["id"]):
        if event["type"] == "job.progress":
            break
    plain = {**SMALL, "prompt": "fox", "seed": 4}
    params = [plain, {**plain, "loras": [{"name": "grain"}]},  # another batch key
              {**plain, "prompt": "fox<lora:grain:1>"}]  # the same key as plain
    queued = [client.submit("sd.txt2img", p)["id"] for p in params]
    client.cancel(blocker["id"])
    jobs = [client.wait(i) for i in queued]
    sizes = [[e["data"]["batch"] for e in client.events(j["id"]) if e["type"] == "job.started"]
             for j in jobs]
    assert sizes == [[2], [1], [2]]
    none, param, tagged = (pixels(client, j, tmp_path) for j in jobs)
    # in one batch, the tagged job still ran in a diffusers call of its own with the LoRA
    assert np.array_equal(tagged, param) and not np.array_equal(tagged, none)
    assert np.array_equal(none, image(client, {"prompt": "fox"}, tmp_path))
