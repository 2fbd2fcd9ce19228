"""The pool of workers: which exist, and starting, restarting and recycling them.

The engine decides what a worker's death means for its jobs; the pool only brings workers
back, with a backoff that grows while a worker keeps dying before it settles (0.25 s, 0.5 s,
... 30 s) and resets once it has been up and idle for `SETTLED_S`. Local workers are made
here; remote ones (a node's, `nodes.py`) are added and removed as links; a link that cannot
start (its node is unreachable) is tried again with the same backoff.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

import psutil

from stablecore.config import Settings
from stablecore.engine.link import OnExit, OnMessage, WorkerLink, WorkerState
from stablecore.engine.local import LocalLink, detect_devices
from stablecore.errors import StableCoreError

SETTLED_S = 5.0
MAX_BACKOFF_S = 30.0

# The isolated plugin environments, as data: plugin name -> its venv's python.
Environments = Callable[[], dict[str, str]]


class Pool:
    def __init__(self, settings: Settings, environments: Environments, on_message: OnMessage,
                 on_exit: OnExit, spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.settings = settings
        self.environments = environments
        self.on_message, self.on_exit, self.spawn = on_message, on_exit, spawn
        self.workers: dict[str, WorkerLink] = {}
        self.devices: list[str] = []
        self.stopping = False

    async def start(self) -> None:
        self.devices = self.settings.workers or detect_devices()
        for i, device in enumerate(self.devices):
            self.workers[f"w{i}"] = self._local(f"w{i}", device)
        self.workers.update(self._isolated())
        await asyncio.gather(*(w.start(self.on_message, self.on_exit)
                               for w in self.workers.values()))

    def _local(self, name: str, device: str, python: str | None = None,
               plugin: str | None = None) -> LocalLink:
        s = self.settings
        args = ["--cache-mb", str(s.cache_budget_mb),
                "--memory-limit-mb", str(s.worker_memory_limit_mb),
                "--max-input-mpx", str(s.max_input_mpx)]
        if plugin:
            args += ["--plugins", plugin]
        env = {"STABLECORE_MODELS_HOME": str(s.models_home.resolve())}
        if s.worker_memory_limit_mb:  # glibc reserves 64 MB of address space per thread's
            env["MALLOC_ARENA_MAX"] = "2"  # arena: under RLIMIT_AS that is memory lost
        return LocalLink(name, device, tmpdir=s.data_dir / "tmp" / name, args=args, env=env,
                         interpreter=python or sys.executable, shares_files=s.share_files)

    def _isolated(self) -> dict[str, WorkerLink]:
        """One worker per plugin installed `--isolated`, with its own env's interpreter."""
        return {f"w-{plugin}": self._local(f"w-{plugin}", self.devices[0], python, plugin)
                for plugin, python in self.environments().items()}

    async def reload(self, forget: Callable[[str], None]) -> None:
        """Pick up installed, updated or removed plugins: workers restart once idle."""
        wanted = self._isolated()
        for name, worker in list(self.workers.items()):
            if name.startswith("w-") and name not in wanted:
                await worker.stop()
                del self.workers[name]
                forget(name)
        for name, worker in wanted.items():
            if name not in self.workers:
                self.workers[name] = worker
                await worker.start(self.on_message, self.on_exit)
        for worker in self.workers.values():
            if worker.state != WorkerState.STARTING:
                worker.reload_pending = True
            if worker.reload_pending and worker.state == WorkerState.IDLE and not worker.jobs:
                self.spawn(self.recycle(worker))

    async def add(self, links: list[WorkerLink]) -> None:
        """Remote workers join: each starts now, or later with backoff while it cannot."""
        for link in links:
            self.workers[link.name] = link
            await self._start(link)

    async def remove(self, names: list[str], forget: Callable[[str], None]) -> None:
        """Stop these workers (their jobs are settled by the engine's `on_exit`) and drop them."""
        for name in names:
            worker = self.workers.pop(name, None)
            if worker is not None:
                worker.reload_pending = False
                await worker.stop()
                forget(name)

    async def _start(self, worker: WorkerLink) -> None:
        try:
            await worker.start(self.on_message, self.on_exit)
        except (StableCoreError, OSError) as e:
            print(f"worker {worker.name} did not start: {getattr(e, 'message', e)}",
                  file=sys.stderr)
            self.restart_later(worker)
        except Exception:
            traceback.print_exc()
            self.restart_later(worker)

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*(w.stop() for w in self.workers.values()))

    def max_rss_mb(self) -> float:
        """The RSS above which an idle worker is recycled: the setting, else half of this
        machine's memory shared among its workers (a decoded 13000 px image must not stay)."""
        if self.settings.worker_max_rss_mb is not None:
            return self.settings.worker_max_rss_mb
        return psutil.virtual_memory().total / 2**20 / 2 / max(1, len(self.workers))

    def wants_recycle(self, worker: WorkerLink) -> bool:
        s, stats = self.settings, worker.stats
        limit = self.max_rss_mb() if isinstance(worker, LocalLink) else 0  # this machine's
        return bool(worker.reload_pending
                    or (s.worker_max_jobs and stats.get("jobs_done", 0) >= s.worker_max_jobs)
                    or (limit and stats.get("rss_mb", 0) > limit))

    async def recycle(self, worker: WorkerLink) -> None:
        worker.reload_pending = False
        await worker.stop()
        worker.restarts += 1
        if not self.stopping and self.workers.get(worker.name) is worker:
            await self._start(worker)

    def restart_later(self, worker: WorkerLink) -> float:
        """Restart a worker that died, after a backoff; returns the delay."""
        worker.failures += 1
        worker.restarts += 1
        delay = min(MAX_BACKOFF_S, 0.25 * 2 ** (worker.failures - 1))
        self.spawn(self._restart(worker, delay))
        return delay

    async def _restart(self, worker: WorkerLink, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self.stopping and self.workers.get(worker.name) is worker \
                and worker.state == WorkerState.DOWN:
            await self._start(worker)

    def check_settled(self, now: float) -> None:
        """A worker idle for SETTLED_S has started fine: its next death starts a new backoff."""
        for worker in self.workers.values():
            if worker.failures and worker.idle_since and now - worker.idle_since > SETTLED_S:
                worker.failures = 0

