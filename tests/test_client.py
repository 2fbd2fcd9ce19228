"""The client follows jobs across a server crash: SIGKILL mid-job, a new server on the same
port and data folder, and `Client.wait`, `AsyncClient.wait` and `stable-core run` all end with
the finished job, having seen each event once, in order."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from stablecore.client import ApiError, AsyncClient, Backoff, Client
from stablecore.testing import ServerProcess


def follow_async(url: str, job_id: str, seen: list[dict], messages: list[str]) -> dict:
    async def main() -> dict[str, Any]:
        async with AsyncClient(url, reconnect_s=90) as client:
            return await client.wait(job_id, seen.append, messages.append)
    return asyncio.run(main())


def until(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_clients_resume_across_a_server_kill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    seen: dict[str, list[dict]] = {"sync": [], "async": []}
    messages: dict[str, list[str]] = {"sync": [], "async": []}
    progressed = threading.Event()

    def on_event(event: dict) -> None:
        seen["sync"].append(event)
        if event["type"] == "job.progress":
            progressed.set()

    with Client(server.url, reconnect_s=90) as client, ThreadPoolExecutor(2) as pool:
        cli = subprocess.Popen(  # the CLI submits the job; the SDK clients follow it too
            [sys.executable, "-m", "stablecore", "run", "testing.sleep", "seconds=2",
             "steps=20", "--url", server.url, "--out", str(tmp_path / "out")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        until(lambda: client.jobs()["total"] == 1)
        job = client.jobs()["jobs"][0]
        sync = pool.submit(client.wait, job["id"], on_event, messages["sync"].append)
        asyn = pool.submit(follow_async, server.url, job["id"], seen["async"], messages["async"])
        assert progressed.wait(60)
        assert not sync.done() and not asyn.done()

        server.kill()
        again = ServerProcess(data, port=server.port)
        try:
            again.start()
            results = {"sync": sync.result(timeout=120), "async": asyn.result(timeout=120)}
            out, err = cli.communicate(timeout=120)
            replay = list(client.events(job["id"]))  # every event the server kept, from 0
        finally:
            cli.kill()
            again.stop()

    for name, result in results.items():
        assert result["id"] == job["id"] and result["state"] == "succeeded", name
        assert result["attempts"] == 2, name  # the run cut short by the kill, then a full one
        seqs = [e["seq"] for e in seen[name]]
        assert seqs == sorted(set(seqs)), name  # strictly increasing: no repeats
        assert seqs == [e["seq"] for e in replay], name  # and none lost
        types = [e["type"] for e in seen[name]]
        assert types.count("job.started") == 2 and types[-1] == "job.succeeded", name
        assert len(messages[name]) == 1 and "reconnecting" in messages[name][0], name

    assert cli.returncode == 0, err
    assert "reconnecting" in err
    assert (tmp_path / "out").is_dir() and "text:" in out


def test_backoff_doubles_then_gives_up() -> None:
    now = [0.0]
    backoff = Backoff(total=5, first=0.5, cap=2, clock=lambda: now[0])
    lost = httpx.ConnectError("refused")
    delays = []
    for _ in range(4):
        delays.append(backoff.next(lost))
        now[0] += delays[-1]
    assert delays == [0.5, 1, 2, 1.5]  # the last wait ends at the deadline
    with pytest.raises(httpx.ConnectError):
        backoff.next(lost)
    backoff.ok()  # a success ends the outage: the next one gets the full time again
    assert backoff.next(lost) == 0.5 and backoff.tries == 1


def test_backoff_retries_restarts_but_not_refusals() -> None:
    backoff = Backoff(total=60)
    assert backoff.next(ApiError(503, {"detail": "starting"})) > 0
    assert backoff.next(httpx.RemoteProtocolError("peer closed connection")) > 0
    with pytest.raises(ApiError):
        backoff.next(ApiError(404, {"detail": "no job j_x"}))
