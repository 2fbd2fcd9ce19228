"""Prompts as A1111 writes them: `(word:1.3)`, `(word)`, `[word]`, `<lora:name:0.8>`, any length.

`weights` reads the attention syntax into (text, weight) runs, `take_loras` pulls the LoRA tags
out, and `encode` turns prompts into the embeddings diffusers takes, through compel: each 77-token
chunk is encoded on its own and the chunks are joined, so a prompt may be longer than CLIP's
window. Only the text sent to the encoder changes; the PNG keeps the prompt as written.
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import Any

import torch
from compel import Compel, DiffusersTextualInversionManager, ReturnedEmbeddingsType
from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

UP, DOWN = 1.1, 1 / 1.1  # what one pair of () or [] multiplies by, as in A1111
NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)"
LORA_TAG = re.compile(rf"<lora:([^:>]+)(?::({NUMBER}))?>")
# an escaped bracket, an opening one, `:weight)`, a closing one, plain text, a lone : or \
TOKEN = re.compile(rf"\\[()\[\]\\]|\(|\[|:\s*({NUMBER})\s*\)|\)|]|[^\\()\[\]:]+|:|\\")


def take_loras(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """The prompt without its `<lora:name:weight>` tags, and the tags (weight 1 when absent)."""
    tags = [(m[1].strip(), float(m[2]) if m[2] is not None else 1.0)
            for m in LORA_TAG.finditer(prompt)]
    return LORA_TAG.sub("", prompt), tags


def weights(prompt: str) -> list[tuple[str, float]]:
    """A1111 attention syntax as runs of (text, weight). `(x)` is x1.1, `[x]` /1.1, `(x:w)`
    is xw; brackets nest and multiply; `\\(` is a literal bracket; unclosed ones still count."""
    runs: list[list[Any]] = []
    rounds: list[int] = []
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for run in runs[start:]:
            run[1] *= factor

    for m in TOKEN.finditer(prompt):
        text, weight = m[0], m[1]
        if text.startswith("\\") and len(text) == 2:
            runs.append([text[1], 1.0])
        elif text == "(":
            rounds.append(len(runs))
        elif text == "[":
            squares.append(len(runs))
        elif weight is not None and rounds:
            scale(rounds.pop(), float(weight))
        elif text == ")" and rounds:
            scale(rounds.pop(), UP)
        elif text == "]" and squares:
            scale(squares.pop(), DOWN)
        else:
            runs.append([text, 1.0])
    for start in rounds:
        scale(start, UP)
    for start in squares:
        scale(start, DOWN)
    merged: list[tuple[str, float]] = []
    for text, weight in runs:  # neighbours with one weight become one run
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    return merged or [("", 1.0)]


def plain(prompt: str) -> str:
    """The prompt's text without weights, as the pooled SDXL embedding reads it."""
    return "".join(text for text, _ in weights(prompt))


def encode(pipe: Any, prompts: list[str], negatives: list[str]) -> dict[str, Any]:
    """The `prompt_embeds` (and SDXL's pooled embeds) of `prompts` and `negatives`, padded to
    one length, as keyword arguments for a diffusers call."""
    xl = getattr(pipe, "text_encoder_2", None) is not None
    compel = _compel(pipe, xl, refiner=xl and pipe.text_encoder is None)
    conds = [_conditioning(compel, p) for p in [*prompts, *negatives]]
    conds = compel.pad_conditioning_tensors_to_same_length(conds)
    n = len(prompts)
    out = {"prompt_embeds": torch.cat(conds[:n]), "negative_prompt_embeds": torch.cat(conds[n:])}
    if xl:
        pooled = [compel.conditioning_provider.get_pooled_embeddings([plain(p)])
                  for p in [*prompts, *negatives]]
        out["pooled_prompt_embeds"] = torch.cat(pooled[:n])
        out["negative_pooled_prompt_embeds"] = torch.cat(pooled[n:])
    return out


def _conditioning(compel: Compel, prompt: str) -> torch.Tensor:
    fragments = [Fragment(text, weight) for text, weight in weights(prompt)]
    conjunction = Conjunction([FlattenedPrompt(fragments)])
    with torch.no_grad():
        conditioning, _ = compel.build_conditioning_tensor_for_conjunction(conjunction)
    return conditioning


def _compel(pipe: Any, xl: bool, refiner: bool) -> Compel:
    """A Compel for this call: it caches the empty prompt's embedding, which a LoRA on the text
    encoder changes, so it is made anew each time (that costs nothing until it encodes)."""
    if refiner:  # an SDXL refiner has the second encoder only
        return Compel(tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2,
                      truncate_long_prompts=False, requires_pooled=True,
                      returned_embeddings_type=(
                          ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED),
                      dtype_for_device_getter=lambda _: pipe.text_encoder_2.dtype)
    manager = DiffusersTextualInversionManager(pipe)
    if not xl:
        return Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder,
                      textual_inversion_manager=manager, truncate_long_prompts=False,
                      dtype_for_device_getter=lambda _: pipe.text_encoder.dtype)
    # SDXL: both encoders' penultimate layers side by side, the pooled one from the second
    with contextlib.redirect_stdout(io.StringIO()):  # compel prints a deprecation notice
        return Compel(tokenizer=[pipe.tokenizer, pipe.tokenizer_2],
                      text_encoder=[pipe.text_encoder, pipe.text_encoder_2],
                      textual_inversion_manager=manager, truncate_long_prompts=False,
                      returned_embeddings_type=(
                          ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED),
                      requires_pooled=[False, True],
                      dtype_for_device_getter=lambda _: pipe.text_encoder_2.dtype)
