"""`stable-core plugin ...`: create, find, install, update, remove, freeze and restore plugins."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from stablecore.config import Settings, load_settings
from stablecore.errors import StableCoreError
from stablecore.manager import index
from stablecore.manager.installer import Manager
from stablecore.manager.sources import NAME_RE, check_name, split_source
from stablecore.manager.template import write_plugin

plugin_app = typer.Typer(help="Create, find, install, update and remove plugins.",
                         no_args_is_help=True)
out = Console()
err = Console(stderr=True, highlight=False)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="data directory")]
ReloadOpt = Annotated[bool, typer.Option("--reload/--no-reload",
                                         help="tell a running server to pick it up")]


def settings(config: Path | None, data_dir: Path | None) -> Settings:
    try:
        return load_settings(os.environ, {"data_dir": data_dir}, config)[0]
    except StableCoreError as e:
        raise _fail(e.message) from None


def manager(s: Settings) -> Manager:
    return Manager(s.plugins_home, uv_args=s.uv_args,
                   log=lambda line: err.print(line, markup=False))


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _run(action: object) -> object:
    """Run a manager call; its errors become one clear CLI error."""
    try:
        return action()  # type: ignore[operator]
    except StableCoreError as e:
        raise _fail(e.message) from None


def _reload(s: Settings) -> None:
    """Best effort: a server on this machine restarts its workers to import the change."""
    url = os.environ.get("STABLECORE_URL") or f"http://127.0.0.1:{s.port}"
    headers = {"Authorization": f"Bearer {s.token}"} if s.token else {}
    try:
        httpx.post(f"{url}/api/plugins/reload", headers=headers, timeout=5).raise_for_status()
        err.print(f"server at {url} is reloading its workers")
    except httpx.HTTPError:
        err.print("no server reached; the change applies when `stable-core serve` starts")


@plugin_app.command()
def new(name: Annotated[str, typer.Argument(help="plugin name: jobs become NAME.job")],
        dir: Annotated[Path | None, typer.Option(help="parent folder [default: .]")] = None,
        description: Annotated[str | None, typer.Option(help="one line")] = None,
        author: Annotated[str | None, typer.Option()] = None,
        install: Annotated[bool, typer.Option("--install/--no-install")] = True,
        config: ConfigOpt = None, data_dir: DataOpt = None, reload: ReloadOpt = True) -> None:
    """Create a plugin package with a working job and its test, and install it editable."""
    _run(lambda: check_name(name))
    interactive = sys.stdin.isatty()
    if description is None:
        description = (typer.prompt("Description", default=f"stable-core plugin {name}")
                       if interactive else f"stable-core plugin {name}")
    if author is None:
        author = typer.prompt("Author", default="me") if interactive else "me"
    dest = (dir or Path(".")) / name
    if dest.exists():
        raise _fail(f"{dest} exists; choose another name or --dir")
    write_plugin(dest, name, description, author)
    out.print(f"created {dest}: edit src/sc_{name}/__init__.py, test with `pytest {dest}`")
    if install:
        s = settings(config, data_dir)
        _run(lambda: manager(s).install(str(dest), editable=True))
        if reload:
            _reload(s)


@plugin_app.command("install")
def install_(source: Annotated[str, typer.Argument(help="git URL, folder, or index name, "
                                                   "optionally @REF")],
             isolated: Annotated[bool, typer.Option(help="give it its own environment")] = False,
             config: ConfigOpt = None, data_dir: DataOpt = None, reload: ReloadOpt = True) -> None:
    """Install a plugin, resolved together with everything installed (torch stays put)."""
    s = settings(config, data_dir)
    base, ref = _run(lambda: split_source(source))  # type: ignore[misc]
    if NAME_RE.match(base) and not Path(base).exists():
        published = {p.name: p for p in _index(s)}
        if base not in published:
            raise _fail(f"no plugin {base!r} in the index; try `stable-core plugin search`")
        source = published[base].source + (f"@{ref}" if ref else "")
    entry = _run(lambda: manager(s).install(source, isolated=isolated))
    out.print(f"installed {entry.name} at {entry.commit or 'a folder copy'} ({entry.env})")
    if reload:
        _reload(s)


@plugin_app.command()
def update(name: Annotated[str | None, typer.Argument(help="default: every plugin")] = None,
           config: ConfigOpt = None, data_dir: DataOpt = None, reload: ReloadOpt = True) -> None:
    """Fetch and reinstall; a failed install rolls back to the previous commit."""
    s = settings(config, data_dir)
    m = manager(s)
    names = [name] if name else [e.name for e in m.entries().values() if e.commit]
    for n in names:
        _run(lambda n=n: m.update(n))
    if reload:
        _reload(s)


@plugin_app.command()
def remove(name: str, config: ConfigOpt = None, data_dir: DataOpt = None,
           reload: ReloadOpt = True) -> None:
    """Uninstall a plugin and delete its checkout (or its environment)."""
    s = settings(config, data_dir)
    _run(lambda: manager(s).remove(name))
    if reload:
        _reload(s)


@plugin_app.command("list")
def list_(config: ConfigOpt = None, data_dir: DataOpt = None) -> None:
    """Installed plugins; jobs and load errors come from a running server when one answers."""
    s = settings(config, data_dir)
    loaded: dict[str, dict] = {}
    url = os.environ.get("STABLECORE_URL") or f"http://127.0.0.1:{s.port}"
    headers = {"Authorization": f"Bearer {s.token}"} if s.token else {}
    try:
        loaded = {p["name"]: p for p in httpx.get(f"{url}/api/plugins", headers=headers,
                                                  timeout=5).json()}
    except (httpx.HTTPError, ValueError):
        err.print("no server reached: jobs and load errors are not shown")
    table = Table("name", "version", "source", "commit", "env", "jobs", "load error")
    entries = manager(s).entries()
    for name in sorted(set(entries) | set(loaded)):
        e, p = entries.get(name), loaded.get(name, {})
        table.add_row(name, p.get("version", ""), e.source if e else "(pip)",
                      (e.commit or "")[:10] if e else "", e.env if e else "base",
                      str(len(p.get("jobs", []))) if p else "", p.get("error") or "")
    out.print(table)


def _index(s: Settings) -> list[index.Published]:
    return index.load(s.plugin_indexes, s.plugin_index_github,
                      s.plugins_home / "index-cache.json", warn=lambda m: err.print(m))


@plugin_app.command()
def search(text: Annotated[str, typer.Argument(help="words to look for")] = "",
           config: ConfigOpt = None, data_dir: DataOpt = None) -> None:
    """Published plugins (index files, GitHub topic `stable-core-plugin`)."""
    table = Table("name", "description", "source", "stars")
    for p in index.search(_index(settings(config, data_dir)), text):
        table.add_row(p.name, p.description, p.source, str(p.stars))
    out.print(table)


@plugin_app.command()
def info(name: str, config: ConfigOpt = None, data_dir: DataOpt = None) -> None:
    """Everything the index says about one plugin."""
    found = {p.name: p for p in _index(settings(config, data_dir))}
    if name not in found:
        raise _fail(f"no plugin {name!r} in the index")
    out.print_json(json.dumps(found[name].__dict__))


@plugin_app.command()
def freeze(config: ConfigOpt = None, data_dir: DataOpt = None) -> None:
    """Print the exact plugin set (sources and commits): `> plugins.lock`."""
    out.print_json(json.dumps(manager(settings(config, data_dir)).freeze()))


@plugin_app.command()
def restore(lock: Annotated[Path, typer.Argument(help="a file written by `plugin freeze`")],
            config: ConfigOpt = None, data_dir: DataOpt = None,
            reload: ReloadOpt = True) -> None:
    """Install the plugins of a lock file at their exact commits."""
    try:
        data = json.loads(lock.read_text())
    except (OSError, ValueError) as e:
        raise _fail(f"cannot read {lock}: {e}") from None
    s = settings(config, data_dir)
    entries = _run(lambda: manager(s).restore(data))
    out.print(f"restored {len(entries)} plugins")  # type: ignore[arg-type]
    if reload:
        _reload(s)
