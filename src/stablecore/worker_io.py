"""The worker's side of the pipe: the protocol channel out, the inbox in, and job logs.

fds 1 and 2 of a worker are pipes read by `JobLog.capture`, so whatever a plugin (or a C
library under it) prints becomes `job.log` lines of the running job and still reaches the
server's console, and can never corrupt the protocol on the real stdout.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from stablecore import protocol
from stablecore.errors import ProtocolError
from stablecore.protocol import Blob, Cancel, Heartbeat, Log, Message, Run

HEARTBEAT_S = 5.0
LOG_LINES_PER_JOB = 2000  # a plugin printing in a loop must not flood the event log


class Channel:
    """The protocol pipe to the engine: one JSON object per line, thread-safe."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.lock = threading.Lock()

    def send(self, *messages: Message) -> None:
        data = protocol.encode(*messages)
        with self.lock:
            self.out.write(data)
            self.out.flush()


class Inbox:
    """Reads stdin on a thread: cancels take effect at once, runs wait in a queue, and blobs
    the worker asked for are handed to the thread waiting for them."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.runs: queue.Queue[Run] = queue.Queue()
        self.cancelled: set[str] = set()
        self.blobs: dict[str, queue.Queue[Blob]] = {}
        self.on_cancel: Callable[[str], None] = lambda job_id: None

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True, name="inbox").start()

    def _read(self) -> None:
        try:
            for line in self.stream:
                try:
                    msg = protocol.to_worker(line)
                except ProtocolError as e:
                    print(e.message, file=sys.stderr)
                    continue
                if isinstance(msg, Cancel):
                    self.cancelled.add(msg.id)
                    self.on_cancel(msg.id)
                elif isinstance(msg, Run):
                    self.runs.put(msg)
                elif msg.sha256 in self.blobs:
                    self.blobs[msg.sha256].put(msg)
        finally:
            os._exit(0)  # stdin closed: the server is gone, and so are we


class JobLog:
    """The ids of the running jobs, and the one way log lines reach the engine for them."""

    SYNC = b"\x00stablecore-sync\n"  # written to a captured fd to know its pipe is drained

    def __init__(self, channel: Channel, console: BinaryIO, name: str) -> None:
        self.channel, self.console, self.name = channel, console, name
        self.ids: list[str] = []
        self.lines = 0
        self.lock = threading.Lock()
        self.synced: dict[int, threading.Event] = {}

    def begin(self, ids: list[str]) -> None:
        with self.lock:
            self.ids, self.lines = ids, 0

    def end(self) -> None:
        """Forward what the job printed before its outcome goes out, then stop forwarding."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, event in self.synced.items():
            event.clear()
            os.write(fd, self.SYNC)
            event.wait(timeout=5)
        with self.lock:
            self.ids = []

    def write(self, level: str, msg: str, stream: str | None = None) -> None:
        with self.lock:
            self.console.write(f"[{self.name}] {msg}\n".encode(errors="replace"))
            self.console.flush()
            if not self.ids or self.lines > LOG_LINES_PER_JOB:
                return
            self.lines += 1
            if self.lines > LOG_LINES_PER_JOB:
                level = "WARNING"
                msg = (f"(more than {LOG_LINES_PER_JOB} log lines: the rest are only on the "
                       "server's console)")
            self.channel.send(Log(ids=self.ids, level=level, msg=msg, stream=stream))

    def capture(self, fd: int, stream: str) -> None:
        """Point `fd` at a pipe whose lines become log lines (stderr ones as warnings)."""
        read, write = os.pipe()
        os.dup2(write, fd)
        os.close(write)
        level = "WARNING" if stream == "stderr" else "INFO"
        synced = self.synced[fd] = threading.Event()

        def pump() -> None:
            with os.fdopen(read, "rb") as lines:
                for line in lines:
                    if line.endswith(self.SYNC):
                        synced.set()
                        line = line[:-len(self.SYNC)]
                        if not line:
                            continue
                    self.write(level, line.decode(errors="replace").rstrip("\n"), stream)

        threading.Thread(target=pump, daemon=True, name=f"capture-{stream}").start()


class JobLogHandler(logging.Handler):
    """Forwards `ctx.log` records to the engine as job.log lines."""

    def __init__(self, joblog: JobLog) -> None:
        super().__init__()
        self.joblog = joblog

    def emit(self, record: logging.LogRecord) -> None:
        self.joblog.write(record.levelname, record.getMessage())


def heartbeat(channel: Channel) -> None:
    """Tell the engine we are alive, also while a long job runs (a remote link needs it)."""
    while True:
        time.sleep(HEARTBEAT_S)
        channel.send(Heartbeat())
