"""The add-on's panels, operators and settings, and the timer that brings results in.

Network work runs on `runner.Task` threads; `poll`, registered with `bpy.app.timers`, reads
their updates on Blender's main thread and turns outputs into Image datablocks. "Render
animation through a job" renders one frame per poll while earlier frames run on the server.
"""

# No `from __future__ import annotations`: Blender reads the property annotations below.
import os
import queue
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    FloatProperty,
    PointerProperty,
    StringProperty,
)

from . import form, images, schema
from .api import Api
from .runner import Task, Update

POLL_S = 0.1
AHEAD = 3  # frames of an animation on the server at once
DEFAULT_URL = "http://127.0.0.1:5000"


class State:
    """What runs now: the single job, the animation, the queue their threads write to."""

    def __init__(self) -> None:
        self.updates: queue.Queue[Update] = queue.Queue()
        self.task: Task | None = None
        self.animation: Animation | None = None
        self.fetching = False

    def busy(self) -> bool:
        return (self.fetching or (self.task is not None and not self.task.finished)
                or self.animation is not None or not self.updates.empty())


state = State()


# --- settings -----------------------------------------------------------------------------
class STABLECORE_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    url: StringProperty(name="Server", default=DEFAULT_URL,
                        description="stable-core server URL")  # type: ignore[valid-type]
    token: StringProperty(name="Token", subtype="PASSWORD",
                          description="access token, if the server needs one")  # type: ignore[valid-type]

    def draw(self, context: Any) -> None:
        self.layout.prop(self, "url")
        self.layout.prop(self, "token")


class STABLECORE_PG_job(bpy.types.PropertyGroup):
    description: StringProperty()  # type: ignore[valid-type]


class STABLECORE_PG_settings(bpy.types.PropertyGroup):
    job: StringProperty(name="Job", description="the job to run")  # type: ignore[valid-type]
    to_material: BoolProperty(name="Use as texture", description="also show an image output "
                              "on the active object's material")  # type: ignore[valid-type]
    frames_dir: StringProperty(name="Frames", subtype="DIR_PATH", default="//stablecore/",
                               description="folder for the processed frames of "
                               "'Render animation through job'")  # type: ignore[valid-type]


def preferences() -> Any:
    addon = bpy.context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def api() -> Api:
    prefs = preferences()
    if prefs is not None:
        return Api(prefs.url, prefs.token)
    return Api(os.environ.get("STABLECORE_URL", DEFAULT_URL),
               os.environ.get("STABLECORE_TOKEN", ""))


def set_status(text: str, progress: float | None = None) -> None:
    wm = bpy.context.window_manager
    wm.stablecore_status = text
    if progress is not None:
        wm.stablecore_progress = progress


def start_polling() -> None:
    if not bpy.app.timers.is_registered(poll):
        bpy.app.timers.register(poll, first_interval=POLL_S)


# --- the timer ----------------------------------------------------------------------------
def poll() -> float | None:
    """Runs on Blender's main thread: apply what the threads found, step an animation."""
    while True:
        try:
            update = state.updates.get_nowait()
        except queue.Empty:
            break
        try:
            apply(update)
        except Exception as e:  # one bad output must not stop the timer
            set_status(f"error: {e}")
    if state.animation is not None:
        try:
            state.animation.step()
        except Exception as e:
            state.animation.stop(f"animation stopped: {e}")
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in ("IMAGE_EDITOR", "VIEW_3D"):
                area.tag_redraw()
    return POLL_S if state.busy() else None


def apply(update: Update) -> None:
    if update.kind == "catalog":
        state.fetching = False
        form.build(update.specs)
        jobs = bpy.context.window_manager.stablecore_jobs
        jobs.clear()
        for name in sorted(form.catalog):
            item = jobs.add()
            item.name = name
            item.description = form.catalog[name]["description"].split("\n")[0]
        set_status(f"{len(form.catalog)} jobs from {api().url}")
    elif update.task is None:
        set_status(update.text)
    elif state.animation is not None and update.task in state.animation.tasks:
        state.animation.update(update)
    elif update.kind in ("status", "progress"):
        set_status(f"{update.task.spec}: {update.text}",
                   update.fraction if update.kind == "progress" else None)
    elif update.kind == "failed":
        set_status(f"{update.task.spec} failed: {update.text}", 0.0)
    elif update.kind == "done":
        finish(update)


