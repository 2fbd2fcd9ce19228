"""The worker process: imports plugins, keeps models warm, runs jobs, reports over a pipe.

Started by a link (`engine/local.py`) as `python -m stablecore.worker ...`, it speaks the
protocol of `protocol.py`: orders come in on stdin, messages go out on the original stdout.
File descriptors 1 and 2 are pipes read by threads (`worker_io.py`), so whatever a plugin
(or a C library under it) prints becomes `job.log` lines of the running job and still
reaches the server's console, and can never corrupt the protocol. EOF on stdin means the
server is gone, and the worker exits at once.
"""

from __future__ import annotations

import argparse
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
from typing import Any

import PIL.Image
import psutil
from pydantic import ValidationError

from stablecore import protocol
from stablecore.context import Context, ModelCache
from stablecore.errors import JobCancelled
from stablecore.media import read_input, sha256_file, write_output
from stablecore.protocol import (
    Blob,
    Cancelled,
    Done,
    Failed,
    FileRef,
    Hello,
    Idle,
    Message,
    Need,
    Order,
    OutputFile,
    Part,
    Progress,
    Run,
)
from stablecore.spec import ENTRY_POINT_GROUP, JobSpec, discover
from stablecore.worker_io import Channel, Inbox, JobLog, JobLogHandler, heartbeat

Finish = Callable[[], list[Message]]
PREVIEW_SIZE = 256
DECODED_MB = 1024
BLOB_WAIT_S = 600.0


class InputError(Exception):
    """An input artifact cannot be read; names the artifact, never a path on the server."""


