"""Install the add-on's zip into Blender (the `bpy` module, headless), drive it against a
running server and print what came of it as JSON on the last line; tests/test_blender.py
checks that JSON.

    HOME=/tmp/x python run_in_blender.py URL WORKDIR ZIP    # a Python with bpy 5.0.x

Headless Blender has no event loop, so nothing calls `bpy.app.timers`: after checking that
the add-on registered its timer, this script calls the same function in a loop, as Blender's
loop would.
"""

import importlib
import json
import sys
import time
from pathlib import Path

import bpy

URL, WORK, ZIP = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
ADDON = "bl_ext.user_default.stablecore_blender"  # an extension in the user repository
results: dict = {}


def pump(until, timeout: float = 60.0) -> None:
    """Run the add-on's timer function until `until()` holds, as Blender's loop would."""
    ui = importlib.import_module(ADDON + ".ui")
    assert bpy.app.timers.is_registered(ui.poll), "the add-on did not register its timer"
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s; status: {status()}")
        if ui.poll() is None and not until():
            raise RuntimeError(f"the timer stopped early; status: {status()}")
        time.sleep(0.02)


def status() -> str:
    return bpy.context.window_manager.stablecore_status


def pixels(image) -> list:
    """Rows top to bottom of [r, g, b, a] in 0..255, as a viewer shows the image."""
    import numpy as np

    w, h = image.size
    values = np.empty(w * h * 4, np.float32)
    image.pixels.foreach_get(values)
    return np.round(values.reshape(h, w, 4)[::-1] * 255).astype(int).tolist()


class CheckedLayout:
    """Stands in for a UILayout, which exists only in a window: each call the panel makes is
    checked against UILayout's own signature (RNA), and each property it shows must exist."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def __getattr__(self, name: str):
        params = set(bpy.types.UILayout.bl_rna.functions[name].parameters.keys())

        def call(*args, **kw):
            assert not set(kw) - params, f"UILayout.{name} takes no {set(kw) - params}"
            if name in ("prop", "prop_search"):
                assert args[1] in args[0].bl_rna.properties, f"no property {args[1]!r}"
            if name == "operator":
                module, op = args[0].split(".")
                assert hasattr(getattr(bpy.ops, module), op), f"no operator {args[0]}"
            self.calls.append(name if name != "prop" else f"prop {args[1]}")
            return CheckedLayout(self.calls)

        return call


def run(job: str) -> None:
    ui = importlib.import_module(ADDON + ".ui")
    bpy.context.scene.stablecore.job = job
    assert bpy.ops.stablecore.run() == {"FINISHED"}, status()
    pump(lambda: ui.state.task.finished and ui.state.updates.empty())


def main() -> None:
    # 1. Install the zip as a user would, point the add-on at the server, fetch the catalog.
    installed = bpy.ops.extensions.package_install_files(
        filepath=ZIP, repo="user_default", enable_on_install=True)
    assert installed == {"FINISHED"}, installed
    form, ui = (importlib.import_module(f"{ADDON}.{m}") for m in ("form", "ui"))
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.url = URL
    scene = bpy.context.scene
    assert bpy.ops.stablecore.refresh() == {"FINISHED"}
    pump(lambda: not ui.state.fetching)
    results["jobs"] = len(bpy.context.window_manager.stablecore_jobs)
    results["catalog_status"] = status()

    # 2. A generated image through testing.invert: the output is an Image datablock.
    source = bpy.data.images.new("generated", 6, 4)
    source.pixels.foreach_set([0.2, 0.4, 0.6, 1.0] * 12 + [1.0, 0.0, 0.0, 1.0] * 12)  # bottom, top
    settings = form.form_of(scene, "testing.invert")
    settings.in_image_source, settings.in_image_image = "IMAGE", source
    scene.stablecore.to_material = True
    bpy.context.view_layer.objects.active = bpy.data.objects["Cube"]
    run("testing.invert")
    out = bpy.data.images["testing.invert image"]
    calls: list = []
    ui.draw_panel(CheckedLayout(calls), bpy.context)  # what both sidebar panels draw
    results["panel"] = calls
    results["spaces"] = sorted(getattr(bpy.types, n).bl_space_type for n in dir(bpy.types)
                               if n.startswith("STABLECORE_PT_"))
    results["invert"] = {"size": list(out.size), "pixels": pixels(out), "packed": bool(
        out.packed_file), "status": status()}
    node = bpy.data.objects["Cube"].active_material.node_tree.nodes.get("stable-core")
    results["texture"] = node.image.name if node else None

    # 3. Params from the form: an int with a range, a string; a text output.
    echo = form.form_of(scene, "testing.echo")
    echo.p_text, echo.p_n = "ab", 3
    run("testing.echo")
    results["echo"] = bpy.data.texts["testing.echo text"].as_string()
    crash = form.form_of(scene, "testing.crash")
    results["enum_items"] = [i.identifier for i in
                             crash.bl_rna.properties["p_how"].enum_items]

    # 4. The active camera's view as the input (a real Cycles render, 16x8).
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.render.resolution_x, scene.render.resolution_y = 16, 8
    scene.render.resolution_percentage = 100
    settings.in_image_source = "CAMERA"
    scene.stablecore.to_material = False
    run("testing.invert")
    results["camera"] = list(bpy.data.images["testing.invert image"].size)

    # 5. Render animation through the job: 3 frames -> an image sequence.
    scene.frame_start, scene.frame_end = 1, 3
    scene.stablecore.frames_dir = str(WORK / "frames") + "/"
    assert bpy.ops.stablecore.render_animation() == {"FINISHED"}
    pump(lambda: ui.state.animation is None, timeout=120)
    sequence = bpy.data.images.get("testing.invert frames")
    results["animation"] = {"status": status(),
                            "source": sequence.source if sequence else None,
                            "files": sorted(p.name for p in (WORK / "frames").iterdir()),
                            "first": bpy.path.abspath(sequence.filepath) if sequence else None}

    # 6. Cancel a running job from the panel's Cancel button.
    form.form_of(scene, "testing.sleep").p_seconds = 30.0
    scene.stablecore.job = "testing.sleep"
    bpy.ops.stablecore.run()
    pump(lambda: "running" in status() or "/" in status())
    bpy.ops.stablecore.cancel()
    pump(lambda: ui.state.task.finished and ui.state.updates.empty())
    results["cancel"] = status()

    # 7. A bad param: the server's message in the panel, and Blender carries on.
    transform = form.form_of(scene, "transform2d.transform")
    transform.in_image_source, transform.in_image_image = "IMAGE", source
    transform.p_fill = "red"
    run("transform2d.transform")
    results["bad_param"] = status()

    bpy.ops.preferences.addon_disable(module=ADDON)
    results["unregistered"] = not hasattr(bpy.types.Scene, "stablecore")


if __name__ == "__main__":
    main()
    print(json.dumps(results))
