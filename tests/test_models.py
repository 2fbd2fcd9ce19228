"""Model files: pull with progress, resume, verify, list/rm, offline errors, API events, jobs.

A local HTTP server serves the files (with Range support, and it can cut a response short)
and plays a Hugging Face hub mirror for hub files (HF_ENDPOINT).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stablecore.client import AsyncClient
from stablecore.modelfiles import (
    FileCache,
    ModelFile,
    ModelFileError,
    local_path,
    models_cache,
    pull,
    remove,
)
from stablecore.testing import ServerProcess, free_port

COMMIT = "c0ffee" + "0" * 34


@dataclass
class Served:
    """What the file server holds, and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before hanging up
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url + path


class Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.answer(body=False)

    def do_GET(self) -> None:
        self.answer(body=True)

    def answer(self, body: bool) -> None:
        served: Served = self.server.served  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        served.requests.append((self.command, self.path, rng))
        data = served.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng else 0
        if start >= len(data) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        if "/resolve/" in self.path:  # what the hub answers about a file
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.end_headers()
        if body:
            end = served.cut.pop(self.path, len(data))
            self.wfile.write(data[start:end])


@pytest.fixture
def served() -> Iterator[Served]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.served = Served(url=f"http://127.0.0.1:{httpd.server_port}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.served  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path: Path) -> FileCache:
    return models_cache({}, tmp_path / "cache")


def blob(n: int, seed: int = 0) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"x" * (n % 32)


def url_file(served: Served, name: str, data: bytes, **kw: object) -> ModelFile:
    return ModelFile(url=served.add(f"/files/{name}", data),
                     **{"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), **kw})


def test_pull_reports_progress_and_caches(served: Served, cache: FileCache) -> None:
    data = blob(3 * 2**20 + 5)
    file = url_file(served, "tiny.bin", data, licence="CC0-1.0")
    assert local_path(file, cache) is None
    seen: list[tuple[int, int | None]] = []
    path = pull(file, cache, lambda done, total: seen.append((done, total)))
    assert path == cache.root / "urls" / file.sha256 / "tiny.bin"  # type: ignore[operator]
    assert path.read_bytes() == data and local_path(file, cache) == path
    assert seen[-1] == (len(data), len(data)) and len(seen) >= 4
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # a second pull finds it in the cache and asks the server nothing
    asked = len(served.requests)
    assert pull(file, cache) == path and len(served.requests) == asked


def test_an_interrupted_download_resumes_with_range(served: Served, cache: FileCache) -> None:
    data = blob(2 * 2**20 + 77, seed=1)
    file = url_file(served, "big.bin", data)
    cut = 2**20 + 123
    served.cut["/files/big.bin"] = cut
    with pytest.raises(ModelFileError, match=r"big.bin.*pull again to resume") as e:
        pull(file, cache)
    assert file.url in e.value.message  # type: ignore[operator]
    part = cache.url_path(file).with_name("big.bin.part")
    assert part.stat().st_size == cut and local_path(file, cache) is None

    path = pull(file, cache)
    assert served.requests[-1] == ("GET", "/files/big.bin", f"bytes={cut}-")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == file.sha256
    assert not part.exists()


def test_a_checksum_mismatch_deletes_the_download(served: Served, cache: FileCache) -> None:
    data = blob(1000, seed=2)
    file = ModelFile(url=served.add("/files/bad.bin", data), sha256="ab" * 32)
    with pytest.raises(ModelFileError, match=r"bad.bin.*sha256 .*expected abab.*deleted"):
        pull(file, cache)
    folder = cache.url_path(file).parent
    assert not any(folder.iterdir()) and local_path(file, cache) is None

    wrong_size = url_file(served, "short.bin", data, size=999)
    with pytest.raises(ModelFileError, match="size 1000 bytes, expected 999"):
        pull(wrong_size, cache)
    assert not any(cache.url_path(wrong_size).parent.iterdir())


def test_unreachable_and_missing_files_give_clear_errors(served: Served,
                                                         cache: FileCache) -> None:
    url = f"http://127.0.0.1:{free_port()}/gone.bin"  # nothing listens there
    with pytest.raises(ModelFileError, match=f"cannot download gone.bin from {url}: ConnectError"):
        pull(ModelFile(url=url, sha256="0" * 64), cache)
    missing = ModelFile(url=served.url + "/nope.bin", sha256="0" * 64)
    with pytest.raises(ModelFileError, match=r"nope.bin .*HTTP 404"):
        pull(missing, cache)


def test_bad_declarations_are_refused() -> None:
    with pytest.raises(ModelFileError, match="either url= or repo_id="):
        ModelFile(sha256="0" * 64)
    with pytest.raises(ModelFileError, match="needs its sha256"):
        ModelFile(url="https://example.org/a.bin")
    with pytest.raises(ModelFileError, match="not an http"):
        ModelFile(url="file:///etc/passwd", sha256="0" * 64)
    with pytest.raises(ModelFileError, match="plain file name"):
        ModelFile(url="https://example.org/", sha256="0" * 64)
    with pytest.raises(ModelFileError, match="64 hex"):
        ModelFile(repo_id="org/m", filename="m.bin", sha256="xyz")


def test_remove_frees_a_file_and_its_partial_download(served: Served, cache: FileCache) -> None:
    data = blob(5000, seed=3)
    file = url_file(served, "rm.bin", data)
    pull(file, cache)
    assert remove(file, cache) == 5000 and local_path(file, cache) is None
    served.cut["/files/rm.bin"] = 100
    with pytest.raises(ModelFileError):
        pull(file, cache)
    assert remove(file, cache) == 100 and not cache.url_path(file).parent.exists()


HUB_SCRIPT = """
import json, sys
from pathlib import Path
from stablecore.modelfiles import ModelFile, models_cache, pull, local_path, remove
file = ModelFile(**json.loads(sys.argv[-1]))
cache = models_cache({}, Path(sys.argv[-2]))
seen = []
try:
    path = pull(file, cache, lambda done, total: seen.append(done))
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
else:
    found = local_path(file, cache)
    print(json.dumps({"path": str(path), "found": str(found), "seen": seen,
                      "freed": remove(file, cache), "after": str(local_path(file, cache))}))
"""


def hub(cache_root: Path, file: dict, **env: str) -> dict:
    result = subprocess.run([sys.executable, "-c", HUB_SCRIPT, str(cache_root), json.dumps(file)],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_hub_file_offline_gives_a_clear_error(tmp_path: Path) -> None:
    file = {"repo_id": "org/tiny", "filename": "tiny.bin", "sha256": "0" * 64}
    out = hub(tmp_path / "cache", file, HF_HUB_OFFLINE="1")
    assert out["error"].startswith("ModelFileError: cannot download org/tiny/tiny.bin "
                                   "(hf://org/tiny/tiny.bin@main) from the Hugging Face hub")


def test_a_hub_file_lands_in_the_hugging_face_cache_layout(served: Served,
                                                           tmp_path: Path) -> None:
    data = blob(300_000, seed=4)
    sha = hashlib.sha256(data).hexdigest()
    served.add("/org/tiny/resolve/main/weights/tiny.bin", data)
    file = {"repo_id": "org/tiny", "filename": "weights/tiny.bin", "sha256": sha}
    out = hub(tmp_path / "cache", file, HF_ENDPOINT=served.url, HF_HUB_OFFLINE="0")
    assert "error" not in out, out["error"]
    snapshot = tmp_path / "cache/hub/models--org--tiny/snapshots" / COMMIT / "weights/tiny.bin"
    assert out["path"] == out["found"] == str(snapshot)
    assert len(out["seen"]) >= 2 and out["seen"][-1] == len(data)  # the bar, then done
    assert out["freed"] == len(data) and out["after"] == "None"
    blobs = tmp_path / "cache/hub/models--org--tiny/blobs"
    assert not any(blobs.iterdir())

    file["sha256"] = "ab" * 32
    out = hub(tmp_path / "cache", file, HF_ENDPOINT=served.url, HF_HUB_OFFLINE="0")
    assert re.search("weights/tiny.bin .*failed verification.*deleted", out["error"])
    assert not snapshot.exists() and not any(blobs.iterdir())


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stablecore", "models", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "1000", **env})


def test_cli_pull_list_rm(served: Served, tmp_path: Path) -> None:
    data = blob(2**20 + 9, seed=5)
    env = {"STABLECORE_TEST_MODEL_URL": served.add("/files/cli.bin", data),
           "STABLECORE_TEST_MODEL_SHA256": hashlib.sha256(data).hexdigest(),
           "STABLECORE_TEST_MODEL_SIZE": str(len(data)),
           "STABLECORE_MODELS_CACHE": str(tmp_path / "cache")}
    listed = cli("list", "modelfiles", **env)
    assert listed.returncode == 0, listed.stderr
    assert "cli.bin" in listed.stdout and "missing" in listed.stdout and "CC0-1.0" in listed.stdout

    pulled = cli("pull", "modelfiles", **env)
    assert pulled.returncode == 0, pulled.stderr
    path = tmp_path / "cache/urls" / env["STABLECORE_TEST_MODEL_SHA256"] / "cli.bin"
    assert path.read_bytes() == data
    assert f"modelfiles: cli.bin -> {path}" in pulled.stderr.replace("\n", "")

    listed = cli("list", "modelfiles", **env)  # other plugins declare files not pulled here
    assert str(path) in listed.stdout.replace("\n", "") and "cached: 1.0 MiB" in listed.stdout
    assert "missing" not in listed.stdout

    removed = cli("rm", "modelfiles", "--yes", **env)
    assert removed.returncode == 0, removed.stderr
    assert "freed 1.0 MiB" in removed.stdout and not path.exists()

    unknown = cli("pull", "nope", **env)
    assert unknown.returncode == 1 and "'nope' declares no model files" in unknown.stderr
    offline = cli("pull", "modelfiles", **{**env, "STABLECORE_TEST_MODEL_URL":
                                           f"http://127.0.0.1:{free_port()}/cli.bin"})
    assert offline.returncode == 1 and "cannot download cli.bin from http://" in offline.stderr


async def pull_events(server: ServerProcess, plugin: str) -> tuple[dict, list[dict]]:
    async with AsyncClient(server.url) as c:
        started = (await c.http.post("/api/models/pull", json={"plugin": plugin})).json()
        events = []
        async for event in c.stream(since=started["since"]):
            if event["type"].startswith("model."):
                events.append(event)
            if event["type"] in ("model.done", "model.failed"):
                return started, events
    raise AssertionError("event stream ended")


def test_api_pull_emits_events_and_jobs_get_the_path(served: Served, tmp_path: Path) -> None:
    data = blob(3 * 2**20, seed=6)
    sha = hashlib.sha256(data).hexdigest()
    settings = {"test_model_url": served.url + "/files/api.bin",  # not served yet
                "test_model_sha256": sha, "test_model_size": len(data),
                "models_cache": tmp_path / "cache"}
    with ServerProcess(tmp_path / "data", **settings) as server, server.client() as client:
        job = client.run("modelfiles.read")
        assert job["state"] == "failed"
        assert "run `stable-core models pull modelfiles`" in job["error"]
        (row,) = [r for r in client.get("/api/models") if r["plugin"] == "modelfiles"]
        assert row["name"] == "api.bin" and row["cached"] is False and row["sha256"] == sha

        _, events = asyncio.run(pull_events(server, "modelfiles"))
        (failed,) = [e["data"] for e in events if e["type"] == "model.failed"]
        assert failed["plugin"] == "modelfiles" and failed["file"] == "api.bin"
        assert f"cannot download api.bin from {served.url}/files/api.bin: HTTP 404" \
            in failed["error"]

        served.add("/files/api.bin", data)
        started, events = asyncio.run(pull_events(server, "modelfiles"))
        assert started["files"] == [{"plugin": "modelfiles", "name": "api.bin"}]
        progress = [e["data"] for e in events if e["type"] == "model.progress"]
        assert progress and progress[-1]["done"] == progress[-1]["total"] == len(data)
        done = events[-1]
        assert done["type"] == "model.done" and done["data"]["size"] == len(data)
        assert done["data"]["path"] == str(tmp_path / "cache/urls" / sha / "api.bin")
        (row,) = [r for r in client.get("/api/models") if r["plugin"] == "modelfiles"]
        assert row["cached"] is True and row["path"] == done["data"]["path"]

        job = client.run("modelfiles.read")
        assert job["state"] == "succeeded", job["error"]
        text = client.download(job["outputs"]["text"]["id"], tmp_path / "out.txt").read_text()
        assert text == f"{len(data)} {sha}"

        missing = client.http.post("/api/models/pull", json={"plugin": "nope"})
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]


