"""Jobs that echo, sleep, preview, crash, run out of memory, hang, batch and cache models."""

from __future__ import annotations

import os
import signal
import sys
import time
import wave
from dataclasses import dataclass
from typing import Literal

import numpy as np
import PIL.Image
import PIL.ImageOps

from stablecore import Audio, Context, Field, Image, Mask, Numbers, Text, job, models_folder


@job(description="Return the text, repeated n times.")
def echo(text: str = "hello", n: int = Field(1, ge=1, le=10, description="repeats")) -> Text:
    return text * n


@job(description="Do nothing: measures the engine's own overhead.")
def noop() -> None:
    return None


@job(description="Sleep in steps, reporting progress after each.")
def sleep(ctx: Context, seconds: float = Field(1.0, ge=0, le=60),
          steps: int = Field(10, ge=1, le=1000)) -> Text:
    for i in range(steps):
        time.sleep(seconds / steps)
        ctx.progress(i + 1, steps)
    return f"slept {seconds}"


@job(description="Report progress with a preview image at each step.")
def preview(ctx: Context, steps: int = Field(3, ge=1, le=20), size: int = 64,
            delay: float = Field(0, ge=0, le=10, description="seconds per step")) -> Image:
    image = PIL.Image.new("RGB", (size, size))
    for i in range(steps):
        time.sleep(delay)
        image = PIL.Image.new("RGB", (size, size), (i * 40 % 256, 100, 200))
        ctx.progress(i + 1, steps, preview=image)
    return image


@job(description="Invert an image's colours.")
def invert(image: Image, mask: Mask | None = None) -> Image:
    inverted = PIL.ImageOps.invert(image.convert("RGB"))
    return PIL.Image.composite(inverted, image.convert("RGB"), mask) if mask else inverted


@dataclass
class Several:
    image: Image
    mask: Mask
    text: Text
    numbers: Numbers
    audio: Audio


@job(description="Return one output of each media type.")
def several(ctx: Context, size: int = Field(32, ge=8, le=512), prompt: str = "a test",
            seed: int = -1) -> Several:
    rng = ctx.rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    path = ctx.tmpdir / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        tone = (np.sin(np.arange(8000) * 440 * 2 * np.pi / 8000) * 3000).astype(np.int16)
        w.writeframes(tone.tobytes())
    return Several(PIL.Image.fromarray(pixels), PIL.Image.new("L", (size, size), 255),
                   f"{prompt} ({size}px)", Numbers(np.arange(6).reshape(3, 2), ["a", "b"], 24.0),
                   Audio(path))


@job(description="Kill the worker process in one of several ways.")
def crash(how: Literal["exit", "sigkill", "segv"] = "sigkill") -> Text:
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL if how == "sigkill" else signal.SIGSEGV)
    time.sleep(10)
    return "unreachable"


@job(description="Allocate memory until the worker runs out of it.")
def oom(ctx: Context, mb_per_step: int = Field(64, ge=1, le=4096)) -> Text:
    hoard = []
    for i in range(100_000):
        hoard.append(np.ones(mb_per_step * 2**20, dtype=np.uint8))
        ctx.progress(i + 1, 100_000)
    return "never ran out"


@job(description="Hang without reporting progress.")
def hang(seconds: float = Field(3600, ge=0)) -> Text:
    time.sleep(seconds)
    return "woke up"


@job(description="Load a model through the worker cache.", model_param="model")
def model(ctx: Context, model: Literal["m1", "m2", "m3"] = "m1") -> Text:
    ctx.cache(model, lambda: np.zeros(1024), size_mb=1)
    return f"{model} pid={os.getpid()}"


@job(description="Batchable: equal `size` values run together.", batch=("size",),
     batch_max=4)
def batched(ctx: Context, value: int = 0, size: int = 8) -> Text:
    values, sizes = value, size  # in a batch, every parameter arrives as a list
    time.sleep(0.05)
    return [f"value={v} size={s} batch={len(values)}" for v, s in zip(values, sizes, strict=True)]


@job(description="Make n frames of a colour ramp: a list output.")
def frames(n: int = Field(3, ge=1, le=50), size: int = 16) -> list[Image]:
    return [PIL.Image.new("RGB", (size, size), (i * 20 % 256, 0, 0)) for i in range(n)]


@job(description="Put images side by side: a list input.")
def stack(images: list[Image]) -> Image:
    if not images:
        raise ValueError("stack needs at least one image")
    out = PIL.Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)))
    x = 0
    for image in images:
        out.paste(image.convert("RGB"), (x, 0))
        x += image.width
    return out


@job(description="An image that carries its own A1111 parameters text.")
def tagged(text: str = "my own words\nSteps: 3, Sampler: Euler, Seed: 5") -> Image:
    image = PIL.Image.new("RGB", (4, 4))
    image.info["parameters"] = text
    return image


@job(description="A large noise image: slow to encode as PNG.")
def noise(size: int = Field(1024, ge=8, le=8192), seed: int = 0) -> Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


@job(description="Needs a GPU: report the device it got.", gpu=True)
def device(ctx: Context) -> Text:
    return ctx.device


@job(description="Batchable and slow: reports progress in steps, so a batch can be cancelled "
     "part-way.", batch=("steps",), batch_max=4)
def slow_batch(ctx: Context, value: int = 0,
               steps: int = Field(20, ge=1, le=1000), delay: float = 0.05) -> Text:
    values = value
    for i in range(steps[0]):
        time.sleep(delay[0])
        ctx.progress(i + 1, steps[0])
    return [f"value={v} batch={len(values)}" for v in values]


@job(description="Print to stdout and stderr, then fail or not.")
def chatty(lines: int = Field(2, ge=0, le=5000), fail: bool = True) -> Text:
    for i in range(lines):
        print(f"stdout line {i}")
    print("a warning on stderr", file=sys.stderr)
    os.write(1, b"straight to fd 1\n")  # what a C library would do
    if fail:
        raise RuntimeError("chatty failed on purpose")
    return "ok"


@job(description="Plain values as outputs: a count.")
def count(text: str = "a b c") -> int:
    return len(text.split())


@dataclass
class Summary:
    words: list[str]
    stats: dict[str, float]
    image: Image


@job(description="Several outputs: JSON values and an image.")
def summary(text: str = "b a c") -> Summary:
    words = sorted(text.split())
    return Summary(words, {"n": float(len(words))}, PIL.Image.new("RGB", (4, 4)))


def _dropped_models() -> tuple[str, ...]:
    """The files in this plugin's models folder, as a real plugin lists its checkpoints."""
    folder = models_folder("testing", os.environ)
    names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder else []
    return tuple(names) or ("none",)


@job(description="Pick a file from the models folder: the choices are read at import, so new "
     "files appear after a rescan.")
def pick(name: Literal[_dropped_models()] = _dropped_models()[0]) -> Text:  # type: ignore[valid-type]
    return name


@job(description="Add `amount` to every channel: a per-item param for map tests.")
def tint(image: Image, amount: int = Field(0, ge=-255, le=255)) -> Image:
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16) + amount
    return PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@job(description="A numbers series 0, step, 2*step, ... in a column named `v`.")
def ramp(n: int = Field(3, ge=1, le=1000), step: float = 10.0) -> Numbers:
    return Numbers(np.arange(n) * step, columns=["v"])


@job(description="The time now: never answered from a workflow's cache.", deterministic=False)
def clock() -> float:
    return time.time()
