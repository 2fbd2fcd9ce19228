"""One call of an SD job, which the engine may have given several batched jobs.

Every image gets its own torch.Generator seeded with its own seed, so an image comes out the
same whether it ran alone or in a batch. Images go through diffusers in calls of at most
`max_batch` images, each call reporting per-step progress with a cheap preview now and then.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import PIL.Image
import torch

from sc_sd import embeddings
from sc_sd.infotext import infotext
from sc_sd.loader import load
from sc_sd.loras import LoraSet, activate, wanted
from sc_sd.options import Options
from sc_sd.preview import latent_to_image
from sc_sd.prompts import encode, take_loras
from sc_sd.results import Generated
from sc_sd.sources import resolve
from stablecore import Context

MAX_IMAGES_PER_JOB = 8


@dataclass
class Item:
    """One image to make: which job it belongs to and everything that differs per image."""

    job: int
    seed: int
    prompt: str
    negative_prompt: str
    image: PIL.Image.Image | None
    mask: PIL.Image.Image | None
    loras: LoraSet = ()
    picture: PIL.Image.Image | None = None


def run(ctx: Context, mode: str, params: dict[str, list[Any]],
        images: list[Any] | None = None, masks: list[Any] | None = None) -> list[Generated]:
    """Make the images of every job in `params` (one list per parameter); one result per job."""
    options = Options.from_env(os.environ)
    jobs = [{k: v[i] for k, v in params.items()} for i in range(len(params["prompt"]))]
    for job in jobs:  # LoraWeight models to plain dicts
        job["loras"] = [x if isinstance(x, dict) else x.model_dump() for x in job["loras"]]
    first = jobs[0]  # batched jobs share model, size, steps, sampler, guidance and strength
    # 1. check what diffusers would reject less clearly
    check(mode, jobs)
    # 2. the warm model and the pipeline for this mode and sampler
    name = first["model"]
    loaded = ctx.cache(name, lambda: load(name, resolve(name, options), options, ctx.device,
                                          ctx.log))
    pipe = loaded.pipeline(mode, first["scheduler"])
    # 3. one item per image, seeds counting up from each job's seed
    size = (first["width"], first["height"])
    items = []
    for j, job in enumerate(jobs):
        seed = ctx.seed(job["seed"], index=j)  # the core records it in the job's params
        image = images[j].convert("RGB").resize(size, PIL.Image.LANCZOS) if images else None
        mask = masks[j].convert("L").resize(size, PIL.Image.LANCZOS) if masks else None
        loras = wanted(job.get("loras"), job["prompt"], job["negative_prompt"])
        items += [Item(j, seed + k, job["prompt"], job["negative_prompt"], image, mask, loras)
                  for k in range(job["num_images"])]
    embeddings.activate(loaded, [text for i in items for text in (i.prompt, i.negative_prompt)],
                        options)
    # 4. diffusers calls of at most max_batch images, each with one set of LoRAs
    calls = []
    for loras in dict.fromkeys(item.loras for item in items):
        group = [item for item in items if item.loras == loras]
        calls += [(loras, group[i:i + options.max_batch])
                  for i in range(0, len(group), options.max_batch)]
    for n, (loras, chunk) in enumerate(calls):
        activate(loaded, loras, options)
        callback = progress_callback(ctx, loaded.family, options.preview_every, n, len(calls))
        for item, picture in zip(chunk, generate(pipe, mode, first, chunk, callback), strict=True):
            item.picture = picture
    # 5. one result per job, each image carrying its own parameters text
    return results(mode, jobs, items)


def check(mode: str, jobs: list[dict[str, Any]]) -> None:
    for p in jobs:
        if mode != "txt2img" and int(p["steps"] * p["strength"]) < 1:
            raise ValueError(f"strength {p['strength']} with {p['steps']} steps leaves no "
                             "denoising step: raise one of them")
        if not 1 <= p["num_images"] <= MAX_IMAGES_PER_JOB:
            raise ValueError(f"num_images must be 1 to {MAX_IMAGES_PER_JOB}, "
                             f"got {p['num_images']}")


def generate(pipe: Any, mode: str, p: dict[str, Any], chunk: list[Item],
             callback: Callable[..., dict[str, Any]]) -> list[PIL.Image.Image]:
    """One diffusers call for the images of `chunk`."""
    kwargs: dict[str, Any] = {
        # weights and long prompts: embeddings made here, LoRA tags left out
        **encode(pipe, [take_loras(i.prompt)[0] for i in chunk],
                 [take_loras(i.negative_prompt)[0] for i in chunk]),
        "num_inference_steps": p["steps"], "guidance_scale": p["guidance_scale"],
        # CPU generators: the same seed gives the same image on any device
        "generator": [torch.Generator("cpu").manual_seed(i.seed) for i in chunk],
        "callback_on_step_end": callback, "output_type": "pil"}
    if mode != "img2img":
        kwargs.update(width=p["width"], height=p["height"])
    if mode != "txt2img":
        kwargs.update(image=[i.image for i in chunk], strength=p["strength"])
    if mode == "inpaint":
        kwargs["mask_image"] = [i.mask for i in chunk]
    return pipe(**kwargs).images


def progress_callback(ctx: Context, family: str, every: int, chunk: int, chunks: int,
                      ) -> Callable[..., dict[str, Any]]:
    """diffusers' `callback_on_step_end`: report the step (this raises JobCancelled once the
    job is cancelled, so a cancel lands within one step) with a preview every `every` steps."""

    def on_step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        steps = pipe.num_timesteps
        preview = None
        if every and (i + 1) % every == 0 and i + 1 < steps:
            preview = latent_to_image(tensors["latents"][0], family)
        ctx.progress(chunk * steps + i + 1, chunks * steps, preview=preview)
        return tensors

    return on_step_end


def results(mode: str, jobs: list[dict[str, Any]], items: list[Item]) -> list[Generated]:
    try:
        plugin_version = version("stablecore-sd")
    except PackageNotFoundError:
        plugin_version = ""
    out = []
    for j, job in enumerate(jobs):
        mine = [(item, item.picture) for item in items if item.job == j]
        texts = []
        for item, pic in mine:
            text = infotext(prompt=item.prompt, negative_prompt=item.negative_prompt,
                            steps=job["steps"], sampler=job["scheduler"],
                            guidance_scale=job["guidance_scale"], seed=item.seed,
                            width=job["width"], height=job["height"], model=job["model"],
                            strength=job["strength"] if mode != "txt2img" else None,
                            loras=job.get("loras") or (),
                            version=plugin_version)
            pic.info["parameters"] = text  # for a core that writes a job's own PNG text
            texts.append(text)
        pics = [pic for _, pic in mine]
        out.append(Generated(pics[0], texts[0], pics if len(pics) > 1 else None))
    return out
