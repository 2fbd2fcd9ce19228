"""SD txt2img on CPU: a job through the server versus the same diffusers call in this process.

The tiny random model from `stable-core sd make-tiny`, 20 steps, Euler. Rounds alternate: one
direct call, then one job submitted over HTTP and awaited over SSE (its PNG, parameters and
previews written as usual). Prints seconds per image for each and their ratio (target <= 1.05).
Prints figures, asserts nothing. Run: `.venv/bin/python bench/sd_cpu.py [--size 128 --runs 10]`;
`--threads 1` keeps torch to one core in both processes, leaving the other to the server.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from sc_sd.tiny import make_tiny

from stablecore.testing import ServerProcess

PROMPT = "a lighthouse on a cliff at dusk"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128, help="width and height in pixels")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=10, help="timed rounds after one warm-up")
    ap.add_argument("--preview-every", type=int, default=5, help="server previews (0 = off)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads in both processes (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        make_tiny(models)
        # 1. the direct call, as a diffusers user writes it
        pipe = StableDiffusionPipeline.from_pretrained(models / "tiny-sd")
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)

        def direct(seed: int) -> float:
            start = time.perf_counter()
            pipe(PROMPT, negative_prompt="", width=args.size, height=args.size,
                 num_inference_steps=args.steps, guidance_scale=7.0,
                 generator=torch.Generator("cpu").manual_seed(seed)).images[0]
            return time.perf_counter() - start

        # 2. the same through the server: one CPU worker, the model warm after the first job
        params = {"prompt": PROMPT, "model": "tiny-sd", "width": args.size, "height": args.size,
                  "steps": args.steps, "guidance_scale": 7.0, "scheduler": "euler"}
        server = ServerProcess(Path(tmp) / "data", sd_models_dir=models,
                               sd_preview_every=args.preview_every)
        if args.threads:
            server.env["OMP_NUM_THREADS"] = str(args.threads)  # the worker's torch threads
        with server, server.client() as client:

            def served(seed: int) -> float:
                start = time.perf_counter()
                job = client.run("sd.txt2img", {**params, "seed": seed})
                elapsed = time.perf_counter() - start
                if job["state"] != "succeeded":
                    raise SystemExit(f"job failed: {job['error']}")
                return elapsed

            direct(0), served(0)  # warm-up: imports, model load, first-call allocations
            times: dict[str, list[float]] = {"direct": [], "server": []}
            for seed in range(1, args.runs + 1):
                times["direct"].append(direct(seed))
                times["server"].append(served(seed))

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"tiny SD, {args.size}x{args.size}, {args.steps} steps, Euler, CPU "
          f"({torch.get_num_threads()} threads), {args.runs} runs, "
          f"previews every {args.preview_every or 'never'}")
    for k, v in times.items():
        print(f"  {k:7s} median {med[k] * 1000:7.1f} ms/image  (min {min(v) * 1000:.1f}, "
              f"max {max(v) * 1000:.1f})")
    extra = statistics.median(s - d for s, d in zip(times["server"], times["direct"], strict=True))
    print(f"  ratio server/direct: {med['server'] / med['direct']:.3f} of medians, "
          f"{min(times['server']) / min(times['direct']):.3f} of minimums  (target <= 1.05)")
    print(f"  server overhead: {extra * 1000:.1f} ms per image (median of paired differences)")


if __name__ == "__main__":
    main()
