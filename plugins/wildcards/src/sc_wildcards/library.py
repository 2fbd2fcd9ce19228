"""Where wildcard lists come from: user folders first, then the lists bundled with the plugin.

A list `__name__` is the file `name.txt` (`__a/b__` is `a/b.txt`) in the first folder that has
it: one entry per line, blank lines and lines starting with `#` skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

ENV_VAR = "STABLECORE_WILDCARDS"


def bundled() -> Traversable:
    return files("sc_wildcards") / "lists"


def folders(folder: str, environ: Mapping[str, str]) -> list[Traversable]:
    """The search order: the job's `folder`, then each folder in $STABLECORE_WILDCARDS
    (separated by os.pathsep), then the bundled lists."""
    user = [folder] if folder else []
    user += [p for p in environ.get(ENV_VAR, "").split(os.pathsep) if p]
    for p in user:
        if not Path(p).is_dir():
            raise ValueError(f"wildcard folder {p!r} does not exist or is not a folder")
    return [*(Path(p) for p in user), bundled()]


class Library:
    """Reads each list once per job; a name that is nowhere gets an error naming the choices."""

    def __init__(self, roots: list[Traversable]) -> None:
        self.roots = roots
        self.loaded: dict[str, list[str]] = {}

    def lines(self, name: str) -> list[str]:
        if name not in self.loaded:
            self.loaded[name] = self._read(name)
        return self.loaded[name]

    def _read(self, name: str) -> list[str]:
        for root in self.roots:
            path = root.joinpath(*f"{name}.txt".split("/"))
            if path.is_file():
                text = path.read_text(encoding="utf-8")
                lines = [s.strip() for s in text.splitlines()]
                lines = [s for s in lines if s and not s.startswith("#")]
                if not lines:
                    raise ValueError(f"wildcard list __{name}__ ({path}) has no entries")
                return lines
        known = ", ".join(sorted(self.names())) or "none"
        raise ValueError(f"unknown wildcard __{name}__; known lists: {known}")

    def names(self) -> dict[str, str]:
        """Every list name and the folder it is read from (the first one wins)."""
        found: dict[str, str] = {}
        for root in self.roots:
            for name in _walk(root, ""):
                found.setdefault(name, str(root))
        return found


def _walk(folder: Traversable, prefix: str) -> Iterator[str]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".txt"):
            yield prefix + entry.name.removesuffix(".txt")