def finish(update: Update) -> None:
    """A single job's end: image outputs become datablocks, text outputs Text datablocks."""
    job, tag = update.job or {}, update.task.tag
    if job.get("state") != "succeeded":
        set_status(f"{job.get('spec')} {job.get('state')}: {job.get('error') or ''}", 0.0)
        return
    made = []
    for name, paths in update.files.items():
        kind = form.catalog.get(job["spec"], {}).get("outputs", {}).get(name, {}).get("kind")
        for i, path in enumerate(paths):
            label = f"{job['spec']} {name}" + (f" {i}" if len(paths) > 1 else "")
            if kind in schema.IMAGE_KINDS:
                image = images.as_datablock(path, label)
                if tag.get("to_material") and i == 0:
                    images.to_material(bpy.data.objects.get(tag.get("object") or ""), image)
                made.append(image.name)
            elif kind == "text":
                made.append(images.as_text(path, label).name)
            else:
                kept = Path(bpy.path.abspath("//") or tempfile.gettempdir()) / path.name
                shutil.move(str(path), kept)
                made.append(str(kept))
    values = [f"{k}={v['value']}" for k, v in (job["outputs"] or {}).items()
              if isinstance(v, dict) and v.get("kind") == "json"]
    set_status(f"{job['spec']} done: {', '.join(made + values)}", 1.0)


# --- inputs -------------------------------------------------------------------------------
def gather_inputs(scene: Any, job: str, skip: str = "") -> dict[str, list[tuple[str, bytes]]]:
    """Each input's file(s) from the form: a datablock, the last render, the camera, a file."""
    spec, found = form.catalog[job], {}
    settings = form.form_of(scene, job)
    for given in schema.inputs(spec):
        if given.name == skip:
            continue
        source = getattr(settings, f"in_{given.name}_source", "FILE")
        if source == "NONE":
            continue
        if source == "IMAGE":
            image = getattr(settings, f"in_{given.name}_image")
            if image is None:
                raise RuntimeError(f"choose an image for input {given.name!r}")
            found[given.name] = [(f"{image.name}.png", images.png_of_image(image, scene))]
        elif source == "RENDER":
            found[given.name] = [("render.png", images.png_of_render(scene))]
        elif source == "CAMERA":
            found[given.name] = [("camera.png", images.png_of_camera(scene))]
        else:
            path = Path(bpy.path.abspath(getattr(settings, f"in_{given.name}_path")))
            if not path.is_file():
                if given.required:
                    raise RuntimeError(f"input {given.name!r}: no file {str(path)!r}")
                continue
            found[given.name] = [(path.name, path.read_bytes())]
    return found


def many(job: str) -> set[str]:
    return {i.name for i in schema.inputs(form.catalog[job]) if i.many}


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="stablecore-out-"))


# --- operators ----------------------------------------------------------------------------
class STABLECORE_OT_refresh(bpy.types.Operator):
    """Fetch the server's jobs (on a thread; the form appears when they arrive)"""

    bl_idname = "stablecore.refresh"
    bl_label = "Fetch jobs"

    def execute(self, context: Any) -> set[str]:
        client = api()
        state.fetching = True

        def fetch() -> None:
            try:
                state.updates.put(Update(None, "catalog", specs=client.specs()))
            except Exception as e:
                state.fetching = False
                state.updates.put(Update(None, "status", text=f"cannot fetch the jobs: {e}"))

        threading.Thread(target=fetch, daemon=True).start()
        set_status(f"fetching jobs from {client.url} ...")
        start_polling()
        return {"FINISHED"}


