"""LoRA figures: what a LoRA switch costs next to a model load, and a LoRA job through the
server next to the same diffusers calls made directly.

1. Switch cost, in this process, with the plugin's own loader and LoRA code: load the model
   (a diffusers folder on disk), then time a first LoRA (file read, adapter injected), a
   switch to a second loaded LoRA, a switch back and LoRAs off. `--arch sd15` uses SD 1.5's
   architecture with random weights (bench/sd_gpu.py's configs, fp32 on the CPU) and rank-16
   LoRAs on every attention projection; `--arch tiny` the tiny test model.
2. Through the server: the tiny model with a LoRA, 20 steps, Euler; rounds alternate a direct
   diffusers call (the LoRA loaded once with `load_lora_weights`) and a job with
   `loras=[{"name": "a"}]` (target <= 1.05).

Prints figures, asserts nothing. Run: `.venv/bin/python plugins/sd/bench/sd_lora.py
[--arch sd15] [--runs 10] [--size 64] [--threads 1]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from sc_sd.loader import load
from sc_sd.loras import activate
from sc_sd.options import Options
from sc_sd.sources import Source
from sc_sd.tiny import make_lora, make_tiny

from stablecore.testing import ServerProcess

PROMPT = "a lighthouse on a cliff at dusk"
REPO = Path(__file__).resolve().parents[3]


def sd15(folder: Path) -> None:
    """SD 1.5's architecture, random fp32 weights, written by bench/sd_gpu.py's builder."""
    spec = importlib.util.spec_from_file_location("sd_gpu", REPO / "bench" / "sd_gpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(folder, "cpu")


def switch_cost(models: Path, name: str, rank: int, runs: int) -> None:
    options = Options(models_dir=models, dtype="float32")
    loads = []
    for _ in range(runs):
        start = time.perf_counter()
        loaded = load(name, Source("folder", str(models / name)), options, "cpu")
        loads.append(time.perf_counter() - start)
    make_lora(loaded.base, models / "loras", "a", seed=1, rank=rank)
    make_lora(loaded.base, models / "loras", "b", seed=2, rank=rank)
    size = (models / "loras" / "a.safetensors").stat().st_size / 2**20
    times: dict[str, list[float]] = {"first use": [], "switch": [], "off": []}
    for _ in range(runs):
        loaded.adapters.clear()
        loaded.base.delete_adapters(list(loaded.base.get_list_adapters().get("unet", [])))
        for label, loras in (("first use", (("a", 1.0),)), ("first use", (("b", 1.0),)),
                             ("switch", (("a", 0.8),)), ("switch", (("b", 1.0),)),
                             ("off", ())):
            start = time.perf_counter()
            activate(loaded, loras, options)
            times[label].append(time.perf_counter() - start)
    load_s = statistics.median(loads)
    print(f"{name}: model load {load_s * 1000:.0f} ms (median of {runs}, from the page cache); "
          f"LoRA rank {rank}, {size:.1f} MB")
    for label, values in times.items():
        med = statistics.median(values)
        print(f"  LoRA {label:9s} {med * 1000:8.1f} ms  = {med / load_s:6.1%} of a model load")


def served_ratio(models: Path, size: int, steps: int, runs: int, threads: int) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(models / "tiny-sd")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(models / "loras" / "a.safetensors"), adapter_name="a")
    pipe.set_adapters(["a"], [1.0])

    def direct(seed: int) -> float:
        start = time.perf_counter()
        pipe(PROMPT, negative_prompt="", width=size, height=size, num_inference_steps=steps,
             guidance_scale=7.0, generator=torch.Generator("cpu").manual_seed(seed))
        return time.perf_counter() - start

    params = {"prompt": PROMPT, "model": "tiny-sd", "width": size, "height": size,
              "steps": steps, "guidance_scale": 7.0, "scheduler": "euler",
              "loras": [{"name": "a"}]}
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", sd_models_dir=models)
        if threads:
            server.env["OMP_NUM_THREADS"] = str(threads)  # the worker's torch threads
        with server, server.client() as client:

            def served(seed: int) -> float:
                start = time.perf_counter()
                job = client.run("sd.txt2img", {**params, "seed": seed})
                if job["state"] != "succeeded":
                    raise SystemExit(f"job failed: {job['error']}")
                return time.perf_counter() - start

            direct(0), served(0)  # warm-up: imports, model and LoRA load
            times: dict[str, list[float]] = {"direct": [], "server": []}
            for seed in range(1, runs + 1):
                times["direct"].append(direct(seed))
                times["server"].append(served(seed))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"tiny SD + LoRA, {size}x{size}, {steps} steps, Euler, CPU "
          f"({torch.get_num_threads()} threads), {runs} runs")
    for k, v in times.items():
        print(f"  {k:7s} median {med[k] * 1000:7.1f} ms/image  (min {min(v) * 1000:.1f})")
    print(f"  ratio server/direct: {med['server'] / med['direct']:.3f} of medians, "
          f"{min(times['server']) / min(times['direct']):.3f} of minimums  (target <= 1.05)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=("tiny", "sd15"), default="tiny")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads in both processes (0 = torch's default)")
    ap.add_argument("--skip-switch", action="store_true", help="only the server comparison")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        make_tiny(models)
        if args.skip_switch:
            pass
        elif args.arch == "sd15":
            sd15(models / "sd15")
            switch_cost(models, "sd15", 16, max(3, args.runs // 3))
        else:
            switch_cost(models, "tiny-sd", 4, args.runs)
        make_lora(StableDiffusionPipeline.from_pretrained(models / "tiny-sd"), models / "loras",
                  "a", seed=1)
        served_ratio(models, args.size, args.steps, args.runs, args.threads)


if __name__ == "__main__":
    main()
