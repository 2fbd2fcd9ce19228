"""The SD plugin's light parts, without a model: settings, model sources, parameters text."""

from __future__ import annotations

from pathlib import Path

import pytest
from sc_sd.infotext import infotext, to_params
from sc_sd.options import Options
from sc_sd.prompts import take_loras, weights
from sc_sd.sources import DEFAULT_HUB_MODEL, choices, resolve, scan


def test_options_from_env() -> None:
    o = Options.from_env({"STABLECORE_SD_MODELS_DIR": "/m", "STABLECORE_SD_MODELS": "a/b, /x.ckpt",
                          "STABLECORE_SD_VAE_TILING": "1", "STABLECORE_SD_MAX_BATCH": "4"})
    assert (o.models_dir, o.extra_models) == (Path("/m"), ("a/b", "/x.ckpt"))
    assert o.vae_tiling and not o.attention_slicing and o.max_batch == 4
    with pytest.raises(ValueError, match="STABLECORE_SD_OFFLOAD='gpu'"):
        Options.from_env({"STABLECORE_SD_OFFLOAD": "gpu"})
    with pytest.raises(ValueError, match="STABLECORE_SD_PREVIEW_EVERY='often'"):
        Options.from_env({"STABLECORE_SD_PREVIEW_EVERY": "often"})


def test_scan_and_resolve(tmp_path: Path) -> None:
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "one.safetensors").write_bytes(b"")
    (tmp_path / "sub" / "one.config").mkdir()
    (tmp_path / "sub" / "one.config" / "model_index.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("")
    assert scan(tmp_path) == ["pipe", "sub/one.safetensors"]
    options = Options(models_dir=tmp_path, extra_models=("org/model",))
    assert choices(options) == ["pipe", "sub/one.safetensors", "org/model"]
    assert choices(Options()) == [DEFAULT_HUB_MODEL]
    assert resolve("pipe", options).kind == "folder"
    one = resolve("sub/one.safetensors", options)
    assert (one.kind, one.config) == ("file", tmp_path / "sub" / "one.config")
    assert resolve("org/model", options).kind == "hub"
    with pytest.raises(ValueError, match="unknown model 'nothing'"):
        resolve("nothing", options)
    with pytest.raises(ValueError, match="no such file"):
        resolve(str(tmp_path / "gone.ckpt"), options)


def test_infotext_quotes_like_a1111() -> None:
    text = infotext(prompt="a, b", negative_prompt="", steps=20, sampler="dpmpp_2m_karras",
                    guidance_scale=7.0, seed=5, width=512, height=768, model="my, model",
                    strength=0.6, version="1.0")
    assert text.splitlines() == [
        "a, b",
        'Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 5, Size: 512x768, '
        'Model: "my, model", Denoising strength: 0.6, Version: stable-core sd 1.0']


def test_prompt_weights_read_like_a1111() -> None:
    assert weights("a (red:1.3) fox, (big) [small] \\(x\\) ((two))") == [
        ("a ", 1.0), ("red", 1.3), (" fox, ", 1.0), ("big", 1.1), (" ", 1.0),
        ("small", 1 / 1.1), (" (x) ", 1.0), ("two", pytest.approx(1.21))]
    assert weights("(unclosed") == [("unclosed", 1.1)]
    assert weights("") == [("", 1.0)]
    assert weights("time: 12:30") == [("time: 12:30", 1.0)]


def test_lora_tags_come_out_of_the_prompt() -> None:
    assert take_loras("a <lora:film grain:0.5> cat <lora:sub/x>") == (
        "a  cat ", [("film grain", 0.5), ("sub/x", 1.0)])
    assert take_loras("no tags") == ("no tags", [])


def test_a1111_text_reads_back_into_params() -> None:
    text = ("a (red:1.2) fox, <lora:grain:0.5>\nin snow\nNegative prompt: blurry, dark\n"
            "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 42, "
            "Size: 512x768, Model hash: abc123, Model: dreamshaper_8, Denoising strength: 0.45, "
            "Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent (bicubic), "
            'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], '
            'Weight: 0.8, Guidance Start: 0.1, Guidance End: 0.9", Version: v1.10.1')
    got = to_params(text)
    assert got["spec"] == "sd.txt2img"
    assert got["params"] == {
        "prompt": "a (red:1.2) fox, <lora:grain:0.5>\nin snow", "negative_prompt": "blurry, dark",
        "steps": 30, "scheduler": "dpmpp_2m_karras", "guidance_scale": 6.5, "seed": 42,
        "width": 512, "height": 768, "model": "dreamshaper_8", "hires_denoise": 0.45,
        "hires_scale": 2.0, "hires_steps": 10, "hires_upscaler": "latent",
        "controlnet": "control_v11p_sd15_canny", "control_strength": 0.8, "control_start": 0.1,
        "control_end": 0.9}
    assert got["other"] == {"Model hash": "abc123", "Version": "v1.10.1"}
    ours = infotext(prompt="p", negative_prompt="", steps=4, sampler="euler_a",
                    guidance_scale=7, seed=1, width=64, height=64, model="m, x", strength=0.5,
                    extra=[("Loras", "<lora:a:1> <lora:b/c:0.5>")])
    assert to_params(ours)["params"] == {
        "prompt": "p", "negative_prompt": "", "steps": 4, "scheduler": "euler_a",
        "guidance_scale": 7.0, "seed": 1, "width": 64, "height": 64, "model": "m, x",
        "strength": 0.5, "loras": [{"name": "a", "weight": 1.0}, {"name": "b/c", "weight": 0.5}]}
