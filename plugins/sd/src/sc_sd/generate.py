"""One call of an SD job, which the engine may have given several batched jobs.

Every image gets its own torch.Generator seeded with its own seed, so an image comes out the
same whether it ran alone or in a batch. Images go through diffusers in calls of at most
`max_batch` images, each call reporting per-step progress with a cheap preview now and then.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import PIL.Image
import torch

from sc_sd import canvas as canvases
from sc_sd import embeddings, hires
from sc_sd.control import load_controlnet
from sc_sd.infotext import infotext
from sc_sd.loader import Loaded, load
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
    control: PIL.Image.Image | None = None
    picture: PIL.Image.Image | None = None


def run(ctx: Context, mode: str, params: dict[str, list[Any]], images: list[Any] | None = None,
        masks: list[Any] | None = None, controls: list[Any] | None = None) -> list[Generated]:
    """Make the images of every job in `params` (one list per parameter); one result per job."""
    options = Options.from_env(os.environ)
    jobs = [{k: v[i] for k, v in params.items()} for i in range(len(params["prompt"]))]
    for job in jobs:  # LoraWeight models to plain dicts
        job["loras"] = [x if isinstance(x, dict) else x.model_dump() for x in job["loras"]]
    first = jobs[0]  # batched jobs share model, size, steps, sampler, guidance and strength
    # 1. check what diffusers would reject less clearly
    controls = controls or [None] * len(jobs)
    check(mode, jobs, controls)
    # 2. the warm model (and ControlNet, refiner) and the pipeline for this mode and sampler
    loaded, pipe, refiner = pipelines(ctx, mode, first, options)
    # 3. one item per image, seeds counting up from each job's seed
    size = (first["width"], first["height"])
    items = []
    for j, job in enumerate(jobs):
        seed = ctx.seed(job["seed"], index=j)  # the core records it in the job's params
        image = images[j].convert("RGB").resize(size, PIL.Image.LANCZOS) if images else None
        mask = masks[j].convert("L").resize(size, PIL.Image.LANCZOS) if masks else None
        control = controls[j].convert("RGB").resize(size, PIL.Image.LANCZOS) if (
            job["controlnet"] != "none") else None
        loras = wanted(job.get("loras"), job["prompt"], job["negative_prompt"])
        items += [Item(j, seed + k, job["prompt"], job["negative_prompt"], image, mask, loras,
                       control) for k in range(job["num_images"])]
    embeddings.activate(loaded, [text for i in items for text in (i.prompt, i.negative_prompt)],
                        options)
    # 4. diffusers calls of at most max_batch images, each with one set of LoRAs
    calls = []
    for loras in dict.fromkeys(item.loras for item in items):
        group = [item for item in items if item.loras == loras]
        calls += [(loras, group[i:i + options.max_batch])
                  for i in range(0, len(group), options.max_batch)]
    progress = Progress(ctx, loaded.family, options.preview_every,
                        len(calls) * planned_steps(mode, first))
    for loras, chunk in calls:
        activate(loaded, loras, options)
        pictures = generate(loaded, pipe, mode, first, chunk, progress, refiner)
        for item, picture in zip(chunk, pictures, strict=True):
            item.picture = picture
    # 5. one result per job, each image carrying its own parameters text
    return results(mode, jobs, items)


def pipelines(ctx: Context, mode: str, p: dict[str, Any], options: Options,
              ) -> tuple[Loaded, Any, Any]:
    """The warm model, its pipeline for `mode` (with the ControlNet, if any) and the SDXL
    refiner's img2img pipeline (or None); each model cached in the worker on its own."""

    def model(name: str) -> Loaded:
        return ctx.cache(name, lambda: load(name, resolve(name, options), options, ctx.device,
                                            ctx.log))

    loaded = model(p["model"])
    controlnet = None
    if (cn := p["controlnet"]) != "none":
        controlnet = ctx.cache(f"controlnet/{cn}", lambda: load_controlnet(
            cn, options, ctx.device, loaded.base.unet.dtype))
    pipe = loaded.pipeline(mode, p["scheduler"], controlnet)
    if not refining(mode, p):
        return loaded, pipe, None
    if loaded.family != "sdxl":
        raise ValueError(f"a refiner works with SDXL models; {p['model']!r} is not one")
    refiner = model(p["refiner"])
    if refiner.family != "sdxl":
        raise ValueError(f"refiner {p['refiner']!r} is not an SDXL model")
    return loaded, pipe, refiner.pipeline("img2img", p["scheduler"])


