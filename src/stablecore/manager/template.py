"""The package `stable-core plugin new` writes: a working job, its test and a README."""

from __future__ import annotations

import subprocess
from pathlib import Path

PYPROJECT = '''[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "stablecore-{name}"
version = "0.1.0"
description = "{description}"
readme = "README.md"
requires-python = ">=3.11"
authors = [{{ name = "{author}" }}]
dependencies = ["stable-core", "numpy", "pillow"]

[project.entry-points."stablecore.plugins"]
{name} = "sc_{name}"

[tool.setuptools.packages.find]
where = ["src"]
'''

MODULE = '''"""{description}"""

from typing import Literal

import numpy as np
import PIL.Image

from stablecore import Context, Field, Image, job


@job(description="Paint a gradient between two colours; a starting point for your own job.")
def gradient(
    ctx: Context,
    width: int = Field(256, ge=8, le=4096, description="pixels"),
    height: int = Field(256, ge=8, le=4096, description="pixels"),
    start: str = Field("#1d2b53", pattern="^#[0-9a-fA-F]{{6}}$", description="left colour"),
    end: str = Field("#ff77a8", pattern="^#[0-9a-fA-F]{{6}}$", description="right colour"),
    direction: Literal["horizontal", "vertical"] = "horizontal",
) -> Image:
    a, b = (np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)], float) for c in (start, end))
    ramp = np.linspace(0, 1, width if direction == "horizontal" else height)
    rows = []
    for y in range(height):  # row by row, to show progress reporting
        t = ramp if direction == "horizontal" else np.full(width, ramp[y])
        rows.append(a + (b - a) * t[:, None])
        if y % 32 == 0:
            ctx.progress(y, height)  # also where a cancel lands
    ctx.progress(height, height)
    return PIL.Image.fromarray(np.stack(rows).round().astype(np.uint8))
'''

TEST = '''"""Runs the job through a real stable-core server (the `stablecore_client` fixture)."""

from pathlib import Path

import PIL.Image


def test_gradient_runs(stablecore_client, tmp_path: Path) -> None:
    job = stablecore_client.run("{name}.gradient", {{"width": 64, "height": 32,
                                                   "start": "#000000", "end": "#ffffff"}})
    assert job["state"] == "succeeded", job["error"]
    image = PIL.Image.open(stablecore_client.download(job["outputs"]["image"]["id"],
                                                      tmp_path / "out.png"))
    assert image.size == (64, 32)
    assert image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((63, 0)) == (255, 255, 255)
'''

README = '''# {name}

{description}

A [stable-core](https://pypi.org/project/stable-core/) plugin. Its jobs are `{name}.*`.

    stable-core plugin install <this repo's git URL>   # or: pip install -e .
    stable-core run {name}.gradient width=512 height=256
    pytest                                              # runs the job through a real server

Publish it as a GitHub repository with the topic `stable-core-plugin` so
`stable-core plugin search` finds it.
'''


def write_plugin(dest: Path, name: str, description: str, author: str) -> Path:
    """Create the package in `dest` (which must not exist), `git init` it and commit."""
    values = {"name": name, "description": description.replace('"', "'"), "author": author}
    files = {
        "pyproject.toml": PYPROJECT, f"src/sc_{name}/__init__.py": MODULE,
        f"tests/test_{name}.py": TEST, "README.md": README,
        ".gitignore": "__pycache__/\n*.egg-info/\n.venv/\n",
    }
    for rel, text in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(**values))
    git = ["git", "-c", f"user.name={author}", "-c", "user.email=plugin@stable-core.invalid"]
    subprocess.run([*git, "init", "--quiet", "-b", "main"], cwd=dest, check=True)
    subprocess.run([*git, "add", "."], cwd=dest, check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", f"New stable-core plugin {name}"],
                   cwd=dest, check=True)
    return dest
