"""Engine overhead: a no-op job through HTTP submit -> WebSocket `succeeded`, versus the same
function called in this process; then 2 workers draining 2,000 queued no-op jobs, 2,000 jobs
queued in one request, and how soon a started server has its catalog.

Prints figures, asserts nothing. Run: `.venv/bin/python bench/overhead.py [--jobs 300]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from stablecore.client import AsyncClient
from stablecore.testing import ServerProcess, install_private

ROOT = Path(__file__).resolve().parents[1]


def noop() -> None:
    """The body of `testing.noop`: the work per job is nothing, so all else is overhead."""
    return None


def in_process_seconds(n: int = 10_000) -> float:
    start = time.perf_counter()
    for _ in range(n):
        noop()
    return (time.perf_counter() - start) / n


async def latencies(url: str, n: int) -> list[float]:
    """Submit one job at a time; time until its `job.succeeded` arrives on the WebSocket."""
    async with AsyncClient(url) as client:
        events = client.stream()
        finished: dict[str, float] = {}  # the event may beat the 201 to the client
        arrived = asyncio.Event()

        async def listen() -> None:
            async for event in events:
                if event["type"] == "job.succeeded":
                    finished[event["job_id"]] = time.perf_counter()
                    arrived.set()

        listener = asyncio.ensure_future(listen())
        await asyncio.sleep(0.3)
        out = []
        for _ in range(n):
            start = time.perf_counter()
            job = await client.submit("testing.noop")
            while job["id"] not in finished:
                arrived.clear()
                await arrived.wait()
            out.append(finished.pop(job["id"]) - start)
        listener.cancel()
        return out


async def drain(url: str, n: int) -> dict[str, float]:
    """Queue `n` no-op jobs behind two sleeping blockers, release them, time the drain."""
    async with AsyncClient(url) as client:
        blockers = [await client.submit("testing.sleep", {"seconds": 60, "steps": 600})
                    for _ in range(2)]
        start = time.perf_counter()
        ids = set()
        for _ in range(n):
            ids.add((await client.submit("testing.noop"))["id"])
        submit_s = time.perf_counter() - start
        first_started = last_done = None
        stream = client.stream(since=None)
        reader = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.3)
        for b in blockers:
            await client.cancel(b["id"])
        done = 0
        event = await reader
        while True:
            if event["job_id"] in ids:
                if event["type"] == "job.started" and first_started is None:
                    first_started = event["ts"]
                if event["type"] == "job.succeeded":
                    done += 1
                    last_done = event["ts"]
                    if done == n:
                        break
            event = await anext(stream)
        await stream.aclose()
        return {"submit_per_s": n / submit_s, "drain_per_s": n / (last_done - first_started)}


async def list_submit(url: str, n: int) -> float:
    """Jobs queued per second when a client sends `n` of them in one request."""
    async with AsyncClient(url) as client:
        blocker = await client.submit("testing.sleep", {"seconds": 60, "steps": 600})
        start = time.perf_counter()
        await client.submit_many([{"spec": "testing.echo", "params": {"text": str(i)}}
                                  for i in range(n)])
        rate = n / (time.perf_counter() - start)
        await client.cancel(blocker["id"])
        return rate


def ready_seconds(data: Path, env: dict[str, str]) -> float:
    """From `stable-core serve` starting to /api/health reporting the catalog loaded."""
    server = ServerProcess(data, workers="cpu")
    server.env.update(env)
    start = time.perf_counter()
    data.parent.mkdir(parents=True, exist_ok=True)
    server.proc = subprocess.Popen([server.python, "-m", "stablecore", "serve"],
                                   env=server.env, cwd=data.parent)
    try:
        while True:
            try:
                if httpx.get(server.url + "/api/health", timeout=1).json()["ready"]:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=300, help="sequential jobs for latency")
    ap.add_argument("--drain", type=int, default=2000, help="queued jobs for throughput")
    args = ap.parse_args()
    direct = in_process_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        site = install_private(ROOT / "tests" / "plugins", Path(tmp) / "site")
        env = {"PYTHONPATH": str(site)}
        ready = [ready_seconds(Path(tmp) / f"ready{i}" / "data", env) for i in range(3)]
        # a restart finds the last run's catalog in the data folder
        restart = [ready_seconds(Path(tmp) / "ready0" / "data", env) for _ in range(3)]
        server = ServerProcess(Path(tmp) / "data", workers="cpu,cpu")
        server.env.update(env)
        with server:
            lat = asyncio.run(latencies(server.url, args.jobs))
            rates = asyncio.run(drain(server.url, args.drain))
            listed = asyncio.run(list_submit(server.url, args.drain))
            rss = psutil.Process(server.proc.pid).memory_info().rss / 2**20
    added = sorted((x - direct) * 1000 for x in lat)
    p99 = added[min(len(added) - 1, int(len(added) * 0.99))]
    print(f"in-process call of the no-op job : {direct * 1e6:9.2f} us")
    print(f"added latency, submit -> WS done : p50 {statistics.median(added):6.2f} ms   "
          f"p99 {p99:6.2f} ms   ({args.jobs} jobs, one at a time)  target p50 <= 4, p99 <= 8")
    print(f"submit rate (one client, serial) : {rates['submit_per_s']:7.0f} jobs/s")
    print(f"submit rate ({args.drain} in one request) : {listed:7.0f} jobs/s   target >= 2000")
    print(f"server ready (catalog loaded)    : {statistics.median(ready):7.2f} s first start, "
          f"{statistics.median(restart):.2f} s restart   target <= 1.0 s (medians of 3)")
    print(f"drain, 2 workers, {args.drain} queued   : {rates['drain_per_s']:7.0f} jobs/s"
          "   target >= 500")
    print(f"server process RSS after the run : {rss:7.1f} MB   target <= 150 MB")


if __name__ == "__main__":
    main()
