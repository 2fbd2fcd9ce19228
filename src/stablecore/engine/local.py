"""Local backend: worker processes on this machine, one per device, supervised.

A worker is a long-lived `python -m stablecore.worker` in its own process group, so a kill
takes the plugin's children with it. The supervisor reads its JSON lines and, when the
process ends, tells the engine how it ended (exit code or signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STREAM_LIMIT = 64 * 2**20  # one message may carry a large catalog


def detect_devices() -> list[str]:
    """One entry per NVIDIA GPU that nvidia-smi lists, else a single CPU worker."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
            gpus = [line for line in out.splitlines() if line.startswith("GPU ")]
            if gpus:
                return [f"cuda:{i}" for i in range(len(gpus))]
        except (OSError, subprocess.SubprocessError):
            pass
    return ["cpu"]


def exit_cause(returncode: int) -> str:
    """`killed by signal 9 (SIGKILL)` or `exit code 3`, for a job's error."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        hint = ", out of memory?" if -returncode == signal.SIGKILL else ""
        return f"killed by signal {-returncode} ({name}{hint})"
    return f"exit code {returncode}"


@dataclass
class WorkerProcess:
    """One supervised worker process and what it last reported."""

    name: str
    device: str
    tmpdir: Path
    args: list[str]
    python: str = sys.executable
    state: str = "down"  # down -> starting -> idle <-> busy; stopping
    pid: int | None = None
    jobs: list[str] = field(default_factory=list)
    specs: set[str] = field(default_factory=set)
    cache: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    reload_pending: bool = False
    failures: int = 0  # consecutive deaths, for the restart backoff
    started_at: float = 0.0
    proc: asyncio.subprocess.Process | None = None

    @property
    def models(self) -> set[str]:
        return {entry["key"] for entry in self.cache}

    async def start(self, on_message: Callable[[WorkerProcess, dict], None],
                    on_exit: Callable[[WorkerProcess, int], None]) -> None:
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.device.startswith("cuda:"):
            env["CUDA_VISIBLE_DEVICES"] = self.device.split(":", 1)[1]
        self.proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "stablecore.worker", "--name", self.name,
            "--device", "cuda:0" if self.device.startswith("cuda") else self.device,
            "--tmp", str(self.tmpdir), *self.args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=env, start_new_session=True, limit=STREAM_LIMIT)
        self.pid, self.state, self.started_at = self.proc.pid, "starting", time.monotonic()
        self.jobs, self.cache = [], []
        asyncio.get_running_loop().create_task(self._read(on_message, on_exit))

    async def _read(self, on_message: Callable[[WorkerProcess, dict], None],
                    on_exit: Callable[[WorkerProcess, int], None]) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        while line := await proc.stdout.readline():
            on_message(self, json.loads(line))
        returncode = await proc.wait()
        on_exit(self, returncode)

    def send(self, message: dict[str, Any]) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")

    def kill(self) -> None:
        """SIGKILL the whole process group: the worker and anything a plugin started."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def stop(self, timeout: float = 3.0) -> None:
        """Close stdin (the worker exits on EOF); kill it if it does not within `timeout`."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        self.state = "stopping"
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            await proc.wait()

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "state": self.state, "pid": self.pid,
                "python": self.python, "jobs": self.jobs, "models": self.cache,
                "restarts": self.restarts, **self.stats}
