"""`stable-core`: serve, inspect settings, list jobs, run a job with a live progress bar."""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from stablecore.cli.bridges import bridges_app
from stablecore.cli.cloud import cloud_app
from stablecore.cli.common import TokenOpt, UrlOpt, call, client, console, err, fail
from stablecore.cli.kdenlive import clipjob_command
from stablecore.cli.models import models_app
from stablecore.cli.nodes import nodes_app
from stablecore.cli.plugin import plugin_app
from stablecore.cli.token import token_app
from stablecore.cli.users import login, logout, tokens_app, users_app
from stablecore.cli.workflow import workflow_app
from stablecore.config import Settings, load_settings
from stablecore.errors import ConfigError
from stablecore.users import any_user_in

app = typer.Typer(help="stable-core: a server for AI art and media synthesis.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
jobs_app = typer.Typer(help="List, show and cancel jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(plugin_app, name="plugin")
app.add_typer(models_app, name="models")
app.add_typer(nodes_app, name="nodes")
app.add_typer(cloud_app, name="cloud")
app.add_typer(token_app, name="token")
app.add_typer(bridges_app, name="bridges")
app.command("clipjob")(clipjob_command)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.command("login")(login)
app.command("logout")(logout)
app.add_typer(workflow_app, name="workflow")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file")]


def settings_from(config: Path | None, cli: dict[str, Any]) -> tuple[Settings, dict[str, str]]:
    try:
        return load_settings(os.environ, cli, config)
    except ConfigError as e:
        raise fail(e.message) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to bind")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="database and artifact files")] = None,
    token: Annotated[str | None, typer.Option(help="access token for every route")] = None,
    workers: Annotated[str | None, typer.Option(help="comma list, e.g. cpu,cpu or cuda:0")] = None,
    config: ConfigOpt = None,
    shell: Annotated[bool, typer.Option("--shell", help="and the interactive shell, "
                                        "server logs printed above its prompt")] = False,
) -> None:
    """Start the server and its workers."""
    import uvicorn  # the CLI's other commands start faster without it

    from stablecore.server.app import create_app

    cli = {"host": host, "port": port, "data_dir": data_dir, "token": token,
           "workers": workers.split(",") if workers else None}
    settings, _ = settings_from(config, cli)
    try:
        settings.check_safe(any_user_in(settings.data_dir))
    except ConfigError as e:
        raise fail(e.message) from None
    console.print(f"stable-core on [bold]http://{settings.host}:{settings.port}[/bold] "
                  f"(data: {settings.data_dir.resolve()})")
    if shell:
        from stablecore.cli.serve_shell import serve_with_shell  # prompt_toolkit: only here

        serve_with_shell(create_app(settings), settings)
        return
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="warning", ws_max_size=16 * 2**20, ws_per_message_deflate=False)


@app.command("shell")
def shell_command(url: UrlOpt = None, token: TokenOpt = None) -> None:
    """An interactive shell: Tab completion from the server's jobs, history, live progress."""
    from stablecore.cli.shell import Shell  # prompt_toolkit: only for this command

    with client(url, token) as c:
        Shell(c).loop()


@app.command("config")
def show_config(config: ConfigOpt = None) -> None:
    """Print the effective settings and where each came from."""
    settings, origins = settings_from(config, {})
    table = Table("setting", "value", "from", "meaning")
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        shown = "***" if name == "token" and value else str(value)
        table.add_row(name, shown, origins[name], field.description or "")
    console.print(table)


@app.command()
def specs(url: UrlOpt = None, token: TokenOpt = None) -> None:
    """List the jobs the server's plugins offer."""
    with client(url, token) as c:
        table = Table("job", "inputs", "outputs", "description")
        for s in sorted(call(c.specs), key=lambda s: s["name"]):
            ins = ", ".join(f"{k}:{v['kind']}" for k, v in s["inputs"].items())
            outs = ", ".join(f"{k}:{v['kind']}" for k, v in s["outputs"].items())
            table.add_row(s["name"], ins, outs, s["description"].split("\n")[0])
        console.print(table)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; a value that parses as JSON (numbers, true, lists) is taken as such."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"parameter {pair!r} is not key=value")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


