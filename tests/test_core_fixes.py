"""The core's contract with plugins and clients, on a real server: batches cancel one job at a
time, failures keep their traceback and prints, plain values are outputs, a bad job does not
sink its plugin, list submissions are one transaction, rescans pick up new model files, and a
worker that does not share our disk fetches each input once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stablecore.client import ApiError, Client
from stablecore.testing import ServerProcess, fetch_json


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("core") / "data", cancel_grace_s=1) as s:
        yield s


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


def wait_for(predicate, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError("condition never held")


def test_cancelling_one_job_of_a_batch_spares_the_others(client: Client) -> None:
    (before,) = client.workers()
    jobs = client.submit_many([{"spec": "testing.slow_batch",
                                "params": {"value": i, "steps": 40, "delay": 0.05}}
                               for i in range(4)])
    victim, *others = jobs
    wait_for(lambda: client.job(victim["id"]).get("progress"))
    assert client.cancel(victim["id"])["state"] == "running"
    assert client.wait(victim["id"])["state"] == "cancelled"
    for job in others:
        done = client.wait(job["id"])
        assert done["state"] == "succeeded", done["error"]
    (after,) = client.workers()
    assert after["pid"] == before["pid"] and after["restarts"] == before["restarts"]


def test_a_failure_keeps_its_traceback_and_what_the_plugin_printed(client: Client) -> None:
    job = client.submit("testing.chatty", {"lines": 2})
    logs: list[dict] = []
    done = client.wait(job["id"], on_event=lambda e: logs.append(e)
                       if e["type"] == "job.log" else None)
    assert done["state"] == "failed"
    assert done["error"] == "RuntimeError: chatty failed on purpose"
    assert "Traceback (most recent call last)" in done["traceback"]
    assert "sc_testplugins/jobs.py" in done["traceback"]
    lines = {(e["data"]["stream"], e["data"]["msg"]) for e in logs}
    assert {("stdout", "stdout line 0"), ("stdout", "stdout line 1"),
            ("stderr", "a warning on stderr"), ("stdout", "straight to fd 1")} <= lines


def test_a_flood_of_prints_is_capped_per_job(client: Client) -> None:
    job = client.submit("testing.chatty", {"lines": 3000, "fail": False})
    logs: list[dict] = []
    client.wait(job["id"], on_event=lambda e: logs.append(e) if e["type"] == "job.log" else None)
    assert 2000 <= len(logs) <= 2002
    assert "the rest are only on the server's console" in logs[-1]["data"]["msg"]


def test_plain_values_are_outputs(client: Client, tmp_path: Path) -> None:
    done = client.run("testing.count", {"text": "one two three"})
    assert done["state"] == "succeeded", done["error"]
    assert done["outputs"]["json"]["value"] == 3
    assert fetch_json(client, done["outputs"]["json"], tmp_path) == 3
    several = client.run("testing.summary", {"text": "b c a"})["outputs"]
    assert several["words"]["value"] == ["a", "b", "c"]
    assert several["stats"]["value"] == {"n": 3.0}
    assert several["image"]["kind"] == "image"
    spec = client.get("/api/specs/testing.count")
    assert spec["outputs"]["json"]["schema"] == {"type": "integer"}


def test_a_plugin_with_one_bad_job_loads_the_good_ones(client: Client) -> None:
    plugin = next(p for p in client.plugins() if p["name"] == "halfbroken")
    assert plugin["jobs"] == ["halfbroken.fine"] and plugin["error"] is None
    assert "cannot form a JSON schema" in plugin["job_errors"]["bad"]
    assert client.run("halfbroken.fine")["state"] == "succeeded"


def test_a_list_of_jobs_is_queued_in_one_transaction(client: Client) -> None:
    before = client.jobs()["total"]
    with pytest.raises(ApiError) as bad:
        client.submit_many([{"spec": "testing.echo"}, {"spec": "testing.echo",
                                                       "params": {"n": 99}}])
    assert bad.value.status == 422 and bad.value.field == "jobs[1].params.n"
    assert client.jobs()["total"] == before  # nothing of the list was queued
    jobs = client.submit_many([{"spec": "testing.echo", "params": {"text": str(i)}}
                               for i in range(50)])
    assert [j["params"]["text"] for j in jobs] == [str(i) for i in range(50)]
    assert client.wait(jobs[-1]["id"])["state"] == "succeeded"


def test_rescan_picks_up_new_model_files(client: Client, server: ServerProcess) -> None:
    def choices() -> list[str]:
        prop = client.get("/api/specs/testing.pick")["params"]["properties"]["name"]
        return prop.get("enum") or [prop["const"]]

    assert "fresh.safetensors" not in choices()
    folder = server.data_dir / "models" / "testing"
    assert folder.is_dir()  # made for the plugin that asked for one
    (folder / "fresh.safetensors").write_bytes(b"weights")
    answer = httpx.post(server.url + "/api/plugins/rescan", timeout=60).json()
    assert answer["specs"] > 0
    assert "fresh.safetensors" in choices()
    assert client.run("testing.pick", {"name": "fresh.safetensors"})["state"] == "succeeded"


def test_job_errors_name_the_artifact_not_the_server_path(client: Client, tmp_path: Path,
                                                          server: ServerProcess) -> None:
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    art = client.upload(fake)
    done = client.run("testing.invert", inputs={"image": art["id"]})
    assert done["state"] == "failed"
    assert art["id"] in done["error"] and "fake.png" in done["error"]
    assert str(server.data_dir.resolve()) not in done["error"]


def test_a_worker_without_our_disk_fetches_each_input_once(tmp_path: Path, png: Path) -> None:
    with ServerProcess(tmp_path / "data", share_files="false") as server, \
            server.client() as client:
        art = client.upload(png)
        first = client.run("testing.invert", inputs={"image": art["id"]})
        assert first["state"] == "succeeded", first["error"]
        (worker,) = client.workers()
        assert worker["blob_bytes_sent"] == art["size"]
        second = client.run("testing.invert", inputs={"image": art["id"]})
        assert second["state"] == "succeeded"
        (worker,) = client.workers()
        assert worker["blob_bytes_sent"] == art["size"]  # the second job sent 0 bytes of it


def test_test_plugins_stay_out_of_the_served_environment() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", "from importlib.metadata import entry_points as e;"
         "print(sorted(p.name for p in e(group='stablecore.plugins')))"],
        capture_output=True, text=True, env=env, check=True).stdout
    assert "testing" not in out and "broken" not in out and "palette" in out


def test_an_input_too_large_to_decode_fails_before_decoding(client: Client,
                                                            tmp_path: Path) -> None:
    import PIL.Image

    big = tmp_path / "big.png"
    PIL.Image.new("L", (9000, 9000)).save(big, compress_level=1)  # 81 MP, a few KB of PNG
    art = client.upload(big)
    done = client.run("testing.invert", inputs={"image": art["id"]})
    assert done["state"] == "failed"
    assert "9000x9000 = 81 megapixels is over the limit of 64 (setting max_input_mpx)" in \
        done["error"]
    (worker,) = client.workers()
    assert worker["rss_mb"] < 1000  # nothing of it was decoded


def test_a_lone_surrogate_in_a_param_is_a_422(client: Client) -> None:
    """JSON may carry "\ud800"; UTF-8 cannot. It used to be accepted, then fail to reach the
    worker with a 500 and leave the job `running`."""
    import json

    for params, field in (({"text": "\ud800"}, "params.text"),
                          ({"text": "ok", "extra": ["\udfff"]}, "params.extra.0")):
        body = json.dumps({"spec": "testing.echo", "params": params})  # ASCII: "\\ud800"
        answer = client.http.post("/api/jobs", content=body,
                                  headers={"content-type": "application/json"})
        assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
    assert client.run("testing.echo", {"text": "still fine"})["state"] == "succeeded"
