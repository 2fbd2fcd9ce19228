"""Make the example outputs shown in the README: real jobs through a real server.

Run: `.venv/bin/python docs/examples.py` (starts its own server on a free port).
"""

from __future__ import annotations

import tempfile
import wave
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw

from stablecore.testing import ServerProcess

DOCS = Path(__file__).parent


def scene(shift: int = 0) -> PIL.Image.Image:
    """A small synthetic landscape: sky gradient, sun, hills; `shift` pans it sideways."""
    w, h = 384, 256
    y = np.linspace(0, 1, h)[:, None, None]
    sky = (np.array([30, 60, 140]) * (1 - y) + np.array([250, 170, 90]) * y).repeat(w, 1)
    image = PIL.Image.fromarray(sky.astype(np.uint8))
    draw = PIL.ImageDraw.Draw(image)
    draw.ellipse((240 - shift, 60, 300 - shift, 120), fill=(255, 220, 120))
    for i, colour in enumerate([(40, 90, 60), (25, 60, 45)]):
        xs = np.arange(0, w + 8, 8)
        ys = h - 70 + i * 30 + 25 * np.sin((xs + shift * (i + 1)) / (50 + 20 * i))
        draw.polygon([(0, h), *zip(xs.tolist(), ys.tolist(), strict=True), (w, h)], fill=colour)
    return image


def reference(path: Path) -> None:
    """An autumn palette to match to: magenta dusk over orange and deep red."""
    y = np.linspace(0, 1, 200)[:, None, None]
    x = np.linspace(0, 1, 300)[None, :, None]
    rgb = (np.array([90, 20, 110]) * (1 - y) + np.array([250, 140, 30]) * y
           + np.array([60, -20, -10]) * x)
    PIL.Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(path)


def click_track(path: Path, seconds: float = 8, bpm: float = 120) -> None:
    rate = 22050
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.05 * np.sin(2 * np.pi * 220 * t)
    for beat in np.arange(0, seconds, 60 / bpm):
        i = int(beat * rate)
        audio[i:i + 800] += np.sin(2 * np.pi * 3000 * t[:800]) * np.exp(-t[:800] * 60)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, image in [("a.png", scene()), ("b.png", scene(12))]:
            image.save(tmp / name)
        reference(tmp / "ref.png")
        click_track(tmp / "clicks.wav")
        with ServerProcess(tmp / "data") as server, server.client() as sc:
            def run(spec: str, params: dict, **inputs: Path) -> dict:
                job = sc.run(spec, params, inputs=dict(inputs))
                assert job["state"] == "succeeded", job["error"]
                return job["outputs"]

            turned = run("transform2d.transform", {"rotate": 12, "scale": 1.3,
                                                   "border": "reflect"}, image=tmp / "a.png")
            matched = run("palette.match", {"strength": 1.0}, image=tmp / "a.png",
                          reference=tmp / "ref.png")
            flow = run("flow.estimate", {}, first=tmp / "a.png", second=tmp / "b.png")
            audio = run("audio.features", {"fps": 24, "plot_width": 900,
                                           "plot_height": 500}, audio=tmp / "clicks.wav")
            parts = [PIL.Image.open(tmp / "a.png")]
            for out in (turned["image"], matched["image"], flow["visual"]):
                parts.append(PIL.Image.open(sc.download(out["id"], tmp / f"{out['id']}.png")))
            strip = PIL.Image.new("RGB", (sum(p.width for p in parts) + 24, 256), (20, 22, 28))
            x = 0
            for part in parts:
                strip.paste(part.convert("RGB").resize((384, 256)), (x, 0))
                x += 384 + 8
            strip.save(DOCS / "example-images.png")
            sc.download(audio["plot"]["id"], DOCS / "example-audio.png")
    print("wrote", DOCS / "example-images.png", DOCS / "example-audio.png")


if __name__ == "__main__":
    main()
