"""A 4-node graph of shipped plugins with the tiny SD model: wildcards -> sd -> upscale ->
palette; a one-param edit of the last node re-runs that node only."""

from __future__ import annotations

from stablecore.client import Client
from stablecore.workflow import Workflow


def graph(strength: float) -> Workflow:
    wf = Workflow("fox portrait")
    words = wf.add("wildcards.expand", "words", template="a {red|blue} fox", seed=3)
    draw = wf.add("sd.txt2img", "draw", prompt=words.text, model="tiny-sd", width=32,
                  height=32, steps=2, scheduler="euler_a", seed=7)
    big = wf.add("upscale.realesrgan", "big", image=draw.image,
                 model="realesr-animevideov3-x2")
    wf.add("palette.match", "colours", image=big.image, reference=draw.image,
           strength=strength)
    return wf


def test_a_graph_of_shipped_plugins_and_a_one_param_edit(client: Client) -> None:
    first = client.run_workflow(graph(1.0))
    assert first["state"] == "succeeded", first
    prompt = client.job(first["nodes"]["draw"]["job_id"])["params"]["prompt"]
    assert prompt in ("a red fox", "a blue fox")  # the text output fed the prompt param
    edited = client.run_workflow(graph(0.5))
    assert edited["state"] == "succeeded", edited
    ran = [name for name, node in edited["nodes"].items() if not node["cached"]]
    assert ran == ["colours"]
