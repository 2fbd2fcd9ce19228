"""The phrase lists a prompt is built from, one phrase a line, like A1111's interrogator.

Built-in lists ship in `phrases/`. A `<name>.txt` in the models folder's `interrogate/`
replaces the built-in list of that name, or adds a category of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path

from stablecore import models_folder

# category -> phrases it puts in the prompt (None: the job's `flavors`), in prompt order
BUILTIN = {"mediums": 1, "artists": 1, "movements": 1, "flavors": None}
PREFIX = {"artists": "by "}


def read(text: str) -> list[str]:
    """Phrases of a list: stripped, blank lines and `#` comments left out, duplicates once."""
    lines = (line.strip() for line in text.splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def load(environ: Mapping[str, str]) -> dict[str, list[str]]:
    """Every category's phrases: the built-in lists, then the models folder's."""
    package = files("sc_interrogate") / "phrases"
    lists = {name: read((package / f"{name}.txt").read_text(encoding="utf-8"))
             for name in BUILTIN}
    folder = models_folder("interrogate", environ)
    for path in sorted(folder.glob("*.txt")) if folder is not None else []:
        phrases = read(Path(path).read_text(encoding="utf-8"))
        if phrases:
            lists[path.stem] = phrases
    return lists


def top_count(category: str, flavors: int) -> int:
    count = BUILTIN.get(category, 1)
    return flavors if count is None else count
