"""Generation parameters in A1111's `parameters` text, which other tools read back.

Three parts: the prompt, a `Negative prompt:` line when there is one, and one line of
`Key: value` pairs with A1111's key names (`Steps`, `Sampler`, `CFG scale`, `Seed`, `Size`,
`Model`, `Denoising strength`). A value holding `,` `:` or `"` is JSON-quoted, as A1111 does.
"""

from __future__ import annotations

import json
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
