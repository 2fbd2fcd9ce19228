"""stable-core for Blender: run any stable-core job from the Image Editor or the 3D viewport.

The panel ("stable-core" tab of the sidebar, N) fetches the server's jobs, shows the chosen
job's form as Blender properties, takes image inputs from an Image datablock, the last render
or the active camera's view, and brings image outputs back as Image datablocks (optionally as
the active material's texture). "Render animation through job" sends every frame of the
scene's range through the job and loads the results as an image sequence.
"""

bl_info = {
    "name": "stable-core",
    "author": "stable-core",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Image Editor and 3D Viewport > Sidebar > stable-core",
    "description": "Run stable-core jobs on images, renders and animations",
    "category": "Render",
}


def register() -> None:
    # Imported here, not at the top: api, schema and runner are used (and tested) outside
    # Blender, where importing this package must not need bpy.
    from . import ui

    ui.register()


def unregister() -> None:
    from . import ui

    ui.unregister()
