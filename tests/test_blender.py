"""The Blender add-on (bridges/blender) against a real server: its Blender-free parts here,
and the whole add-on inside real headless Blender (`bpy` from PyPI in an environment of its
own: bpy 5.0 pins numpy 1.26, which must not replace this environment's numpy)."""

from __future__ import annotations

import io
import json
import os
import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import platformdirs
import pytest

from stablecore.cli.bridges import blender_zip
from stablecore.testing import ServerProcess

BRIDGE = Path(__file__).resolve().parents[1] / "bridges" / "blender"
BPY = "5.0.1"


@pytest.fixture(scope="module")
def server(stablecore_server: ServerProcess) -> ServerProcess:
    return stablecore_server


@pytest.fixture
def addon(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The add-on's package importable (its Blender-free modules only)."""
    monkeypatch.syspath_prepend(str(BRIDGE))
    yield
    for name in [m for m in sys.modules if m.startswith("stablecore_blender")]:
        del sys.modules[name]


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_schema_as_form_fields(server: ServerProcess, addon: None) -> None:
    from stablecore_blender import schema

    with server.client() as c:
        specs = {s["name"]: s for s in c.specs()}
    by_name = {f.name: f for f in schema.fields(specs["transform2d.transform"])}
    assert (by_name["rotate"].kind, by_name["rotate"].minimum) == ("FLOAT", -3600)
    assert (by_name["crop_x"].kind, by_name["crop_x"].maximum) == ("INT", 65536)
    assert by_name["border"].kind == "ENUM" and "wrap" in by_name["border"].choices
    assert (by_name["expand"].kind, by_name["fill"].kind) == ("BOOL", "STRING")
    assert [i.name for i in schema.inputs(specs["testing.invert"]) if i.is_image] == [
        "image", "mask"]
    values = {"rotate": 0.30000001192092896, "border": "wrap", "crop_x": 3}
    assert schema.params(list(by_name.values()), values) == {
        "rotate": 0.3, "border": "wrap", "crop_x": 3}
    unset = schema.Field("seed", "JSON", "Seed")
    assert schema.params([unset], {"seed": ""}) == {}
    assert schema.params([unset], {"seed": "7"}) == {"seed": 7}


def test_runner_threads_a_job_and_its_outputs(server: ServerProcess, addon: None,
                                              tmp_path: Path) -> None:
    from stablecore_blender.api import Api
    from stablecore_blender.runner import Task, Update

    api = Api(server.url)
    updates: queue.Queue[Update] = queue.Queue()
    pixels = np.full((2, 3, 3), (10, 20, 30), np.uint8)
    task = Task(api, "testing.invert", {}, {"image": [("in.png", png(pixels))]}, tmp_path,
                updates).start()
    task.thread.join(30)
    seen = []
    while not updates.empty():
        seen.append(updates.get())
    assert [u.kind for u in seen][-1] == "done", [u.text for u in seen]
    with PIL.Image.open(seen[-1].files["image"][0]) as image:
        assert np.asarray(image)[0, 0].tolist() == [245, 235, 225]

    bad = Task(api, "testing.echo", {"n": 99}, {}, tmp_path, updates).start()
    bad.thread.join(30)
    *_, failed = [updates.get() for _ in range(updates.qsize())]
    assert failed.kind == "failed"
    assert "params.n: 99 is greater than the maximum of 10" in failed.text


def bpy_python() -> Path:
    """A Python with bpy: $STABLECORE_BPY_PYTHON, else an environment made once per machine
    in the user cache folder (pip install bpy from PyPI, ~400 MB, ~20 s)."""
    if given := os.environ.get("STABLECORE_BPY_PYTHON"):
        return Path(given)
    env = platformdirs.user_cache_path("stable-core") / f"bpy-{BPY}"
    python = env / "bin" / "python"
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        building = env.with_name(env.name + f".{os.getpid()}")
        subprocess.run([base, "-m", "venv", str(building)], check=True)
        done = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "-q",
                               f"bpy=={BPY}"], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"bpy {BPY} could not be installed: {done.stderr[-500:]}")
        building.rename(env)  # whole or not at all
    return python


def test_addon_in_headless_blender(server: ServerProcess, tmp_path: Path) -> None:
    python = bpy_python()
    addon = blender_zip(tmp_path / "stablecore_blender.zip")  # `stable-core bridges blender zip`
    home = tmp_path / "home"  # Blender's user folders: where the extension installs
    home.mkdir()
    done = subprocess.run([str(python), str(BRIDGE / "tests" / "run_in_blender.py"),
                           server.url, str(tmp_path), str(addon)], capture_output=True,
                          text=True, timeout=240, env={**os.environ, "HOME": str(home)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["jobs"] > 10 and "jobs from" in results["catalog_status"]
    # a generated 6x4 image, bottom rows (0.2, 0.4, 0.6), top rows red, came back inverted
    invert = results["invert"]
    assert invert["size"] == [6, 4] and invert["packed"]
    rows = invert["pixels"]  # top to bottom
    assert rows[0] == [[0, 255, 255, 255]] * 6 and rows[1] == rows[0]
    assert rows[3] == [[204, 153, 102, 255]] * 6 and rows[2] == rows[3]
    assert results["texture"] == "testing.invert image"
    assert results["spaces"] == ["IMAGE_EDITOR", "VIEW_3D"]  # registered sidebar panels
    panel = results["panel"]  # drawn against UILayout's real signatures
    for shown in ("prop url", "prop token", "prop_search", "prop in_image_source",
                  "prop in_image_image", "prop to_material", "progress", "prop frames_dir"):
        assert shown in panel, panel
    assert results["echo"] == "ababab"
    assert results["enum_items"] == ["exit", "sigkill", "segv"]
    assert results["camera"] == [16, 8]  # the active camera rendered with Cycles
    animation = results["animation"]
    assert animation["files"] == ["0001.png", "0002.png", "0003.png"], animation["status"]
    assert animation["source"] == "SEQUENCE"
    assert animation["first"] == str(tmp_path / "frames" / "0001.png")
    with PIL.Image.open(tmp_path / "frames" / "0002.png") as frame:
        assert frame.size == (16, 8)
    assert results["cancel"] == "testing.sleep cancelled: cancelled by request"
    assert "params.fill: 'red' does not match" in results["bad_param"]
    assert results["unregistered"]
