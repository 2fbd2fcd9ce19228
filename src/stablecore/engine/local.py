"""Local backend: worker processes on this machine, one per device, supervised.

A worker is a long-lived `python -m stablecore.worker` in its own process group, so a kill
takes the plugin's children with it. The supervisor reads its JSON lines and, when the
process ends, tells the engine how it ended (exit code or signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from stablecore import protocol
from stablecore.engine.link import OnExit, OnMessage, WorkerLink, WorkerState
from stablecore.errors import ProtocolError
from stablecore.protocol import Blob, ToWorker

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
    """`killed by signal 11 (SIGSEGV)` or `exit code 3`, for a job's error. A SIGKILL is the
    kernel's OOM killer or a person: both are named, since we cannot tell which."""
    if returncode == -signal.SIGKILL:
        return "killed by SIGKILL (out of memory, or killed from outside)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        return f"killed by signal {-returncode} ({name})"
    return f"exit code {returncode}"


@dataclass(eq=False)
class LocalLink(WorkerLink):
    """A worker process on this machine, speaking the protocol over its stdin and stdout."""

    tmpdir: Path = Path("tmp")
    args: list[str] = field(default_factory=list)
    interpreter: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)  # added to ours
    proc: asyncio.subprocess.Process | None = None
    reader: asyncio.Task | None = None

    async def start(self, on_message: OnMessage, on_exit: OnExit) -> None:
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        if self.device.startswith("cuda:"):
            env["CUDA_VISIBLE_DEVICES"] = self.device.split(":", 1)[1]
        self.proc = await asyncio.create_subprocess_exec(
            self.interpreter, "-m", "stablecore.worker", "--name", self.name,
            "--device", "cuda:0" if self.device.startswith("cuda") else self.device,
            "--tmp", str(self.tmpdir), *self.args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=env, start_new_session=True, limit=STREAM_LIMIT)
        self.move(WorkerState.STARTING)
        self.pid, self.started_at = self.proc.pid, time.monotonic()
        self.last_seen, self.jobs, self.cache = self.started_at, [], []
        self.reader = asyncio.get_running_loop().create_task(
            self._read(self.proc, on_message, on_exit))

    async def _read(self, proc: asyncio.subprocess.Process, on_message: OnMessage,
                    on_exit: OnExit) -> None:
        assert proc.stdout is not None
        cause = None
        while line := await proc.stdout.readline():
            self.last_seen = time.monotonic()
            try:
                on_message(self, protocol.from_worker(line))
            except ProtocolError as e:  # a worker that speaks nonsense is ended, not trusted
                cause = e.message
                self.kill()
                break
            except Exception:  # an engine bug must not stop us noticing the worker's end
                traceback.print_exc()
        returncode = await proc.wait()
        on_exit(self, cause or exit_cause(returncode))

    def send(self, message: ToWorker) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            if isinstance(message, Blob):
                data = message.data  # base64: 4 characters per 3 bytes, less the padding
                self.blob_bytes_sent += len(data) * 3 // 4 - data[-2:].count("=")
            self.proc.stdin.write(protocol.encode(message))

    def kill(self) -> None:
        """SIGKILL the whole process group: the worker and anything a plugin started."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def stop(self, timeout: float = 3.0) -> None:
        """Close stdin (the worker exits on EOF); kill it if it does not within `timeout`."""
        proc = self.proc
        if proc is None or proc.returncode is not None or self.state == WorkerState.DOWN:
            return
        self.move(WorkerState.STOPPING)
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            await proc.wait()
        if self.reader is not None:
            await asyncio.shield(self.reader)  # on_exit has run: the state is settled
