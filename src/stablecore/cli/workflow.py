"""`stable-core workflow`: run a graph file with one progress display, list, show, cancel, save."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from stablecore.cli.common import TokenOpt, UrlOpt, call, client, console, err, fail

workflow_app = typer.Typer(help="Run and keep workflows (graphs of jobs).", no_args_is_help=True)


def load_graph(path: Path, sets: list[str]) -> dict[str, Any]:
    """The graph in `path`, with `node.param=value` overrides (values parsed as JSON)."""
    try:
        graph = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise fail(f"{path}: not a workflow JSON file ({e})") from None
    for item in sets:
        target, sep, raw = item.partition("=")
        node, dot, param = target.partition(".")
        if not sep or not dot:
            raise fail(f"--set {item!r}: expected node.param=value")
        if node not in graph.get("nodes", {}):
            raise fail(f"--set {item!r}: no node {node!r} in {path} "
                       f"(it has {', '.join(graph.get('nodes', {})) or 'none'})")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        graph["nodes"][node].setdefault("params", {})[param] = value
    return graph


def board(run: dict[str, Any], progress: dict[str, str]) -> Table:
    """One line per node: its state, progress, and whether it came from the cache."""
    table = Table("node", "job", "state", "", title=f"{run['name']} ({run['id']})")
    for name, node in run["nodes"].items():
        state = node["state"] + (" (cached)" if node.get("cached") else "")
        items = node.get("items")
        if items:
            done = sum(i["state"] == "succeeded" for i in items)
            state += f" {done}/{len(items)} items"
        table.add_row(name, node["spec"], state, progress.get(name, ""))
    return table


@workflow_app.command("run")
def run(file: Annotated[Path, typer.Argument(help="workflow JSON")],
        set_: Annotated[list[str] | None, typer.Option("--set", help="node.param=value")] = None,
        out: Annotated[Path | None, typer.Option("--out", "-o",
                                                 help="download the final outputs here")] = None,
        session: Annotated[str | None, typer.Option(help="session id")] = None,
        url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Run a graph; one live table shows every node until the run ends."""
    graph = load_graph(file, set_ or [])
    with client(url, token) as c:
        run = call(c.submit_workflow, graph, session)
        progress: dict[str, str] = {}
        with Live(board(run, progress), console=err, transient=False) as live:
            for event in c.workflow_events(run["id"]):
                node = (event["data"].get("node") or "").split("[")[0]
                if event["type"] == "job.progress" and node:
                    progress[node] = f"{event['data']['step']}/{event['data']['total']}"
                if event["type"].startswith(("job.", "workflow.")) and event["type"] not in (
                        "job.progress", "job.log"):
                    run = c.workflow(run["id"])
                    live.update(board(run, progress))
        if not err.is_terminal:  # a pipe gets the last frame without its line end
            err.print()
        run = call(c.workflow, run["id"])
        if run["state"] != "succeeded":
            raise fail(f"workflow {run['id']} {run['state']}: {run.get('error')}")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            ends = set(run["nodes"]) - {r["node"] for n in graph["nodes"].values()
                                        for r in _refs(n)}
            for name in sorted(ends):
                for output, refs in (run["nodes"][name]["outputs"] or {}).items():
                    for art in refs if isinstance(refs, list) else [refs]:
                        if art:
                            console.print(f"{name}.{output}: {c.download(art['id'], out)}")


def _refs(node: dict[str, Any]) -> list[dict[str, Any]]:
    values = [*node.get("inputs", {}).values(), *node.get("links", {}).values()]
    flat = [v for value in values for v in (value if isinstance(value, list) else [value])]
    return [v for v in flat if isinstance(v, dict)]


@workflow_app.command("list")
def list_runs(limit: int = 20, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """The newest runs, and the saved workflows."""
    with client(url, token) as c:
        table = Table("id", "name", "state", "error")
        for r in call(c.get, "/api/workflows", limit=limit)["workflows"]:
            table.add_row(r["id"], r["name"], r["state"], (r["error"] or "")[:60])
        console.print(table)
        saved = call(c.get, "/api/workflows/saved")
        if saved:
            console.print("saved: " + ", ".join(f"workflow.{s['name']}" for s in saved))


@workflow_app.command("show")
def show(workflow_id: str, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """A run's nodes as a table (`jobs show ID` gives one node's job in full)."""
    with client(url, token) as c:
        console.print(board(call(c.workflow, workflow_id), {}))


@workflow_app.command("cancel")
def cancel(workflow_id: str, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Cancel every unfinished node of a run."""
    with client(url, token) as c:
        run = call(c.cancel_workflow, workflow_id)
        console.print(f"{run['id']}: cancel requested")


@workflow_app.command("save")
def save(name: str, file: Annotated[Path, typer.Argument(help="workflow JSON")],
         param: Annotated[list[str] | None, typer.Option(
             "--param", help="expose a param: name=node.param")] = None,
         input: Annotated[list[str] | None, typer.Option(
             "--input", help="expose an input: name=node.input")] = None,
         output: Annotated[list[str] | None, typer.Option(
             "--output", help="expose an output: name=node.output")] = None,
         description: str = "", url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Keep a graph as the job `workflow.NAME`, with the params, inputs and outputs it
    exposes; every client then runs it like any job."""
    def pairs(items: list[str] | None, what: str) -> dict[str, str]:
        out = {}
        for item in items or []:
            key, sep, target = item.partition("=")
            if not sep or "." not in target:
                raise fail(f"--{what} {item!r}: expected name=node.{what}")
            out[key] = target
        return out

    expose = {"params": pairs(param, "param"), "inputs": pairs(input, "input"),
              "outputs": pairs(output, "output")}
    with client(url, token) as c:
        spec = call(c.save_workflow, name, load_graph(file, []), expose, description)
        console.print(f"saved as {spec['name']}: run it with `stable-core run {spec['name']}`")
