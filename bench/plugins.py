"""First-party plugin jobs on realistic sizes: through a real server versus a direct call of
the same job function in this process.

For each case: the median time from submit to the finished job (inputs already uploaded),
the median direct call on inputs already decoded in memory, their ratio (target <= 1.05 for
jobs over a second), and where the difference goes: writing the outputs as the worker does
(`stablecore.media.write_output`: images as PNG with their parameters, every file hashed), and
the rest (dispatch, the pipe, the database, events). Decoding the input files
(`read_input`) is shown too, but the worker keeps decoded input images by content, so the
timed runs (after a warm-up run) do not pay it.

Prints figures, asserts nothing. Run: `.venv/bin/python bench/plugins.py [--repeat 3]
[--only palette]`. To add a case, append a `Case` to CASES (or call `add_case`): a name, the
job spec, its params, a builder that writes the input files into a folder, and optionally a
direct callable (by default the job function itself, called with the same arguments the
worker would pass).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from stablecore.context import Context, ModelCache
from stablecore.media import read_input, write_output
from stablecore.spec import ENTRY_POINT_GROUP, JobSpec, discover
from stablecore.testing import ServerProcess

Inputs = dict[str, Path]
Direct = Callable[[dict[str, Any], dict[str, Any]], Any]  # (loaded inputs, params) -> result


@dataclass
class Case:
    name: str
    spec: str                                   # e.g. "palette.match"
    params: dict[str, Any]
    inputs: Callable[[Path], Inputs]            # writes input files under a folder
    direct: Direct | None = None                # None: call the job function in-process
    note: str = ""
    results: dict[str, float] = field(default_factory=dict)


# --- realistic synthetic inputs -----------------------------------------------------------------
def photo(width: int, height: int, seed: int) -> np.ndarray:
    """A photograph stand-in: smooth shapes at several scales, colour casts, edges and
    sensor grain, so it compresses like a photo (PNG ~ 2/3 of raw), not like flat colour."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for sigma, weight in ((height / 6, 0.5), (height / 30, 0.3), (height / 200, 0.15)):
        small = rng.random((max(2, int(height / sigma * 4)), max(2, int(width / sigma * 4)), 3))
        img += weight * cv2.resize(small.astype(np.float32), (width, height),
                                   interpolation=cv2.INTER_CUBIC)
    for _ in range(40):  # hard edges
        x, y = int(rng.integers(width)), int(rng.integers(height))
        r = int(rng.integers(height // 40, height // 6))
        cv2.circle(img, (x, y), r, tuple(float(v) for v in rng.random(3)), -1, cv2.LINE_AA)
    img = (img - img.min()) / (img.max() - img.min())
    img = 255 * img * rng.uniform(0.7, 1.0, 3) + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def save_png(pixels: np.ndarray, path: Path) -> Path:
    PIL.Image.fromarray(pixels).save(path, compress_level=1)
    return path


def image_inputs(**names: tuple[int, int, int]) -> Callable[[Path], Inputs]:
    """Builder: input name -> (width, height, seed) of a photo-like PNG."""
    def build(folder: Path) -> Inputs:
        return {k: save_png(photo(w, h, seed), folder / f"{k}_{w}x{h}_{seed}.png")
                for k, (w, h, seed) in names.items()}
    return build


def frame_pair(folder: Path, width: int = 1920, height: int = 1080) -> Inputs:
    """Two 1080p frames of a scene whose layers move differently (camera pan + object)."""
    import cv2

    scene = photo(width + 64, height + 64, seed=11)
    a = scene[32:32 + height, 32:32 + width]
    m = np.float32([[1.01, 0.004, -24.0], [-0.004, 1.01, 14.0]])  # pan, slight zoom and turn
    b = cv2.warpAffine(scene, m, (width, height), flags=cv2.INTER_CUBIC,
                       borderMode=cv2.BORDER_REFLECT_101)
    b[400:700, 800:1200] = a[380:680, 770:1170]  # an object that moves its own way
    return {"first": save_png(a, folder / "first.png"),
            "second": save_png(b, folder / "second.png")}


def warp_inputs(folder: Path) -> Inputs:
    pair = frame_pair(folder)
    return {"image": pair["first"], **pair}


def song(folder: Path, seconds: float = 180.0, sr: int = 44100) -> Inputs:
    """Three minutes of a stereo 16-bit wav: kick and hat at 128 BPM, a bass line, chords and
    a little noise."""
    import soundfile as sf

    rng = np.random.default_rng(5)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    y = 0.02 * rng.standard_normal(n)
    beat = 60 / 128
    kick_t = np.arange(int(0.25 * sr)) / sr
    kick = np.sin(2 * np.pi * (50 + 90 * np.exp(-kick_t * 30)) * kick_t) * np.exp(-kick_t * 12)
    hat = rng.standard_normal(int(0.04 * sr)) * np.exp(-np.arange(int(0.04 * sr)) / sr * 90)
    for k, start in enumerate(np.arange(0, seconds - 0.3, beat / 2)):
        i = int(start * sr)
        if k % 2 == 0:
            y[i:i + len(kick)] += 0.7 * kick
        y[i:i + len(hat)] += 0.15 * hat
    roots = [55.0, 65.41, 49.0, 73.42]  # A1 C2 G1 D2, a bar each
    bar = int(4 * beat * sr)
    for j in range(0, n, bar):
        f = roots[(j // bar) % 4]
        seg = slice(j, min(n, j + bar))
        y[seg] += 0.25 * np.sin(2 * np.pi * f * t[seg])
        for ratio in (4, 5, 6):  # a chord two octaves up
            y[seg] += 0.06 * np.sin(2 * np.pi * f * ratio * t[seg])
    y = 0.8 * y / np.abs(y).max()
    stereo = np.column_stack([y, np.roll(y, 40)])
    path = folder / "song.wav"
    sf.write(path, stereo, sr, subtype="PCM_16")
    return {"audio": path}


CASES: list[Case] = [
    Case("transform 4K (rotate+zoom+shift, cubic)", "transform2d.transform",
         {"rotate": 12.5, "scale": 1.15, "translate_x": 13.3, "translate_y": -7.7},
         image_inputs(image=(3840, 2160, 1))),
    Case("palette match 4K <- 1080p reference (lab)", "palette.match", {},
         image_inputs(image=(3840, 2160, 1), reference=(1920, 1080, 2))),
    Case("palette extract 4K (8 colours)", "palette.extract", {"colors": 8},
         image_inputs(image=(3840, 2160, 1))),
    Case("flow estimate 1080p pair (DIS medium)", "flow.estimate", {}, frame_pair),
    Case("flow estimate 1080p pair (Farneback)", "flow.estimate", {"method": "farneback"},
         frame_pair),
    Case("flow warp 1080p by first->second (DIS)", "flow.warp", {}, warp_inputs),
    Case("audio features, 3 min wav 44.1 kHz stereo", "audio.features", {}, song),
    Case("upscale 512 px x4, Real-ESRGAN ncnn CPU", "upscale.realesrgan",  # real weights
         {"model": "realesr-animevideov3-x4", "device": "cpu"}, image_inputs(image=(512, 512, 3))),
]


def add_case(case: Case) -> None:
    CASES.append(case)


# --- measuring --------------------------------------------------------------------------------
def load_specs(names: set[str]) -> dict[str, JobSpec]:
    plugins = {n.split(".")[0] for n in names}
    eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name in plugins]
    specs, infos = discover(eps)
    for info in infos:
        if info.error:
            raise SystemExit(f"plugin {info.name}: {info.error}")
    return specs


def direct_context(tmpdir: Path) -> Context:
    return Context(plugin="bench", device="cpu", cache=ModelCache(8192), tmpdir=tmpdir,
                   report=lambda step, total, preview: None, is_cancelled=lambda: False,
                   log=logging.getLogger("bench"))


def job_direct(spec: JobSpec, tmpdir: Path) -> Direct:
    """Call the job function as the worker does: params validated (defaults filled) first."""
    def call(inputs: dict[str, Any], params: dict[str, Any]) -> Any:
        assert spec.params_model is not None
        model = spec.params_model.model_validate(params)
        args = {k: getattr(model, k) for k in spec.params_model.model_fields}
        args.update({k: inputs.get(k) for k in spec.inputs})
        if spec.takes_ctx:
            return spec.fn(direct_context(tmpdir), **args)
        return spec.fn(**args)
    return call


def outputs_of(spec: JobSpec, result: Any) -> dict[str, tuple[str, Any]]:
    if spec.single_output:
        kind = next(iter(spec.outputs))
        return {kind: (kind, result)}
    return {name: (kind, getattr(result, name)) for name, kind in spec.outputs.items()}


def run_case(case: Case, server: ServerProcess, specs: dict[str, JobSpec], folder: Path,
             repeat: int) -> None:
    """Server and direct runs alternate, so load from anything else on the machine falls on
    both alike; each figure is a median."""
    spec = specs[case.spec]
    files = case.inputs(folder)
    call = case.direct or job_direct(spec, folder)
    out_dir = folder / "out"
    out_dir.mkdir(exist_ok=True)
    r = case.results
    times: dict[str, list[float]] = {k: [] for k in ("server", "worker", "direct", "decode",
                                                      "encode")}
    with server.client(timeout=600) as client:
        start = time.perf_counter()
        ids = {k: client.upload(p)["id"] for k, p in files.items()}
        r["upload"] = time.perf_counter() - start

        def through_server() -> dict:
            job = client.wait(client.submit(case.spec, case.params, ids)["id"])
            if job["state"] != "succeeded":
                raise SystemExit(f"{case.name}: {job['state']}: {job.get('error')}")
            return job

        def timed(key: str, fn: Callable[..., Any], *args: Any) -> Any:
            start = time.perf_counter()
            result = fn(*args)
            times[key].append(time.perf_counter() - start)
            return result

        def decode() -> dict[str, Any]:
            return {k: read_input(spec.inputs[k].kind, p) for k, p in files.items()}

        def encode(result: Any) -> None:
            for name, (kind, value) in outputs_of(spec, result).items():
                if value is not None:
                    write_output(kind, value, out_dir / name, case.spec, case.params)

        # warm both sides: the worker imports lazily loaded libraries on first use
        through_server()
        call(decode(), case.params)
        for _ in range(repeat):
            job = timed("server", through_server)
            times["worker"].append(job["finished"] - job["started"])
            # the worker's file work, done here on the same files, around the bare call
            loaded = timed("decode", decode)
            result = timed("direct", call, loaded, case.params)
            timed("encode", encode, result)
    r.update({k: statistics.median(v) for k, v in times.items()})
    r["rest"] = r["server"] - r["direct"] - r["encode"]  # decoded inputs: cached by the worker
    r["ratio"] = r["server"] / r["direct"]
    r["size_mb"] = sum(p.stat().st_size for p in files.values()) / 2**20


def report(cases: list[Case]) -> None:
    head = (f"{'case':44} {'direct':>7} {'server':>7} {'ratio':>6} {'worker':>7} "
            f"{'decode':>7} {'encode':>7} {'rest':>6} {'upload':>7} {'in MB':>6}")
    print("\n" + head + "\n" + "-" * len(head))
    for c in cases:
        r = c.results
        if not r:
            continue
        flag = "  <- over 1.05" if r["direct"] > 1 and r["ratio"] > 1.05 else ""
        print(f"{c.name:44} {r['direct']:7.3f} {r['server']:7.3f} {r['ratio']:6.2f} "
              f"{r['worker']:7.3f} {r['decode']:7.3f} {r['encode']:7.3f} {r['rest']:6.3f} "
              f"{r['upload']:7.3f} {r['size_mb']:6.1f}{flag}")
    print("\nseconds, medians. direct: the job function in this process on decoded inputs; "
          "server: submit -> finished job (inputs uploaded beforehand); worker: the job "
          "record's started -> finished; decode/encode: read_input of the inputs and "
          "write_output of the outputs (PNG + sha256), as the worker does, though the worker "
          "keeps decoded input images, so its repeats skip the decode; rest: server - direct "
          "- encode (dispatch, pipe, database, events, noise).")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement")
    ap.add_argument("--only", default="", help="run the cases whose name or spec holds this")
    args = ap.parse_args()
    cases = [c for c in CASES if args.only in c.name or args.only in c.spec]
    specs = load_specs({c.spec for c in cases})
    with tempfile.TemporaryDirectory(prefix="sc-bench-") as tmp:
        root = Path(tmp)
        server = ServerProcess(root / "data")  # one CPU worker
        server.start(timeout=300)
        try:
            for i, case in enumerate(cases):
                folder = root / f"case{i}"
                folder.mkdir()
                print(f"[{i + 1}/{len(cases)}] {case.name} ...", flush=True)
                run_case(case, server, specs, folder, args.repeat)
                r = case.results
                print(f"    direct {r['direct']:.3f} s, server {r['server']:.3f} s, "
                      f"ratio {r['ratio']:.2f}", flush=True)
        finally:
            server.stop()
    report(cases)


if __name__ == "__main__":
    main()
