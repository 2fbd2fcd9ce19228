"""`stable-core nodes`: add, list, show the logs of, and remove remote machines (over SSH).

Like every CLI command these talk to the running server (`--url`, STABLECORE_URL): the
server holds the SSH connections, so key files are paths on the server's machine.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from stablecore.cli.common import TokenOpt, UrlOpt, call, client, console, err, fail
from stablecore.client import ApiError, AsyncClient, _check

nodes_app = typer.Typer(help="Machines whose workers join this server, over SSH.",
                        no_args_is_help=True)


def add_node(body: dict[str, Any], url: str | None, token: str | None) -> dict[str, Any]:
    """POST /api/nodes (asking to trust an unknown host key on a terminal), then follow the
    install until the node is up; returns the node. Shared with `stable-core cloud`."""
    with client(url, token) as c:
        try:
            answer = c.http.post("/api/nodes", json=body, timeout=120)
            if answer.status_code == 422 and answer.json().get("field") == "host_key" \
                    and answer.json().get("host_key") and "CHANGED" not in answer.text \
                    and not body.get("host_key") and sys.stdin.isatty():
                detail = answer.json()
                err.print(detail["detail"].split(". Check it")[0])
                if typer.confirm(f"Trust host key {detail['host_key']}?", default=False):
                    body = {**body, "host_key": detail["host_key"]}
                    answer = c.http.post("/api/nodes", json=body, timeout=120)
            result = call(_check, answer)
        except ApiError as e:
            raise fail(e.detail) from None
        except httpx.ConnectError:
            raise fail("cannot reach the server; is `stable-core serve` running?") from None
    name = result["node"]["name"]
    console.print(f"{name}: {result['node']['url']} host key {result['node']['host_key']}, "
                  f"devices {', '.join(result['node']['devices'])}; installing")
    end = asyncio.run(_follow(name, result["since"], url, token))
    if end["type"] == "node.failed":
        raise fail(f"node {name}: {end['data']['error']}")
    with client(url, token) as c:
        node = call(c.get, f"/api/nodes/{name}")
    console.print(f"{name} is up: workers {', '.join(node['workers'])}")
    return node


async def _follow(name: str, since: int, url: str | None, token: str | None) -> dict:
    async with AsyncClient(url, token) as c:
        async for event in c.stream(since=since):
            if not event["type"].startswith("node.") or event["data"].get("node") != name:
                continue
            if event["type"] == "node.log":
                console.print(f"  {event['data']['line']}", highlight=False, markup=False)
            elif event["type"] in ("node.up", "node.failed"):
                return event
    raise AssertionError("the event stream never ends")


@nodes_app.command("add")
def add(
    target: Annotated[str, typer.Argument(help="ssh://user@host[:port]")],
    key: Annotated[str | None, typer.Option(help="private key file (default: your SSH keys "
                                            "and agent)")] = None,
    name: Annotated[str | None, typer.Option(help="node name [default: the host]")] = None,
    gpus: Annotated[str, typer.Option(help="'all' or GPU indexes, e.g. 0,1")] = "all",
    cpu_workers: Annotated[int, typer.Option(help="workers on a machine without GPUs")] = 1,
    host_key: Annotated[str | None, typer.Option(help="the host key fingerprint you checked "
                                                 "(SHA256:...)")] = None,
    accept_new_host_key: Annotated[bool, typer.Option(
        help="trust the host key of a machine seen the first time")] = False,
    plugins: Annotated[str | None, typer.Option(help="comma list [default: all of the "
                                                "server's]")] = None,
    python: Annotated[str, typer.Option(help="Python on the node")] = "python3",
    remote_dir: Annotated[str, typer.Option(help="folder on the node")] = "~/.stablecore",
    system_site_packages: Annotated[bool, typer.Option(
        help="the node's venv also sees its Python's packages (e.g. torch of a GPU image)")
    ] = False,
    push_models: Annotated[bool, typer.Option(
        help="send the plugins' model files from this server's cache over SSH instead of "
             "pulling them on the node (what the cache lacks is still pulled there)")] = False,
    skip_models: Annotated[bool, typer.Option(
        help="leave the plugins' model files alone")] = False,
    url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Add a machine: verify its host key, check it, install the same stable-core and plugins
    there, pull (or --push-models) the model files they declare, start one worker per GPU (or
    --cpu-workers) linked over SSH."""
    if push_models and skip_models:
        raise fail("--push-models and --skip-models exclude each other")
    body = {"url": target, "name": name, "key": key, "gpus": gpus, "cpu_workers": cpu_workers,
            "host_key": host_key, "accept_new_host_key": accept_new_host_key,
            "plugins": plugins.split(",") if plugins else None, "python": python,
            "remote_dir": remote_dir, "system_site_packages": system_site_packages,
            "models": "push" if push_models else "skip" if skip_models else "pull"}
    add_node(body, url, token)


@nodes_app.command("list")
def list_(url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Nodes: state, devices, jobs, models loaded, bytes sent and received."""
    with client(url, token) as c:
        nodes = call(c.get, "/api/nodes")
    table = Table("node", "state", "devices", "workers", "jobs run/done", "models",
                  "sent", "received")
    for n in nodes:
        gpus = ", ".join(f"{g['name']} ({g['memory_mb'] / 1024:.0f} GB)" for g in n["gpus"])
        table.add_row(n["name"], n["state"] + (f": {n['error']}" if n["error"] else ""),
                      gpus or ", ".join(n["devices"]), ", ".join(n["workers"]),
                      f"{n['jobs_running']}/{n['jobs_done']}", ", ".join(n["models"]),
                      _size(n["bytes_sent"]), _size(n["bytes_received"]))
    console.print(table)


@nodes_app.command("logs")
def logs(name: str, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """The node's install log and its workers' console lines."""
    with client(url, token) as c:
        for line in call(c.get, f"/api/nodes/{name}/logs")["lines"]:
            console.print(line, highlight=False, markup=False)


@nodes_app.command("remove")
def remove(name: str,
           uninstall: Annotated[bool, typer.Option(help="also delete its folder there")] = False,
           url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Stop a node's workers (their running jobs go back to the queue) and forget it."""
    with client(url, token) as c:
        call(_check, c.http.delete(f"/api/nodes/{name}", params={"uninstall": uninstall}))
    console.print(f"removed {name}" + (" and its folder there" if uninstall else ""))


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} B"