@app.command()
def run(
    job: Annotated[str, typer.Argument(help="job name, e.g. palette.match")],
    params: Annotated[list[str] | None, typer.Argument(help="key=value params")] = None,
    input: Annotated[list[str] | None, typer.Option("--input", "-i",
                                                    help="name=path to upload")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the outputs")] = Path("."),
    session: Annotated[str | None, typer.Option(help="session id")] = None,
    priority: Annotated[int, typer.Option(help="higher runs first")] = 0,
    url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Run a job: upload inputs, follow its progress, download its outputs."""
    values = parse_params(params or [])
    inputs: dict[str, str] = {}
    with client(url, token) as c:
        for item in input or []:
            name, sep, path = item.partition("=")
            if not sep or not Path(path).is_file():
                raise fail(f"--input {item!r}: expected name=path to an existing file")
            inputs[name] = call(c.upload, Path(path))["id"]
        submitted = call(c.submit, job, values, inputs, session, priority)
        with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                      TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task(f"{job} queued", total=None)

            def show(event: dict[str, Any]) -> None:
                data = event["data"]
                if event["type"] == "job.queued":  # again, after a server restart
                    bar.update(task, description=f"{job} queued", completed=0, total=None)
                elif event["type"] == "job.started":
                    bar.update(task, description=f"{job} running")
                elif event["type"] == "job.progress":
                    bar.update(task, completed=data["step"], total=data["total"])

            def reconnecting(message: str) -> None:
                err.print(f"[yellow]{message}[/yellow]")

            try:
                result = call(c.wait, submitted["id"], show, reconnecting)
            except httpx.TransportError as e:
                raise fail(f"lost the server and could not get back to it within "
                           f"{c.reconnect_s:.0f} s ({e}); job {submitted['id']} may "
                           f"still finish: `stable-core jobs show {submitted['id']}`") from None
        if result["state"] != "succeeded":
            raise fail(f"job {result['id']} {result['state']}: {result.get('error')}")
        out.mkdir(parents=True, exist_ok=True)
        for name, refs in (result["outputs"] or {}).items():
            for art in refs if isinstance(refs, list) else [refs]:  # a list output: each item
                console.print(f"{name}: {c.download(art['id'], out)}")


@jobs_app.command("list")
def jobs_list(state: Annotated[str | None, typer.Option(help="queued, running, ...")] = None,
              session: Annotated[str | None, typer.Option()] = None,
              limit: Annotated[int, typer.Option()] = 20,
              url: UrlOpt = None, token: TokenOpt = None) -> None:
    """The newest jobs, optionally one state or session only."""
    with client(url, token) as c:
        page = call(c.jobs, state, session, limit)
        table = Table("id", "job", "state", "created", "error")
        for j in page["jobs"]:
            table.add_row(j["id"], j["spec"], j["state"], f"{j['created']:.0f}",
                          (j["error"] or "")[:60])
        console.print(table)
        console.print(f"{len(page['jobs'])} of {page['total']}")


@jobs_app.command("show")
def jobs_show(job_id: str, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """One job as JSON."""
    with client(url, token) as c:
        console.print_json(json.dumps(call(c.job, job_id)))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Cancel a queued or running job."""
    with client(url, token) as c:
        job = call(c.cancel, job_id)
        console.print(f"{job['id']}: cancel requested (was {job['state']})")


def main() -> None:
    """Entry point: the core commands plus those plugins add (entry points `stablecore.cli`).

    A plugin's commands are imported only when invoked, so a plugin that imports torch does
    not slow down every other command; `--help` lists them by name.
    """
    words = [a for a in sys.argv[1:] if not a.startswith("-")]
    for ep in entry_points(group="stablecore.cli"):
        if words[:1] != [ep.name]:
            app.add_typer(typer.Typer(), name=ep.name,
                          help=f"Commands of the {ep.name!r} plugin.")
            continue
        try:
            app.add_typer(ep.load(), name=ep.name)
        except Exception as e:  # a broken plugin must not break the CLI
            raise fail(f"plugin commands {ep.name!r} failed to load: {e}") from None
    app()
