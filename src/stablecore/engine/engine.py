"""The engine: accepts jobs, dispatches them to workers, and records what workers report.

Everything runs on the server's event loop, so no locks: a worker message, a submit and a
timer tick each run to completion. The store is the truth; the engine only keeps what is
live (which worker runs what, the latest progress). It reaches workers only through
`WorkerLink` (engine/link.py) and the messages of `protocol.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stablecore import protocol
from stablecore.config import Settings
from stablecore.engine import intake
from stablecore.engine.catalog import CACHED, Catalog
from stablecore.engine.flows import Flows
from stablecore.engine.intake import JobRequest
from stablecore.engine.link import WorkerLink, WorkerState
from stablecore.engine.pool import Environments, Pool
from stablecore.engine.saved import PLUGIN as SAVED
from stablecore.engine.scheduler import WorkerView, plan
from stablecore.engine.workflows import Graph
from stablecore.errors import (
    Conflict,
    NotReady,
    ProtocolError,
    StableCoreError,
)
from stablecore.protocol import Blob, Cancel, FileRef, Order, OutputFile, Run
from stablecore.store import Job, JobState, Store

TICK_S = 0.1
PROGRESS_EVENT_EVERY_S = 0.05
QUEUE_LOOKAHEAD = 64
PRUNE_EVERY_S = 60.0


@dataclass
class Running:
    """A job on a worker: when it started, when it must end, why it may be killed."""

    worker: str
    deadline: float
    spec: str
    session_id: str
    workflow_id: str | None = None
    kill_at: float | None = None
    kill_state: JobState | None = None
    kill_reason: str | None = None


class Engine:
    def __init__(self, settings: Settings, store: Store,
                 environments: Environments = dict) -> None:
        self.settings = settings
        self.store = store
        self.catalog = Catalog()
        self.ready = asyncio.Event()
        self.pool = Pool(settings, environments, self._on_message, self._on_exit, self.spawn)
        self.flows = Flows(store, self.catalog, lambda job_id: self.cancel(job_id, False),
                           settings.job_timeout_s)
        self.running: dict[str, Running] = {}
        self.progress: dict[str, dict[str, Any]] = {}
        self.batch_max: dict[str, int] = {}
        self._last_progress_event: dict[str, float] = {}
        self._hellos: dict[str, asyncio.Event] = {}
        self._caught_up = False  # every worker reported once: workflows may advance
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False

    @property
    def workers(self) -> dict[str, WorkerLink]:
        return self.pool.workers

    @property
    def catalog_file(self) -> Path:
        return self.settings.data_dir / "catalog.json"

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover the queue; answer at once with the last run's catalog while the workers
        start (~0.4 s); they replace it as they report."""
        self.store.recover(self.settings.max_attempts)
        self.settings.models_home.mkdir(parents=True, exist_ok=True)
        if self.catalog.load(self.catalog_file):
            self.ready.set()
        await self.pool.start()
        self.spawn(self._ticker())

    async def reload(self) -> None:
        await self.pool.reload(self.catalog.forget)

    async def rescan(self, timeout: float) -> None:
        """Restart every worker (once idle) and wait until each announced its catalog again,
        so new plugins and model files appear without restarting the server."""
        self._hellos = {name: asyncio.Event() for name in self.workers}
        await self.reload()
        waits = [e.wait() for e in self._hellos.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            raise NotReady(f"workers did not report back within {timeout:g} s; the "
                           "catalog updates as they do") from None

    async def stop(self) -> None:
        """Stop workers; jobs they were running go back to the queue for the next start."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await self.pool.stop()
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
        return self.submit_many([JobRequest(spec, params, inputs, session_id, priority)],
                                owner)[0]

    def submit_many(self, requests: list[JobRequest], owner: str | None = None,
                    seen_by: str | None = None) -> list[Job]:
        """Check every request, then queue all in one transaction: all of them or none.
        `seen_by`: the owner whose sessions and artifacts the requests may name (None: any)."""
        jobs = intake.build_jobs(self.catalog, self.store, requests, owner,
                                 self.settings.job_timeout_s, seen_by)
        graphs = {}
        for job in jobs:  # a saved workflow's job waits for the run it starts
            if job.spec.startswith(f"{SAVED}."):
                graphs[job.id] = self.flows.saved_graph(job)
                job.state = JobState.WAITING
        self.store.add_jobs(jobs)
        for job in jobs:
            if job.id in graphs:
                run = self.flows.submit(graphs[job.id], job.session_id, owner, job.priority,
                                        parent=job.id)
                self.flows.advance(run["id"])
        self.dispatch()
        return jobs

    def submit_workflow(self, graph: Graph, session_id: str | None, priority: int = 0,
                        owner: str | None = None, seen_by: str | None = None) -> dict[str, Any]:
        """Check a whole graph and start it: its nodes wait in the queue for their inputs.
        `seen_by`: the owner whose session and artifacts it may name (None: any)."""
        session = (self.store.get_session(session_id, seen_by) if session_id
                   else self.store.current_session(owner))
        run = self.flows.submit(graph, session["id"], owner, priority, seen_by=seen_by)
        self.flows.advance(run["id"])
        self.dispatch()
        return self.flows.public(run["id"])

    def cancel_workflow(self, workflow_id: str) -> dict[str, Any]:
        self.flows.cancel(workflow_id)
        return self.flows.public(workflow_id)

    def _advance(self, workflow_id: str | None) -> None:
        if workflow_id is not None and self._caught_up:
            self.flows.advance(workflow_id)
            self.dispatch()

    def cancel(self, job_id: str, advance: bool = True) -> Job:
        """A queued job is cancelled at once; a running one is asked to stop. Its worker is
        killed after the grace period only if no other job on it is still wanted."""
        job = self.store.get_job(job_id)
        if job.state in (JobState.QUEUED, JobState.WAITING):
            job = self.store.finish(job_id, JobState.CANCELLED, error="cancelled by request")
            for run in self.flows.db.started_by(job_id):  # a saved workflow's job
                self.flows.cancel(run)
            if advance:
                self._advance(job.workflow_id)
            return job
        run = self.running.get(job_id)
        if job.state != JobState.RUNNING or run is None:
            raise Conflict(f"job {job_id} is {job.state}; only queued or running jobs cancel",
                           job_id=job_id, state=str(job.state))
        if run.kill_state is None:
            worker = self.workers[run.worker]
            worker.send(Cancel(id=job_id))
            run.kill_state, run.kill_reason = JobState.CANCELLED, "cancelled by request"
            mates = [self.running[i] for i in worker.jobs if i in self.running]
            if all(m.kill_state is not None for m in mates):
                kill_at = time.monotonic() + self.settings.cancel_grace_s
                for mate in mates:
                    mate.kill_at = mate.kill_at or kill_at
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
                if w.state == WorkerState.IDLE and not self.pool.wants_recycle(w)]
        if not idle:
            return
        views = [WorkerView(w.name, self._runnable(w), w.models) for w in idle]
        wanted = set().union(*(v.specs for v in views))
        if not wanted:
            return
        queue = self.store.queued(QUEUE_LOOKAHEAD + self.settings.batch_max, wanted)
        for view, jobs in plan(queue, views, self.batch_max):
            self._run(self.workers[view.name], [q.id for q in jobs])

    def _runnable(self, worker: WorkerLink) -> set[str]:
        """The specs a worker may run: jobs that declare `gpu=True` go to GPU workers only,
        when this server has any (on a CPU-only machine they run on the CPU)."""
        if worker.device.startswith("cuda") or not any(
                w.device.startswith("cuda") for w in self.workers.values()):
            return worker.specs
        return {s for s in worker.specs if not self.catalog.specs[s]["resources"]["gpu"]}

    def _run(self, worker: WorkerLink, ids: list[str]) -> None:
        jobs = self.store.claim(ids, worker.name)
        now = time.monotonic()
        orders = []
        for job in jobs:
            self.running[job.id] = Running(worker.name, now + (job.timeout or 1e12), job.spec,
                                           job.session_id, job.workflow_id)
            inputs: dict[str, FileRef | list[FileRef]] = {}
            for key, ref in job.inputs.items():
                refs = [self._file_ref(i, worker) for i in (ref if isinstance(ref, list)
                                                            else [ref])]
                inputs[key] = refs if isinstance(ref, list) else refs[0]
            orders.append(Order(id=job.id, spec=job.spec, params=job.params, inputs=inputs))
        try:
            worker.send(Run(jobs=orders))
        except ValueError as e:  # a value the protocol cannot carry fails its jobs, not us
            for job in jobs:
                self.running.pop(job.id, None)
                self.store.finish(job.id, JobState.FAILED,
                                  error=f"cannot send the job to a worker: {e}")
            return
        worker.move(WorkerState.BUSY)
        worker.jobs += [j.id for j in jobs]

    def _file_ref(self, artifact_id: str, worker: WorkerLink) -> FileRef:
        art = self.store.get_artifact(artifact_id)
        path = str(self.store.artifact_file(art)) if worker.shares_files else None
        return FileRef(sha256=art.sha256, kind=art.kind, size=art.size, id=art.id,
                       name=art.name, path=path)

    # --- what workers report ----------------------------------------------------------------
    def _on_message(self, worker: WorkerLink, msg: protocol.FromWorker) -> None:
        match msg:
            case protocol.Hello():
                self._on_hello(worker, msg)
            case protocol.Idle():
                worker.cache = msg.cache
                worker.stats = msg.model_dump(exclude={"t", "cache"})
                if worker.state in (WorkerState.STARTING, WorkerState.BUSY):
                    worker.move(WorkerState.IDLE)  # its last jobs may still be writing
                self._next(worker)
            case protocol.Progress():
                self._on_progress(msg)
            case protocol.Log():
                with self.store.transaction():
                    for job_id in msg.ids:
                        run = self.running.get(job_id)
                        self.store.emit("job.log", job_id, run.session_id if run else None,
                                        run.workflow_id if run else None, level=msg.level,
                                        msg=msg.msg, stream=msg.stream)
            case protocol.Need():
                self._send_blob(worker, msg.sha256)
            case protocol.Done() | protocol.Failed() | protocol.Cancelled():
                self._on_outcome(worker, msg)
                if (worker.state == WorkerState.IDLE and not worker.jobs
                        and self.pool.wants_recycle(worker)):
                    self.spawn(self.pool.recycle(worker))

    def _on_hello(self, worker: WorkerLink, msg: protocol.Hello) -> None:
        try:
            protocol.check_hello(msg, worker.name)
        except ProtocolError as e:
            with self.store.transaction():
                self.store.emit("worker.refused", worker=worker.name, error=e.message)
            raise
        self.catalog.update(worker.name, msg.specs, msg.plugins)
        top = self.settings.batch_max
        self.batch_max = {name: min(s.get("batch_max") or top, top)
                          for name, s in self.catalog.specs.items()}
        worker.specs = {s["name"] for s in msg.specs}
        worker.python, worker.pid = msg.python, msg.pid
        self.flows.refresh_saved()
        if not self._caught_up and all(w.python for w in self.workers.values()):
            self._caught_up = True  # every worker has spoken: the catalog is complete
            self.catalog.forget(CACHED)
            self._fail_unknown()
            for workflow_id in self.flows.db.running():
                self.flows.advance(workflow_id)
        self.catalog.save(self.catalog_file)
        with self.store.transaction():
            self.store.emit("worker.up", worker=worker.name, device=worker.device, pid=msg.pid)
        self.ready.set()
        if worker.name in self._hellos:
            self._hellos[worker.name].set()

    def _fail_unknown(self) -> None:
        """Jobs accepted against the last run's catalog whose plugin is gone now."""
        for job in self.store.queued(10_000):
            if job.spec not in self.catalog.specs:
                self.store.finish(job.id, JobState.FAILED, error=(
                    f"no worker offers {job.spec} any more (was its plugin removed?)"))

    def _send_blob(self, worker: WorkerLink, sha256: str) -> None:
        """A worker that does not share our disk asks for an input's bytes, once."""
        art = self.store.artifact_by_sha(sha256)
        if art is None:
            worker.send(Blob(sha256=sha256, error=f"no artifact with sha256 {sha256[:12]}"))
            return
        worker.send(Blob.of(sha256, self.store.artifact_file(art).read_bytes()))

    def _on_progress(self, msg: protocol.Progress) -> None:
        preview, art_id = msg.preview, None
        now = time.monotonic()
        for job_id in msg.ids:
            job = self.running.get(job_id)  # no database read: progress can be frequent
            if job is None:
                continue
            if preview is not None and art_id is None:
                art_id = self.store.add_artifact(
                    Path(preview.path), preview.sha256, "preview", preview.mime, preview.ext,
                    f"{job.spec}.preview.{preview.ext}", job.session_id, job_id,
                    preview.meta).id
            state = {"step": msg.step, "total": msg.total, "preview": art_id}
            self.progress[job_id] = state
            last = self._last_progress_event.get(job_id, 0.0)
            if art_id or msg.step >= msg.total or now - last >= PROGRESS_EVENT_EVERY_S:
                self._last_progress_event[job_id] = now
                with self.store.transaction():
                    self.store.emit("job.progress", job_id, job.session_id, job.workflow_id,
                                    **state)

    def _next(self, worker: WorkerLink) -> None:
        """An idle worker gets work, or is recycled once nothing of it is pending."""
        if not self.pool.wants_recycle(worker):
            self.dispatch()
        elif not worker.jobs:
            self.spawn(self.pool.recycle(worker))

    def _on_outcome(self, worker: WorkerLink,
                    msg: protocol.Done | protocol.Failed | protocol.Cancelled) -> None:
        job_id = msg.id
        if job_id in worker.jobs:
            worker.jobs.remove(job_id)
        run = self.running.pop(job_id, None)
        if run is None:
            return  # already settled (e.g. killed after grace)
        self.progress.pop(job_id, None)
        self._last_progress_event.pop(job_id, None)
        if isinstance(msg, protocol.Done):
            job = self.store.get_job(job_id) if msg.outputs else None
            with self.store.transaction():
                outputs: dict[str, Any] = {}
                for name, out in msg.outputs.items():
                    assert job is not None
                    refs = [self._keep_output(job, o) for o in
                            (out if isinstance(out, list) else [out])]
                    outputs[name] = refs if isinstance(out, list) else refs[0]
                self.store.finish(job_id, JobState.SUCCEEDED, outputs=outputs,
                                  params=msg.params)
            worker.failures = 0
        elif isinstance(msg, protocol.Cancelled):
            self.store.finish(job_id, JobState.CANCELLED, error="cancelled by request")
        else:
            self.store.finish(job_id, JobState.FAILED, error=msg.error,
                              traceback=msg.traceback)
        self._advance(run.workflow_id)

    def _keep_output(self, job: Job, out: OutputFile) -> dict[str, Any]:
        """Move one output file into the store and the job's session folder."""
        art = self.store.add_artifact(
            Path(out.path), out.sha256, out.kind, out.mime, out.ext, f"{job.spec}.{out.ext}",
            job.session_id, job.id, out.meta, label=job.spec)
        ref = {"id": art.id, "kind": art.kind, "mime": art.mime, "path": art.path}
        if out.kind == "json":
            ref["value"] = out.value
        return ref

    def _on_exit(self, worker: WorkerLink, cause: str) -> None:
        """A worker ended: settle its jobs with the cause, then restart it with backoff."""
        expected = worker.state == WorkerState.STOPPING
        for job_id in worker.jobs:
            run = self.running.pop(job_id, None)
            if run is None:
                continue
            self.progress.pop(job_id, None)
            if run.kill_state is not None:
                self.store.finish(job_id, run.kill_state, error=run.kill_reason)
            elif self._stopping or worker.lost:  # a lost link: the job runs again
                self.store.finish(job_id, JobState.QUEUED)
            else:
                self.store.finish(job_id, JobState.FAILED, error=f"worker died: {cause}")
            self._advance(run.workflow_id)
        worker.move(WorkerState.DOWN)
        worker.jobs, worker.cache = [], []
        with self.store.transaction():
            self.store.emit("worker.down", worker=worker.name, cause=cause, expected=expected)
        if not (self._stopping or expected):
            self.pool.restart_later(worker)
        if not self._stopping:
            self.dispatch()  # re-queued jobs go to the workers that are idle

    # --- timers -----------------------------------------------------------------------------
    async def _ticker(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self.check_deadlines(now)
            self.pool.check_settled(now)
            if now - last_prune > PRUNE_EVERY_S:
                last_prune = now
                self.prune(time.time())

    def prune(self, now: float) -> None:
        self.store.prune_events(now - self.settings.event_retention_s)
        self.store.prune_previews(now - self.settings.preview_retention_s)

    def check_deadlines(self, now: float) -> None:
        """Kill the worker of a job past its timeout, or past its cancel grace period, and
        a worker that went silent (no message, not even a heartbeat)."""
        for job_id, run in list(self.running.items()):
            if run.kill_at is not None and now >= run.kill_at:
                self.workers[run.worker].kill()
            elif run.kill_state is None and now >= run.deadline:
                run.kill_state = JobState.FAILED
                run.kill_reason = f"timed out after {self.store.get_job(job_id).timeout:g} s"
                run.kill_at = now
                self.workers[run.worker].kill()
        limit = self.settings.heartbeat_timeout_s
        for worker in self.workers.values():
            if worker.state in (WorkerState.IDLE, WorkerState.BUSY) and \
                    now - worker.last_seen > limit:
                worker.kill()
