"""The SD jobs: txt2img, img2img and inpaint.

This module is what the worker imports at start, for the schema, so it stays light: torch
and diffusers (seconds to import) load with `sc_sd.generate` at the first SD job. The model
choices in the schema come from the models folder, listed here once at import: restart the
server after adding a model.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sc_sd.options import Options
from sc_sd.results import Generated
from sc_sd.samplers import SamplerName
from sc_sd.sources import choices, extras
from stablecore import Context, Image, Mask, job

OPTIONS = Options.from_env(os.environ)
CHOICES = choices(OPTIONS)
LORAS = extras(OPTIONS, "loras")
CONTROLNETS = extras(OPTIONS, "controlnet")

Model = Annotated[Literal[tuple(CHOICES)], Field(
    description="a model in the models folder (STABLECORE_SD_MODELS_DIR) or one listed in "
                "STABLECORE_SD_MODELS (Hugging Face repo ids, absolute paths)")]
Prompt = Annotated[str, Field(max_length=4000, description=(
    "what to draw, any length; A1111 syntax: (word:1.3) weights, (word) x1.1, [word] /1.1, "
    "<lora:name:0.8>, an embedding by its file name"))]
Negative = Annotated[str, Field(max_length=4000, description="what to avoid (same syntax)")]
Size = Annotated[int, Field(ge=32, le=2048, multiple_of=8, description="pixels, a multiple of 8")]
Steps = Annotated[int, Field(ge=1, le=150, description="denoising steps")]
Guidance = Annotated[float, Field(ge=0, le=30, description="classifier-free guidance (CFG) scale")]
Sampler = Annotated[SamplerName, Field(description="the sampler (diffusers scheduler)")]
Seed = Annotated[int, Field(ge=-1, le=2**32 - 1, description="-1 picks a random seed; "
                            "the seed used is in the `info` output and in the PNG")]
Count = Annotated[int, Field(ge=1, le=8, description="images made from seed, seed+1, ...; "
                             "all of them come out as `images`, the first also as `image`")]
Strength = Annotated[float, Field(gt=0, le=1, description="how much to change the input: "
                                  "0 keeps it, 1 ignores it")]

LoraName = Annotated[Literal[tuple(LORAS)] if LORAS else str, Field(
    description="a LoRA file in the models folder's loras/ (name without .safetensors)")]


class LoraWeight(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: LoraName
    weight: float = Field(1.0, ge=-4, le=4, description="0 = off, 1 = as trained")


Loras = Annotated[list[LoraWeight], Field(max_length=16, description=(
    "LoRAs (and LyCORIS LoCon) to apply; `<lora:name:weight>` in the prompt adds more"))]

HiresScale = Annotated[float, Field(ge=1, le=4, description=(
    "hires fix: 1 = off; above 1, make the image at width x height, upscale it by this "
    "factor and redraw it with img2img"))]
HiresUpscaler = Annotated[Literal["latent", "lanczos"], Field(
    description="hires fix: upscale the latent, or the decoded image with Lanczos")]
HiresSteps = Annotated[int, Field(ge=0, le=150, description="hires fix: steps of the redraw "
                                  "(0 = as many as `steps`)")]
HiresDenoise = Annotated[float, Field(gt=0, le=1, description="hires fix: img2img strength "
                                      "of the redraw")]

ControlNet = Annotated[Literal[("none", *CONTROLNETS)], Field(
    description="a ControlNet model in the models folder's controlnet/, guided by the "
                "`control` image (make one with sd.canny)")]
ControlStrength = Annotated[float, Field(ge=0, le=2, description="ControlNet weight (0 = off)")]
ControlStart = Annotated[float, Field(ge=0, le=1, description="ControlNet starts at this "
                                      "fraction of the steps")]
ControlEnd = Annotated[float, Field(ge=0, le=1, description="ControlNet stops at this "
                                    "fraction of the steps")]

Refiner = Annotated[Literal[("none", *CHOICES)], Field(
    description="SDXL: a refiner model that takes over the last steps")]
RefinerSwitch = Annotated[float, Field(gt=0, lt=1, description=(
    "SDXL refiner: the fraction of the steps after which the refiner takes over"))]

# Queued jobs that agree on these run as one diffusers call (prompts and seeds may differ).
BATCH = ("model", "width", "height", "steps", "scheduler", "guidance_scale", "loras",
         "controlnet", "control_strength", "control_start", "control_end")


def _run(ctx: Context, mode: str, params: dict[str, list[Any]], **inputs: Any) -> Any:
    from sc_sd import generate  # torch and diffusers load here, at the first SD job

    return generate.run(ctx, mode, params, **inputs)


@job(description="Stable Diffusion: an image from a text prompt.",
     batch=(*BATCH, "hires_scale", "hires_upscaler", "hires_steps", "hires_denoise", "refiner",
            "refiner_switch"),
     batch_max=8, model_param="model")
def txt2img(ctx: Context, prompt: Prompt = "", negative_prompt: Negative = "",
            model: Model = CHOICES[0], width: Size = 512, height: Size = 512, steps: Steps = 20,
            guidance_scale: Guidance = 7.0, scheduler: Sampler = "dpmpp_2m_karras",
            seed: Seed = -1, num_images: Count = 1, loras: Loras = (),
            control: Image | None = None, controlnet: ControlNet = "none",
            control_strength: ControlStrength = 1.0, control_start: ControlStart = 0.0,
            control_end: ControlEnd = 1.0,
            hires_scale: HiresScale = 1.0, hires_upscaler: HiresUpscaler = "latent",
            hires_steps: HiresSteps = 0, hires_denoise: HiresDenoise = 0.5,
            refiner: Refiner = "none", refiner_switch: RefinerSwitch = 0.8) -> Generated:
    # batched: every parameter arrives as a list, one entry per job, and a list is returned
    return _run(ctx, "txt2img", dict(
        prompt=prompt, negative_prompt=negative_prompt, model=model, width=width, height=height,
        steps=steps, guidance_scale=guidance_scale, scheduler=scheduler, seed=seed,
        num_images=num_images, loras=loras,
        controlnet=controlnet, control_strength=control_strength, control_start=control_start,
        control_end=control_end, hires_scale=hires_scale, hires_upscaler=hires_upscaler,
        hires_steps=hires_steps, hires_denoise=hires_denoise, refiner=refiner,
        refiner_switch=refiner_switch), controls=control)


@job(description="Stable Diffusion: redraw an image guided by a prompt.",
     batch=(*BATCH, "strength"), batch_max=8, model_param="model")
def img2img(ctx: Context, image: Image, prompt: Prompt = "", negative_prompt: Negative = "",
            strength: Strength = 0.75, model: Model = CHOICES[0], width: Size = 512,
            height: Size = 512, steps: Steps = 20, guidance_scale: Guidance = 7.0,
            scheduler: Sampler = "dpmpp_2m_karras", seed: Seed = -1,
            num_images: Count = 1, loras: Loras = (),
            control: Image | None = None, controlnet: ControlNet = "none",
            control_strength: ControlStrength = 1.0, control_start: ControlStart = 0.0,
            control_end: ControlEnd = 1.0) -> Generated:
    return _run(ctx, "img2img", dict(
        prompt=prompt, negative_prompt=negative_prompt, strength=strength, model=model,
        width=width, height=height, steps=steps, guidance_scale=guidance_scale,
        scheduler=scheduler, seed=seed, num_images=num_images, loras=loras,
        controlnet=controlnet, control_strength=control_strength, control_start=control_start,
        control_end=control_end), images=image, controls=control)


@job(description="Stable Diffusion: repaint the white part of a mask guided by a prompt.",
     batch=(*BATCH, "strength"), batch_max=8, model_param="model")
def inpaint(ctx: Context, image: Image, mask: Mask, prompt: Prompt = "",
            negative_prompt: Negative = "", strength: Strength = 1.0, model: Model = CHOICES[0],
            width: Size = 512, height: Size = 512, steps: Steps = 20,
            guidance_scale: Guidance = 7.0, scheduler: Sampler = "dpmpp_2m_karras",
            seed: Seed = -1, num_images: Count = 1, loras: Loras = (),
            control: Image | None = None, controlnet: ControlNet = "none",
            control_strength: ControlStrength = 1.0, control_start: ControlStart = 0.0,
            control_end: ControlEnd = 1.0) -> Generated:
    return _run(ctx, "inpaint", dict(
        prompt=prompt, negative_prompt=negative_prompt, strength=strength, model=model,
        width=width, height=height, steps=steps, guidance_scale=guidance_scale,
        scheduler=scheduler, seed=seed, num_images=num_images, loras=loras,
        controlnet=controlnet, control_strength=control_strength, control_start=control_start,
        control_end=control_end), images=image, masks=mask, controls=control)


Extend = Annotated[int, Field(ge=0, le=1024, description="pixels to add on this side")]


@job(description="Stable Diffusion: extend the canvas on chosen sides and paint the new "
                 "border; the original pixels stay as they are.", model_param="model")
def outpaint(ctx: Context, image: Image, prompt: Prompt = "", negative_prompt: Negative = "",
             left: Extend = 0, right: Extend = 0, top: Extend = 0, bottom: Extend = 0,
             mask_blur: Annotated[int, Field(ge=0, le=64, description=(
                 "pixels over which the new border fades into the old edge"))] = 8,
             strength: Strength = 1.0, model: Model = CHOICES[0], steps: Steps = 20,
             guidance_scale: Guidance = 7.0, scheduler: Sampler = "dpmpp_2m_karras",
             seed: Seed = -1, num_images: Count = 1, loras: Loras = ()) -> Generated:
    from sc_sd import generate  # torch and diffusers load here, at the first SD job

    return generate.outpaint(ctx, image, (left, right, top, bottom), mask_blur, dict(
        prompt=prompt, negative_prompt=negative_prompt, strength=strength, model=model,
        steps=steps, guidance_scale=guidance_scale, scheduler=scheduler, seed=seed,
        num_images=num_images, loras=loras))


@job(description="Read the generation parameters an image carries (A1111's `parameters` PNG "
                 "text or JPEG/WebP EXIF comment): the sd job and params to make it again.")
def read_params(image: Image) -> dict[str, Any]:
    from sc_sd.infotext import read_image

    return read_image(image)


@job(description="Canny edges of an image (white on black): the control image of a canny "
                 "ControlNet.")
def canny(image: Image, low: Annotated[int, Field(ge=0, le=255, description=(
              "edges weaker than this are dropped"))] = 100,
          high: Annotated[int, Field(ge=0, le=255, description=(
              "edges stronger than this are kept"))] = 200) -> Image:
    from sc_sd.control import canny as edges  # OpenCV loads at the first canny job

    return edges(image, low, high)
