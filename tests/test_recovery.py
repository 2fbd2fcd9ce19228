"""Accepted means durable: kill -9 the server with 200 queued jobs, restart, all run once."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import psutil

from stablecore.testing import ServerProcess


def test_kill_9_with_200_queued_jobs_then_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    with server.client() as client:
        blocker = client.submit("testing.sleep", {"seconds": 1.5, "steps": 3})
        ids = [client.submit("testing.echo", {"text": f"job {i}"})["id"] for i in range(200)]
        worker_pid = client.workers()[0]["pid"]
        assert client.health()["jobs"]["queued"] >= 150  # most are still waiting at the crash
    server.kill()
    deadline = time.monotonic() + 10  # its worker notices the closed pipe and exits too
    while psutil.pid_exists(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == "zombie"

    with ServerProcess(data, port=server.port) as again, again.client() as client:
        assert client.job(blocker["id"])["attempts"] >= 1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            counts = client.health()["jobs"]
            if counts.get("succeeded", 0) == 201:
                break
            time.sleep(0.2)
        assert counts == {"succeeded": 201}, counts
        assert client.job(blocker["id"])["state"] == "succeeded"

    db = sqlite3.connect(data / "stablecore.db")
    succeeded = dict(db.execute("SELECT job_id, COUNT(*) FROM events "
                                "WHERE type = 'job.succeeded' GROUP BY job_id"))
    assert set(succeeded) == {blocker["id"], *ids}
    assert set(succeeded.values()) == {1}  # every job completed exactly once
    outputs = {row[0] for row in db.execute("SELECT job_id FROM artifacts WHERE kind = 'text'")}
    assert outputs == set(ids) | {blocker["id"]}
    assert os.path.isdir(data / "sessions")
