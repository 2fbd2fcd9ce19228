"""Per-job overhead of a worker on a node over SSH versus a local worker, on this machine: the
node is 127.0.0.1 through a real OpenSSH `sshd` (tests/sshd.py), so the figures are the
cost of the SSH link, the protocol over it and the files crossing it, not of a network.

One server, one local CPU worker. Each case is timed from submit to `job.succeeded` on the
WebSocket, one job at a time, first on the local worker alone, then on the node's worker
(the local one kept busy), then on the local worker again after the node is removed:
- no-op: `testing.noop`, nothing in or out;
- image, cached input: `testing.invert` on one 512x512 noise PNG (~0.8 MB), so the node
  has it after the first job, and only the output comes back;
- image, new input: the same job on a different PNG each time, so every input crosses.
Prints medians, ratios to the local baseline measured in this run, and bytes moved per job;
asserts nothing. Run: `.venv/bin/python bench/remote.py [--jobs 60]` (needs `sshd`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from stablecore.client import AsyncClient
from stablecore.testing import ServerProcess, install_private

ROOT = Path(__file__).resolve().parents[1]
NODE = "bench"


def load_sshd() -> Any:
    spec = importlib.util.spec_from_file_location("sshd_helper", ROOT / "tests" / "sshd.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


async def timed(client: AsyncClient, jobs: list[tuple[str, dict, dict]],
                ids: list[str] | None = None) -> list[float]:
    """Submit each job after the previous one ended; seconds from submit to its
    `job.succeeded` on the WebSocket (the event may arrive before the 201)."""
    finished: dict[str, float] = {}
    failed: dict[str, str] = {}
    arrived = asyncio.Event()

    async def listen() -> None:
        async for event in client.stream():
            if event["type"] in ("job.succeeded", "job.failed"):
                finished[event["job_id"]] = time.perf_counter()
                if event["type"] == "job.failed":
                    failed[event["job_id"]] = event["data"].get("error", "")
                arrived.set()

    listener = asyncio.ensure_future(listen())
    await asyncio.sleep(0.3)
    out = []
    for spec, params, inputs in jobs:
        start = time.perf_counter()
        job = await client.submit(spec, params, inputs)
        while job["id"] not in finished:
            arrived.clear()
            await arrived.wait()
        if job["id"] in failed:
            raise RuntimeError(f"{spec} failed: {failed[job['id']]}")
        out.append(finished.pop(job["id"]) - start)
        if ids is not None:
            ids.append(job["id"])
    listener.cancel()
    return out


async def cases(client: AsyncClient, n: int, images: list[str]) -> dict[str, list[float]]:
    """The three cases, after one warm-up job each (imports, first connection)."""
    noop = ("testing.noop", {}, {})
    same = ("testing.invert", {}, {"image": images[0]})
    await timed(client, [noop, same])
    return {"no-op": await timed(client, [noop] * n),
            "image, cached input": await timed(client, [same] * n),
            "image, new input": await timed(client, [("testing.invert", {}, {"image": a})
                                                     for a in images[1:n + 1]])}


async def node_bytes(client: AsyncClient) -> tuple[int, int]:
    node = await client.get(f"/api/nodes/{NODE}")
    return node["bytes_sent"], node["bytes_received"]


async def run(url: str, sshd: Any, remote: Path, n: int, images: list[Path]) -> dict[str, Any]:
    async with AsyncClient(url, timeout=600) as client:
        # one set of uploads for all three phases; "new input" takes images[1..n] per phase
        ids = [(await client.upload(p))["id"] for p in images]
        local = await cases(client, n, ids)

        start = time.perf_counter()
        added = await client.http.post("/api/nodes", json={
            "url": sshd.url, "name": NODE, "key": str(sshd.client_key),
            "host_key": sshd.fingerprint, "cpu_workers": 1, "plugins": ["testing"],
            "python": sys.executable, "system_site_packages": True,
            "remote_dir": str(remote)}, timeout=120)
        added.raise_for_status()
        while (node := await client.get(f"/api/nodes/{NODE}"))["state"] != "up":
            if node["state"] == "failed":
                raise RuntimeError(f"nodes add failed: {node['error']}")
            await asyncio.sleep(0.2)
        add_s = time.perf_counter() - start
        hang = await client.submit("testing.hang", {"seconds": 3600})  # the local worker
        while (await client.job(hang["id"]))["state"] != "running":
            await asyncio.sleep(0.05)
        noop = ("testing.noop", {}, {})
        await timed(client, [noop, ("testing.invert", {}, {"image": ids[0]})])
        remote_t: dict[str, list[float]] = {}
        moved: dict[str, tuple[float, float]] = {}
        ran: list[str] = []
        for name, jobs in [
                ("no-op", [noop] * n),
                ("image, cached input", [("testing.invert", {}, {"image": ids[0]})] * n),
                ("image, new input", [("testing.invert", {}, {"image": a})
                                      for a in ids[n + 1:2 * n + 1]])]:
            sent0, got0 = await node_bytes(client)
            remote_t[name] = await timed(client, jobs, ran)
            sent, got = await node_bytes(client)
            moved[name] = ((sent - sent0) / n, (got - got0) / n)
        workers = {(await client.job(j))["worker"] for j in ran}
        await client.cancel(hang["id"])
        await client.http.delete(f"/api/nodes/{NODE}", params={"uninstall": True})
        again = await cases(client, n, [ids[0], *ids[2 * n + 1:]])
    return {"local": local, "remote": remote_t, "again": again, "moved": moved,
            "add_s": add_s, "workers": sorted(w for w in workers if w)}


def noise_pngs(folder: Path, count: int, size: int = 512) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"in{i}.png"
        PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=60, help="jobs per case and worker")
    args = ap.parse_args()
    n = args.jobs
    sshd_helper = load_sshd()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        site = install_private(ROOT / "tests" / "plugins", root / "site")
        images = noise_pngs(root, 3 * n + 1)
        size = images[0].stat().st_size
        sshd = sshd_helper.Sshd(root / "sshd").start()
        server = ServerProcess(root / "data", workers="cpu", uv_args="--offline")
        server.env["PYTHONPATH"] = str(site)
        try:
            with server:
                out = asyncio.run(run(server.url, sshd, root / "remote", n, images))
        finally:
            sshd.stop()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {n} jobs per case, "
          f"one at a time; input PNG {size / 1e6:.2f} MB; nodes add took {out['add_s']:.1f} s")
    print(f"{'':22} {'local':>9} {'node':>9} {'local again':>12} {'node/local':>11} "
          f"{'sent/job':>10} {'back/job':>10}")
    for name in out["local"]:
        local = statistics.median(out["local"][name] + out["again"][name]) * 1000
        node = statistics.median(out["remote"][name]) * 1000
        again = statistics.median(out["again"][name]) * 1000
        sent, back = out["moved"][name]
        print(f"{name:22} {statistics.median(out['local'][name]) * 1000:7.1f}ms "
              f"{node:7.1f}ms {again:10.1f}ms {node / local:10.2f}x "
              f"{sent / 1e3:8.1f}kB {back / 1e3:8.1f}kB")
    print("(medians; node/local against the median of both local runs; sent/back: bytes "
          f"over the SSH link per node job; node jobs ran on {', '.join(out['workers'])})")


if __name__ == "__main__":
    main()
