"""The worker process: imports plugins, keeps models warm, runs jobs, reports over a pipe.

Started by the supervisor as `python -m stablecore.worker ...`. It speaks JSON lines: run and
cancel messages come in on stdin, events go out on the original stdout (plugin prints are
sent to stderr so they cannot corrupt the protocol). EOF on stdin means the server is gone,
and the worker exits at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import resource
import shutil
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, BinaryIO

import PIL.Image
import psutil
from pydantic import ValidationError

from stablecore.context import Context, ModelCache
from stablecore.errors import JobCancelled
from stablecore.media import read_input, sha256_file, write_output
from stablecore.spec import ENTRY_POINT_GROUP, JobSpec, discover

Finish = Callable[[], list[dict[str, Any]]]
PREVIEW_SIZE = 256
DECODED_MB = 1024


class Channel:
    """The protocol pipe to the supervisor: one JSON object per line, thread-safe."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.lock = threading.Lock()

    def send(self, *messages: dict[str, Any]) -> None:
        data = b"".join(json.dumps(m, default=str).encode() + b"\n" for m in messages)
        with self.lock:
            self.out.write(data)
            self.out.flush()


class Inbox:
    """Reads stdin on a thread: cancels take effect at once, runs wait in a queue."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.runs: queue.Queue[dict[str, Any]] = queue.Queue()
        self.cancelled: set[str] = set()
        threading.Thread(target=self._read, daemon=True, name="inbox").start()

    def _read(self) -> None:
        for line in self.stream:
            msg = json.loads(line)
            if msg["t"] == "cancel":
                self.cancelled.add(msg["id"])
            elif msg["t"] == "run":
                self.runs.put(msg)
        os._exit(0)  # stdin closed: the server is gone, and so are we


class JobLogHandler(logging.Handler):
    """Forwards `ctx.log` records to the server as job.log events."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self.channel = channel
        self.ids: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.channel.send({"t": "log", "ids": self.ids, "level": record.levelname,
                           "msg": record.getMessage()})


