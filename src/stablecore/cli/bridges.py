"""`stable-core bridges`: clients inside other programs (Blender, kdenlive)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Annotated

import typer

from stablecore.cli.common import console, fail
from stablecore.cli.kdenlive import kdenlive_app

BLENDER_ADDON = Path(__file__).resolve().parents[3] / "bridges" / "blender" / "stablecore_blender"

bridges_app = typer.Typer(help="Clients inside other programs.", no_args_is_help=True)
blender_app = typer.Typer(help="The Blender add-on.", no_args_is_help=True)
bridges_app.add_typer(blender_app, name="blender")
bridges_app.add_typer(kdenlive_app, name="kdenlive")


def blender_zip(dest: Path, source: Path = BLENDER_ADDON) -> Path:
    """The add-on folder zipped as Blender installs it (Preferences > Add-ons > Install from
    Disk): an extension on Blender 4.2 and later, a legacy add-on before."""
    if not (source / "blender_manifest.toml").is_file():
        raise FileNotFoundError(f"no add-on at {source} (it ships in the stable-core source "
                                "tree, under bridges/blender)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, Path(source.name) / path.relative_to(source))
    return dest


@blender_app.command("zip")
def zip_command(out: Annotated[Path, typer.Option(
        "--out", "-o", help="the zip to write")] = Path("stablecore_blender.zip")) -> None:
    """Package the Blender add-on as a zip to install in Blender."""
    try:
        console.print(f"wrote {blender_zip(out)}: in Blender, Edit > Preferences > Add-ons > "
                      "Install from Disk")
    except FileNotFoundError as e:
        raise fail(str(e)) from None
