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
            if entry.name.startswith(".") or entry.name.endswith(CONFIG_SUFFIX):
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