class Worker:
    def __init__(self, name: str, device: str, tmpdir: Path, cache_mb: float,
                 channel: Channel, inbox: Inbox, only: set[str] | None = None) -> None:
        self.name, self.device, self.tmpdir = name, device, tmpdir
        self.channel, self.inbox = channel, inbox
        self.cache = ModelCache(cache_mb)
        self.decoded = ModelCache(DECODED_MB)  # decoded input images, by sha256
        self.decoded_lock = threading.Lock()
        self.specs: dict[str, JobSpec] = {}
        self.log = logging.getLogger(f"stablecore.job.{name}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self.log_handler = JobLogHandler(channel)
        self.log.addHandler(self.log_handler)
        self.jobs_done = 0
        self.only = only
        self.process = psutil.Process()
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="outputs")  # keeps their order

    def hello(self) -> None:
        eps = None
        if self.only:
            eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name in self.only]
        self.specs, plugins = discover(eps)
        self.channel.send({"t": "hello", "pid": os.getpid(), "python": sys.executable,
                           "specs": [s.schema() for s in self.specs.values()],
                           "plugins": [p.__dict__ for p in plugins]})

    def serve(self) -> None:
        while True:
            outcomes, finish = self.run(self.inbox.runs.get())
            self.channel.send(*outcomes, self.status())  # one write: one wake-up of the server
            if finish is not None:  # after the status: a job ends after its worker's stats
                self.writer.submit(lambda f=finish: self.channel.send(*f()))

    def status(self) -> dict[str, Any]:
        return {"t": "idle", "cache": self.cache.describe(), "loads": self.cache.loads,
                "hits": self.cache.hits, "decoded_hits": self.decoded.hits,
                "jobs_done": self.jobs_done,
                "rss_mb": self.process.memory_info().rss / 2**20}

    def run(self, msg: dict[str, Any]) -> tuple[list[dict[str, Any]], Finish | None]:
        """Run one job, or a batch of jobs of one spec.

        Returns the outcome messages of jobs that already ended, and for jobs with outputs
        the work that writes them: the writer thread does it, so the next job's compute
        overlaps this one's PNG encoding.
        """
        jobs = msg["jobs"]
        ids = [j["id"] for j in jobs]
        spec = self.specs[jobs[0]["spec"]]
        self.log_handler.ids = ids
        scratch = self.tmpdir / f"scratch_{ids[0]}"  # the job's ctx.tmpdir, removed after it
        scratch.mkdir(parents=True, exist_ok=True)
        self.jobs_done += len(ids)
        try:
            # 1. validate params and load inputs
            calls = [self._arguments(spec, j) for j in jobs]
            # 2. call the function, once for a batch
            ctx = self._context(spec, ids, scratch)
            if spec.batch is not None:
                merged = {k: [c[k] for c in calls] for k in calls[0]}
                results = spec.fn(ctx, **merged) if spec.takes_ctx else spec.fn(**merged)
                if not isinstance(results, list) or len(results) != len(jobs):
                    raise TypeError(f"batch job {spec.full_name} must return a list of "
                                    f"{len(jobs)} results, got {type(results).__name__}")
            else:
                args = calls[0]
                results = [spec.fn(ctx, **args) if spec.takes_ctx else spec.fn(**args)]
        except BaseException as e:
            shutil.rmtree(scratch, ignore_errors=True)
            self.inbox.cancelled.difference_update(ids)
            if isinstance(e, JobCancelled):
                return [{"t": "cancelled", "id": i} for i in ids], None
            traceback.print_exc()
            return [{"t": "failed", "id": i, "error": describe_error(e)} for i in ids], None
        # 3. write outputs: in the background when there are files to write
        finish = partial(self._finish, spec, jobs, results, ctx.resolved, scratch)
        return ([], finish) if spec.outputs else (finish(), None)

    def _finish(self, spec: JobSpec, jobs: list[dict[str, Any]], results: list[Any],
                resolved: dict[int, dict[str, Any]], scratch: Path) -> list[dict[str, Any]]:
        """Write each job's outputs (with the params it resolved); its outcome message."""
        outcomes = []
        try:
            for index, (job, result) in enumerate(zip(jobs, results, strict=True)):
                if job["id"] in self.inbox.cancelled:
                    outcomes.append({"t": "cancelled", "id": job["id"]})
                    continue
                params = {**job["params"], **resolved.get(index, {})}
                try:
                    outputs = self._write_outputs(spec, job["id"], params, result)
                except BaseException as e:
                    traceback.print_exc()
                    outcomes.append({"t": "failed", "id": job["id"],
                                     "error": describe_error(e)})
                    continue
                outcomes.append({"t": "done", "id": job["id"], "outputs": outputs,
                                 "params": params})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            self.inbox.cancelled.difference_update(j["id"] for j in jobs)
        return outcomes

    def _arguments(self, spec: JobSpec, job: dict[str, Any]) -> dict[str, Any]:
        assert spec.params_model is not None
        try:
            params = spec.params_model.model_validate(job["params"])
        except ValidationError as e:
            raise ValueError(f"invalid params: {e}") from None
        args = {k: getattr(params, k) for k in spec.params_model.model_fields}
        for name, inp in spec.inputs.items():
            ref = job["inputs"].get(name)
            if inp.many:
                args[name] = [self._input(inp.kind, r) for r in ref or []]
            else:
                args[name] = self._input(inp.kind, ref) if ref else None
        return args

    def _input(self, kind: str, ref: dict[str, str]) -> Any:
        """An input's value. Decoded images stay in an LRU by content, so a re-run with other
        params, or the next job of a chain, skips the PNG decode; each job gets a copy."""
        if kind != "image":
            return read_input(kind, Path(ref["path"]))
        with self.decoded_lock:  # the writer thread adds outputs to it
            image = self.decoded.get(ref["sha256"], lambda: read_input(kind, Path(ref["path"])))
            return image.copy()

    def _remember(self, kind: str, value: Any, facts: dict[str, Any]) -> None:
        """Keep an image output decoded: a following job on this worker may take it as input."""
        if kind == "image" and value.mode in ("RGB", "RGBA"):
            with self.decoded_lock:
                self.decoded.get(facts["sha256"], lambda: value)

    def _context(self, spec: JobSpec, ids: list[str], scratch: Path) -> Context:
        def report(step: int, total: int, preview: Any) -> None:
            msg: dict[str, Any] = {"t": "progress", "ids": ids, "step": step, "total": total}
            if isinstance(preview, PIL.Image.Image):
                msg["preview"] = self._save_preview(preview, ids[0], step)
            self.channel.send(msg)

        return Context(plugin=spec.plugin, device=self.device, cache=self.cache,
                       tmpdir=scratch, report=report, log=self.log,
                       is_cancelled=lambda: all(i in self.inbox.cancelled for i in ids))

    def _save_preview(self, image: PIL.Image.Image, job_id: str, step: int) -> dict[str, Any]:
        small = image.convert("RGB")
        small.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
        path = self.tmpdir / f"{job_id}_preview_{step}.jpg"
        small.save(path, quality=80)
        return {"path": str(path), "kind": "preview", "mime": "image/jpeg", "ext": "jpg",
                "sha256": sha256_file(path), "meta": {"width": small.width,
                                                       "height": small.height}}

    def _write_outputs(self, spec: JobSpec, job_id: str, params: dict[str, Any],
                       result: Any) -> dict:
        if spec.single_output:
            values = {next(iter(spec.outputs)): result}
        else:
            values = {name: getattr(result, name) for name in spec.outputs}
        outputs = {}
        for name, value in values.items():
            if value is None:
                continue
            kind, dest = spec.outputs[name], self.tmpdir / f"{job_id}_{name}"
            if name in spec.many_outputs:
                if not isinstance(value, list | tuple):
                    raise TypeError(f"output {name!r} must be a list, got {type(value).__name__}")
                outputs[name] = [write_output(kind, v, dest.with_name(f"{dest.name}_{i:04d}"),
                                              spec.full_name, params) for i, v in enumerate(value)]
                for v, facts in zip(value, outputs[name], strict=True):
                    self._remember(kind, v, facts)
            else:
                outputs[name] = write_output(kind, value, dest, spec.full_name, params)
                self._remember(kind, value, outputs[name])
        return outputs


def describe_error(e: BaseException) -> str:
    """A one-line cause a user can act on; out-of-memory is named as such."""
    if isinstance(e, MemoryError) or "OutOfMemory" in type(e).__name__:
        return f"out of memory: {type(e).__name__}: {e}".rstrip(": ")
    return f"{type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stablecore.worker")
    ap.add_argument("--name", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tmp", type=Path, required=True)
    ap.add_argument("--cache-mb", type=float, default=8192)
    ap.add_argument("--memory-limit-mb", type=float, default=0)
    ap.add_argument("--plugins", default="", help="comma list: load only these plugins")
    args = ap.parse_args(argv)

    # The protocol keeps the real stdout; anything a plugin prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    if args.memory_limit_mb:
        limit = int(args.memory_limit_mb * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    args.tmp.mkdir(parents=True, exist_ok=True)
    channel = Channel(out)
    only = {p for p in args.plugins.split(",") if p}
    worker = Worker(args.name, args.device, args.tmp, args.cache_mb, channel,
                    Inbox(sys.stdin.buffer), only)
    worker.hello()
    channel.send(worker.status())
    worker.serve()


if __name__ == "__main__":
    main()
