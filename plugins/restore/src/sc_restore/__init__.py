"""restore: find faces, align them, restore each with CodeFormer or GFPGAN, paste them back.

Model files are declared below (`stable-core models pull restore`); torch and spandrel are
imported when a restorer loads, not when the worker lists plugins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import PIL.Image

from sc_restore import align, detect, models
from stablecore import Context, Field, Image, job
from stablecore.modelfiles import local_path, models_cache

MODEL_FILES = [detect.YUNET, models.CODEFORMER, models.GFPGAN]
DetectorName = Literal["auto", "yunet", "haar"]
DETECTOR = Field("auto", description="yunet (the model file, when pulled), haar (OpenCV's "
                                     "cascade, where this OpenCV ships one); auto: the first "
                                     "of them there is")
CONFIDENCE = Field(0.7, ge=0.05, le=1, description="lowest detection score kept")
MAX_FACES = Field(0, ge=0, le=1000, description="restore at most this many faces, the largest "
                                               "first; 0 = all")


@dataclass
class Restored:
    image: Image
    faces: list[dict[str, float]]  # per face: box, score and landmarks in input pixels


def find_faces(ctx: Context, pixels: np.ndarray, detector: str, confidence: float,
               max_faces: int) -> list[detect.Face]:
    """The faces, largest first. YuNet when its file is pulled (or asked for), else Haar."""
    path = local_path(detect.YUNET, models_cache(os.environ))
    if detector == "yunet" or (detector == "auto" and path is not None):
        path = ctx.model_path(detect.YUNET)  # a clear error when it is not pulled
        found = ctx.cache("yunet", lambda: detect.yunet(path), size_mb=1)(pixels, confidence)
    else:
        found = ctx.cache("haar", detect.haar, size_mb=1)(pixels, confidence)
    found.sort(key=lambda f: -f.box[2] * f.box[3])
    return found[:max_faces] if max_faces else found


def split_alpha(image: PIL.Image.Image) -> tuple[np.ndarray, PIL.Image.Image | None]:
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    return np.asarray(image.convert("RGB")), alpha


@job(description="Restore faces: detect them (YuNet or a Haar cascade), align each to 512 x "
                 "512, restore it with CodeFormer or GFPGAN, and paste it back with a "
                 "feathered mask. Chain an upscale job first for a better background.",
     model_param="model")
def faces(
    ctx: Context,
    image: Image = Field(description="the picture with faces"),
    model: str = Field("codeformer", min_length=1, description="codeformer, gfpgan (declared "
                       "model files), a face model file in the models folder's restore/, or "
                       "none (align and paste back only)"),
    fidelity: float = Field(0.5, ge=0, le=1, description="CodeFormer's weight w: 0 = best "
                            "quality, 1 = closest to the input face"),
    strength: float = Field(1.0, ge=0, le=1, description="blend of the restored face with the "
                            "original: 0 keeps the original"),
    upscale: float = Field(1.0, ge=1, le=8, description="scale the whole picture (Lanczos) "
                           "before pasting the faces back at that size"),
    detector: DetectorName = DETECTOR,
    confidence: float = CONFIDENCE,
    max_faces: int = MAX_FACES,
) -> Restored:
    # 1. the faces, found in the input
    pixels, alpha = split_alpha(image)
    found = find_faces(ctx, pixels, detector, confidence, max_faces)
    size = (round(image.width * upscale), round(image.height * upscale))
    scale = size[0] / image.width
    base = image.resize(size, PIL.Image.Resampling.LANCZOS) if scale != 1 else image
    if not found:
        ctx.log.info("restore.faces: no faces found (detector %s, confidence %g); the image "
                     "is returned %s", detector, confidence,
                     "unchanged" if scale == 1 else f"only upscaled x{scale:g}")
        return Restored(base, [])
    # 2. the restorer
    restorer = None
    if model != models.NONE:
        path = (ctx.model_path(models.BUILTIN[model]) if model in models.BUILTIN
                else models.user_file(model, os.environ))
        restorer = ctx.cache(model, lambda: models.load(path, ctx.device),
                             size_mb=path.stat().st_size / 2**20)
    # 3. each face: crop, restore, blend by strength, paste onto the scaled picture
    canvas = np.asarray(base.convert("RGB"), np.float32).copy()
    for i, face in enumerate(found):
        to_crop = align.matrix(face.landmarks)
        cropped = align.crop(pixels, to_crop)
        restored = cropped.astype(np.float32)
        if restorer is not None and strength > 0:
            restored = strength * models.restore(restorer, cropped, fidelity) \
                + (1 - strength) * restored
        align.paste(canvas, restored, to_crop, scale)
        preview = PIL.Image.fromarray(np.clip(restored, 0, 255).astype(np.uint8))
        ctx.progress(i + 1, len(found), preview=preview.resize((128, 128)))
    ctx.log.info("restore.faces: %d face(s) restored with %s", len(found), model)
    # 4. the picture, with its alpha channel back
    result = PIL.Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
    if alpha is not None:
        result.putalpha(alpha.resize(size, PIL.Image.Resampling.LANCZOS))
    return Restored(result, [f.to_json() for f in found])


@job(name="detect", description="Find faces: boxes, scores and five landmarks each (eyes, "
                                 "nose, mouth corners), largest first.")
def detect_faces(
    ctx: Context,
    image: Image = Field(description="the picture to search"),
    detector: DetectorName = DETECTOR,
    confidence: float = CONFIDENCE,
    max_faces: int = MAX_FACES,
) -> list[dict[str, float]]:
    found = find_faces(ctx, split_alpha(image)[0], detector, confidence, max_faces)
    ctx.log.info("restore.detect: %d face(s)", len(found))
    return [f.to_json() for f in found]

