"""Generation parameters in A1111's `parameters` text, which other tools read back; `to_params`
reads such a text (ours or A1111's, ComfyUI's A1111-style savers, ...) back into sd params.

Three parts: the prompt, a `Negative prompt:` line when there is one, and one line of
`Key: value` pairs with A1111's key names (`Steps`, `Sampler`, `CFG scale`, `Seed`, `Size`,
`Model`, `Denoising strength`). A value holding `,` `:` or `"` is JSON-quoted, as A1111 does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from sc_sd.samplers import SAMPLERS


def quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:"\n') else text


def infotext(*, prompt: str, negative_prompt: str, steps: int, sampler: str,
             guidance_scale: float, seed: int, width: int, height: int, model: str,
             strength: float | None = None, extra: Sequence[tuple[str, Any]] = (),
             version: str = "") -> str:
    pairs: list[tuple[str, Any]] = [
        ("Steps", steps), ("Sampler", SAMPLERS[sampler].a1111),
        ("CFG scale", f"{guidance_scale:g}"), ("Seed", seed), ("Size", f"{width}x{height}"),
        ("Model", model)]
    if strength is not None:
        pairs.append(("Denoising strength", f"{strength:g}"))
    pairs += extra
    pairs.append(("Version", f"stable-core sd {version}".strip()))
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{k}: {quote(v)}" for k, v in pairs))
    return "\n".join(lines)


# --- reading it back -----------------------------------------------------------------------
FIELD = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
A1111_SAMPLERS = {s.a1111: name for name, s in SAMPLERS.items()}


def parse(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, fields) of an A1111 parameters text."""
    lines = text.strip().split("\n")
    fields: dict[str, str] = {}
    if len(FIELD.findall(lines[-1])) >= 3:  # the last line holds the fields
        for key, value in FIELD.findall(lines.pop()):
            if value.startswith('"'):
                try:
                    value = json.loads(value)
                except ValueError:
                    value = value[1:-1]
            fields[key.strip()] = value.strip()
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    return "\n".join(prompt).strip(), "\n".join(negative).strip(), fields


def to_params(text: str) -> dict[str, Any]:
    """The sd job and params an A1111 parameters text describes: `spec`, `params` (the keys
    sd jobs take) and `other` (fields with no param here, e.g. A1111's hashes)."""
    prompt, negative, fields = parse(text)
    params: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
    other: dict[str, str] = {}
    hires = "Hires upscale" in fields
    for key, value in fields.items():
        try:
            if not _read_field(key, value, fields, params, hires):
                other[key] = value
        except ValueError:
            other[key] = value
    spec = "sd.img2img" if "strength" in params else "sd.txt2img"
    return {"spec": spec, "params": params, "other": other}


def _read_field(key: str, value: str, fields: dict[str, str], params: dict[str, Any],
                hires: bool) -> bool:
    """Put one A1111 field into `params`; False when no sd param takes it."""
    if key == "Steps":
        params["steps"] = int(value)
    elif key == "Sampler":
        karras = fields.get("Schedule type", "").lower() == "karras"
        name = A1111_SAMPLERS.get(value + (" Karras" if karras else "")) or A1111_SAMPLERS.get(
            value)
        if name is None:
            return False
        params["scheduler"] = name
    elif key == "Schedule type":
        return "Sampler" in fields
    elif key == "CFG scale":
        params["guidance_scale"] = float(value)
    elif key == "Seed":
        params["seed"] = int(value)
    elif key == "Size":
        params["width"], params["height"] = (int(x) for x in value.lower().split("x"))
    elif key == "Model":
        params["model"] = value
    elif key == "Denoising strength":
        params["hires_denoise" if hires else "strength"] = float(value)
    elif key == "Hires upscale":
        params["hires_scale"] = float(value)
    elif key == "Hires steps":
        params["hires_steps"] = int(value)
    elif key == "Hires upscaler":
        params["hires_upscaler"] = "latent" if value.lower().startswith("latent") else "lanczos"
    elif key == "Refiner":
        params["refiner"] = re.sub(r"\s*\[\w+\]$", "", value)
    elif key == "Refiner switch at":
        params["refiner_switch"] = float(value)
    elif key == "Loras":
        params["loras"] = [{"name": n, "weight": float(w or 1)}
                           for n, w in re.findall(r"<lora:([^:>]+):?([^>]*)>", value)]
    elif key == "ControlNet 0":
        cn = dict(FIELD.findall(value))
        params["controlnet"] = re.sub(r"\s*\[\w+\]$", "", cn["Model"].strip())
        params["control_strength"] = float(cn.get("Weight", 1))
        params["control_start"] = float(cn.get("Guidance Start", 0))
        params["control_end"] = float(cn.get("Guidance End", 1))
    else:
        return False
    return True


def read_image(image: Any) -> dict[str, Any]:
    """`to_params` of the text an image carries: the PNG `parameters` chunk, else the EXIF
    user comment where A1111 writes it in JPEG and WebP files."""
    text = image.info.get("parameters")
    if not isinstance(text, str) and image.info.get("exif"):
        import PIL.Image

        exif = PIL.Image.Exif()
        exif.load(image.info["exif"])
        comment = exif.get_ifd(0x8769).get(0x9286)  # Exif IFD, UserComment
        if isinstance(comment, bytes):
            head, body = comment[:8], comment[8:]
            text = body.decode("utf-16-be" if head.startswith(b"UNICODE") else "utf-8",
                               errors="replace").strip("\x00")
        elif isinstance(comment, str):
            text = comment
    if not text or not isinstance(text, str):
        raise ValueError("this image carries no generation parameters (no PNG `parameters` "
                         "text, no EXIF user comment)")
    return to_params(text)
