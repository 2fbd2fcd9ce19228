"""`stable-core models`: pull, list and free the model files plugins declare.

The CLI is not the server, so it may import plugin modules to read their `MODEL_FILES`.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from stablecore.modelfiles import FileCache, ModelFile, ModelFileError, models_cache
from stablecore.modelfiles import local_path as cached_path
from stablecore.modelfiles import pull as pull_file
from stablecore.modelfiles import remove as remove_file

models_app = typer.Typer(help="Download, list and free the model files plugins declare.",
                         no_args_is_help=True)
console = Console()
err = Console(stderr=True)

PluginArg = Annotated[str, typer.Argument(help="plugin name, or 'all'")]
CacheOpt = Annotated[Path | None, typer.Option(
    "--cache", help="cache folder [default: $STABLECORE_MODELS_CACHE, else the user cache "
                    "(hub files: the Hugging Face cache)]")]


def declared_files(only: str = "all") -> dict[str, list[ModelFile]]:
    """Each installed plugin's MODEL_FILES; a plugin that fails to import is reported, skipped."""
    from stablecore.modelfiles import declared
    from stablecore.spec import ENTRY_POINT_GROUP

    found: dict[str, list[ModelFile]] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        if only not in ("all", ep.name):
            continue
        try:
            files = declared(ep.load(), ep.name)
        except BaseException as e:  # a broken plugin must not hide the others' files
            err.print(f"[yellow]warning:[/yellow] plugin {ep.name!r} not loaded: "
                      f"{type(e).__name__}: {e}")
            continue
        if files:
            found[ep.name] = files
    return found


def select(plugin: str) -> dict[str, list[ModelFile]]:
    files = declared_files(plugin)
    if plugin == "all":
        return files
    if plugin not in files:
        err.print(f"[red]error:[/red] plugin {plugin!r} declares no model files "
                  f"(`stable-core models list` shows those that do)")
        raise typer.Exit(1)
    return {plugin: files[plugin]}


def cache_of(root: Path | None) -> FileCache:
    return models_cache(os.environ, root)


@models_app.command()
def pull(plugin: PluginArg = "all", cache: CacheOpt = None) -> None:
    """Download a plugin's model files (resuming partial ones) and verify their sha256."""
    where = cache_of(cache)
    failed = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err) as bar:
        for name, files in select(plugin).items():
            for file in files:
                task = bar.add_task(f"{name}: {file.name}", total=file.size)

                def show(done: int, total: int | None, task: int = task) -> None:
                    bar.update(task, completed=done, total=total)

                try:
                    path = pull_file(file, where, show)
                except ModelFileError as e:
                    failed += 1
                    bar.console.print(f"[red]error:[/red] {e.message}")
                else:
                    bar.console.print(f"{name}: {file.name} -> {path}")
    if failed:
        raise typer.Exit(1)


@models_app.command("list")
def list_(plugin: PluginArg = "all", cache: CacheOpt = None) -> None:
    """Declared model files, their source, size, licence and whether they are cached."""
    where = cache_of(cache)
    table = Table("plugin", "file", "size", "licence", "cached", "source")
    used = 0
    for name, files in select(plugin).items():
        for file in files:
            try:
                path = cached_path(file, where)
            except ModelFileError as e:
                path, state = None, f"[red]{e.message}[/red]"
            else:
                state = str(path) if path else "[yellow]missing[/yellow]"
            size = path.stat().st_size if path else file.size
            used += path.stat().st_size if path else 0
            table.add_row(name, file.name, human(size), file.licence, state, file.source)
    console.print(table)
    console.print(f"cached: {human(used)}")


@models_app.command("rm")
def rm(plugin: PluginArg, cache: CacheOpt = None,
       yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False) -> None:
    """Delete a plugin's cached model files (a later pull downloads them again)."""
    where = cache_of(cache)
    chosen = select(plugin)
    if not yes:
        typer.confirm(f"delete the cached model files of {', '.join(chosen) or 'no plugin'}?",
                      abort=True)
    freed = 0
    for name, files in chosen.items():
        for file in files:
            n = remove_file(file, where)
            if n:
                console.print(f"{name}: removed {file.name} ({human(n)})")
            freed += n
    console.print(f"freed {human(freed)}")


def human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
