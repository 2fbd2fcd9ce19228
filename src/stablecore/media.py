"""Media types a job takes and returns, how they are written to files, and how uploads are sniffed.

`Image` and `Mask` are PIL images, `Text` is a str, `Numbers` wraps a float array, and
`Audio`/`Video` are files (a plugin reads them with whatever library suits it). A job
annotates a parameter with one of these to take it as an input artifact.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import shutil
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import numpy as np
import PIL.Image
import PIL.PngImagePlugin


@dataclass(frozen=True)
class MediaKind:
    """Marks an annotation as a media artifact of one kind."""

    name: str


Image = Annotated[PIL.Image.Image, MediaKind("image")]
Mask = Annotated[PIL.Image.Image, MediaKind("mask")]
Text = Annotated[str, MediaKind("text")]


@dataclass(frozen=True)
class Audio:
    """An audio file (wav, flac, ogg, mp3)."""

    path: Path


@dataclass(frozen=True)
class Video:
    """A video file (mp4, webm, mkv, mov, avi)."""

    path: Path


@dataclass
class Numbers:
    """A 1-D or 2-D float series, e.g. per-frame audio features; `rate` is rows per second."""

    values: np.ndarray
    columns: list[str] = field(default_factory=list)
    rate: float | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim not in (1, 2):
            raise ValueError(f"Numbers must be 1-D or 2-D, got shape {self.values.shape}")


KINDS = ("image", "mask", "audio", "video", "text", "numbers")
CLASS_KINDS: dict[type, str] = {Audio: "audio", Video: "video", Numbers: "numbers"}
# Which artifact kinds an input of a kind accepts (a mask may be any image).
ACCEPTS = {"image": {"image", "mask"}, "mask": {"mask", "image"}}


class MediaSpec(NamedTuple):
    """What an annotation says: the media kind (None: not media), optional, a list of them."""

    kind: str | None
    optional: bool = False
    many: bool = False


def media_kind(annotation: Any) -> MediaSpec:
    """`Image | None` is an optional image; `list[Image]` an ordered list of images."""
    optional = many = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) != 1:
            return MediaSpec(None, optional)
        annotation = args[0]
    if typing.get_origin(annotation) is list and len(typing.get_args(annotation)) == 1:
        many, annotation = True, typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, MediaKind):
                return MediaSpec(meta.name, optional, many)
    kind = CLASS_KINDS.get(annotation)
    return MediaSpec(kind, optional, many and kind is not None)


def accepts(input_kind: str, artifact_kind: str) -> bool:
    return artifact_kind in ACCEPTS.get(input_kind, {input_kind})


# --- files ------------------------------------------------------------------------------------
def a1111_parameters(spec: str, params: dict[str, Any]) -> str:
    """Generation parameters in the A1111 `parameters` text format that other tools read."""
    rest = {k: v for k, v in params.items() if k not in ("prompt", "negative_prompt")}
    lines = [str(params["prompt"])] if "prompt" in params else []
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    pairs = [f"{k.replace('_', ' ').capitalize()}: {v}" for k, v in rest.items()]
    lines.append(", ".join([*pairs, f"Job: {spec}"]))
    return "\n".join(lines)


def write_output(kind: str, value: Any, dest: Path, spec: str, params: dict[str, Any]) -> dict:
    """Write one output value under `dest` (no extension); return its file facts."""
    if kind in ("image", "mask"):
        if not isinstance(value, PIL.Image.Image):
            raise TypeError(f"{kind} output must be a PIL image, got {type(value).__name__}")
        info = PIL.PngImagePlugin.PngInfo()
        # A job may write its own A1111 text on the image (`image.info["parameters"]`).
        own = value.info.get("parameters")
        info.add_text("parameters", own if isinstance(own, str) else a1111_parameters(spec, params))
        info.add_text("stablecore", json.dumps({"job": spec, "params": params}, default=str))
        path = dest.with_suffix(".png")
        # Fast zlib level and Huffman-only strategy: a 4K frame in ~0.6 s instead of seconds.
        (value.convert("L") if kind == "mask" else value).save(
            path, pnginfo=info, compress_level=1, compress_type=2)
        ext, mime, meta = "png", "image/png", {"width": value.width, "height": value.height}
    elif kind == "text":
        path, ext, mime, meta = dest.with_suffix(".txt"), "txt", "text/plain", {}
        path.write_text(str(value), encoding="utf-8")
    elif kind == "numbers":
        if not isinstance(value, Numbers):
            value = Numbers(np.asarray(value))
        path, ext, mime = dest.with_suffix(".json"), "json", "application/json"
        doc = {"columns": value.columns, "rate": value.rate, "values": value.values.tolist()}
        path.write_text(json.dumps(doc))
        meta = {"shape": list(value.values.shape), "columns": value.columns}
    elif kind in ("audio", "video"):
        if not isinstance(value, Audio | Video) or not Path(value.path).is_file():
            raise TypeError(f"{kind} output must be an {kind.capitalize()} with an existing file")
        ext = Path(value.path).suffix.lstrip(".").lower()
        sniffed = sniff_file(Path(value.path))
        if sniffed is None or sniffed[0] != kind:
            raise TypeError(f"{kind} output {value.path} is not a known {kind} format")
        path, mime, meta = dest.with_suffix("." + ext), sniffed[1], {}
        shutil.copyfile(value.path, path)
    else:
        raise TypeError(f"unknown media kind {kind!r}")
    return {"path": str(path), "kind": kind, "mime": mime, "ext": ext, "sha256": sha256_file(path),
            "meta": meta}


def read_input(kind: str, path: Path) -> Any:
    """Load an input artifact file as the value a job function receives."""
    if kind in ("image", "mask"):
        with PIL.Image.open(path) as im:
            im.load()
            if kind == "mask":
                return im.convert("L")
            return im if im.mode in ("RGB", "RGBA") else im.convert("RGB")
    if kind == "text":
        return path.read_text(encoding="utf-8")
    if kind == "numbers":
        doc = json.loads(path.read_text())
        return Numbers(np.asarray(doc["values"]), doc.get("columns") or [], doc.get("rate"))
    return Audio(path) if kind == "audio" else Video(path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# --- sniffing (server side: no decoding, just signatures) ---------------------------------------
SIGNATURES: list[tuple[bytes, int, str, str, str]] = [
    # (magic, offset, kind, mime, ext)
    (b"\x89PNG\r\n\x1a\n", 0, "image", "image/png", "png"),
    (b"\xff\xd8\xff", 0, "image", "image/jpeg", "jpg"),
    (b"GIF8", 0, "image", "image/gif", "gif"),
    (b"BM", 0, "image", "image/bmp", "bmp"),
    (b"II*\x00", 0, "image", "image/tiff", "tif"),
    (b"MM\x00*", 0, "image", "image/tiff", "tif"),
    (b"WEBP", 8, "image", "image/webp", "webp"),
    (b"WAVE", 8, "audio", "audio/wav", "wav"),
    (b"AVI ", 8, "video", "video/x-msvideo", "avi"),
    (b"fLaC", 0, "audio", "audio/flac", "flac"),
    (b"OggS", 0, "audio", "audio/ogg", "ogg"),
    (b"ID3", 0, "audio", "audio/mpeg", "mp3"),
    (b"\xff\xfb", 0, "audio", "audio/mpeg", "mp3"),
    (b"\xff\xf3", 0, "audio", "audio/mpeg", "mp3"),
    (b"\x1a\x45\xdf\xa3", 0, "video", "video/webm", "webm"),
    (b"ftypqt", 4, "video", "video/quicktime", "mov"),
    (b"ftyp", 4, "video", "video/mp4", "mp4"),
]


def sniff(head: bytes) -> tuple[str, str, str] | None:
    """(kind, mime, ext) from a file's first bytes, or None if it is no known media."""
    for magic, offset, kind, mime, ext in SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return kind, mime, ext
    try:  # incremental: a multi-byte character may be cut at the end of `head`
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    if text.lstrip().startswith("{") and '"values"' in text:
        return "numbers", "application/json", "json"
    return "text", "text/plain", "txt"


def sniff_file(path: Path) -> tuple[str, str, str] | None:
    with path.open("rb") as f:
        return sniff(f.read(4096))
