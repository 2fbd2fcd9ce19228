"""A job run on a thread of its own, so Blender's UI never waits on the network.

The thread uploads the inputs, submits, follows the job's events and downloads its file
outputs into a folder; all it learns goes into a queue of `Update`s that a `bpy.app.timers`
function reads on Blender's main thread, the only one allowed to touch Blender data.
Blender-free, so it is tested outside Blender too.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import Api, ApiError


@dataclass
class Update:
    """What a thread tells the main thread."""

    task: Task | None  # None for what is no job's: the catalog
    kind: str  # status, progress, done, failed; catalog
    text: str = ""
    fraction: float = 0.0
    job: dict[str, Any] | None = None
    files: dict[str, list[Path]] = field(default_factory=dict)  # output name -> files
    specs: list[dict[str, Any]] = field(default_factory=list)


class Task:
    """One job from upload to downloaded outputs. `inputs` maps an input to (file name, bytes)
    pairs (several for a list input); `tag` is the caller's, e.g. the frame number."""

    def __init__(self, api: Api, spec: str, params: dict[str, Any],
                 inputs: dict[str, list[tuple[str, bytes]]], folder: Path,
                 updates: queue.Queue[Update], many: set[str] | None = None,
                 tag: Any = None) -> None:
        self.api, self.spec, self.params, self.inputs = api, spec, params, inputs
        self.folder, self.updates, self.many, self.tag = folder, updates, many or set(), tag
        self.job_id: str | None = None
        self.cancelled = False
        self.finished = False
        self.thread = threading.Thread(target=self._run, name=f"stable-core {spec}", daemon=True)

    def start(self) -> Task:
        self.thread.start()
        return self

    def cancel(self) -> None:
        """Ask the server to cancel (on a thread of its own); the job's end arrives as usual."""
        self.cancelled = True
        if self.job_id is not None:
            threading.Thread(target=self._cancel, daemon=True).start()

    def _cancel(self) -> None:
        try:
            self.api.cancel(self.job_id or "")
        except Exception as e:  # the job may have just ended: say so, never crash
            self._say("status", text=f"cancel: {e}")

    def _say(self, kind: str, **fields: Any) -> None:
        self.updates.put(Update(self, kind, **fields))

    def _run(self) -> None:
        try:
            self._say("status", text="uploading")
            ids: dict[str, Any] = {}
            for name, files in self.inputs.items():
                refs = [self.api.upload(file_name, data) for file_name, data in files]
                ids[name] = refs if name in self.many else refs[0]
            self.job_id = self.api.submit(self.spec, self.params, ids)["id"]
            if self.cancelled:
                self._cancel()
            self._say("status", text="queued")
            job = self.api.wait(self.job_id, self._event)
            files = self._download(job) if job["state"] == "succeeded" else {}
            self._say("done", job=job, files=files, text=job["state"])
        except ApiError as e:
            self._say("failed", text=str(e))
        except Exception as e:  # a network or disk error ends this task, not Blender
            self._say("failed", text=f"{type(e).__name__}: {e}")
        finally:
            self.finished = True

    def _event(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        if event["type"] == "job.started":
            self._say("status", text="running")
        elif event["type"] == "job.progress" and data.get("total"):
            self._say("progress", fraction=data["step"] / data["total"],
                      text=f"{data['step']}/{data['total']}")

    def _download(self, job: dict[str, Any]) -> dict[str, list[Path]]:
        self.folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, list[Path]] = {}
        for name, refs in (job["outputs"] or {}).items():
            for ref in refs if isinstance(refs, list) else [refs]:
                if ref["kind"] == "json":
                    continue
                suffix = Path(ref.get("path") or "").suffix or ".bin"
                path = self.folder / f"{job['id']}_{name}_{len(files.get(name, []))}{suffix}"
                path.write_bytes(self.api.download(ref["id"]))
                files.setdefault(name, []).append(path)
        return files
