"""`stable-core clipjob`: a video through a job frame by frame, as kdenlive's clip jobs run it.

kdenlive calls `stable-core clipjob JOB --source {source} --output {output} key=value ...`
and reads `percentage: N` lines from standard error for its progress bar. Everything runs on
the server: `video.to_frames` splits the clip (frames, their times, the audio), JOB runs on
each frame (all queued at once, so the workers batch and overlap them), `video.from_frames`
joins the results with the source's audio at its frame rate.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stablecore.cli.catalog import coerce
from stablecore.client import ApiError, Client

CODECS = {".mp4": "h264", ".m4v": "h264", ".mkv": "ffv1", ".webm": "vp9", ".mov": "prores"}
MAX_FRAMES = 100_000
# Share of the percentage each stage takes: split, the frames, join, download.
STAGES = {"split": (0, 15), "frames": (15, 85), "join": (85, 98), "download": (98, 100)}


class ClipJobError(Exception):
    """Why a clip job cannot run or did not finish; printed as one line."""


class Percentage:
    """`percentage: N` on standard error whenever N grows (kdenlive's progress format)."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.shown = -1

    def stage(self, name: str, fraction: float) -> None:
        low, high = STAGES[name]
        value = int(low + (high - low) * min(max(fraction, 0.0), 1.0))
        if value > self.shown:
            self.shown = value
            self.write(f"percentage: {value}")


def check(specs: dict[str, dict[str, Any]], job: str, frame_input: str | None,
          frame_output: str | None, output: Path) -> tuple[str, str, str]:
    """The job's frame input and output and the codec for `output`; raises naming what is
    missing."""
    for needed in (job, "video.to_frames", "video.from_frames"):
        if needed not in specs:
            plugin = "" if needed == job else " (the video plugin is not installed there)"
            raise ClipJobError(f"the server has no job {needed!r}{plugin}")
    spec = specs[job]
    images_in = [k for k, v in spec["inputs"].items() if v["kind"] in ("image", "mask")
                 and not v["many"]]
    images_out = [k for k, v in spec["outputs"].items() if v["kind"] in ("image", "mask")
                  and not v["many"]]
    frame_input = frame_input or (images_in[0] if images_in else None)
    frame_output = frame_output or (images_out[0] if images_out else None)
    if frame_input not in images_in:
        raise ClipJobError(f"{job} has no image input {frame_input or ''!r} to take the frames "
                           f"(its inputs: {', '.join(spec['inputs']) or 'none'})")
    if frame_output not in images_out:
        raise ClipJobError(f"{job} has no image output {frame_output or ''!r} to make the "
                           f"video of (its outputs: {', '.join(spec['outputs']) or 'none'})")
    codec = CODECS.get(output.suffix.lower())
    if codec is None:
        raise ClipJobError(f"cannot write {output.name!r}: the output must end in "
                           f"{', '.join(CODECS)}")
    return frame_input, frame_output, codec


def run_clipjob(client: Client, job: str, source: Path, output: Path, pairs: list[str],
                inputs: dict[str, Path], frame_input: str | None = None,
                frame_output: str | None = None, crf: int = 18,
                percentage: Percentage | None = None) -> Path:
    """The whole clip job; returns `output`."""
    shown = percentage or Percentage()
    # 1. check the job and the files against the catalog
    specs = {s["name"]: s for s in client.specs()}
    frame_input, frame_output, codec = check(specs, job, frame_input, frame_output, output)
    schema = specs[job]["params"].get("properties", {})
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ClipJobError(f"parameter {pair!r} is not key=value")
        params[key] = coerce(schema.get(key), value)
    if not source.is_file():
        raise ClipJobError(f"no source clip {str(source)!r}")
    session = session_named(client, f"clipjob {source.name}")
    fixed = {name: client.upload(path, session)["id"] for name, path in inputs.items()}

    # 2. split the clip into frames, their times and its audio
    video = client.upload(source, session)["id"]
    split = follow(client, client.submit("video.to_frames", {"max_frames": MAX_FRAMES},
                                         {"video": video}, session), shown, "split")
    frames = split["outputs"]["frames"]

    # 3. every frame through the job, queued at once, gathered in order
    queued = client.submit_many([{"spec": job, "params": params, "session": session,
                                  "inputs": {**fixed, frame_input: f["id"]}} for f in frames])
    results = []
    for i, submitted in enumerate(queued):
        done = client.wait(submitted["id"])
        if done["state"] != "succeeded":
            for rest in queued[i + 1:]:
                client.cancel(rest["id"])
            raise ClipJobError(f"frame {i + 1} of {len(frames)}: {job} {done['state']}: "
                               f"{done.get('error')}")
        results.append(done["outputs"][frame_output]["id"])
        shown.stage("frames", (i + 1) / len(queued))

    # 4. join the results with the source's audio at its frame rate
    joined_inputs = {"frames": results, "times": split["outputs"]["times"]["id"]}
    if split["outputs"].get("audio"):
        joined_inputs["audio"] = split["outputs"]["audio"]["id"]
    joined = follow(client, client.submit("video.from_frames", {"codec": codec, "crf": crf},
                                          joined_inputs, session), shown, "join")

    # 5. download the video where kdenlive expects it
    output.parent.mkdir(parents=True, exist_ok=True)
    client.download(joined["outputs"]["video"]["id"], output)
    shown.stage("download", 1.0)
    return output


def session_named(client: Client, name: str) -> str:
    """The session of that name (clip jobs on one clip gather there), made if need be."""
    for _ in range(2):
        found = [s["id"] for s in client.sessions() if s["name"] == name]
        if found:
            return found[0]
        try:
            return client.create_session(name)["id"]
        except ApiError as e:
            if e.status != 409:  # 409: made meanwhile by another clip job
                raise
    raise ClipJobError(f"cannot make or find the session {name!r}")


def follow(client: Client, job: dict[str, Any], shown: Percentage, stage: str) -> dict[str, Any]:
    """Wait for a job, its progress as the stage's share; raise if it did not succeed."""
    def on_event(event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        if event["type"] == "job.progress" and data.get("total"):
            shown.stage(stage, data["step"] / data["total"])

    done = client.wait(job["id"], on_event)
    if done["state"] != "succeeded":
        raise ClipJobError(f"{job['spec']} {done['state']}: {done.get('error')}")
    shown.stage(stage, 1.0)
    return done
