"""`WorkerLink`: how the engine reaches one worker, wherever it runs; worker states.

The engine only uses this interface: start, send, kill, stop, and the two callbacks (a
message arrived, the worker ended). The local pipe link (`engine/local.py`) is the first
implementation; an SSH channel is the next. `move` is the one authority on state changes.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stablecore.errors import Conflict
from stablecore.protocol import FromWorker, ToWorker


class WorkerState(StrEnum):
    DOWN = "down"
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"


ALLOWED_MOVES: dict[WorkerState, set[WorkerState]] = {
    WorkerState.DOWN: {WorkerState.STARTING},
    WorkerState.STARTING: {WorkerState.IDLE, WorkerState.STOPPING, WorkerState.DOWN},
    WorkerState.IDLE: {WorkerState.BUSY, WorkerState.STOPPING, WorkerState.DOWN},
    WorkerState.BUSY: {WorkerState.IDLE, WorkerState.STOPPING, WorkerState.DOWN},
    WorkerState.STOPPING: {WorkerState.DOWN},
}

OnMessage = Callable[["WorkerLink", FromWorker], None]
OnExit = Callable[["WorkerLink", str], None]  # the cause, e.g. "exit code 3"


@dataclass(eq=False)
class WorkerLink(ABC):
    """One worker and what it last reported. Subclasses move the bytes."""

    name: str
    device: str
    state: WorkerState = WorkerState.DOWN
    jobs: list[str] = field(default_factory=list)  # ids the worker holds, in order
    specs: set[str] = field(default_factory=set)
    cache: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    python: str = ""
    pid: int | None = None
    restarts: int = 0
    failures: int = 0  # consecutive deaths, for the restart backoff
    reload_pending: bool = False
    started_at: float = 0.0
    idle_since: float | None = None
    last_seen: float = 0.0
    blob_bytes_sent: int = 0
    shares_files: bool = True  # inputs go by path; else the worker fetches their bytes
    lost: bool = False  # the link broke, not the worker: its jobs go back to the queue

    def move(self, new: WorkerState) -> None:
        if new not in ALLOWED_MOVES[self.state]:
            raise Conflict(f"worker {self.name} is {self.state}, it cannot become {new}",
                           worker=self.name, state=str(self.state))
        self.state = new
        self.idle_since = time.monotonic() if new == WorkerState.IDLE else None

    @property
    def models(self) -> set[str]:
        return {entry["key"] for entry in self.cache}

    @abstractmethod
    async def start(self, on_message: OnMessage, on_exit: OnExit) -> None:
        """Start the worker; its messages go to `on_message`, its end to `on_exit` once."""

    @abstractmethod
    def send(self, message: ToWorker) -> None: ...

    @abstractmethod
    def kill(self) -> None:
        """End the worker now, with anything it started; `on_exit` follows."""

    @abstractmethod
    async def stop(self, timeout: float = 3.0) -> None:
        """Ask the worker to exit, kill it past `timeout`; returns after `on_exit` ran."""

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "state": str(self.state),
                "pid": self.pid, "python": self.python, "jobs": self.jobs,
                "models": self.cache, "restarts": self.restarts,
                "blob_bytes_sent": self.blob_bytes_sent, **self.stats}
