"""A 3-node transform2d chain on a 1080p frame: as a workflow through the server versus the
same three library calls in one process. Prints figures and their ratio, asserts nothing.

Run: `.venv/bin/python bench/workflow_chain.py [--runs 5]`. Every node has `cache: false`,
so each run computes all three nodes (the cache would otherwise answer at once).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
from sc_transform2d import transform

from stablecore.context import Context, ModelCache
from stablecore.spec import inspect_job
from stablecore.testing import ServerProcess
from stablecore.workflow import Workflow

STEPS = [{"rotate": 3.0}, {"scale": 1.1}, {"translate_x": 12.5, "flip": "horizontal"}]


def direct(image: PIL.Image.Image, tmpdir: Path) -> float:
    """The job function called as a library: params validated, defaults filled, as the
    worker does, with a do-nothing progress report."""
    spec = transform.__stablecore_job__
    inspect_job(spec, "transform2d")
    ctx = Context(plugin="bench", device="cpu", cache=ModelCache(1024), tmpdir=tmpdir,
                  report=lambda step, total, preview: None, is_cancelled=lambda: False,
                  log=logging.getLogger("bench"))
    start = time.perf_counter()
    for params in STEPS:
        model = spec.params_model.model_validate(params)
        image = transform(ctx, image, **{k: getattr(model, k) for k in type(model).model_fields})
    return time.perf_counter() - start


def graph(artifact: str) -> Workflow:
    wf = Workflow("chain")
    node = None
    for i, params in enumerate(STEPS):
        source = {"image": node.image} if node else {}
        node = wf.add("transform2d.transform", f"t{i}", cache=False,
                      inputs={} if node else {"image": artifact}, **source, **params)
    return wf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    frame = PIL.Image.fromarray(rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8))
    with tempfile.TemporaryDirectory() as tmp:
        local = statistics.median(direct(frame, Path(tmp)) for _ in range(args.runs))
        path = Path(tmp) / "frame.png"
        frame.save(path)
        with ServerProcess(Path(tmp) / "data") as server, server.client() as client:
            art = client.upload(path)["id"]
            client.run_workflow(graph(art))  # warm: the worker imports, decodes once
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                run = client.run_workflow(graph(art))
                times.append(time.perf_counter() - start)
                assert run["state"] == "succeeded", run
    served = statistics.median(times)
    print(f"3 transforms of a 1080p frame, in process   : {local:6.3f} s")
    print(f"the same as a 3-node workflow via the server: {served:6.3f} s"
          f"   ratio {served / local:4.2f}x (median of {args.runs})")


if __name__ == "__main__":
    main()