class STABLECORE_OT_run(bpy.types.Operator):
    """Run the chosen job with this form; its outputs come back as Image datablocks"""

    bl_idname = "stablecore.run"
    bl_label = "Run"

    def execute(self, context: Any) -> set[str]:
        scene, settings = context.scene, context.scene.stablecore
        if settings.job not in form.catalog:
            self.report({"ERROR"}, f"no job {settings.job!r}: fetch the jobs and pick one")
            return {"CANCELLED"}
        if state.task is not None and not state.task.finished:
            self.report({"ERROR"}, "a job is running; cancel it first")
            return {"CANCELLED"}
        try:
            inputs = gather_inputs(scene, settings.job)
        except RuntimeError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        obj = context.active_object
        tag = {"to_material": settings.to_material, "object": obj.name if obj else None}
        state.task = Task(api(), settings.job, form.params(scene, settings.job), inputs,
                          scratch(), state.updates, many(settings.job), tag).start()
        set_status(f"{settings.job}: starting", 0.0)
        start_polling()
        return {"FINISHED"}


class STABLECORE_OT_cancel(bpy.types.Operator):
    """Cancel the running job or animation"""

    bl_idname = "stablecore.cancel"
    bl_label = "Cancel"

    def execute(self, context: Any) -> set[str]:
        if state.animation is not None:
            state.animation.stop("animation cancelled")
        if state.task is not None and not state.task.finished:
            state.task.cancel()
            set_status(f"{state.task.spec}: cancelling")
        return {"FINISHED"}


class Animation:
    """Each frame of the scene's range rendered, sent through the job, saved as
    `frames_dir/####.png`; at the end the frames are an image sequence datablock."""

    def __init__(self, scene: Any, job: str, frame_input: str) -> None:
        self.scene, self.job, self.frame_input = scene, job, frame_input
        self.frames = list(range(scene.frame_start, scene.frame_end + 1, scene.frame_step))
        self.todo = list(self.frames)
        self.tasks: dict[Task, int] = {}
        self.done: dict[int, Path] = {}
        wanted = scene.stablecore.frames_dir
        relative = wanted.startswith("//") and not bpy.data.filepath  # to an unsaved file
        self.folder = Path(tempfile.mkdtemp(prefix="stablecore-") if relative or not wanted
                           else bpy.path.abspath(wanted))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fixed = gather_inputs(scene, job, skip=frame_input)
        self.params = form.params(scene, job)
        self.output = next(k for k, v in form.catalog[job]["outputs"].items()
                           if v["kind"] in schema.IMAGE_KINDS)
        self.current = scene.frame_current

    def step(self) -> None:
        """Render the next frame if fewer than AHEAD are on the server."""
        running = sum(1 for t in self.tasks if not t.finished)
        if self.todo and running < AHEAD:
            frame = self.todo.pop(0)
            self.scene.frame_set(frame)
            png = images.png_of_camera(self.scene)
            inputs = {**self.fixed, self.frame_input: [(f"{frame:04d}.png", png)]}
            task = Task(api(), self.job, self.params, inputs, scratch(), state.updates,
                        many(self.job), frame)
            self.tasks[task] = frame
            task.start()
        self.show()

    def update(self, update: Update) -> None:
        frame = self.tasks[update.task]
        if update.kind == "failed" or (update.kind == "done" and
                                       (update.job or {}).get("state") != "succeeded"):
            error = update.text if update.kind == "failed" else (update.job or {}).get("error")
            self.stop(f"frame {frame} {update.text}: {error}")
        elif update.kind == "done":
            target = self.folder / f"{frame:04d}.png"
            shutil.move(str(update.files[self.output][0]), target)
            self.done[frame] = target
            if len(self.done) == len(self.frames):
                first = self.done[self.frames[0]]
                images.as_sequence(first, f"{self.job} frames")
                self.stop(f"{len(self.frames)} frames in {self.folder}", finished=True)
        self.show()

    def show(self) -> None:
        if state.animation is self:
            set_status(f"{self.job}: {len(self.done)}/{len(self.frames)} frames",
                       len(self.done) / max(1, len(self.frames)))

    def stop(self, message: str, finished: bool = False) -> None:
        for task in self.tasks:
            if not task.finished and not finished:
                task.cancel()
        self.scene.frame_set(self.current)
        state.animation = None
        set_status(message, 1.0 if finished else 0.0)


