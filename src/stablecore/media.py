"""Media types a job takes and returns, how they are written to files, and how uploads are sniffed.

`Image` and `Mask` are PIL images, `Text` is a str, `Numbers` wraps a float array, and
`Audio`/`Video` are files (a plugin reads them with whatever library suits it). A job
annotates a parameter with one of these to take it as an input artifact.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import struct
import types
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import numpy as np
import PIL.Image
import PIL.PngImagePlugin
from isal import isal_zlib


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


KINDS = ("image", "mask", "audio", "video", "text", "numbers", "json")
JSON_INLINE_BYTES = 256 * 1024  # a JSON output up to this size is also inline in the job
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
        # A job may write its own A1111 text on the image (`image.info["parameters"]`).
        own = value.info.get("parameters")
        texts = {"parameters": own if isinstance(own, str) else a1111_parameters(spec, params),
                 "stablecore": json.dumps({"job": spec, "params": params}, default=str)}
        path = dest.with_suffix(".png")
        image = value.convert("L") if kind == "mask" and value.mode != "L" else value
        return {"path": str(path), "kind": kind, "mime": "image/png", "ext": "png",
                "sha256": write_png(image, path, texts),
                "meta": {"width": value.width, "height": value.height}}
    elif kind == "json":  # `value` is already plain JSON (the spec's TypeAdapter made it so)
        path, ext, mime, meta = dest.with_suffix(".json"), "json", "application/json", {}
        path.write_text(json.dumps(value))
        inline = path.stat().st_size <= JSON_INLINE_BYTES
        return {"path": str(path), "kind": kind, "mime": mime, "ext": ext,
                "sha256": sha256_file(path), "meta": meta, "value": value if inline else None}
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
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- PNG --------------------------------------------------------------------------------------
PNG_COLOUR_TYPES = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}  # modes of 8 bits a sample


def write_png(image: PIL.Image.Image, path: Path, texts: dict[str, str]) -> str:
    """Write `image` as a PNG with `texts` as text chunks; return the file's sha256.

    An 8-bit L, LA, RGB or RGBA image (what jobs return) is filtered with numpy, deflated by
    ISA-L (zlib's format at several times its speed) in slices of rows on parallel threads,
    and hashed as it is written: a 4K frame in ~0.1 s where Pillow takes ~0.6 s, about as
    small. Other modes, and colour-keyed transparency, go through Pillow.
    """
    if image.mode not in PNG_COLOUR_TYPES or "transparency" in image.info or 0 in image.size:
        info = PIL.PngImagePlugin.PngInfo()
        for key, text in texts.items():
            info.add_text(key, text)
        image.save(path, pnginfo=info, compress_level=1)
        return sha256_file(path)
    rows = np.asarray(image).reshape(image.height, -1)
    ihdr = struct.pack(">IIBBBBB", image.width, image.height, 8, PNG_COLOUR_TYPES[image.mode],
                       0, 0, 0)
    icc = image.info.get("icc_profile")
    chunks = [(b"IHDR", ihdr),
              *([(b"iCCP", b"ICC Profile\0\0" + isal_zlib.compress(icc))] if icc else []),
              *(_png_text(key, text) for key, text in texts.items()),
              *((b"IDAT", part) for part in _png_idat(rows, len(image.getbands()))),
              (b"IEND", b"")]
    sha = hashlib.sha256()
    with path.open("wb") as f:
        for data in [b"\x89PNG\r\n\x1a\n", *(b for c in chunks for b in _png_chunk(*c))]:
            sha.update(data)
            f.write(data)
    return sha.hexdigest()


def _png_idat(rows: np.ndarray, bpp: int) -> list[bytes]:
    """The image data: one zlib stream of the filtered rows, made in slices of rows on
    threads (numpy and ISA-L let go of the GIL). Each slice but the last ends on a sync flush,
    so the raw deflate parts concatenate; the zlib header and Adler-32 wrap them."""
    height = rows.shape[0]
    n = max(1, min(os.cpu_count() or 1, 8, rows.nbytes >> 20, height))  # slices of >= 1 MiB
    bounds = [height * i // n for i in range(n + 1)]
    work = partial(_filter_deflate, rows, bpp)
    if n == 1:
        done = [work(0, height)]
    else:
        with ThreadPoolExecutor(n) as pool:
            done = list(pool.map(work, bounds[:-1], bounds[1:]))
    adler = 1
    for filtered, _ in done:
        adler = isal_zlib.adler32(filtered, adler)
    parts = [part for _, part in done]
    parts[0] = b"\x78\x01" + parts[0]  # deflate, 32 KiB window, fastest
    parts[-1] += struct.pack(">I", adler)
    return parts


def _filter_deflate(rows: np.ndarray, bpp: int, start: int, stop: int
                    ) -> tuple[np.ndarray, bytes]:
    """Rows `start:stop` filtered, and deflated raw (ISA-L's level 1); the image's last rows
    end the stream, others end on a sync flush."""
    filtered = _average_filter(rows, bpp, start, stop)
    z = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)
    last = stop == rows.shape[0]
    return filtered, z.compress(filtered) + z.flush(isal_zlib.Z_FINISH if last
                                                    else isal_zlib.Z_SYNC_FLUSH)


def _average_filter(rows: np.ndarray, bpp: int, start: int, stop: int) -> np.ndarray:
    """PNG filter type 3 on rows `start:stop`: each byte minus the floor mean of the byte
    `bpp` to its left and the byte above (0 past the edge), behind the filter-type byte."""
    out = np.empty((stop - start, rows.shape[1] + 1), np.uint8)
    out[:, 0] = 3
    res, x, top = out[:, 1:], rows[start:stop], int(start == 0)
    if top:  # the image's top row: the byte to the left only
        res[0, :bpp] = x[0, :bpp]
        np.subtract(x[0, bpp:], x[0, :-bpp] >> 1, out=res[0, bpp:])
    res, x, above = res[top:], x[top:], rows[start + top - 1:stop - 1]
    np.subtract(x[:, :bpp], above[:, :bpp] >> 1, out=res[:, :bpp])  # left column: above only
    left, up = x[:, :-bpp], above[:, bpp:]
    mean = left & up
    mean += (left ^ up) >> 1  # floor((left + up) / 2) without leaving uint8
    np.subtract(x[:, bpp:], mean, out=res[:, bpp:])
    return out


def _png_text(key: str, text: str) -> tuple[bytes, bytes]:
    """A tEXt chunk, or iTXt (UTF-8) when the text is not Latin-1, as Pillow writes them."""
    try:
        return b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1")
    except UnicodeEncodeError:
        return b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")


def _png_chunk(kind: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    return (struct.pack(">I", len(data)) + kind, data,
            struct.pack(">I", isal_zlib.crc32(data, isal_zlib.crc32(kind))))


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
