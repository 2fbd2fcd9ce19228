"""SQLite (WAL) for jobs, sessions, artifacts and events, plus artifact files on disk.

The store knows no plugins: it moves plain records. Every state change writes its event in
the same transaction, and the events reach `on_event` only after the commit, so a client
never sees an event for a change that was rolled back.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stablecore.errors import Conflict, InvalidParams, NotFound, StoreError
from stablecore.migrations import SCHEMA_VERSION, migrate
from stablecore.records import Artifact, Event, Job, JobState, QueuedJob, check_move, new_id

__all__ = ["Artifact", "Event", "Job", "JobState", "QueuedJob", "Store", "new_id"]



class Store:
    """One SQLite connection, used from the server's event loop only."""

    def __init__(self, data_dir: Path, on_event: Callable[[Event], None] | None = None) -> None:
        self.data_dir = data_dir
        self.on_event = on_event
        data_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("blobs", "sessions", "tmp"):
            (data_dir / sub).mkdir(exist_ok=True)
        self.db = sqlite3.connect(data_dir / "stablecore.db", isolation_level=None,
                                  check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: survives a process crash
        self._pending: list[Event] | None = None
        self.migrate()

    def migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION in one transaction; return the version found."""
        found = self.db.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreError(f"{self.data_dir} was written by a newer stable-core (schema "
                             f"{found}, this one knows {SCHEMA_VERSION}); upgrade stable-core")
        if found < SCHEMA_VERSION:
            with self.transaction() as db:
                migrate(db, found)
        return found

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; events written inside are published after the commit."""
        if self._pending is not None:  # nested: join the outer transaction
            yield self.db
            return
        self._pending = []
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            events = self._pending
        finally:
            self._pending = None
        if self.on_event is not None:
            for event in events:
                self.on_event(event)

    def emit(self, type: str, job_id: str | None = None, session_id: str | None = None,
             workflow_id: str | None = None, **data: Any) -> Event:
        """Write an event; must run inside `transaction()`."""
        assert self._pending is not None, "emit() outside a transaction"
        ts = time.time()
        owner = self.owner_of(job_id, workflow_id, session_id)
        cur = self.db.execute(
            "INSERT INTO events (ts, type, job_id, session_id, workflow_id, owner, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ts, type, job_id, session_id, workflow_id, owner, json.dumps(data)))
        event = Event(cur.lastrowid or 0, ts, type, job_id, session_id, data, workflow_id,
                      owner)
        self._pending.append(event)
        return event

    def owner_of(self, job_id: str | None, workflow_id: str | None = None,
                 session_id: str | None = None) -> str | None:
        """Whose an event is: its job's owner, else its workflow's, else its session's; None
        (admins only) for worker, plugin and model events."""
        for table, key in (("jobs", job_id), ("workflows", workflow_id),
                           ("sessions", session_id)):
            if key:
                row = self.db.execute(f"SELECT owner FROM {table} WHERE id = ?",
                                      (key,)).fetchone()
                if row is not None:
                    return row[0]
        return None

    # --- sessions -------------------------------------------------------------------------
    def create_session(self, name: str | None = None,
                       owner: str | None = None) -> dict[str, Any]:
        """A session named `name` (a folder under sessions/), else one named by date and time."""
        folder = self.data_dir / "sessions"
        if name and (name.strip() in (".", "..")
                     or (folder / name).resolve().parent != folder.resolve()):
            raise InvalidParams(f"session name {name!r} does not name a folder inside "
                                "sessions/", field="name")
        with self.transaction() as db:
            def taken(n: str) -> bool:
                row = db.execute("SELECT 1 FROM sessions WHERE name = ?", (n,)).fetchone()
                return row is not None

            if not name:  # unique even when two are made in the same second
                stamp, n = time.strftime("%Y-%m-%d_%H%M%S"), 1
                name = stamp
                while taken(name):
                    n += 1
                    name = f"{stamp}_{n}"
            elif taken(name):
                raise Conflict(f"a session named {name!r} exists", field="name")
            row = {"id": new_id("s"), "name": name, "created": time.time()}
            db.execute("INSERT INTO sessions (id, name, created, owner)"
                       " VALUES (:id, :name, :created, :owner)", {**row, "owner": owner})
            self.emit("session.created", session_id=row["id"], name=name)
        return row

    def get_session(self, session_id: str, owner: str | None = None) -> dict[str, Any]:
        """With `owner`, only a session of theirs: another's is not found."""
        row = self.db.execute("SELECT id, name, created, owner FROM sessions WHERE id = ?",
                              (session_id,)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            raise NotFound(f"no session {session_id!r}", field="session")
        return {k: row[k] for k in ("id", "name", "created")}

    def list_sessions(self, owner: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE owner = ?", (owner,)) if owner is not None else ("", ())
        rows = self.db.execute(f"SELECT id, name, created FROM sessions {where}"
                               " ORDER BY created DESC", args)
        return [dict(r) for r in rows]

    def current_session(self, owner: str | None = None) -> dict[str, Any]:
        """The newest session (of `owner`, if given); a first one is made on demand."""
        where, args = ("WHERE owner = ?", (owner,)) if owner is not None else ("", ())
        row = self.db.execute(f"SELECT id, name, created FROM sessions {where}"
                              " ORDER BY created DESC LIMIT 1", args).fetchone()
        return dict(row) if row else self.create_session(owner=owner)

    # --- artifacts ------------------------------------------------------------------------
    def add_artifact(self, src: Path, sha256: str, kind: str, mime: str, ext: str, name: str,
                     session_id: str | None = None, job_id: str | None = None,
                     meta: dict[str, Any] | None = None, label: str | None = None,
                     owner: str | None = None) -> Artifact:
        """Move `src` into the blob store (once per sha256) and index it.

        With `label`, the file also appears in its session folder as `NNNN_<label>.<ext>`.
        A job's output or preview belongs to the job's owner.
        """
        blob = Path("blobs") / sha256[:2] / f"{sha256}.{ext}"
        target = self.data_dir / blob
        if target.exists():
            src.unlink(missing_ok=True)
        else:
            target.parent.mkdir(exist_ok=True)
            os.replace(src, target)
        art = Artifact(new_id("a"), sha256, kind, mime, target.stat().st_size, str(blob), name,
                       None, session_id, job_id, time.time(), meta or {}, owner)
        with self.transaction() as db:
            if owner is None and job_id:
                art.owner = self.owner_of(job_id)
            if label and session_id:
                sess = db.execute("SELECT name, next_index FROM sessions WHERE id = ?",
                                  (session_id,)).fetchone()
                db.execute("UPDATE sessions SET next_index = next_index + 1 WHERE id = ?",
                           (session_id,))
                rel = Path("sessions") / sess["name"] / f"{sess['next_index']:04d}_{label}.{ext}"
                _link(target, self.data_dir / rel)
                art.path = str(rel)
            db.execute(
                "INSERT INTO artifacts (id, sha256, kind, mime, size, blob, name, path,"
                " session_id, job_id, created, meta, owner) VALUES (:id, :sha256, :kind,"
                " :mime, :size, :blob, :name, :path, :session_id, :job_id, :created, :meta,"
                " :owner)", {**art.__dict__, "meta": json.dumps(art.meta)})
        return art

    def get_artifact(self, artifact_id: str, owner: str | None = None) -> Artifact:
        """With `owner`, only an artifact of theirs: another's is not found."""
        row = self.db.execute("SELECT * FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            raise NotFound(f"no artifact {artifact_id!r}", artifact_id=artifact_id)
        return Artifact.from_row(row)

    def artifact_by_sha(self, sha256: str) -> Artifact | None:
        row = self.db.execute("SELECT * FROM artifacts WHERE sha256 = ? LIMIT 1",
                              (sha256,)).fetchone()
        return Artifact.from_row(row) if row else None

    def list_artifacts(self, session_id: str, limit: int = 100, offset: int = 0,
                       owner: str | None = None) -> list[Artifact]:
        mine, args = ("AND owner = ? ", [owner]) if owner is not None else ("", [])
        rows = self.db.execute(
            f"SELECT * FROM artifacts WHERE session_id = ? AND kind != 'preview' {mine}"
            "ORDER BY created DESC LIMIT ? OFFSET ?", (session_id, *args, limit, offset))
        return [Artifact.from_row(r) for r in rows]

    def artifact_file(self, art: Artifact) -> Path:
        return self.data_dir / art.blob

    # --- jobs -----------------------------------------------------------------------------
    def add_job(self, job: Job) -> Job:
        return self.add_jobs([job])[0]

    def add_jobs(self, jobs: list[Job]) -> list[Job]:
        """Queue jobs in one transaction: accepted together, durable together."""
        now = time.time()
        with self.transaction() as db:
            for job in jobs:
                job.created = now
                cur = db.execute(
                    "INSERT INTO jobs (id, spec, params, inputs, session_id, priority, owner,"
                    " state, created, model_key, batch_key, timeout, workflow_id, node,"
                    " cache_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (job.id, job.spec, json.dumps(job.params), json.dumps(job.inputs),
                     job.session_id, job.priority, job.owner, job.state, job.created,
                     job.model_key, job.batch_key, job.timeout, job.workflow_id, job.node,
                     job.cache_key))
                job.seq = cur.lastrowid or 0
                self.emit(f"job.{job.state}", job.id, job.session_id, job.workflow_id,
                          spec=job.spec, node=job.node)
        return jobs

    def get_job(self, job_id: str, owner: str | None = None) -> Job:
        """With `owner`, only a job of theirs: another's is not found."""
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            raise NotFound(f"no job {job_id!r}", job_id=job_id)
        return Job.from_row(row)

    def list_jobs(self, state: str | None = None, session_id: str | None = None,
                  limit: int = 50, offset: int = 0,
                  owner: str | None = None) -> tuple[list[Job], int]:
        where, args = [], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if state:
            where.append("state = ?")
            args.append(state)
        if session_id:
            where.append("session_id = ?")
            args.append(session_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = self.db.execute(f"SELECT COUNT(*) FROM jobs {clause}", args).fetchone()[0]
        rows = self.db.execute(f"SELECT * FROM jobs {clause} ORDER BY seq DESC LIMIT ? OFFSET ?",
                               [*args, limit, offset])
        return [Job.from_row(r) for r in rows], total

    def queued(self, limit: int, specs: set[str] | None = None) -> list[QueuedJob]:
        """The head of the queue, priority first, then age: just what the scheduler needs.

        With `specs`, only jobs of those specs: what the idle workers can run, so jobs no idle
        worker takes (an isolated plugin's, GPU-only ones) never hide the rest behind them.

        With several owners queuing, the head of each owner's queue (an equal part of `limit`,
        at least 16), each job with how many of its owner's jobs run and when their latest
        started, for the scheduler's fair share."""
        where, args = "state = 'queued'", []
        if specs is not None:
            where += f" AND spec IN ({','.join('?' * len(specs))})"
            args = sorted(specs)
        columns = "id, spec, model_key, batch_key, priority, owner, seq"
        owners = self._queued_owners()
        if len(owners) <= 1:
            rows = self.db.execute(f"SELECT {columns} FROM jobs WHERE {where}"
                                   " ORDER BY priority DESC, seq LIMIT ?", (*args, limit))
            return [QueuedJob(*r) for r in rows]
        running = dict(self.db.execute(
            "SELECT owner, COUNT(*) FROM jobs WHERE state = 'running' GROUP BY owner").fetchall())
        jobs, part = [], max(limit // len(owners), 16)
        for owner in owners:
            started = self.db.execute("SELECT MAX(started) FROM jobs WHERE owner IS ?",
                                      (owner,)).fetchone()[0] or 0.0
            rows = self.db.execute(f"SELECT {columns} FROM jobs WHERE {where} AND owner IS ?"
                                   " ORDER BY priority DESC, seq LIMIT ?", (*args, owner, part))
            jobs += [QueuedJob(*r, owner_running=running.get(owner, 0), owner_started=started)
                     for r in rows]
        return sorted(jobs, key=lambda j: (-j.priority, j.seq))

    def _queued_owners(self) -> list[str | None]:
        """The owners with queued jobs, one index seek each (a loose index scan)."""
        owners: list[str | None] = [r[0] for r in self.db.execute(
            "WITH RECURSIVE o(owner) AS (SELECT MIN(owner) FROM jobs WHERE state = 'queued'"
            " UNION ALL SELECT (SELECT MIN(owner) FROM jobs WHERE state = 'queued'"
            " AND owner > o.owner) FROM o WHERE o.owner IS NOT NULL)"
            " SELECT owner FROM o WHERE owner IS NOT NULL")]
        if self.db.execute("SELECT 1 FROM jobs WHERE state = 'queued' AND owner IS NULL"
                           " LIMIT 1").fetchone():
            owners.append(None)
        return owners

    def claim(self, ids: list[str], worker: str) -> list[Job]:
        """queued -> running for all of `ids`, or for none of them."""
        now = time.time()
        with self.transaction() as db:
            jobs = []
            for job_id in ids:
                cur = db.execute(
                    "UPDATE jobs SET state = 'running', worker = ?, started = ?,"
                    " attempts = attempts + 1 WHERE id = ? AND state = 'queued'",
                    (worker, now, job_id))
                if cur.rowcount != 1:
                    raise Conflict(f"job {job_id} is no longer queued", job_id=job_id)
                job = self.get_job(job_id)
                jobs.append(job)
                self.emit("job.started", job.id, job.session_id, job.workflow_id,
                          worker=worker, batch=len(ids))
        return jobs

    def finish(self, job_id: str, state: JobState, outputs: dict[str, Any] | None = None,
               error: str | None = None, params: dict[str, Any] | None = None,
               traceback: str | None = None, cached: bool = False) -> Job:
        """Move a job to a final state (or back to queued) with its outputs or error.

        `params` replaces the recorded params when the job decided some (a random seed)."""
        with self.transaction() as db:
            job = self.get_job(job_id)
            check_move(job_id, job.state, state)
            if params is not None and params != job.params:
                db.execute("UPDATE jobs SET params = ? WHERE id = ?", (json.dumps(params), job_id))
                job.params = params
            now = time.time() if state.finished else None
            db.execute("UPDATE jobs SET state = ?, outputs = ?, error = ?, traceback = ?,"
                       " finished = ?, worker = CASE WHEN ? THEN worker END WHERE id = ?",
                       (state, json.dumps(outputs) if outputs else None, error, traceback, now,
                        state.finished, job_id))
            job.state, job.outputs, job.error, job.finished = state, outputs, error, now
            job.traceback = traceback
            if cached:
                db.execute("UPDATE jobs SET cached = 1 WHERE id = ?", (job_id,))
                job.cached = True
            data: dict[str, Any] = {"spec": job.spec}
            if job.workflow_id:
                data.update(node=job.node, cached=job.cached)
            if outputs is not None:
                data["outputs"] = outputs
            if error is not None:
                data["error"] = error
            self.emit(f"job.{state}", job_id, job.session_id, job.workflow_id, **data)
        return job

    def set_priority(self, job_id: str, priority: int) -> Job:
        with self.transaction() as db:
            job = self.get_job(job_id)
            if job.state not in (JobState.QUEUED, JobState.WAITING):
                raise Conflict(f"job {job_id} is {job.state}; only a queued job can be "
                               "reordered", job_id=job_id, state=str(job.state))
            db.execute("UPDATE jobs SET priority = ? WHERE id = ?", (priority, job_id))
            job.priority = priority
            self.emit("job.updated", job_id, job.session_id, job.workflow_id, priority=priority)
        return job

    def recover(self, max_attempts: int) -> list[Job]:
        """After a restart: jobs left `running` by a dead server are re-queued or failed."""
        recovered = []
        with self.transaction() as db:
            for row in db.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall():
                job = Job.from_row(row)
                if job.attempts < max_attempts:
                    self.finish(job.id, JobState.QUEUED)
                else:
                    self.finish(job.id, JobState.FAILED, error=(
                        f"server stopped while the job ran, {job.attempts} times; giving up"))
                recovered.append(job)
        return recovered

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {state: n for state, n in rows}

    # --- events ---------------------------------------------------------------------------
    def events_since(self, seq: int, job_id: str | None = None, session_id: str | None = None,
                     limit: int = 10_000, workflow_id: str | None = None,
                     owner: str | None = None) -> list[Event]:
        """Events after `seq`; with `owner`, only theirs (never worker or plugin events)."""
        where, args = ["seq > ?"], [seq]
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if workflow_id:
            where.append("workflow_id = ?")
            args.append(workflow_id)
        if job_id:
            where.append("job_id = ?")
            args.append(job_id)
        if session_id:
            where.append("session_id = ?")
            args.append(session_id)
        rows = self.db.execute(
            f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            [*args, limit])
        return [Event(r["seq"], r["ts"], r["type"], r["job_id"], r["session_id"],
                      json.loads(r["data"]), r["workflow_id"], r["owner"]) for r in rows]

    def last_seq(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]

    def prune_events(self, older_than: float) -> int:
        with self.transaction() as db:
            return db.execute("DELETE FROM events WHERE ts < ?", (older_than,)).rowcount

    def prune_previews(self, finished_before: float) -> int:
        """Forget the previews of jobs that finished before `finished_before`, and their files
        unless another artifact shares the blob. Returns how many previews went."""
        with self.transaction() as db:
            rows = db.execute(
                "SELECT a.id, a.blob FROM artifacts a JOIN jobs j ON j.id = a.job_id"
                " WHERE a.kind = 'preview' AND j.finished IS NOT NULL AND j.finished < ?",
                (finished_before,)).fetchall()
            db.executemany("DELETE FROM artifacts WHERE id = ?", [(r["id"],) for r in rows])
            blobs = {r["blob"] for r in rows}
            kept = {r[0] for r in db.execute(
                f"SELECT blob FROM artifacts WHERE blob IN ({','.join('?' * len(blobs))})",
                sorted(blobs))} if blobs else set()
        for blob in blobs - kept:
            (self.data_dir / blob).unlink(missing_ok=True)
        return len(rows)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(target, link)
    except OSError:
        shutil.copyfile(target, link)