def outpaint(ctx: Context, image: PIL.Image.Image, sides: tuple[int, int, int, int], blur: int,
             params: dict[str, Any]) -> Generated:
    """One outpaint job: inpaint the border of the grown canvas, keep the original."""
    left, right, top, bottom = sides
    if not any(sides):
        raise ValueError("outpaint needs at least one side to extend (left, right, top, bottom)")
    canvas = canvases.extend(image, left, right, top, bottom)
    width, height = canvas.image.size
    if max(width, height) > 2048:
        raise ValueError(f"the extended canvas {width}x{height} is above 2048 pixels")
    params = {**params, "width": width, "height": height, "controlnet": "none",
              "control_strength": 1.0, "control_start": 0.0, "control_end": 1.0}
    (made,) = run(ctx, "inpaint", {k: [v] for k, v in params.items()},
                  images=[canvas.image], masks=[canvas.mask])
    pictures = [canvases.blend(canvas, pic, blur) for pic in made.images or [made.image]]
    return Generated(pictures[0], made.info, pictures if made.images else None)


def check(mode: str, jobs: list[dict[str, Any]], controls: list[Any]) -> None:
    for p, control in zip(jobs, controls, strict=True):
        if p["controlnet"] != "none" and control is None:
            raise ValueError(f"controlnet {p['controlnet']!r} needs a `control` image input "
                             "(e.g. from sd.canny)")
        if p["controlnet"] == "none" and control is not None:
            raise ValueError("a `control` image was given without a controlnet: pick one")
        if p["control_start"] >= p["control_end"]:
            raise ValueError(f"control_start {p['control_start']} must be below control_end "
                             f"{p['control_end']}")
        if mode != "txt2img" and int(p["steps"] * p["strength"]) < 1:
            raise ValueError(f"strength {p['strength']} with {p['steps']} steps leaves no "
                             "denoising step: raise one of them")
        if not 1 <= p["num_images"] <= MAX_IMAGES_PER_JOB:
            raise ValueError(f"num_images must be 1 to {MAX_IMAGES_PER_JOB}, "
                             f"got {p['num_images']}")


def planned_steps(mode: str, p: dict[str, Any]) -> int:
    """Denoising steps of one diffusers call: what progress counts up to."""
    steps = p["steps"] if mode == "txt2img" else int(p["steps"] * p["strength"])
    if hires_on(mode, p):
        steps += hires.steps(p)[1]
    return steps


def hires_on(mode: str, p: dict[str, Any]) -> bool:
    return mode == "txt2img" and p.get("hires_scale", 1) > 1


def refining(mode: str, p: dict[str, Any]) -> bool:
    return mode == "txt2img" and p.get("refiner", "none") != "none"


