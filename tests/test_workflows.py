"""Workflows on a real server with the test plugins: graphs checked before anything runs,
nodes chained through the queue, map over lists, cache hits after an edit, failure, cancel,
a server crash mid-graph, and saved workflows run as jobs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stablecore.client import Client
from stablecore.testing import ServerProcess, fetch_image
from stablecore.workflow import Workflow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("workflows") / "data") as s:
        yield s


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


def chain(size: int = 8, amount: int = 5) -> Workflow:
    """frames -> tint each frame (by a ramp, per item) -> stack them -> invert."""
    wf = Workflow("frames")
    frames = wf.add("testing.frames", "frames", n=3, size=size)
    ramp = wf.add("testing.ramp", "ramp", n=3, step=amount)
    tint = wf.add("testing.tint", "tint", image=frames.image, amount=ramp.column("numbers", "v"),
                  map="image")
    stack = wf.add("testing.stack", "stack", images=tint.image)
    wf.add("testing.invert", "invert", image=stack.image)
    return wf


def ran(run: dict) -> set[str]:
    """The nodes (and map items) that ran a job rather than reusing a cached result."""
    names = {n for n, v in run["nodes"].items() if not v["cached"] and "items" not in v}
    for name, node in run["nodes"].items():
        names |= {f"{name}[{i}]" for i, item in enumerate(node.get("items", []))
                  if not item["cached"]}
    return names


def test_a_graph_runs_through_the_queue(client: Client, tmp_path: Path) -> None:
    run = client.run_workflow(chain())
    assert run["state"] == "succeeded", run
    nodes = run["nodes"]
    assert [i["state"] for i in nodes["tint"]["items"]] == ["succeeded"] * 3
    assert len(nodes["tint"]["outputs"]["image"]) == 3  # gathered in order
    pixels = fetch_image(client, nodes["invert"]["outputs"]["image"], tmp_path)
    assert pixels.shape == (8, 24, 3)
    # frame i is (20 i, 0, 0), tinted by 5 i, stacked left to right, then inverted
    for i in range(3):
        expected = 255 - min(255, 20 * i + 5 * i), 255 - 5 * i, 255 - 5 * i
        assert tuple(pixels[0, 8 * i]) == expected


def test_an_unchanged_node_reuses_its_result(client: Client) -> None:
    first = client.run_workflow(chain(size=6))
    assert first["state"] == "succeeded"
    again = client.run_workflow(chain(size=6))
    assert ran(again) == set()  # nothing ran twice
    assert again["nodes"]["invert"]["outputs"] == first["nodes"]["invert"]["outputs"]
    edited = chain(size=6, amount=7)  # one param of one node changes
    rerun = client.run_workflow(edited)
    assert rerun["state"] == "succeeded"
    assert ran(rerun) == {"ramp", "tint[1]", "tint[2]", "stack", "invert"}  # tint[0] adds 0
    back = client.run_workflow(chain(size=6))  # the edit undone: all of it is in the cache
    assert ran(back) == set()


@pytest.mark.parametrize("change, field", [
    ({"nodes": {"a": {"spec": "testing.nope"}}}, "nodes.a.spec"),
    ({"nodes": {"a": {"spec": "testing.invert",
                      "inputs": {"image": {"node": "ghost", "output": "image"}}}}},
     "nodes.a.inputs.image"),
    ({"nodes": {"t": {"spec": "testing.echo"},
                "a": {"spec": "testing.invert", "inputs": {"image": {"node": "t",
                                                                     "output": "text"}}}}},
     "nodes.a.inputs.image"),
    ({"nodes": {"a": {"spec": "testing.invert", "inputs": {"image": {"node": "b",
                                                                     "output": "image"}}},
                "b": {"spec": "testing.invert", "inputs": {"image": {"node": "a",
                                                                     "output": "image"}}}}},
     "nodes.a"),
    ({"nodes": {"a": {"spec": "testing.invert"}}}, "nodes.a.inputs.image"),
    ({"nodes": {"a": {"spec": "testing.echo", "params": {"n": 99}}}}, "nodes.a.params.n"),
    ({"nodes": {"a": {"spec": "testing.echo", "params": {"text": "\ud800"}}}},
     "nodes.a.params.text"),
    ({"nodes": {"c": {"spec": "testing.count"},
                "e": {"spec": "testing.echo", "links": {"text": {"node": "c", "output": "json"}}}}},
     "nodes.e.links.text"),  # an integer into a string param
    ({"nodes": {"a": {"spec": "testing.invert", "inputs": {"image": "a_doesnotexist"}}}},
     "nodes.a.inputs.image"),
])
def test_a_bad_graph_is_refused_whole(client: Client, change: dict, field: str) -> None:
    before = client.jobs()["total"]
    body = json.dumps({"name": "bad", **change})  # ASCII escapes carry a lone surrogate too
    answer = client.http.post("/api/workflows", content=body,
                              headers={"content-type": "application/json"})
    assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
    assert client.jobs()["total"] == before


def test_downstream_of_a_failure_names_the_failed_node(client: Client) -> None:
    wf = Workflow("fails")
    talk = wf.add("testing.chatty", "talk", lines=0)
    wf.add("testing.echo", "after", text=talk.text)
    run = client.run_workflow(wf)
    assert run["state"] == "failed"
    assert run["nodes"]["talk"]["state"] == "failed"
    assert run["nodes"]["after"]["error"] == "upstream node 'talk' failed"


def test_json_outputs_feed_params(client: Client) -> None:
    wf = Workflow("count then echo")
    count = wf.add("testing.count", "count", text="a b c")
    wf.add("testing.echo", "echo", text="x", n=count.json)
    run = client.run_workflow(wf)
    assert run["state"] == "succeeded", run
    assert client.job(run["nodes"]["echo"]["job_id"])["params"]["n"] == 3


def test_cancel_ends_the_unfinished_nodes(client: Client) -> None:
    wf = Workflow("slow")
    slow = wf.add("testing.sleep", "slow", seconds=30, steps=300)
    wf.add("testing.echo", "after", text=slow.text)
    run = client.submit_workflow(wf)
    client.cancel_workflow(run["id"])
    for _ in client.workflow_events(run["id"]):
        pass
    final = client.workflow(run["id"])
    assert final["state"] == "cancelled"
    assert {n["state"] for n in final["nodes"].values()} <= {"cancelled", "failed"}


def test_a_saved_workflow_runs_as_a_job(client: Client, tmp_path: Path) -> None:
    graph = chain(size=4).to_dict(client.specs())
    saved = client.save_workflow("ramp_stack", graph, expose={
        "params": {"size": "frames.size", "step": "ramp.step"},
        "outputs": {"image": "invert.image"}}, description="Tinted frames, stacked.")
    assert saved["name"] == "workflow.ramp_stack"
    assert saved["params"]["properties"]["size"]["default"] == 4
    job = client.run("workflow.ramp_stack", {"size": 5})
    assert job["state"] == "succeeded", job
    assert fetch_image(client, job["outputs"]["image"], tmp_path).shape == (5, 15, 3)
    out = subprocess.run([sys.executable, "-m", "stablecore", "run", "workflow.ramp_stack",
                          "size=6", "--url", client.url, "-o", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_a_server_crash_mid_graph_loses_and_repeats_nothing(tmp_path: Path) -> None:
    wf = Workflow("crash")
    first = wf.add("testing.echo", "first", text="one")
    slow = wf.add("testing.sleep", "slow", seconds=2, steps=20, cache=False)
    wf.add("testing.echo", "last", text=first.text, n=2)
    wf.add("testing.echo", "after", text=slow.text)
    server = ServerProcess(tmp_path / "data", port=None)
    with server, server.client() as client:
        run = client.submit_workflow(wf)
        for event in client.workflow_events(run["id"]):
            if event["type"] == "job.started" and event["data"].get("worker") and \
                    client.job(event["job_id"])["node"] == "slow":
                break
        server.kill()
    with ServerProcess(tmp_path / "data", port=server.port) as again, again.client() as client:
        for _ in client.workflow_events(run["id"]):
            pass
        final = client.workflow(run["id"])
        assert final["state"] == "succeeded", final
        jobs = {n: client.job(v["job_id"]) for n, v in final["nodes"].items()}
        assert jobs["first"]["attempts"] == 1 and jobs["last"]["attempts"] == 1
        assert jobs["slow"]["attempts"] == 2  # interrupted once, run again


def test_the_cli_runs_a_graph_file_and_saves_it(client: Client, tmp_path: Path) -> None:
    graph = tmp_path / "frames.json"
    chain(size=5).save(graph, client.specs())
    cli = [sys.executable, "-m", "stablecore"]
    ran_ = subprocess.run([*cli, "workflow", "run", str(graph), "--set", "frames.size=7",
                           "--url", client.url, "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert ran_.returncode == 0, ran_.stderr
    assert "invert" in ran_.stderr and "succeeded" in ran_.stderr  # the live table
    (png,) = (tmp_path / "out").glob("*.png")
    assert png.name.endswith("testing.invert.png")
    bad = subprocess.run([*cli, "workflow", "run", str(graph), "--set", "nope.size=1",
                          "--url", client.url], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no node 'nope'" in bad.stderr
    saved = subprocess.run([*cli, "workflow", "save", "cli_frames", str(graph),
                            "--param", "size=frames.size", "--output", "image=invert.image",
                            "--url", client.url], capture_output=True, text=True, timeout=60)
    assert saved.returncode == 0 and "workflow.cli_frames" in saved.stdout, saved.stderr
    assert client.run("workflow.cli_frames", {"size": 3})["state"] == "succeeded"


def test_a_nondeterministic_job_is_never_cached(client: Client) -> None:
    wf = Workflow("clock")
    wf.add("testing.clock", "now")
    first, second = client.run_workflow(wf), client.run_workflow(wf)
    assert not second["nodes"]["now"]["cached"]
    assert first["nodes"]["now"]["outputs"]["json"]["value"] < \
        second["nodes"]["now"]["outputs"]["json"]["value"]


def test_progress_reaches_the_workflow_stream(client: Client) -> None:
    wf = Workflow("progress")
    wf.add("testing.sleep", "slow", seconds=0.2, steps=4, cache=False)
    run = client.submit_workflow(wf)
    types = [e["type"] for e in client.workflow_events(run["id"])]
    assert "job.progress" in types and types[-1] == "workflow.succeeded"
