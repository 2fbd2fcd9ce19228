"""interrogate: an image to a prompt with CLIP (ranking phrase lists, like A1111's
interrogator, with an optional BLIP caption as its head), and CLIP similarity scores.

transformers and torch are imported when a model loads, not when the worker lists plugins.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
from typing_extensions import TypedDict

from sc_interrogate import models, phrases
from stablecore import Context, Field, Image, Numbers, Text, job

MODEL_FILES = models.MODEL_FILES
CLIP_MODEL = Field(models.CLIP_DEFAULT, min_length=1, description="CLIP: a Hugging Face repo "
                   "id (pulled with `stable-core models pull interrogate`) or a folder in the "
                   "models folder's interrogate/")


class Match(TypedDict):
    phrase: str
    score: float  # cosine similarity of the image and the phrase


@dataclass
class Scores:  # a dataclass around it: the core reads a bare Numbers return as a dataclass
    scores: Numbers  # a row per image, a column per prompt (and "reference")


@dataclass
class Interrogated:
    text: Text  # the prompt
    matches: dict[str, list[Match]]  # per category, the best phrases first; "caption" too


def clip_model(ctx: Context, name: str) -> models.Clip:
    return ctx.cache(name, lambda: models.Clip(*models.load("CLIPModel", name, ctx.device)))


def phrase_embeddings(ctx: Context, clip: models.Clip, name: str, category: str,
                      items: list[str]) -> np.ndarray:
    """A list's text embeddings, kept in the worker: the lists rarely change."""
    digest = hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]
    return ctx.cache(f"{name}/phrases/{category}/{digest}", lambda: clip.texts(items))


def rank(image: np.ndarray, texts: np.ndarray, items: list[str], count: int) -> list[Match]:
    """The `count` phrases most similar to the image, best first (ties: list order)."""
    scores = texts @ image
    order = np.argsort(-scores, kind="stable")[:count]
    return [Match(phrase=items[i], score=round(float(scores[i]), 6)) for i in order]


@job(description="Describe an image as a prompt: CLIP ranks phrase lists (mediums, artists, "
                 "movements, flavors) against it, after an optional BLIP caption.",
     model_param="model")
def clip(
    ctx: Context,
    image: Image = Field(description="the image to describe"),
    model: str = CLIP_MODEL,
    caption_model: str = Field("", description="a BLIP captioning model (repo id or folder) "
                               f"for the prompt's head, e.g. {models.BLIP_DEFAULT}; empty: "
                               "no caption"),
    flavors: int = Field(4, ge=0, le=64, description="how many flavor phrases the prompt "
                         "takes"),
    top: int = Field(5, ge=1, le=100, description="matches listed per category in `matches`"),
    caption_tokens: int = Field(30, ge=5, le=200, description="longest caption, in tokens"),
) -> Interrogated:
    # 1. the caption, when a caption model is given
    matches: dict[str, list[Match]] = {}
    head = ""
    if caption_model:
        blip = ctx.cache(caption_model, lambda: models.load(
            "BlipForConditionalGeneration", caption_model, ctx.device))
        head = models.caption(*blip, image, caption_tokens)
        matches["caption"] = [Match(phrase=head, score=1.0)]
        ctx.progress(1, 2)
    # 2. every category ranked against the image
    encoder = clip_model(ctx, model)
    embedded = encoder.images([image])[0]
    parts = [head] if head else []
    for category, items in phrases.load(os.environ).items():
        texts = phrase_embeddings(ctx, encoder, model, category, items)
        count = phrases.top_count(category, flavors)
        found = rank(embedded, texts, items, max(count, top))
        matches[category] = found[:top]
        parts += [phrases.PREFIX.get(category, "") + m["phrase"] for m in found[:count]]
    prompt = ", ".join(parts)
    ctx.log.info("interrogate.clip: %s", prompt)
    ctx.progress(2, 2)
    return Interrogated(prompt, matches)


@job(description="CLIP similarity of each image to each prompt (and to a reference image): "
                 "a table with a row per image, for ranking a gallery.", model_param="model")
def similarity(
    ctx: Context,
    images: list[Image] = Field(description="the images to score, in order"),
    prompts: list[str] = Field(default_factory=list, max_length=1000,
                               description="texts to score each image against"),
    reference: Image | None = Field(None, description="optional: an image to score each "
                                    "image against (image-image similarity)"),
    model: str = CLIP_MODEL,
) -> Scores:
    if not prompts and reference is None:
        raise ValueError("give prompts, a reference image, or both")
    encoder = clip_model(ctx, model)
    embedded = np.concatenate([encoder.images(images[i:i + 16])
                               for i in range(0, len(images), 16)])
    columns = [encoder.texts(prompts).T] if prompts else []
    if reference is not None:
        columns.append(encoder.images([reference]).T)
    table = embedded @ np.concatenate(columns, axis=1)
    names = [*prompts, *(["reference"] if reference is not None else [])]
    ctx.log.info("interrogate.similarity: %d image(s) x %d column(s)", len(images), len(names))
    return Scores(Numbers(table, names))
