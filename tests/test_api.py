"""Every API route and its error cases, against a real server with one worker."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import PIL.Image
import pytest

from stablecore.client import ApiError, Client
from stablecore.testing import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("api") / "data", max_upload_mb=1) as s:
        yield s


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as h:
        yield h


def test_health_catalog_and_plugins(client: Client, http: httpx.Client) -> None:
    assert client.health()["ready"] is True
    names = {s["name"] for s in client.specs()}
    assert {"testing.echo", "testing.sleep", "testing.invert", "testing.several"} <= names
    echo = http.get("/api/specs/testing.echo").json()
    assert echo["params"]["properties"]["n"]["maximum"] == 10
    assert echo["plugin"] == "testing" and echo["version"] == "0.1.0"
    plugins = {p["name"]: p for p in client.plugins()}
    assert "ImportError" in plugins["broken"]["error"]
    assert plugins["testing"]["error"] is None and "testing.echo" in plugins["testing"]["jobs"]
    assert http.get("/api/specs/nope.nope").status_code == 404
    assert "/api/jobs" in http.get("/openapi.json").json()["paths"]


def test_a_job_runs_and_its_output_downloads(client: Client, tmp_path: Path) -> None:
    job = client.run("testing.echo", {"text": "ab", "n": 2})
    assert job["state"] == "succeeded" and job["params"] == {"text": "ab", "n": 2}
    out = job["outputs"]["text"]
    assert out["kind"] == "text" and out["path"].endswith("_testing.echo.txt")
    assert client.download(out["id"], tmp_path / "o.txt").read_text() == "abab"


def test_defaults_are_filled_in(client: Client) -> None:
    job = client.submit("testing.echo")
    assert job["params"] == {"text": "hello", "n": 1}
    client.wait(job["id"])


@pytest.mark.parametrize("body, field", [
    ({"spec": "testing.echo", "params": {"n": 99}}, "params.n"),
    ({"spec": "testing.echo", "params": {"n": "three"}}, "params.n"),
    ({"spec": "testing.echo", "params": {"colour": "red"}}, "params.colour"),
    ({"spec": "testing.sleep", "params": {"seconds": -1}}, "params.seconds"),
    ({"spec": "testing.invert"}, "inputs.image"),
    ({"spec": "testing.invert", "inputs": {"image": "a_0000000000000000"}}, "inputs.image"),
    ({"spec": "testing.invert", "inputs": {"image": 5}}, "inputs.image"),
    ({"spec": "testing.echo", "inputs": {"image": "a_0"}}, "inputs.image"),
])
def test_invalid_requests_name_the_field(http: httpx.Client, body: dict, field: str) -> None:
    r = http.post("/api/jobs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


def test_wrong_kind_of_input_is_refused(client: Client, tmp_path: Path) -> None:
    text = tmp_path / "note.txt"
    text.write_text("not an image")
    art = client.upload(text)
    assert art["kind"] == "text"
    with pytest.raises(ApiError) as e:
        client.submit("testing.invert", inputs={"image": art["id"]})
    assert e.value.status == 422 and "expects kind 'image'" in e.value.detail


def test_unknown_job_malformed_json_and_unknown_ids(http: httpx.Client) -> None:
    assert http.post("/api/jobs", json={"spec": "no.such"}).status_code == 404
    r = http.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert http.post("/api/jobs", json={"params": {}}).status_code == 422  # spec missing
    assert http.post("/api/jobs", json=[1, 2]).status_code == 422
    assert http.get("/api/jobs/j_nope").status_code == 404
    assert http.post("/api/jobs/j_nope/cancel").status_code == 404
    assert http.get("/api/artifacts/a_nope").status_code == 404
    assert http.get("/api/artifacts/../../etc/passwd").status_code == 404
    assert http.get("/api/artifacts/a_nope/info").status_code == 404
    assert http.get("/api/sessions/s_nope").status_code == 404
    assert http.get("/api/jobs", params={"state": "sleeping"}).status_code == 422
    assert http.get("/api/jobs", params={"limit": 0}).status_code == 422


def test_image_input_upload_and_png_parameters(client: Client, png: Path, tmp_path: Path) -> None:
    art = client.upload(png)
    assert (art["kind"], art["mime"], art["size"]) == ("image", "image/png", png.stat().st_size)
    hits = client.workers()[0]["decoded_hits"]
    job = client.run("testing.invert", inputs={"image": art["id"]})
    assert job["state"] == "succeeded", job["error"]
    # the output stays decoded in the worker: chaining it skips the PNG decode
    chained = client.run("testing.invert", inputs={"image": job["outputs"]["image"]["id"]})
    rerun = client.run("testing.invert", inputs={"image": art["id"]})
    assert chained["state"] == rerun["state"] == "succeeded"
    assert client.workers()[0]["decoded_hits"] == hits + 2
    twice = PIL.Image.open(client.download(chained["outputs"]["image"]["id"], tmp_path / "2.png"))
    assert twice.getpixel((0, 0)) == (10, 200, 30)  # inverted back: the cached copy was intact
    result = PIL.Image.open(client.download(job["outputs"]["image"]["id"], tmp_path / "r.png"))
    assert result.getpixel((0, 0)) == (245, 55, 225)
    assert result.text["parameters"].endswith("Job: testing.invert")
    again = client.upload(png)
    assert again["sha256"] == art["sha256"] and again["id"] != art["id"]


def test_a_job_may_write_its_own_png_parameters(client: Client, tmp_path: Path) -> None:
    job = client.run("testing.tagged")
    image = PIL.Image.open(client.download(job["outputs"]["image"]["id"], tmp_path / "t.png"))
    assert image.text["parameters"] == "my own words\nSteps: 3, Sampler: Euler, Seed: 5"
    assert '"job": "testing.tagged"' in image.text["stablecore"]


def test_several_outputs_of_every_kind(client: Client, tmp_path: Path,
                                       server: ServerProcess) -> None:
    job = client.run("testing.several", {"size": 16, "prompt": "a red fox", "seed": 3})
    assert job["state"] == "succeeded", job["error"]
    leftovers = list((server.data_dir / "tmp" / "w0").iterdir())
    assert leftovers == [], leftovers  # the job's scratch folder and its outputs moved away
    outs = job["outputs"]
    assert {k: v["mime"] for k, v in outs.items()} == {
        "image": "image/png", "mask": "image/png", "text": "text/plain",
        "numbers": "application/json", "audio": "audio/wav"}
    image = PIL.Image.open(client.download(outs["image"]["id"], tmp_path / "i.png"))
    assert image.size == (16, 16)
    assert image.text["parameters"].startswith("a red fox\nSize: 16, Seed: 3")
    numbers = json.loads(client.download(outs["numbers"]["id"], tmp_path / "n.json").read_text())
    assert numbers == {"columns": ["a", "b"], "rate": 24.0, "values": [[0, 1], [2, 3], [4, 5]]}
    randomised = client.run("testing.several", {"size": 16, "seed": -1})
    used = randomised["params"]["seed"]
    assert used >= 0
    image = PIL.Image.open(client.download(randomised["outputs"]["image"]["id"], tmp_path / "r.png"))
    assert f"Seed: {used}" in image.text["parameters"]
    again = client.run("testing.several", {"size": 16, "prompt": "a red fox", "seed": 3})
    assert again["outputs"]["image"]["id"] != outs["image"]["id"]
    info = client.get(f"/api/artifacts/{again['outputs']['image']['id']}/info")
    assert info["sha256"] == client.get(f"/api/artifacts/{outs['image']['id']}/info")["sha256"]


def test_lists_of_media_in_and_out(client: Client, http: httpx.Client, tmp_path: Path) -> None:
    made = client.run("testing.frames", {"n": 3, "size": 8})
    frames = made["outputs"]["image"]
    assert [f["kind"] for f in frames] == ["image"] * 3
    assert [f["path"].rsplit("_", 1)[1] for f in frames] == ["testing.frames.png"] * 3
    reds = [PIL.Image.open(client.download(f["id"], tmp_path / f"{i}.png")).getpixel((0, 0))[0]
            for i, f in enumerate(frames)]
    assert reds == [0, 20, 40]  # in order
    stacked = client.run("testing.stack", inputs={"images": [f["id"] for f in frames[::-1]]})
    image = PIL.Image.open(client.download(stacked["outputs"]["image"]["id"], tmp_path / "s.png"))
    assert image.size == (24, 8) and image.getpixel((0, 0))[0] == 40
    one = client.run("testing.stack", inputs={"images": frames[0]["id"]})  # one id is a list of one
    assert one["state"] == "succeeded" and one["inputs"] == {"images": [frames[0]["id"]]}
    spec = http.get("/api/specs/testing.stack").json()
    assert spec["inputs"]["images"]["many"] is True
    assert http.get("/api/specs/testing.frames").json()["outputs"]["image"]["many"] is True
    text = client.upload(_text_file(tmp_path))
    for body, message in [
        ({"images": [frames[0]["id"], text["id"]]}, "expects kind 'image'"),
        ({"images": []}, "must be an artifact id"),
        ({"images": [frames[0]["id"], "a_missing"]}, "no artifact 'a_missing'"),
    ]:
        r = http.post("/api/jobs", json={"spec": "testing.stack", "inputs": body})
        assert r.status_code == 422 and message in r.json()["detail"], r.text
    r = http.post("/api/jobs", json={"spec": "testing.invert", "inputs": {"image": [frames[0]["id"]]}})
    assert r.status_code == 422 and "not a list" in r.json()["detail"]


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "words.txt"
    path.write_text("words")
    return path


def test_uploads_are_type_checked_and_size_limited(http: httpx.Client) -> None:
    r = http.post("/api/artifacts", files={"file": ("x.bin", b"\x00\x01\x02binary")})
    assert r.status_code == 415 and "x.bin" in r.json()["detail"]
    r = http.post("/api/artifacts", files={"file": ("big.txt", b"a" * (2 * 2**20))})
    assert r.status_code == 413
    assert http.post("/api/artifacts", data={"nofile": "1"}).status_code == 422
    assert http.post("/api/artifacts", files={"file": ("e.txt", b"")}).status_code == 415
    r = http.post("/api/artifacts", files={"file": ("x.txt", b"hi")}, data={"session": "s_no"})
    assert r.status_code == 404


def test_jobs_list_filters_and_pages(client: Client) -> None:
    session = client.create_session("paging")
    ids = [client.submit("testing.echo", {"n": i + 1}, session=session["id"])["id"]
           for i in range(3)]
    for i in ids:
        client.wait(i)
    page = client.jobs(session=session["id"], limit=2)
    assert page["total"] == 3 and [j["id"] for j in page["jobs"]] == ids[::-1][:2]
    assert [j["id"] for j in client.jobs(session=session["id"], limit=2, offset=2)["jobs"]] == ids[:1]
    assert client.jobs(state="succeeded", session=session["id"])["total"] == 3
    assert client.jobs(state="failed", session=session["id"])["total"] == 0


def test_sessions_hold_their_outputs(client: Client, http: httpx.Client) -> None:
    session = client.create_session("forest walk")
    assert any(s["id"] == session["id"] for s in client.sessions())
    job = client.run("testing.echo", {"text": "leaf"}, session=session["id"])
    assert job["session_id"] == session["id"]
    detail = client.get(f"/api/sessions/{session['id']}")
    assert [a["path"] for a in detail["artifacts"]] == ["sessions/forest walk/0001_testing.echo.txt"]
    assert http.post("/api/sessions", json={"name": "forest walk"}).status_code == 409
    assert http.post("/api/sessions", json={"name": "../escape"}).status_code == 422
    assert http.post("/api/jobs", json={"spec": "testing.echo", "session": "s_x"}).status_code == 404


def test_cancel_retry_and_priority(client: Client, http: httpx.Client) -> None:
    blocker = client.submit("testing.sleep", {"seconds": 1, "steps": 10})
    queued = client.submit("testing.echo", {"text": "later"})
    urgent = client.submit("testing.echo", {"text": "first"})
    assert http.patch(f"/api/jobs/{urgent['id']}", json={"priority": 10}).json()["priority"] == 10
    assert client.cancel(queued["id"])["state"] == "cancelled"
    assert http.post(f"/api/jobs/{queued['id']}/cancel").status_code == 409
    client.wait(blocker["id"])
    done = client.wait(urgent["id"])
    assert done["state"] == "succeeded"
    assert http.patch(f"/api/jobs/{urgent['id']}", json={"priority": 1}).status_code == 409
    retried = http.post(f"/api/jobs/{queued['id']}/retry").json()
    assert retried["params"] == {"text": "later", "n": 1} and retried["id"] != queued["id"]
    assert client.wait(retried["id"])["state"] == "succeeded"


def test_previews_are_artifacts(client: Client, http: httpx.Client) -> None:
    job = client.submit("testing.preview", {"steps": 3, "size": 32})
    progress = [e for e in client.events(job["id"]) if e["type"] == "job.progress"]
    assert [e["data"]["step"] for e in progress] == [1, 2, 3]
    preview = http.get(f"/api/artifacts/{progress[-1]['data']['preview']}")
    assert preview.headers["content-type"] == "image/jpeg"
    assert PIL.Image.open(io.BytesIO(preview.content)).size == (32, 32)


def test_the_server_imports_no_plugin_and_no_torch(server: ServerProcess) -> None:
    assert server.proc is not None
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "libtorch" not in maps and "cv2" not in maps  # while plugins' workers have them
    check = ("import sys; from stablecore.config import Settings; "
             "from stablecore.server.app import create_app; create_app(Settings()); "
             "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
             "{'torch', 'diffusers'} or m.startswith('sc_')); print(bad)")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_workers_report_their_state(client: Client) -> None:
    (worker,) = client.workers()
    assert worker["device"] == "cpu" and worker["state"] in ("idle", "busy")
    assert worker["pid"] > 0 and worker["jobs_done"] >= 1 and "models" in worker
