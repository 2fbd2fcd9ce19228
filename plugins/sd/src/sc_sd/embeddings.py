"""Textual-inversion embeddings, used as in A1111: a file `embeddings/<name>.safetensors` (or
`.pt`, `.bin`) is used wherever `<name>` appears in a prompt. A file is loaded into the warm
pipeline's tokenizer and text encoder the first time a prompt names it, and stays: other
prompts encode as before. SDXL files hold two tensors, `clip_l` and `clip_g`, one per encoder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sc_sd.options import Options
from sc_sd.sources import extras, find_extra


def activate(loaded: Any, prompts: list[str], options: Options) -> None:
    """Load the embeddings that `prompts` name and `loaded` does not hold yet."""
    names = {Path(name).name: name for name in extras(options, "embeddings")}
    for token, name in names.items():
        if token in loaded.embeddings:
            continue
        if any(re.search(rf"(?<![\w-]){re.escape(token)}(?![\w-])", p) for p in prompts):
            _load(loaded.base, token, find_extra(options, "embeddings", name))
            loaded.embeddings.add(token)


def _load(pipe: Any, token: str, path: Path) -> None:
    try:
        if getattr(pipe, "text_encoder_2", None) is None:
            pipe.load_textual_inversion(str(path), token=token)
            return
        from safetensors.torch import load_file

        tensors = load_file(str(path)) if path.suffix == ".safetensors" else {}
        if not {"clip_l", "clip_g"} <= set(tensors):
            raise ValueError("an SDXL embedding holds two tensors, clip_l and clip_g")
        pipe.load_textual_inversion(tensors["clip_l"], token=token,
                                    text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(tensors["clip_g"], token=token,
                                    text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    except Exception as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else "(no message)"
        raise ValueError(f"cannot load embedding file {path}: {type(e).__name__}: {text}") from e
