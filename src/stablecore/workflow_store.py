"""Workflow records in the store's SQLite: runs, their node jobs, and saved graphs.

Plain records through `Store.transaction()`, like the store itself: a run and all its node
jobs are written in one transaction, so an accepted workflow survives a crash whole.
"""

from __future__ import annotations

import json
import time
from typing import Any

from stablecore.errors import Conflict, NotFound
from stablecore.records import Job, JobState, check_move
from stablecore.store import Store

WORKFLOW_STATES = ("running", "succeeded", "failed", "cancelled")


class WorkflowStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- runs -------------------------------------------------------------------------------
    def add(self, run: dict[str, Any], jobs: list[Job]) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT INTO workflows (id, name, graph, state, session_id, owner, job_id,"
                       " created) VALUES (:id, :name, :graph, 'running', :session_id, :owner,"
                       " :job_id, :created)", {**run, "graph": json.dumps(run["graph"])})
            self.store.add_jobs(jobs)
            self.store.emit("workflow.running", None, run["session_id"], run["id"],
                            name=run["name"])

    def get(self, workflow_id: str, owner: str | None = None) -> dict[str, Any]:
        """With `owner`, only a run of theirs: another's is not found."""
        row = self.store.db.execute("SELECT * FROM workflows WHERE id = ?",
                                    (workflow_id,)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            raise NotFound(f"no workflow {workflow_id!r}", workflow_id=workflow_id)
        return {**dict(row), "graph": json.loads(row["graph"])}

    def list(self, limit: int = 50, offset: int = 0,
             owner: str | None = None) -> tuple[list[dict[str, Any]], int]:
        where, args = ("WHERE owner = ?", [owner]) if owner is not None else ("", [])
        total = self.store.db.execute(f"SELECT COUNT(*) FROM workflows {where}",
                                      args).fetchone()[0]
        rows = self.store.db.execute(
            "SELECT id, name, state, session_id, owner, job_id, created, finished, error"
            f" FROM workflows {where} ORDER BY created DESC LIMIT ? OFFSET ?",
            (*args, limit, offset))
        return [dict(r) for r in rows], total

    def started_by(self, job_id: str) -> list[str]:
        """Runs a `workflow.<name>` job started."""
        rows = self.store.db.execute("SELECT id FROM workflows WHERE job_id = ?", (job_id,))
        return [r[0] for r in rows]

    def running(self) -> list[str]:
        rows = self.store.db.execute("SELECT id FROM workflows WHERE state = 'running'")
        return [r[0] for r in rows]

    def finish(self, workflow_id: str, state: str, error: str | None = None) -> None:
        with self.store.transaction() as db:
            run = self.get(workflow_id)
            db.execute("UPDATE workflows SET state = ?, finished = ?, error = ? WHERE id = ?",
                       (state, time.time(), error, workflow_id))
            self.store.emit(f"workflow.{state}", None, run["session_id"], workflow_id,
                            name=run["name"], error=error)

    def jobs(self, workflow_id: str) -> list[Job]:
        rows = self.store.db.execute("SELECT * FROM jobs WHERE workflow_id = ? ORDER BY seq",
                                     (workflow_id,))
        return [Job.from_row(r) for r in rows]

    def release(self, job: Job, params: dict[str, Any], inputs: dict[str, Any],
                model_key: str | None, batch_key: str | None, cache_key: str | None) -> None:
        """A waiting node whose inputs exist: its resolved params and inputs, and queued."""
        with self.store.transaction() as db:
            check_move(job.id, job.state, JobState.QUEUED)
            cur = db.execute(
                "UPDATE jobs SET state = 'queued', params = ?, inputs = ?, model_key = ?,"
                " batch_key = ?, cache_key = ? WHERE id = ? AND state = 'waiting'",
                (json.dumps(params), json.dumps(inputs), model_key, batch_key, cache_key,
                 job.id))
            if cur.rowcount != 1:
                raise Conflict(f"job {job.id} is no longer waiting", job_id=job.id)
            self.store.emit("job.queued", job.id, job.session_id, job.workflow_id,
                            spec=job.spec, node=job.node)

    def cached(self, cache_key: str, owner: str | None = None) -> Job | None:
        """The newest succeeded job with this cache key, of the same owner only (another
        user's outputs are not theirs to reuse)."""
        """The newest succeeded job with this cache key, whose outputs a node may reuse."""
        row = self.store.db.execute(
            "SELECT * FROM jobs WHERE cache_key = ? AND state = 'succeeded' AND owner IS ?"
            " ORDER BY seq DESC LIMIT 1", (cache_key, owner)).fetchone()
        return Job.from_row(row) if row else None

    # --- saved graphs -----------------------------------------------------------------------
    def save(self, name: str, graph: dict[str, Any], expose: dict[str, Any],
             description: str, owner: str | None) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO saved_workflows VALUES (?, ?, ?, ?, ?, ?)",
                       (name, json.dumps(graph), json.dumps(expose), description, owner,
                        time.time()))
            self.store.emit("workflow.saved", name=name)

    def saved(self) -> list[dict[str, Any]]:
        rows = self.store.db.execute("SELECT * FROM saved_workflows ORDER BY name")
        return [{**dict(r), "graph": json.loads(r["graph"]), "expose": json.loads(r["expose"])}
                for r in rows]

    def saved_one(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.saved() if s["name"] == name), None)

    def delete(self, name: str) -> None:
        with self.store.transaction() as db:
            if not db.execute("DELETE FROM saved_workflows WHERE name = ?", (name,)).rowcount:
                raise NotFound(f"no saved workflow {name!r}", field="name")
            self.store.emit("workflow.deleted", name=name)