def generate(loaded: Any, pipe: Any, mode: str, p: dict[str, Any], chunk: list[Item],
             progress: Progress, refiner: Any = None) -> list[PIL.Image.Image]:
    """The diffusers calls for the images of `chunk`: the model's; the refiner's from
    `refiner_switch` on; an img2img at the bigger size for the hires fix."""
    common: dict[str, Any] = {
        # weights and long prompts: embeddings made here, LoRA tags left out
        **encode(pipe, [take_loras(i.prompt)[0] for i in chunk],
                 [take_loras(i.negative_prompt)[0] for i in chunk]),
        "guidance_scale": p["guidance_scale"], "callback_on_step_end": progress.on_step_end}
    # CPU generators: the same seed gives the same image on any device
    seeds = [i.seed for i in chunk]
    kwargs: dict[str, Any] = {**common, "num_inference_steps": p["steps"],
                              "generator": generators(seeds), "output_type": "pil"}
    if mode != "img2img":
        kwargs.update(width=p["width"], height=p["height"])
    if mode != "txt2img":
        kwargs.update(image=[i.image for i in chunk], strength=p["strength"])
    if mode == "inpaint":
        kwargs["mask_image"] = [i.mask for i in chunk]
    if p["controlnet"] != "none":
        kwargs.update({"image" if mode == "txt2img" else "control_image":
                       [i.control for i in chunk],
                       "controlnet_conditioning_scale": p["control_strength"],
                       "control_guidance_start": p["control_start"],
                       "control_guidance_end": p["control_end"]})
    latent_out = hires_on(mode, p) and p["hires_upscaler"] == "latent"
    if latent_out:
        kwargs["output_type"] = "latent"
    if refiner is not None:  # 1. the model stops at the switch and hands over its latents
        kwargs.update(denoising_end=p["refiner_switch"], output_type="latent")
    images = progress.run(pipe, kwargs)
    if refiner is not None:
        images = progress.run(refiner, {
            **encode(refiner, [take_loras(i.prompt)[0] for i in chunk],
                     [take_loras(i.negative_prompt)[0] for i in chunk]),
            "guidance_scale": p["guidance_scale"], "callback_on_step_end": progress.on_step_end,
            "image": images, "denoising_start": p["refiner_switch"],
            "num_inference_steps": p["steps"], "generator": generators(seeds),
            "output_type": "latent" if latent_out else "pil"})
    if hires_on(mode, p):  # 2. upscale, then img2img at the bigger size
        img2img = loaded.pipeline("img2img", p["scheduler"])
        steps, _ = hires.steps(p)
        images = progress.run(img2img, {
            **common, "image": hires.upscale(images, p), "strength": p["hires_denoise"],
            "num_inference_steps": steps, "generator": generators(seeds),
            "output_type": "pil"})
    return images


def generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


class Progress:
    """Steps across every diffusers call of one job (or batch), reported through diffusers'
    `callback_on_step_end`: `ctx.progress` raises JobCancelled once the job is cancelled, so a
    cancel lands within one step. A preview every `every` steps."""

    def __init__(self, ctx: Context, family: str, every: int, total: int) -> None:
        self.ctx, self.family, self.every, self.total = ctx, family, every, total
        self.done = 0

    def run(self, pipe: Any, kwargs: dict[str, Any]) -> Any:
        images = pipe(**kwargs).images
        self.done += pipe.num_timesteps
        return images

    def on_step_end(self, pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        step = min(self.done + i + 1, self.total)
        preview = None
        if self.every and (i + 1) % self.every == 0 and step < self.total:
            preview = latent_to_image(tensors["latents"][0], self.family)
        self.ctx.progress(step, self.total, preview=preview)
        return tensors


def extra_fields(mode: str, p: dict[str, Any]) -> list[tuple[str, Any]]:
    """The A1111 fields beyond the basic ones: hires fix, the `loras` param."""
    out = hires.fields(p) if hires_on(mode, p) else []
    if refining(mode, p):
        out += [("Refiner", p["refiner"]), ("Refiner switch at", f"{p['refiner_switch']:g}")]
    if p["controlnet"] != "none":
        out.append(("ControlNet 0", f"Model: {p['controlnet']}, Weight: "
                    f"{p['control_strength']:g}, Guidance Start: {p['control_start']:g}, "
                    f"Guidance End: {p['control_end']:g}"))
    if p["loras"]:  # `<lora:...>` tags stay in the prompt, as A1111 writes them
        out.append(("Loras", " ".join(f"<lora:{x['name']}:{x['weight']:g}>"
                                      for x in p["loras"])))
    return out


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
                            extra=extra_fields(mode, job), version=plugin_version)
            pic.info["parameters"] = text  # for a core that writes a job's own PNG text
            texts.append(text)
        pics = [pic for _, pic in mine]
        out.append(Generated(pics[0], texts[0], pics if len(pics) > 1 else None))
    return out
