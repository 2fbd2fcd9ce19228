"""SD 1.5 on a GPU: jobs through the server versus raw diffusers, in one run.

The pipeline has SD 1.5's published architecture (configs below) with random weights, since
nothing can be downloaded; speed does not depend on the weights' values. fp16, 512x512,
20 steps, Euler. Measures:
- raw diffusers in this process: seconds per image at batch 1, images/s at batch 8;
- the server (one CUDA worker): seconds per job one at a time, the bs1 ratio raw/server
  (target >= 0.97), and images/s with 24 compatible jobs queued at once, which the engine
  runs as batches of 8 (target >= 3.5x the server's bs1 rate).
Reference (raw diffusers, H200): 0.642 s per image at bs1, 5.97 images/s at bs8.

Prints figures, asserts nothing. Run on a GPU machine: `.venv/bin/python bench/sd_gpu.py`.
`--device cpu --size 64 --steps 2 --runs 1` walks the same path on a CPU, to check the script.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPT = "a lighthouse on a cliff at dusk, oil painting"

# SD 1.5's published component configs (stable-diffusion-v1-5/stable-diffusion-v1-5).
UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False,
    flip_sin_to_cos=True, freq_shift=0, layers_per_block=2, downsample_padding=1,
    mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5,
    cross_attention_dim=768, attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                      "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                    "CrossAttnUpBlock2D"))
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, act_fn="silu",
    norm_num_groups=32, sample_size=512, scaling_factor=0.18215,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4)
TEXT_ENCODER = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, projection_dim=768)
SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False)


def build(folder: Path, device: str) -> None:
    """Write an SD 1.5-architecture pipeline with random fp16 weights as a diffusers folder."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from sc_sd.tiny import make_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:  # byte-level: no vocabulary to download
        tokenizer = make_tokenizer(Path(tmp))
    with torch.device(device):  # random init on the GPU takes seconds, not minutes
        unet = UNet2DConditionModel(**UNET)
        vae = AutoencoderKL(**VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            **TEXT_ENCODER, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler.from_config(SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)


def raw(folder: Path, device: str, size: int, steps: int, runs: int) -> dict[str, float]:
    """Plain diffusers, as a user writes it: seconds per image at bs1, images/s at bs8."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype).to(device)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def call(n: int, seed: int) -> float:
        start = time.perf_counter()
        images = pipe([PROMPT] * n, negative_prompt=[""] * n, width=size, height=size,
                      num_inference_steps=steps, guidance_scale=7.0,
                      generator=[torch.Generator("cpu").manual_seed(seed + i)
                                 for i in range(n)]).images
        assert len(images) == n
        return time.perf_counter() - start

    call(1, 0), call(1, 0), call(8, 0)  # warm-up
    bs1 = statistics.median(call(1, s) for s in range(1, runs + 1))
    bs8 = statistics.median(call(8, s) for s in range(1, max(2, runs // 3) + 1))
    pipe = None  # free the GPU memory for the server's worker
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"bs1_s": bs1, "bs8_ips": 8 / bs8}


def served(models: Path, data: Path, device: str, size: int, steps: int,
           runs: int) -> dict[str, float]:
    """The same through the server: jobs one at a time, then 24 queued at once."""
    from stablecore.testing import ServerProcess

    params = {"prompt": PROMPT, "model": "sd15-random", "width": size, "height": size,
              "steps": steps, "guidance_scale": 7.0, "scheduler": "euler"}
    with ServerProcess(data, workers=device, sd_models_dir=models) as server, \
            server.client() as client:

        def one(seed: int) -> float:
            start = time.perf_counter()
            job = client.run("sd.txt2img", {**params, "seed": seed})
            if job["state"] != "succeeded":
                raise SystemExit(f"job failed: {job['error']}")
            return time.perf_counter() - start

        one(0), one(0)  # warm-up: worker imports, model load, first-call allocations
        bs1 = statistics.median(one(s) for s in range(1, runs + 1))
        # a long job holds the worker while 24 jobs queue, so they run as 3 batches of 8
        blocker = client.submit("sd.txt2img", {**params, "steps": 150, "seed": 0})
        while client.job(blocker["id"])["state"] == "queued":
            time.sleep(0.05)
        ids = [client.submit("sd.txt2img", {**params, "seed": 100 + i})["id"]
               for i in range(24)]
        client.cancel(blocker["id"])
        jobs = [client.wait(i) for i in ids]
        if any(j["state"] != "succeeded" for j in jobs):
            raise SystemExit(f"batched jobs failed: {[j['error'] for j in jobs]}")
        span = max(j["finished"] for j in jobs) - min(j["started"] for j in jobs)
        batches = sorted({j["started"] for j in jobs})
    return {"bs1_s": bs1, "queued_ips": len(jobs) / span, "batches": len(batches)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda:0", help="cuda:N, or cpu to check the script")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=10, help="timed bs1 runs")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"sd_gpu.py needs a CUDA GPU, and torch {torch.__version__} sees none "
                 f"(built for CUDA {torch.version.cuda}). Run it on a GPU machine, or pass "
                 "--device cpu --size 64 --steps 2 --runs 1 to check the script on a CPU.")
    card = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
            else "CPU")
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        t = time.perf_counter()
        build(models / "sd15-random", args.device)
        print(f"built SD 1.5-architecture pipeline (random fp16 weights) in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        r = raw(models / "sd15-random", args.device, args.size, args.steps, args.runs)
        print(f"raw diffusers: {r['bs1_s']:.3f} s/image at bs1, {r['bs8_ips']:.2f} images/s "
              "at bs8", flush=True)
        s = served(models, Path(tmp) / "data", args.device, args.size, args.steps, args.runs)
    print(f"\nSD 1.5 architecture, {args.size}x{args.size}, {args.steps} steps, Euler, on {card}")
    print(f"  raw diffusers   bs1 {r['bs1_s']:.3f} s/image ({1 / r['bs1_s']:.2f} images/s), "
          f"bs8 {r['bs8_ips']:.2f} images/s")
    print(f"  server          bs1 {s['bs1_s']:.3f} s/job   ({1 / s['bs1_s']:.2f} images/s), "
          f"24 queued {s['queued_ips']:.2f} images/s in {s['batches']:.0f} batches")
    print(f"  bs1 speed server/raw: {r['bs1_s'] / s['bs1_s']:.3f}  (target >= 0.97)")
    print(f"  queued vs server bs1: {s['queued_ips'] * s['bs1_s']:.2f}x  (target >= 3.5x)")


if __name__ == "__main__":
    main()
