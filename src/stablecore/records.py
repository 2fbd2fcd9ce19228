"""The records the store keeps: jobs with their state machine, artifacts and events."""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stablecore.errors import Conflict


class JobState(StrEnum):
    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
ALLOWED_MOVES: dict[JobState, set[JobState]] = {
    # a waiting node may succeed without running: a cache hit, or a gather of its items
    JobState.WAITING: {JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED},
    JobState.QUEUED: {JobState.RUNNING, JobState.CANCELLED, JobState.FAILED},
    JobState.RUNNING: {JobState.QUEUED, *FINISHED},
    JobState.SUCCEEDED: set(),
    JobState.FAILED: set(),
    JobState.CANCELLED: set(),
}


def check_move(job_id: str, old: JobState, new: JobState) -> None:
    """The one place that decides which state changes are legal."""
    if new not in ALLOWED_MOVES[old]:
        raise Conflict(f"job {job_id} is {old}, it cannot become {new}", job_id=job_id, state=old)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass
class Job:
    id: str
    spec: str
    params: dict[str, Any]
    inputs: dict[str, str]
    session_id: str
    state: JobState
    priority: int = 0
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    worker: str | None = None
    outputs: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    attempts: int = 0
    model_key: str | None = None
    batch_key: str | None = None
    timeout: float | None = None
    owner: str | None = None
    workflow_id: str | None = None
    node: str | None = None  # its node in the workflow; `name[3]` for item 3 of a map
    cache_key: str | None = None
    cached: bool = False  # succeeded by reusing an earlier job's outputs
    seq: int = 0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        d = dict(row)
        d["params"] = json.loads(d["params"])
        d["inputs"] = json.loads(d["inputs"])
        d["outputs"] = json.loads(d["outputs"]) if d["outputs"] else None
        d["state"] = JobState(d["state"])
        d["cached"] = bool(d["cached"])
        return cls(**d)

    def public(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()
             if k not in ("seq", "model_key", "batch_key", "cache_key")}
        d["state"] = str(self.state)
        return d


@dataclass
class QueuedJob:
    """A queued job as the scheduler sees it."""

    id: str
    spec: str
    model_key: str | None = None
    batch_key: str | None = None
    priority: int = 0
    owner: str | None = None
    seq: int = 0
    owner_running: int = 0  # how many of its owner's jobs run now (for fair share)
    owner_started: float = 0.0  # when its owner's latest job started; 0: never


@dataclass
class Artifact:
    id: str
    sha256: str
    kind: str
    mime: str
    size: int
    blob: str
    name: str
    path: str | None
    session_id: str | None
    job_id: str | None
    created: float
    meta: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Artifact:
        d = dict(row)
        d["meta"] = json.loads(d["meta"])
        return cls(**d)

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("blob", "owner")}


@dataclass
class Event:
    seq: int
    ts: float
    type: str
    job_id: str | None
    session_id: str | None
    data: dict[str, Any]
    workflow_id: str | None = None
    owner: str | None = None  # whose: the job's, workflow's or session's; None: admins'

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "owner"}
