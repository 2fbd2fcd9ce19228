"""The engine: accepts jobs, dispatches them to workers, and records what workers report.

Everything runs on the server's event loop, so no locks: a worker message, a submit and a
timer tick each run to completion. The store is the truth; the engine only keeps what is
live (which worker runs what, the latest progress).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stablecore.config import Settings
from stablecore.engine.catalog import Catalog
from stablecore.engine.local import WorkerProcess, detect_devices, exit_cause
from stablecore.engine.scheduler import WorkerView, plan
from stablecore.errors import Conflict, InvalidParams, NotFound, NotReady, StableCoreError
from stablecore.manager.installer import Manager
from stablecore.store import Job, JobState, QueuedJob, Store, new_id

TICK_S = 0.1
PROGRESS_EVENT_EVERY_S = 0.05
QUEUE_LOOKAHEAD = 64


@dataclass
class Running:
    """A job on a worker: when it started, when it must end, why it may be killed."""

    worker: str
    deadline: float
    spec: str
    session_id: str
    kill_at: float | None = None
    kill_state: JobState | None = None
    kill_reason: str | None = None


class Engine:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.catalog = Catalog()
        self.ready = asyncio.Event()
        self.workers: dict[str, WorkerProcess] = {}
        self.running: dict[str, Running] = {}
        self.progress: dict[str, dict[str, Any]] = {}
        self.batch_max: dict[str, int] = {}
        self.devices: list[str] = []
        self._last_progress_event: dict[str, float] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self.store.recover(self.settings.max_attempts)
        self.devices = self.settings.workers or detect_devices()
        for i, device in enumerate(self.devices):
            self.workers[f"w{i}"] = self._worker(f"w{i}", device)
        self.workers.update(self._isolated_workers())
        for w in self.workers.values():
            await w.start(self._on_message, self._on_exit)
        self.spawn(self._ticker())

    def _worker(self, name: str, device: str, python: str | None = None,
                plugin: str | None = None) -> WorkerProcess:
        args = ["--cache-mb", str(self.settings.cache_budget_mb),
                "--memory-limit-mb", str(self.settings.worker_memory_limit_mb)]
        if plugin:
            args += ["--plugins", plugin]
        tmp = self.settings.data_dir / "tmp" / name
        return WorkerProcess(name, device, tmp, args, python=python or sys.executable)

    def _isolated_workers(self) -> dict[str, WorkerProcess]:
        """One worker per plugin installed `--isolated`, with its own env's interpreter."""
        out = {}
        for entry in Manager(self.settings.plugins_home).entries().values():
            if entry.env != "base":
                python = str(Path(entry.env) / "bin" / "python")
                out[f"w-{entry.name}"] = self._worker(f"w-{entry.name}", self.devices[0],
                                                      python, entry.name)
        return out

    async def reload(self) -> None:
        """Pick up installed, updated or removed plugins: workers restart once idle."""
        wanted = self._isolated_workers()
        for name, worker in list(self.workers.items()):
            if name.startswith("w-") and name not in wanted:
                await worker.stop()
                del self.workers[name]
                self.catalog.forget(name)
        for name, worker in wanted.items():
            if name not in self.workers:
                self.workers[name] = worker
                await worker.start(self._on_message, self._on_exit)
            else:
                self.workers[name].reload_pending = True
        for name, worker in self.workers.items():
            if not name.startswith("w-"):
                worker.reload_pending = True
            if worker.reload_pending and worker.state == "idle" and not worker.jobs:
                self.spawn(self._recycle(worker))

    async def stop(self) -> None:
        """Stop workers; jobs they were running go back to the queue for the next start."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*(w.stop() for w in self.workers.values()))
        for job_id in list(self.running):
            with contextlib.suppress(StableCoreError):
                self.store.finish(job_id, JobState.QUEUED)
        self.running.clear()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the first worker's catalog; the server cannot check jobs before it."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            raise NotReady("no worker has started yet; try again shortly") from None

    # --- client actions ---------------------------------------------------------------------
    def submit(self, spec: str, params: dict[str, Any], inputs: dict[str, Any],
               session_id: str | None, priority: int = 0, owner: str | None = None) -> Job:
        """Check a request against the catalog and queue it durably."""
        arts: dict[str, Any] = {}
        for key, ref in inputs.items():
            ids = ref if isinstance(ref, list) else [ref]
            if not ids or not all(isinstance(i, str) for i in ids):
                raise InvalidParams(f"inputs.{key}: must be an artifact id, or a list of them",
                                    field=f"inputs.{key}")
            try:
                found = [self.store.get_artifact(i) for i in ids]
            except NotFound as e:
                raise InvalidParams(f"inputs.{key}: {e.message}", field=f"inputs.{key}") from None
            arts[key] = found if isinstance(ref, list) else found[0]
        checked = self.catalog.check(spec, params, arts)
        session = (self.store.get_session(session_id) if session_id
                   else self.store.current_session())
        job = Job(new_id("j"), checked.spec, checked.params, checked.inputs, session["id"],
                  JobState.QUEUED, priority=priority, owner=owner, model_key=checked.model_key,
                  batch_key=checked.batch_key,
                  timeout=checked.timeout or self.settings.job_timeout_s)
        self.store.add_job(job)
        self.dispatch()
        return job

    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is asked, then killed after grace."""
        job = self.store.get_job(job_id)
        if job.state in (JobState.QUEUED, JobState.WAITING):
            return self.store.finish(job_id, JobState.CANCELLED, error="cancelled by request")
        run = self.running.get(job_id)
        if job.state != JobState.RUNNING or run is None:
            raise Conflict(f"job {job_id} is {job.state}; only queued or running jobs cancel",
                           job_id=job_id, state=str(job.state))
        if run.kill_state is None:
            self.workers[run.worker].send({"t": "cancel", "id": job_id})
            run.kill_at = time.monotonic() + self.settings.cancel_grace_s
            run.kill_state, run.kill_reason = JobState.CANCELLED, "cancelled by request"
        return job

    def reprioritize(self, job_id: str, priority: int) -> Job:
        job = self.store.set_priority(job_id, priority)
        self.dispatch()
        return job

    def job_public(self, job: Job) -> dict[str, Any]:
        d = job.public()
        if job.id in self.progress:
            d["progress"] = self.progress[job.id]
        return d

    # --- dispatch ---------------------------------------------------------------------------
    def dispatch(self) -> None:
        idle = [w for w in self.workers.values()
                if w.state == "idle" and not self._wants_recycle(w)]
        if not idle:
            return
        queue = self.store.queued(QUEUE_LOOKAHEAD + self.settings.batch_max)
        if not queue:
            return
        views = [WorkerView(w.name, self._runnable(w), w.models) for w in idle]
        for view, jobs in plan(queue, views, self.batch_max):
            self._run(self.workers[view.name], jobs)

    def _runnable(self, worker: WorkerProcess) -> set[str]:
        """The specs a worker may run: jobs that declare `gpu=True` go to GPU workers only,
        when this server has any (on a CPU-only machine they run on the CPU)."""
        if worker.device.startswith("cuda") or not any(
                w.device.startswith("cuda") for w in self.workers.values()):
            return worker.specs
        return {s for s in worker.specs if not self.catalog.specs[s]["resources"]["gpu"]}

    def _run(self, worker: WorkerProcess, queued: list[QueuedJob]) -> None:
        jobs = self.store.claim([q.id for q in queued], worker.name)
        now = time.monotonic()
        payload = []
        for job in jobs:
            self.running[job.id] = Running(worker.name, now + (job.timeout or 1e12), job.spec,
                                           job.session_id)
            inputs = {}
            for key, ref in job.inputs.items():
                refs = [self._input_file(i) for i in (ref if isinstance(ref, list) else [ref])]
                inputs[key] = refs if isinstance(ref, list) else refs[0]
            payload.append({"id": job.id, "spec": job.spec, "params": job.params,
                            "inputs": inputs})
        worker.state = "busy"
        worker.jobs += [j.id for j in jobs]
        worker.send({"t": "run", "jobs": payload})

    def _input_file(self, artifact_id: str) -> dict[str, str]:
        art = self.store.get_artifact(artifact_id)
        return {"path": str(self.store.artifact_file(art)), "kind": art.kind,
                "sha256": art.sha256}

    # --- what workers report ----------------------------------------------------------------
    def _on_message(self, worker: WorkerProcess, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "hello":
            self.catalog.update(worker.name, msg["specs"], msg["plugins"])
            top = self.settings.batch_max
            self.batch_max = {name: min(s.get("batch_max") or top, top)
                              for name, s in self.catalog.specs.items()}
            worker.specs = {s["name"] for s in msg["specs"]}
            worker.python = msg["python"]
            with self.store.transaction():
                self.store.emit("worker.up", worker=worker.name, device=worker.device,
                                pid=msg["pid"])
            self.ready.set()
        elif kind == "idle":
            worker.cache = msg["cache"]
            worker.stats = {k: msg[k] for k in ("loads", "hits", "decoded_hits", "jobs_done",
                                                "rss_mb")}
            worker.state = "idle"  # its last jobs may still be writing their outputs
            self._next(worker)
        elif kind == "progress":
            self._on_progress(msg)
        elif kind == "log":
            with self.store.transaction():
                for job_id in msg["ids"]:
                    self.store.emit("job.log", job_id, level=msg["level"], msg=msg["msg"])
        elif kind in ("done", "failed", "cancelled"):
            self._on_outcome(worker, msg)
            if worker.state == "idle" and not worker.jobs and self._wants_recycle(worker):
                self.spawn(self._recycle(worker))

    def _on_progress(self, msg: dict[str, Any]) -> None:
        preview = msg.get("preview")
        art_id = None
        now = time.monotonic()
        for job_id in msg["ids"]:
            job = self.running.get(job_id)  # no database read: progress can be frequent
            if job is None:
                continue
            if preview is not None and art_id is None:
                art_id = self.store.add_artifact(
                    Path(preview["path"]), preview["sha256"], "preview", preview["mime"],
                    preview["ext"], f"{job.spec}.preview.{preview['ext']}", job.session_id,
                    job_id, preview["meta"]).id
            state = {"step": msg["step"], "total": msg["total"], "preview": art_id}
            self.progress[job_id] = state
            last = self._last_progress_event.get(job_id, 0.0)
            if art_id or msg["step"] >= msg["total"] or now - last >= PROGRESS_EVENT_EVERY_S:
                self._last_progress_event[job_id] = now
                with self.store.transaction():
                    self.store.emit("job.progress", job_id, job.session_id, **state)

    def _next(self, worker: WorkerProcess) -> None:
        """An idle worker gets work, or is recycled once nothing of it is pending."""
        if not self._wants_recycle(worker):
            self.dispatch()
        elif worker.state == "idle" and not worker.jobs:
            self.spawn(self._recycle(worker))

    def _on_outcome(self, worker: WorkerProcess, msg: dict[str, Any]) -> None:
        job_id = msg["id"]
        if job_id in worker.jobs:
            worker.jobs.remove(job_id)
        if self.running.pop(job_id, None) is None:
            return  # already settled (e.g. killed after grace)
        self.progress.pop(job_id, None)
        self._last_progress_event.pop(job_id, None)
        if msg["t"] == "done":
            job = self.store.get_job(job_id) if msg["outputs"] else None
            with self.store.transaction():
                outputs = {}
                for name, out in msg["outputs"].items():
                    assert job is not None
                    refs = [self._keep_output(job, o) for o in
                            (out if isinstance(out, list) else [out])]
                    outputs[name] = refs if isinstance(out, list) else refs[0]
                self.store.finish(job_id, JobState.SUCCEEDED, outputs=outputs,
                                  params=msg.get("params"))
            worker.failures = 0
        elif msg["t"] == "cancelled":
            self.store.finish(job_id, JobState.CANCELLED, error="cancelled by request")
        else:
            self.store.finish(job_id, JobState.FAILED, error=msg["error"])

    def _keep_output(self, job: Job, out: dict[str, Any]) -> dict[str, Any]:
        """Move one output file into the store and the job's session folder."""
        art = self.store.add_artifact(
            Path(out["path"]), out["sha256"], out["kind"], out["mime"], out["ext"],
            f"{job.spec}.{out['ext']}", job.session_id, job.id, out["meta"], label=job.spec)
        return {"id": art.id, "kind": art.kind, "mime": art.mime, "path": art.path}

    def _on_exit(self, worker: WorkerProcess, returncode: int) -> None:
        """A worker ended: settle its jobs with the cause, then restart it with backoff."""
        cause = exit_cause(returncode)
        expected = worker.state == "stopping"
        for job_id in worker.jobs:
            run = self.running.pop(job_id, None)
            if run is None:
                continue
            self.progress.pop(job_id, None)
            if run.kill_state is not None:
                self.store.finish(job_id, run.kill_state, error=run.kill_reason)
            elif self._stopping:
                self.store.finish(job_id, JobState.QUEUED)
            else:
                self.store.finish(job_id, JobState.FAILED, error=f"worker died: {cause}")
        worker.state, worker.jobs, worker.cache = "down", [], []
        with self.store.transaction():
            self.store.emit("worker.down", worker=worker.name, cause=cause, expected=expected)
        if self._stopping or expected:
            return
        worker.failures += 1
        worker.restarts += 1
        self.spawn(self._restart(worker, min(30.0, 0.25 * 2 ** (worker.failures - 1))))

    async def _restart(self, worker: WorkerProcess, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self._stopping:
            await worker.start(self._on_message, self._on_exit)

    def _wants_recycle(self, worker: WorkerProcess) -> bool:
        s, stats = self.settings, worker.stats
        return bool(worker.reload_pending
                    or (s.worker_max_jobs and stats.get("jobs_done", 0) >= s.worker_max_jobs)
                    or (s.worker_max_rss_mb and stats.get("rss_mb", 0) > s.worker_max_rss_mb))

    async def _recycle(self, worker: WorkerProcess) -> None:
        worker.reload_pending = False
        await worker.stop()
        worker.restarts += 1
        if not self._stopping:
            await worker.start(self._on_message, self._on_exit)

    # --- timers -----------------------------------------------------------------------------
    async def _ticker(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            self.check_deadlines(time.monotonic())
            if time.monotonic() - last_prune > 3600:
                last_prune = time.monotonic()
                self.store.prune_events(time.time() - self.settings.event_retention_s)

    def check_deadlines(self, now: float) -> None:
        """Kill the worker of a job past its timeout, or past its cancel grace period."""
        for job_id, run in list(self.running.items()):
            if run.kill_at is not None and now >= run.kill_at:
                self.workers[run.worker].kill()
            elif run.kill_state is None and now >= run.deadline:
                run.kill_state = JobState.FAILED
                run.kill_reason = f"timed out after {self.store.get_job(job_id).timeout:g} s"
                run.kill_at = now
                self.workers[run.worker].kill()