class Worker:
    def __init__(self, name: str, device: str, tmpdir: Path, cache_mb: float,
                 channel: Channel, inbox: Inbox, joblog: JobLog, only: set[str] | None = None,
                 max_pixels: int = 0, blobs: Path | None = None,
                 send_outputs: bool = False) -> None:
        self.name, self.device, self.tmpdir = name, device, tmpdir
        self.channel, self.inbox, self.joblog = channel, inbox, joblog
        # content-addressed: inputs fetched over the link (shared by a node's workers)
        self.blobs = blobs or tmpdir / "blobs"
        self.send_outputs = send_outputs  # the engine does not share our disk: send files
        self.cache = ModelCache(cache_mb)
        self.decoded = ModelCache(DECODED_MB)  # decoded input images, by sha256
        self.decoded_lock = threading.Lock()
        self.specs: dict[str, JobSpec] = {}
        self.log = logging.getLogger(f"stablecore.job.{name}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self.log.addHandler(JobLogHandler(joblog))
        self.jobs_done = 0
        self.only = only
        self.max_pixels = max_pixels
        self.process = psutil.Process()
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="outputs")  # keeps their order
        self.batch: list[str] = []  # ids of the batch being computed
        self.reported: set[str] = set()  # ids whose outcome went out early (cancelled)
        inbox.on_cancel = self._on_cancel

    def hello(self) -> None:
        eps = None
        if self.only:
            eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name in self.only]
        self.specs, plugins = discover(eps)
        self.channel.send(Hello(version=protocol.VERSION, pid=os.getpid(),
                                python=sys.executable,
                                specs=[s.schema() for s in self.specs.values()],
                                plugins=[p.__dict__ for p in plugins]))

    def serve(self) -> None:
        while True:
            outcomes, finish = self.run(self.inbox.runs.get())
            self.channel.send(*outcomes, self.status())  # one write: one wake-up of the server
            if finish is not None:  # after the status: a job ends after its worker's stats
                self.writer.submit(lambda f=finish: self.channel.send(*f()))

    def status(self) -> Idle:
        return Idle(cache=self.cache.describe(), loads=self.cache.loads, hits=self.cache.hits,
                    decoded_hits=self.decoded.hits, jobs_done=self.jobs_done,
                    rss_mb=self.process.memory_info().rss / 2**20)

    def _on_cancel(self, job_id: str) -> None:
        """Cancelling one job of a batch ends that job now; the rest of the batch goes on and
        the cancelled job's result is dropped. The last one cancelled stops the batch."""
        batch = self.batch
        if job_id in batch and not all(i in self.inbox.cancelled for i in batch):
            self.reported.add(job_id)
            self.channel.send(Cancelled(id=job_id))

    def run(self, msg: Run) -> tuple[list[Message], Finish | None]:
        """Run one job, or a batch of jobs of one spec.

        Returns the outcome messages of jobs that already ended, and for jobs with outputs
        the work that writes them: the writer thread does it, so the next job's compute
        overlaps this one's PNG encoding.
        """
        jobs = msg.jobs
        ids = [j.id for j in jobs]
        spec = self.specs[jobs[0].spec]
        self.joblog.begin(ids)
        self.batch, self.reported = ids, set()
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
            self._end_batch()
            pending = [i for i in ids if i not in self.reported]
            if isinstance(e, JobCancelled):
                return [Cancelled(id=i) for i in pending], None
            error, trace = describe_error(e), format_traceback(e)
            self.joblog.console.write(f"[{self.name}] {spec.full_name} failed: {error}\n"
                                      .encode(errors="replace"))
            return [Failed(id=i, error=error, traceback=trace) for i in pending], None
        # 3. write outputs: in the background when there are files to write
        reported = self.reported
        self._end_batch()
        finish = partial(self._finish, spec, jobs, results, ctx.resolved, scratch, reported)
        return ([], finish) if spec.outputs else (finish(), None)

    def _end_batch(self) -> None:
        self.joblog.end()
        self.batch = []

    def _finish(self, spec: JobSpec, jobs: list[Order], results: list[Any],
                resolved: dict[int, dict[str, Any]], scratch: Path,
                reported: set[str]) -> list[Message]:
        """Write each job's outputs (with the params it resolved); its outcome message."""
        outcomes: list[Message] = []
        try:
            for index, (job, result) in enumerate(zip(jobs, results, strict=True)):
                if job.id in reported:
                    continue
                if job.id in self.inbox.cancelled:
                    outcomes.append(Cancelled(id=job.id))
                    continue
                params = {**job.params, **resolved.get(index, {})}
                try:
                    outputs = self._write_outputs(spec, job.id, params, result)
                except BaseException as e:
                    outcomes.append(Failed(id=job.id, error=describe_error(e),
                                           traceback=format_traceback(e)))
                    continue
                outcomes.append(Done(id=job.id, outputs=outputs, params=params))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            self.inbox.cancelled.difference_update(j.id for j in jobs)
        return outcomes

    def _arguments(self, spec: JobSpec, job: Order) -> dict[str, Any]:
        assert spec.params_model is not None
        try:
            params = spec.params_model.model_validate(job.params)
        except ValidationError as e:
            raise ValueError(f"invalid params: {e}") from None
        args = {k: getattr(params, k) for k in spec.params_model.model_fields}
        for name, inp in spec.inputs.items():
            ref = job.inputs.get(name)
            if inp.many:
                refs = ref if isinstance(ref, list) else [ref] if ref else []
                args[name] = [self._input(name, inp.kind, r) for r in refs]
            else:
                args[name] = self._input(name, inp.kind, ref) if isinstance(ref, FileRef) else None
        return args

    def _input(self, name: str, kind: str, ref: FileRef) -> Any:
        """An input's value. Decoded images stay in an LRU by content, so a re-run with other
        params, or the next job of a chain, skips the PNG decode; each job gets a copy."""
        try:
            path = self._local_file(ref)
            if kind not in ("image", "mask"):
                return read_input(kind, path)
            with self.decoded_lock:  # the writer thread adds outputs to it
                image = self.decoded.get(f"{kind}:{ref.sha256}",  # a mask reads as L
                                         lambda: self._read_image(kind, path))
                return image.copy()
        except InputError:
            raise
        except Exception as e:  # name the artifact, not the file on the server's disk
            detail = str(e).replace(str(ref.path or ""), ref.name or ref.id)
            raise InputError(f"input {name!r} (artifact {ref.id}, {ref.name!r}): "
                             f"{detail}") from None

    def _read_image(self, kind: str, path: Path) -> PIL.Image.Image:
        """Decode, after checking the size in the header: a 20 KB PNG may decode to GBs."""
        if self.max_pixels:
            with PIL.Image.open(path) as im:
                w, h = im.size
            if w * h > self.max_pixels:
                raise InputError(f"image of {w}x{h} = {w * h / 1e6:.0f} megapixels is over the "
                                 f"limit of {self.max_pixels / 1e6:.0f} (setting max_input_mpx)")
        return read_input(kind, path)

    def _local_file(self, ref: FileRef) -> Path:
        """The input's file: its path when we share the disk, else our copy of the blob,
        fetched from the engine the first time."""
        if ref.path is not None and Path(ref.path).is_file():
            return Path(ref.path)
        path = self.blobs / ref.sha256
        if path.is_file():
            return path
        waiting: queue.Queue[Blob] = queue.Queue()
        self.inbox.blobs[ref.sha256] = waiting
        try:
            self.channel.send(Need(sha256=ref.sha256))
            blob = waiting.get(timeout=BLOB_WAIT_S)
        finally:
            del self.inbox.blobs[ref.sha256]
        if blob.error:
            raise InputError(blob.error)
        self.blobs.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{ref.sha256}.{os.getpid()}.part")  # workers share the folder
        tmp.write_bytes(blob.raw())
        if sha256_file(tmp) != ref.sha256:
            tmp.unlink()
            raise InputError(f"blob {ref.sha256[:12]} arrived corrupted")
        tmp.replace(path)
        return path

    def _remember(self, kind: str, value: Any, facts: OutputFile) -> None:
        """Keep an image output decoded: a following job on this worker may take it as input."""
        if kind == "image" and value.mode in ("RGB", "RGBA"):
            with self.decoded_lock:
                self.decoded.get(f"image:{facts.sha256}", lambda: value)

    def _context(self, spec: JobSpec, ids: list[str], scratch: Path) -> Context:
        def report(step: int, total: int, preview: Any) -> None:
            live = [i for i in ids if i not in self.reported]
            msg = Progress(ids=live, step=step, total=total)
            if isinstance(preview, PIL.Image.Image):
                msg.preview = self._save_preview(preview, ids[0], step)
            self.channel.send(msg)

        return Context(plugin=spec.plugin, device=self.device, cache=self.cache,
                       tmpdir=scratch, report=report, log=self.log,
                       is_cancelled=lambda: all(i in self.inbox.cancelled for i in ids))

    def _save_preview(self, image: PIL.Image.Image, job_id: str, step: int) -> OutputFile:
        small = image.convert("RGB")
        small.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
        path = self.tmpdir / f"{job_id}_preview_{step}.jpg"
        small.save(path, quality=80)
        facts = OutputFile(path=str(path), kind="preview", mime="image/jpeg", ext="jpg",
                           sha256=sha256_file(path), size=path.stat().st_size,
                           meta={"width": small.width, "height": small.height})
        if self.send_outputs:
            self._ship(facts, keep=False)
        return facts

    def _write_outputs(self, spec: JobSpec, job_id: str, params: dict[str, Any],
                       result: Any) -> dict[str, OutputFile | list[OutputFile]]:
        if spec.single_output:
            values = {next(iter(spec.outputs)): result}
        else:
            values = {name: getattr(result, name) for name in spec.outputs}
        outputs: dict[str, OutputFile | list[OutputFile]] = {}
        for name, value in values.items():
            if value is None:
                continue
            kind, dest = spec.outputs[name], self.tmpdir / f"{job_id}_{name}"
            if name in spec.json_outputs:
                value = spec.json_outputs[name].dump_python(value, mode="json")
            if name in spec.many_outputs:
                if not isinstance(value, list | tuple):
                    raise TypeError(f"output {name!r} must be a list, got {type(value).__name__}")
                files = [self._write(kind, v, dest.with_name(f"{dest.name}_{i:04d}"), spec,
                                     params) for i, v in enumerate(value)]
                outputs[name] = files
                for v, facts in zip(value, files, strict=True):
                    self._remember(kind, v, facts)
            else:
                outputs[name] = self._write(kind, value, dest, spec, params)
                self._remember(kind, value, outputs[name])
        return outputs

    def _write(self, kind: str, value: Any, dest: Path, spec: JobSpec,
               params: dict[str, Any]) -> OutputFile:
        facts = OutputFile(**write_output(kind, value, dest, spec.full_name, params))
        if self.send_outputs:
            self._ship(facts, keep=True)
        return facts

    def _ship(self, facts: OutputFile, keep: bool) -> None:
        """Send a file we wrote as `Part`s (they precede the message naming it). A kept one
        moves into our blob cache: a following job that takes it as input has it here."""
        path = Path(facts.path)
        size, offset = path.stat().st_size, 0
        with path.open("rb") as f:
            while True:
                raw = f.read(min(protocol.PART_BYTES, size - offset))
                self.channel.send(Part.of(facts, size, offset, raw))
                offset += len(raw)
                if offset >= size or not raw:
                    break
        if keep and not (self.blobs / facts.sha256).is_file():
            self.blobs.mkdir(parents=True, exist_ok=True)
            os.replace(path, self.blobs / facts.sha256)
        else:
            path.unlink(missing_ok=True)


