"""`stable-core sd ...`: build the tiny test model, list the models the jobs offer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sc_sd.options import Options
from sc_sd.sources import EXTRAS, choices, extras

app = typer.Typer(help="Stable Diffusion plugin tools.", no_args_is_help=True)


@app.command("make-tiny")
def make_tiny(
    dest: Annotated[Path, typer.Argument(help="folder to write the model into")],
    name: Annotated[str, typer.Option(help="model name")] = "tiny-sd",
    seed: Annotated[int, typer.Option(help="seed of the random weights")] = 0,
    xl: Annotated[bool, typer.Option("--xl", help="SDXL (a diffusers folder only)")] = False,
) -> None:
    """Write a tiny SD 1.x model with random weights: a diffusers folder, and a single
    .safetensors file with its config folder. For tests and benchmarks: it draws noise."""
    from sc_sd.tiny import make_tiny as build  # torch loads only for this command

    for kind, path in build(dest, name, seed, xl).items():
        typer.echo(f"{kind}: {path}")


@app.command("models")
def models() -> None:
    """The model choices the SD jobs offer (STABLECORE_SD_MODELS_DIR, STABLECORE_SD_MODELS),
    and the LoRAs, embeddings and ControlNets in the models folder."""
    options = Options.from_env(os.environ)
    typer.echo(f"models folder: {options.models_dir or '(none: set STABLECORE_SD_MODELS_DIR)'}")
    for name in choices(options):
        typer.echo(name)
    for kind in EXTRAS:
        typer.echo(f"{kind}/: {', '.join(extras(options, kind)) or '(none)'}")
