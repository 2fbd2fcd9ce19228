"""Workers die, hang, run out of memory and get cancelled; the server and the queue go on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stablecore.client import Client
from stablecore.testing import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("workers") / "data", cancel_grace_s=1,
                       worker_memory_limit_mb=1000) as s:
        yield s


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


def wait_worker(client: Client, state: str, timeout: float = 30) -> dict:
    """The (only) worker once it is in `state`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (worker,) = client.workers()
        if worker["state"] == state:
            return worker
        time.sleep(0.02)
    raise TimeoutError(f"worker never became {state}")


def wait_worker_idle(client: Client) -> dict:
    return wait_worker(client, "idle")


def wait_busy(client: Client) -> dict:
    return wait_worker(client, "busy")


@pytest.mark.parametrize("how, cause", [
    ("sigkill", "worker died: killed by SIGKILL (out of memory, or killed from outside)"),
    ("segv", "worker died: killed by signal 11 (SIGSEGV)"),
    ("exit", "worker died: exit code 3"),
])
def test_a_dying_worker_fails_its_job_and_is_restarted(client: Client, how: str,
                                                       cause: str) -> None:
    before = wait_worker_idle(client)
    crashed = client.submit("testing.crash", {"how": how})
    queued_behind = client.submit("testing.echo", {"text": "still here"})
    assert client.wait(crashed["id"])["error"] == cause
    assert client.wait(queued_behind["id"])["state"] == "succeeded"
    after = wait_worker_idle(client)
    assert after["pid"] != before["pid"] and after["restarts"] == before["restarts"] + 1


def test_out_of_memory_fails_the_job_not_the_server(client: Client) -> None:
    job = client.wait(client.submit("testing.oom", {"mb_per_step": 64})["id"])
    assert job["state"] == "failed"
    assert job["error"].startswith("out of memory: MemoryError"), job["error"]
    assert client.health()["ok"]
    assert client.run("testing.echo")["state"] == "succeeded"


def test_cancel_a_running_job_lands_at_the_next_progress_step(client: Client) -> None:
    job = client.submit("testing.sleep", {"seconds": 20, "steps": 200})
    for event in client.events(job["id"]):
        if event["type"] == "job.progress":
            break
    pid = wait_busy(client)["pid"]
    client.cancel(job["id"])
    done = client.wait(job["id"])
    assert done["state"] == "cancelled" and done["error"] == "cancelled by request"
    assert wait_worker_idle(client)["pid"] == pid  # cooperative: the worker lives on


def test_cancel_a_hung_job_kills_the_worker_after_the_grace_period(client: Client) -> None:
    job = client.submit("testing.hang", {"seconds": 600})
    pid = wait_busy(client)["pid"]
    client.cancel(job["id"])
    assert client.wait(job["id"])["state"] == "cancelled"
    assert wait_worker_idle(client)["pid"] != pid
    assert client.run("testing.echo")["state"] == "succeeded"


def test_the_next_job_runs_while_outputs_are_written(client: Client) -> None:
    wait_worker_idle(client)
    big = client.submit("testing.noise", {"size": 2048})
    small = client.submit("testing.echo", {"text": "meanwhile"})
    events = {e["type"]: e["seq"] for e in client.events(big["id"])}
    small_events = {e["type"]: e["seq"] for e in client.events(small["id"])}
    assert small_events["job.started"] < events["job.succeeded"]  # overlapped the PNG encode
    assert client.job(big["id"])["state"] == "succeeded"


def test_compatible_jobs_run_as_one_batch(client: Client) -> None:
    blocker = client.submit("testing.sleep", {"seconds": 0.5, "steps": 2})
    jobs = [client.submit("testing.batched", {"value": i, "size": 8}) for i in range(5)]
    odd = client.submit("testing.batched", {"value": 9, "size": 16})
    client.wait(blocker["id"])
    texts = []
    for job in [*jobs, odd]:
        done = client.wait(job["id"])
        assert done["state"] == "succeeded", done["error"]
        texts.append(client.http.get(f"/api/artifacts/{done['outputs']['text']['id']}").text)
    assert texts == [f"value={i} size=8 batch=4" for i in range(4)] + [
        "value=4 size=8 batch=1", "value=9 size=16 batch=1"]


def test_timeout_and_recycling(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", job_timeout_s=1, worker_max_jobs=2) as server, \
            server.client() as client:
        hung = client.wait(client.submit("testing.hang", {"seconds": 60})["id"])
        assert (hung["state"], hung["error"]) == ("failed", "timed out after 1 s")
        pids = set()
        for _ in range(4):
            assert client.run("testing.echo")["state"] == "succeeded"
            pids.add(wait_worker_idle(client)["pid"])
        assert len(pids) >= 2  # recycled after every second job


def test_gpu_jobs_go_to_gpu_workers(tmp_path: Path) -> None:
    # The "cuda:0" worker runs on this CPU-only machine too; the job only reports its device.
    with ServerProcess(tmp_path / "data", workers="cpu,cuda:0") as server, \
            server.client() as client:
        jobs = [client.submit("testing.device") for _ in range(4)]
        jobs += [client.submit("testing.sleep", {"seconds": 0.2, "steps": 2}) for _ in range(2)]
        for job in jobs:
            assert client.wait(job["id"])["state"] == "succeeded"
        workers = {client.job(j["id"])["worker"] for j in jobs[:4]}
        assert workers == {"w1"}  # never the CPU worker, though it was free
        texts = {client.http.get(f"/api/artifacts/{client.job(j['id'])['outputs']['text']['id']}").text
                 for j in jobs[:4]}
        assert texts == {"cuda:0"}
        assert "w0" in {client.job(j["id"])["worker"] for j in jobs[4:]}  # others: anywhere


def test_two_workers_route_jobs_to_the_warm_model(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", workers="cpu,cpu") as server, \
            server.client() as client:
        def pid_of(model: str) -> str:
            job = client.run("testing.model", {"model": model})
            text = client.http.get(f"/api/artifacts/{job['outputs']['text']['id']}").text
            return text.split("pid=")[1]

        first_m1 = client.submit("testing.model", {"model": "m1"})
        first_m2 = client.submit("testing.model", {"model": "m2"})
        client.wait(first_m1["id"]), client.wait(first_m2["id"])
        workers = {w["name"]: w for w in client.workers()}
        holders = {m["key"]: w["pid"] for w in workers.values() for m in w["models"]}
        assert set(holders) == {"testing/m1", "testing/m2"}
        assert len(set(holders.values())) == 2
        for model in ["m2", "m1", "m2", "m1"]:
            assert pid_of(model) == str(holders[f"testing/{model}"])
        loads = sum(w["loads"] for w in client.workers())
        assert loads == 2  # four more jobs, no more loads