def describe_error(e: BaseException) -> str:
    """A one-line cause a user can act on; out-of-memory is named as such."""
    if isinstance(e, MemoryError) or "OutOfMemory" in type(e).__name__:
        return f"out of memory: {type(e).__name__}: {e}".rstrip(": ")
    if isinstance(e, InputError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def format_traceback(e: BaseException) -> str:
    return "".join(traceback.format_exception(e))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stablecore.worker")
    ap.add_argument("--name", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tmp", type=Path, required=True)
    ap.add_argument("--cache-mb", type=float, default=8192)
    ap.add_argument("--memory-limit-mb", type=float, default=0)
    ap.add_argument("--max-input-mpx", type=float, default=0)
    ap.add_argument("--plugins", default="", help="comma list: load only these plugins")
    ap.add_argument("--blobs", type=Path, default=None,
                    help="cache of fetched inputs, by sha256 (default TMP/blobs)")
    ap.add_argument("--send-outputs", action="store_true",
                    help="send output and preview files over the protocol (a remote link)")
    args = ap.parse_args(argv)

    # 1. The protocol keeps the real stdout; fds 1 and 2 become pipes read into job logs.
    # Our own threads get small stacks: under a memory limit (RLIMIT_AS) each default 8 MB
    # stack is address space a job cannot use.
    threading.stack_size(512 * 1024)
    out = os.fdopen(os.dup(1), "wb")
    console = os.fdopen(os.dup(2), "wb")
    channel = Channel(out)
    joblog = JobLog(channel, console, args.name)
    joblog.capture(1, "stdout")
    joblog.capture(2, "stderr")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # 2. Limits, then the plugins (their imports may print: the pipes catch it).
    if args.memory_limit_mb:
        limit = int(args.memory_limit_mb * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    args.tmp.mkdir(parents=True, exist_ok=True)
    threading.Thread(target=heartbeat, args=(channel,), daemon=True, name="heartbeat").start()
    inbox = Inbox(sys.stdin.buffer)
    only = {p for p in args.plugins.split(",") if p}
    worker = Worker(args.name, args.device, args.tmp, args.cache_mb, channel, inbox, joblog,
                    only, int(args.max_input_mpx * 1e6), args.blobs, args.send_outputs)
    inbox.start()
    threading.stack_size(0)  # plugins' threads get the default
    worker.hello()
    channel.send(worker.status())
    worker.serve()


if __name__ == "__main__":
    main()