class STABLECORE_OT_render_animation(bpy.types.Operator):
    """Render each frame of the scene's range, put it through the job, and make the results
    an image sequence"""

    bl_idname = "stablecore.render_animation"
    bl_label = "Render animation through job"

    def execute(self, context: Any) -> set[str]:
        scene, job = context.scene, context.scene.stablecore.job
        spec = form.catalog.get(job)
        takes = [i.name for i in schema.inputs(spec) if i.is_image] if spec else []
        makes = [k for k, v in (spec or {}).get("outputs", {}).items()
                 if v["kind"] in schema.IMAGE_KINDS]
        if not takes or not makes:
            self.report({"ERROR"}, f"{job or 'no job'}: needs a job with an image input "
                        "and an image output")
            return {"CANCELLED"}
        if state.animation is not None:
            self.report({"ERROR"}, "an animation is running; cancel it first")
            return {"CANCELLED"}
        try:
            state.animation = Animation(scene, job, takes[0])
        except RuntimeError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        start_polling()
        return {"FINISHED"}


# --- panels -------------------------------------------------------------------------------
def draw_panel(layout: Any, context: Any) -> None:
    scene, wm = context.scene, context.window_manager
    settings, prefs = scene.stablecore, preferences()
    if prefs is not None:
        col = layout.column(align=True)
        col.prop(prefs, "url", text="")
        col.prop(prefs, "token")
    row = layout.row(align=True)
    row.prop_search(settings, "job", wm, "stablecore_jobs", text="")
    row.operator("stablecore.refresh", text="", icon="FILE_REFRESH")
    spec = form.catalog.get(settings.job)
    if spec is not None:
        layout.label(text=spec["description"].split("\n")[0][:80])
        form.draw(layout.column(), scene, settings.job)
        layout.prop(settings, "to_material")
    row = layout.row(align=True)
    row.enabled = spec is not None
    row.operator("stablecore.run", icon="PLAY")
    row.operator("stablecore.cancel", icon="CANCEL")
    if wm.stablecore_status:
        try:
            layout.progress(factor=wm.stablecore_progress, text=wm.stablecore_status)
        except AttributeError:  # Blender before 4.0
            layout.label(text=wm.stablecore_status)
    box = layout.box()
    box.prop(settings, "frames_dir")
    box.operator("stablecore.render_animation", icon="RENDER_ANIMATION")


class STABLECORE_PT_image(bpy.types.Panel):
    bl_label = "stable-core"
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "stable-core"

    def draw(self, context: Any) -> None:
        draw_panel(self.layout, context)


class STABLECORE_PT_view3d(bpy.types.Panel):
    bl_label = "stable-core"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "stable-core"

    def draw(self, context: Any) -> None:
        draw_panel(self.layout, context)


CLASSES = (STABLECORE_AP_preferences, STABLECORE_PG_job, STABLECORE_PG_settings,
           STABLECORE_OT_refresh, STABLECORE_OT_run, STABLECORE_OT_cancel,
           STABLECORE_OT_render_animation, STABLECORE_PT_image, STABLECORE_PT_view3d)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.stablecore = PointerProperty(type=STABLECORE_PG_settings)
    wm = bpy.types.WindowManager
    wm.stablecore_jobs = CollectionProperty(type=STABLECORE_PG_job)
    wm.stablecore_status = StringProperty()
    wm.stablecore_progress = FloatProperty(min=0, max=1, subtype="FACTOR")


def unregister() -> None:
    if state.animation is not None:
        state.animation.stop("add-on disabled")
    if state.task is not None and not state.task.finished:
        state.task.cancel()
    if bpy.app.timers.is_registered(poll):
        bpy.app.timers.unregister(poll)
    form.clear()
    for name in ("stablecore_jobs", "stablecore_status", "stablecore_progress"):
        delattr(bpy.types.WindowManager, name)
    del bpy.types.Scene.stablecore
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
