"""Model files on a node (`nodes add`, step 4), over a real OpenSSH server on 127.0.0.1.

The test plugin `modelfiles` declares one URL file, served by an HTTP server on 127.0.0.1;
the "remote" machine learns its address from its own environment (sshd's SetEnv), as a real
machine with the same plugin settings would. By default the node pulls the file itself;
with `--push-models` the server sends it from its cache over SFTP, and a second `nodes add`
sends 0 bytes of it. Hub files are placed by the same code in the Hugging Face cache layout,
checked here without SSH.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stablecore.client import Client
from stablecore.modelfiles import ModelFile, local_path, models_cache
from stablecore.node_models import _layout, _place
from stablecore.testing import ServerProcess

_spec = importlib.util.spec_from_file_location("sshd_helper", Path(__file__).with_name("sshd.py"))
sshd_helper = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(sshd_helper)  # type: ignore[union-attr]
Sshd = sshd_helper.Sshd

CLI = [sys.executable, "-m", "stablecore"]
DATA = hashlib.sha256(b"tiny").digest() * 32768 + b"tail"  # 1 MiB and 4 bytes
SHA = hashlib.sha256(DATA).hexdigest()


@dataclass
class World:
    sshd: Sshd
    server: ServerProcess
    client: Client
    remote: Path
    local_cache: Path
    env: dict[str, str]
    gets: list[str] = field(default_factory=list)  # what the file server was asked for

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "COLUMNS": "400", **env})

    def add(self, *extra: str) -> subprocess.CompletedProcess:
        out = self.cli("nodes", "add", self.sshd.url, "--key", str(self.sshd.client_key),
                       "--name", "m1", "--host-key", self.sshd.fingerprint, "--plugins",
                       "modelfiles", "--python", sys.executable, "--system-site-packages",
                       "--remote-dir", str(self.remote), "--url", self.server.url, *extra)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    def on_node(self) -> Path:
        return self.remote / "model-cache" / "urls" / SHA / "tiny.bin"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not Path(sshd_helper.SSHD).is_file():
        pytest.skip("needs OpenSSH's sshd (Debian: openssh-server)")
    root = tmp_path_factory.mktemp("node_models")
    (root / "files").mkdir()
    (root / "files" / "tiny.bin").write_bytes(DATA)
    gets: list[str] = []

    class Files(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            gets.append(self.path)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Files, directory=root / "files"))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    env = {"STABLECORE_TEST_MODEL_URL": f"http://127.0.0.1:{httpd.server_port}/tiny.bin",
           "STABLECORE_TEST_MODEL_SHA256": SHA, "STABLECORE_TEST_MODEL_SIZE": str(len(DATA))}
    sshd = Sshd(root / "sshd", env=env).start()
    settings = {k.removeprefix("STABLECORE_").lower(): v for k, v in env.items()}
    try:
        with ServerProcess(root / "data", uv_args="--offline", models_cache=root / "cache",
                           **settings) as server, server.client() as client:
            hang = client.submit("testing.hang", {"seconds": 600})  # jobs go to the node
            yield World(sshd, server, client, root / "remote", root / "cache", env, gets)
            client.cancel(hang["id"])
    finally:
        sshd.stop()
        httpd.shutdown()
        httpd.server_close()


def test_nodes_add_pulls_the_model_files_on_the_node(world: World, tmp_path: Path) -> None:
    started = time.monotonic()
    out = world.add()
    print(f"nodes add took {time.monotonic() - started:.1f} s")
    assert f"pulling tiny.bin from {world.env['STABLECORE_TEST_MODEL_URL']}" in out.stdout
    assert "model files: 0 there already, 1 pulled there, 0 sent from here" in out.stdout
    assert world.on_node().read_bytes() == DATA
    assert world.gets == ["/tiny.bin"]  # once, by the node...
    assert not (world.local_cache / "urls").exists()  # ...not by the server
    job = world.client.run("modelfiles.read")  # the worker there finds it in its cache
    assert job["state"] == "succeeded" and job["worker"] == "m1/w0", job["error"]
    text = world.client.download(job["outputs"]["text"]["id"], tmp_path / "o.txt").read_text()
    assert text == f"{len(DATA)} {SHA}"


def test_push_models_sends_the_cached_file_once(world: World) -> None:
    pulled = world.cli("models", "pull", "modelfiles",
                       STABLECORE_MODELS_CACHE=str(world.local_cache), **world.env)
    assert pulled.returncode == 0, pulled.stderr
    shutil.rmtree(world.remote / "model-cache")  # as on a fresh machine
    asked = len(world.gets)

    out = world.add("--push-models")
    assert "sending tiny.bin (1.0 MB) from this server's cache" in out.stdout, out.stdout
    assert f"1 sent from here ({len(DATA)} bytes)" in out.stdout
    assert world.on_node().read_bytes() == DATA
    assert world.client.get("/api/nodes/m1")["bytes_models"] == len(DATA)
    assert len(world.gets) == asked  # the node downloaded nothing

    again = world.add("--push-models")
    assert "model files: 1 there already, 0 pulled there, 0 sent from here (0 bytes)" \
        in again.stdout, again.stdout
    assert "sending" not in again.stdout
    assert world.client.get("/api/nodes/m1")["bytes_models"] == 0
    job = world.client.run("modelfiles.read")
    assert job["state"] == "succeeded" and job["worker"] == "m1/w0", job["error"]


def test_a_file_the_node_cannot_get_fails_the_node_clearly(world: World) -> None:
    shutil.rmtree(world.remote / "model-cache")
    os.rename(world.remote.parent / "files" / "tiny.bin", world.remote.parent / "files" / "x")
    out = world.cli("nodes", "add", world.sshd.url, "--key", str(world.sshd.client_key),
                    "--name", "m1", "--plugins", "modelfiles", "--python", sys.executable,
                    "--system-site-packages", "--remote-dir", str(world.remote),
                    "--url", world.server.url)
    assert out.returncode == 1
    error = " ".join((out.stdout + out.stderr).split())
    assert "model files missing on the node: modelfiles: cannot download tiny.bin from " \
           f"{world.env['STABLECORE_TEST_MODEL_URL']}: HTTP 404" in error, error
    assert "with --push-models, files in this server's cache are sent instead" in error
    assert world.client.get("/api/nodes/m1")["state"] == "failed"


# --- hub files: the layout, without SSH ----------------------------------------------------------
def hub_cache(root: Path, data: bytes, commit: str = "c0ffee" + "0" * 34) -> Path:
    """A Hugging Face cache holding org/tiny weights/tiny.bin at `commit` (ref main)."""
    repo = root / "hub" / "models--org--tiny"
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    link = repo / "snapshots" / commit / "weights" / "tiny.bin"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return link


def test_a_pushed_hub_file_lands_in_the_hub_layout_once_verified(tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    file = ModelFile(repo_id="org/tiny", filename="weights/tiny.bin")
    ours, theirs = models_cache({}, tmp_path / "ours"), models_cache({}, tmp_path / "theirs")
    link = hub_cache(tmp_path / "ours", DATA)
    assert local_path(file, ours) == link

    entry = _layout(file, link, ours)
    assert entry["blob"] == f"models--org--tiny/blobs/{SHA}"
    assert entry["link"] == "models--org--tiny/snapshots/c0ffee" + "0" * 34 + "/weights/tiny.bin"
    part = tmp_path / "theirs" / ".incoming" / "x.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA[:-1] + b"!")  # damaged on the way
    entry.update(part=str(part), sha256=SHA, size=len(DATA))
    assert "expected " + SHA in _place(entry, theirs)
    assert not part.exists() and local_path(file, theirs) is None

    part.write_bytes(DATA)
    assert _place(entry, theirs) == ""
    found = local_path(file, theirs)
    assert found is not None and found.read_bytes() == DATA and found.is_symlink()
