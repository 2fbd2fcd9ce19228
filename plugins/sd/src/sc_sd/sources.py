"""Where a model comes from: the models folder, an absolute path, or a Hugging Face repo id.

`choices` runs when the worker imports the plugin (the job schema lists the models), so it
only lists a directory. `resolve` turns a chosen name into a `Source` at job time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sc_sd.options import Options

DEFAULT_HUB_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
WEIGHT_SUFFIXES = (".safetensors", ".ckpt")
CONFIG_SUFFIX = ".config"  # `x.safetensors` finds its diffusers config folder at `x.config/`
EXTRAS = ("loras", "embeddings", "controlnet")  # subfolders of the models folder, not models
EXTRA_NOUNS = {"loras": "LoRA", "embeddings": "embedding", "controlnet": "ControlNet"}
EXTRA_SUFFIXES = {"loras": (".safetensors",), "embeddings": (".safetensors", ".pt", ".bin"),
                  "controlnet": (".safetensors",)}
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class Source:
    kind: Literal["folder", "file", "hub"]
    location: str
    """A path for a folder or file, the repo id for the hub."""
    config: Path | None = None
    """For a single file: the diffusers folder with its configs and tokenizer, if there is one."""


def scan(folder: Path | None) -> list[str]:
    """Models in `folder` and its subfolders, as paths relative to it: diffusers folders
    (with a model_index.json) and single .safetensors/.ckpt files."""
    if folder is None or not folder.is_dir():
        return []
    found: list[str] = []

    def visit(d: Path) -> None:
        for entry in sorted(d.iterdir()):
            if entry.name.startswith(".") or entry.name.endswith(CONFIG_SUFFIX) or (
                    d == folder and entry.name in EXTRAS):
                continue
            if entry.is_dir():
                if (entry / "model_index.json").is_file():
                    found.append(entry.relative_to(folder).as_posix())
                else:
                    visit(entry)
            elif entry.suffix.lower() in WEIGHT_SUFFIXES:
                found.append(entry.relative_to(folder).as_posix())

    visit(folder)
    return found


def choices(options: Options) -> list[str]:
    """The model names a job offers: the folder's models, then the configured extras; the
    public SD 1.5 repo when nothing is configured."""
    names = [*scan(options.models_dir), *options.extra_models]
    return list(dict.fromkeys(names)) or [DEFAULT_HUB_MODEL]


def resolve(name: str, options: Options) -> Source:
    """The source of model `name`; raise ValueError saying where it was looked for."""
    local = options.models_dir / name if options.models_dir is not None else None
    if local is not None and ".." not in Path(name).parts and local.exists():
        return _local(local)
    path = Path(name).expanduser()
    if path.is_absolute():
        if not path.exists():
            raise ValueError(f"model {name!r}: no such file or folder")
        return _local(path)
    if REPO_ID.fullmatch(name):
        return Source("hub", name)
    where = f"the models folder {options.models_dir}" if options.models_dir else (
        "a models folder (none is set: STABLECORE_SD_MODELS_DIR)")
    raise ValueError(f"unknown model {name!r}: not in {where}, not an absolute path and not a "
                     "Hugging Face repo id (owner/name)")


def _local(path: Path) -> Source:
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"model folder {path} has no model_index.json: it is not a "
                             "diffusers pipeline folder")
        return Source("folder", str(path))
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ValueError(f"model file {path} is not a .safetensors or .ckpt file")
    config = path.with_suffix(CONFIG_SUFFIX)
    return Source("file", str(path), config if (config / "model_index.json").is_file() else None)


def extras(options: Options, kind: str) -> list[str]:
    """The files of the models folder's `kind` subfolder (loras, embeddings, controlnet) by
    name: the path below it without the extension, as A1111's `<lora:name:1>` writes it.
    A ControlNet may also be a diffusers folder (one with a config.json)."""
    root = extras_folder(options, kind)
    if root is None or not root.is_dir():
        return []
    names = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix.lower() in EXTRA_SUFFIXES[kind]:
            if kind == "controlnet" and (path.parent / "config.json").is_file():
                continue  # the weights of a diffusers folder, listed as the folder
            names.append(rel.with_suffix("").as_posix())
        elif kind == "controlnet" and path.is_dir() and (path / "config.json").is_file():
            names.append(rel.as_posix())
    return list(dict.fromkeys(names))


def extras_folder(options: Options, kind: str) -> Path | None:
    return options.models_dir / kind if options.models_dir is not None else None


def find_extra(options: Options, kind: str, name: str) -> Path:
    """The file (or ControlNet folder) of extra `name`; ValueError naming where it looked."""
    root = extras_folder(options, kind)
    if root is not None and ".." not in Path(name).parts:
        for candidate in [root / name, *(root / f"{name}{s}" for s in EXTRA_SUFFIXES[kind])]:
            if candidate.is_file() or (kind == "controlnet" and candidate.is_dir()):
                return candidate
    have = ", ".join(extras(options, kind)) or "none"
    where = root or "the models folder (none is set)"
    raise ValueError(f"no {EXTRA_NOUNS[kind]} {name!r} in {where} (there: {have})")
