"""`stable-core cloud`: rent a GPU machine on RunPod or vast.ai and add it as a node; list
rentals with their price and cost so far; destroy them. The API key comes from the
environment (RUNPOD_API_KEY, VAST_API_KEY) or ~/.config/stable-core/cloud.toml (chmod 600);
the server needs it too, to destroy an idle machine (`--idle-stop`)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stablecore import cloud
from stablecore.cli.common import TokenOpt, UrlOpt, call, client, console, err, fail
from stablecore.cli.nodes import add_node
from stablecore.errors import StableCoreError

cloud_app = typer.Typer(help="Rent GPU machines (RunPod, vast.ai) as nodes.",
                        no_args_is_help=True)
runpod_app = typer.Typer(help="RunPod pods.", no_args_is_help=True)
vast_app = typer.Typer(help="vast.ai instances.", no_args_is_help=True)
cloud_app.add_typer(runpod_app, name="runpod")
cloud_app.add_typer(vast_app, name="vast")

GpuOpt = Annotated[str, typer.Option(help='GPU type, e.g. "RTX 4090"')]
PriceOpt = Annotated[float, typer.Option(help="most you pay per hour, in USD (required)")]
CountOpt = Annotated[int, typer.Option(help="GPUs in the machine")]
DiskOpt = Annotated[int, typer.Option(help="container disk, GB")]
IdleOpt = Annotated[float, typer.Option(help="destroy it after this many minutes without a "
                                        "job (0: never)")]
KeyOpt = Annotated[Path, typer.Option(help="your SSH private key; its .pub goes to the machine")]
PluginsOpt = Annotated[str | None, typer.Option(help="plugins to install there [default: all]")]
ImageOpt = Annotated[str | None, typer.Option(help="container image [default: a PyTorch one]")]
PythonOpt = Annotated[str, typer.Option(help="Python on the machine")]
DirOpt = Annotated[str, typer.Option(help="folder on the machine")]


def _up(provider: str, gpu: str, count: int, max_price: float, disk: int, idle_stop: float,
        key: Path, plugins: str | None, image: str | None, python: str, remote_dir: str,
        url: str | None, token: str | None) -> None:
    """1. rent, 2. wait for SSH, 3. add as a node; a machine that fails to join is destroyed."""
    try:
        api = cloud.provider(provider)
        public = key.expanduser().with_suffix(".pub").read_text().strip()
    except StableCoreError as e:
        raise fail(e.message) from None
    except OSError as e:
        raise fail(f"cannot read your public key {key}.pub: {e.strerror}") from None
    name = f"stable-core-{secrets.token_hex(3)}"
    try:
        extra = {"image": image} if image else {}
        instance = api.up(name, gpu, count, max_price, public, disk, **extra)
        console.print(f"{provider}: rented {instance.id} ({count} x {gpu}) at "
                      f"${instance.price_per_hour:.2f}/h; waiting for SSH")
        started = time.time()
        instance = api.wait_ready(instance.id)
    except StableCoreError as e:
        raise fail(e.message) from None
    body = {"url": instance.ssh_url, "name": instance.node_name, "key": str(key.expanduser()),
            "accept_new_host_key": True, "gpus": "all", "cpu_workers": 1,
            "plugins": plugins.split(",") if plugins else None, "python": python,
            "remote_dir": remote_dir, "system_site_packages": True,
            "cloud": {"provider": provider, "instance": instance.id,
                      "price_per_hour": instance.price_per_hour,
                      "idle_stop_min": idle_stop, "started": started}}
    try:
        add_node(body, url, token)
    except Exception:  # typer.Exit too
        err.print(f"{instance.node_name} did not join: destroying {provider} instance "
                  f"{instance.id}")
        api.down(instance.id)
        raise
    if idle_stop:
        console.print(f"it is destroyed after {idle_stop:g} min without a job; "
                      f"`stable-core cloud down {instance.node_name}` sooner")


@runpod_app.command("up")
def runpod_up(gpu: GpuOpt, max_price: PriceOpt, count: CountOpt = 1, disk: DiskOpt = 60,
              idle_stop: IdleOpt = 20, key: KeyOpt = Path("~/.ssh/id_ed25519"),
              plugins: PluginsOpt = None, image: ImageOpt = None, python: PythonOpt = "python3",
              remote_dir: DirOpt = "/workspace/stablecore", url: UrlOpt = None,
              token: TokenOpt = None) -> None:
    """Rent a RunPod pod and add it as a node."""
    _up("runpod", gpu, count, max_price, disk, idle_stop, key, plugins, image, python,
        remote_dir, url, token)


@vast_app.command("up")
def vast_up(gpu: GpuOpt, max_price: PriceOpt, count: CountOpt = 1, disk: DiskOpt = 60,
            idle_stop: IdleOpt = 20, key: KeyOpt = Path("~/.ssh/id_ed25519"),
            plugins: PluginsOpt = None, image: ImageOpt = None, python: PythonOpt = "python3",
            remote_dir: DirOpt = "~/stablecore", url: UrlOpt = None,
            token: TokenOpt = None) -> None:
    """Rent a vast.ai instance and add it as a node."""
    _up("vast", gpu, count, max_price, disk, idle_stop, key, plugins, image, python,
        remote_dir, url, token)


def _rented(url: str | None, token: str | None) -> list[dict[str, Any]]:
    with client(url, token) as c:
        return [n for n in call(c.get, "/api/nodes") if n.get("cloud")]


@cloud_app.command("list")
def list_(url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Rented machines: provider, instance, state, price per hour, cost so far."""
    table = Table("node", "provider", "instance", "state", "$/h", "cost so far", "idle stop")
    for n in _rented(url, token):
        c = n["cloud"]
        table.add_row(n["name"], c["provider"], c["instance"], n["state"],
                      f"{c['price_per_hour']:.2f}", f"${c['cost']:.2f}",
                      f"{c['idle_stop_min']:g} min" if c["idle_stop_min"] else "never")
    console.print(table)


@cloud_app.command("down")
def down(name: Annotated[str | None, typer.Argument(help="node name")] = None,
         all_: Annotated[bool, typer.Option("--all", help="every rented machine")] = False,
         url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Destroy rented machines and remove their nodes."""
    if not name and not all_:
        raise fail("name a node, or pass --all")
    rented = [n for n in _rented(url, token) if all_ or n["name"] == name]
    if name and not rented:
        raise fail(f"no rented node {name!r}; `stable-core cloud list` shows them")
    for n in rented:
        c = n["cloud"]
        try:
            cloud.provider(c["provider"]).down(c["instance"])
        except StableCoreError as e:
            raise fail(e.message) from None
        with client(url, token) as cl:
            cl.http.delete(f"/api/nodes/{n['name']}")
        console.print(f"destroyed {c['provider']} instance {c['instance']} ({n['name']}); "
                      f"cost so far ${c['cost']:.2f}")
