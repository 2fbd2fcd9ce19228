"""The pictures of the add-on in docs/clients.md, made by the add-on in headless Blender:

    HOME=/tmp/x python doc_images.py URL OUTDIR ZIP    # a Python with bpy 5.0.x

1. the camera's view, rendered; 2. that view through transform2d.transform (the panel's
"Camera view" input); 3. the scene rendered again with 2. as the cube's texture ("Use as
texture"); 4. three frames of "Render animation through job".
"""

import importlib
import math
import sys
import time
from pathlib import Path

import bpy

URL, OUT, ZIP = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
ADDON = "bl_ext.user_default.stablecore_blender"


def pump(ui, until) -> None:
    deadline = time.monotonic() + 120
    while not until() and time.monotonic() < deadline:
        ui.poll()
        time.sleep(0.02)


def main() -> None:
    bpy.ops.extensions.package_install_files(filepath=ZIP, repo="user_default",
                                             enable_on_install=True)
    form, ui = (importlib.import_module(f"{ADDON}.{m}") for m in ("form", "ui"))
    bpy.context.preferences.addons[ADDON].preferences.url = URL
    bpy.ops.stablecore.refresh()
    pump(ui, lambda: not ui.state.fetching)

    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 16
    scene.render.resolution_x, scene.render.resolution_y = 240, 180
    scene.render.resolution_percentage = 100
    scene.world.node_tree.nodes["Background"].inputs["Color"].default_value = (
        0.02, 0.05, 0.12, 1)
    cube = bpy.data.objects["Cube"]
    bsdf = cube.active_material.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (0.8, 0.25, 0.05, 1)
    bpy.context.view_layer.objects.active = cube
    bpy.data.objects["Light"].data.energy = 1500

    # 1 and 2: the camera's view through the job, back as an Image datablock and the texture
    scene.stablecore.job = "transform2d.transform"
    settings = form.form_of(scene, "transform2d.transform")
    settings.in_image_source = "CAMERA"
    settings.p_rotate, settings.p_scale, settings.p_flip = 30.0, 1.8, "horizontal"
    scene.stablecore.to_material = True
    bpy.ops.stablecore.run()
    pump(ui, lambda: ui.state.task.finished and ui.state.updates.empty())
    bpy.data.images["Render Result"].save_render(str(OUT / "1-camera.png"), scene=scene)
    result = bpy.data.images["transform2d.transform image"]
    result.save(filepath=str(OUT / "2-job.png"), save_copy=True)

    # 3: rendered again, the cube now wears the job's output
    bpy.ops.render.render()
    bpy.data.images["Render Result"].save_render(str(OUT / "3-textured.png"), scene=scene)

    # 4: an animation through the job: the cube turns, each frame is flipped and rotated
    scene.stablecore.to_material = False
    cube.rotation_euler = (0, 0, 0)
    cube.keyframe_insert("rotation_euler", frame=1)
    cube.rotation_euler = (0, 0, math.radians(60))
    cube.keyframe_insert("rotation_euler", frame=3)
    scene.frame_start, scene.frame_end = 1, 3
    scene.stablecore.frames_dir = str(OUT / "frames") + "/"
    bpy.ops.stablecore.render_animation()
    pump(ui, lambda: ui.state.animation is None)
    print(bpy.context.window_manager.stablecore_status)


if __name__ == "__main__":
    main()
