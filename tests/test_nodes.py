"""Remote nodes over a real OpenSSH server on 127.0.0.1: `stable-core nodes add` verifies the
host key, checks the machine, installs stable-core and the test plugin into a venv there
(wheels built here, shipped over SFTP, installed with uv --offline; the venv sees this
environment's packages, as a GPU image's torch would be seen), and links a worker over an
SSH channel. Jobs run there with their outputs landing here; an input crosses once; a
dropped connection re-queues the running job, which runs again and finishes once."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import PIL.Image
import pytest

from stablecore.client import Client
from stablecore.testing import ServerProcess

_spec = importlib.util.spec_from_file_location("sshd_helper", Path(__file__).with_name("sshd.py"))
sshd_helper = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(sshd_helper)  # type: ignore[union-attr]
Sshd = sshd_helper.Sshd

pytestmark = pytest.mark.skipif(not Path(sshd_helper.SSHD).is_file(),
                                reason="needs OpenSSH's sshd (Debian: openssh-server)")
CLI = [sys.executable, "-m", "stablecore"]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real CLI, on a wide terminal so that lines stay whole."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "400"})


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("nodes") / "data"
    with ServerProcess(data, uv_args="--offline", cancel_grace_s=1) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


def add_args(sshd: Sshd, server: ServerProcess, remote: Path, *extra: str) -> list[str]:
    return ["nodes", "add", sshd.url, "--key", str(sshd.client_key), "--plugins",
            "testing", "--python", sys.executable, "--system-site-packages", "--remote-dir",
            str(remote), "--url", server.url, *extra]


@pytest.fixture(scope="module")
def node(sshd: Sshd, server: ServerProcess, client: Client,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Node `n1`, added with the CLI while the local worker is kept busy (a job that hangs),
    so that jobs go to the node."""
    hang = client.submit("testing.hang", {"seconds": 600})
    remote = tmp_path_factory.mktemp("remote") / "stablecore"
    started = time.monotonic()
    out = cli(*add_args(sshd, server, remote, "--name", "n1", "--host-key", sshd.fingerprint))
    assert out.returncode == 0, out.stdout + out.stderr
    yield {"cli": out.stdout, "seconds": time.monotonic() - started, "remote": remote}
    client.cancel(hang["id"])


def wait_for(predicate, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise TimeoutError("condition never held")


def api_error(server: ServerProcess, body: dict) -> dict:
    answer = httpx.post(server.url + "/api/nodes", json=body, timeout=60)
    assert answer.status_code == 422, answer.text
    return answer.json()


def test_an_unknown_host_key_is_refused_with_its_fingerprint(sshd: Sshd,
                                                             server: ServerProcess) -> None:
    error = api_error(server, {"url": sshd.url, "key": str(sshd.client_key), "name": "x"})
    assert error["field"] == "host_key" and error["host_key"] == sshd.fingerprint
    assert "not a known host" in error["detail"] and "--host-key" in error["detail"]
    wrong = api_error(server, {"url": sshd.url, "key": str(sshd.client_key), "name": "x",
                               "host_key": "SHA256:" + "A" * 43})
    assert "not the SHA256:AAAA" in wrong["detail"]


def test_a_key_the_node_does_not_know_is_refused(sshd: Sshd, server: ServerProcess,
                                                 tmp_path: Path) -> None:
    stranger = sshd_helper.keygen(tmp_path / "stranger")
    error = api_error(server, {"url": sshd.url, "key": str(stranger), "name": "x",
                               "host_key": sshd.fingerprint})
    assert error["field"] == "key" and "refused the login" in error["detail"]


def test_a_node_without_python_is_refused_clearly(sshd: Sshd, server: ServerProcess) -> None:
    error = api_error(server, {"url": sshd.url, "key": str(sshd.client_key), "name": "x",
                               "host_key": sshd.fingerprint, "python": "/no/such/python3"})
    assert error["field"] == "python"
    assert "has no Python at '/no/such/python3'" in error["detail"]


def test_nodes_add_installs_and_links_a_worker(node: dict, client: Client) -> None:
    assert "n1 is up: workers n1/w0" in node["cli"], node["cli"]
    assert "installed stable-core and testing" in node["cli"]
    assert (node["remote"] / "venv" / "bin" / "python").exists()
    (n1,) = client.get("/api/nodes")
    assert n1["state"] == "up" and n1["devices"] == ["cpu"] and n1["plugins"] == ["testing"]
    workers = {w["name"]: w for w in client.workers()}
    assert workers["n1/w0"]["node"] == "n1" and workers["n1/w0"]["state"] == "idle"
    print(f"nodes add took {node['seconds']:.1f} s")


def test_jobs_run_on_the_node_and_outputs_land_here(node: dict, client: Client,
                                                    server: ServerProcess, tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(tmp_path / "in.png")
    art = client.upload(tmp_path / "in.png")
    first = client.wait(client.submit("testing.invert", inputs={"image": art["id"]})["id"])
    assert first["state"] == "succeeded", first["error"]
    assert first["worker"] == "n1/w0"
    sent = client.get("/api/nodes/n1")["bytes_sent"]
    assert sent == art["size"]  # the input crossed once...
    second = client.wait(client.submit("testing.invert", inputs={"image": art["id"]})["id"])
    assert second["state"] == "succeeded" and second["worker"] == "n1/w0"
    n1 = client.get("/api/nodes/n1")
    assert n1["bytes_sent"] == sent  # ...and not again: 0 bytes for the second job
    print(f"input {art['size']} bytes: first job sent {sent}, second sent "
          f"{n1['bytes_sent'] - sent}; received {n1['bytes_received']}")
    # the output is here: in the store, in the session folder, with its PNG parameters
    out = client.download(first["outputs"]["image"]["id"], tmp_path / "out.png")
    with PIL.Image.open(out) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), 255 - pixels)
        assert "testing.invert" in im.info["parameters"]
    assert (server.data_dir / first["outputs"]["image"]["path"]).is_file()


def test_previews_stream_back(node: dict, client: Client) -> None:
    job = client.submit("testing.preview", {"steps": 3, "size": 32})
    previews = []
    done = client.wait(job["id"], on_event=lambda e: previews.append(e["data"]["preview"])
                       if e["type"] == "job.progress" and e["data"].get("preview") else None)
    assert done["state"] == "succeeded" and done["worker"] == "n1/w0"
    assert len(previews) == 3
    info = client.get(f"/api/artifacts/{previews[-1]}/info")
    assert info["kind"] == "preview" and info["mime"] == "image/jpeg"


def test_a_job_that_kills_its_remote_worker_fails_with_the_cause(node: dict,
                                                                 client: Client) -> None:
    done = client.wait(client.submit("testing.crash", {"how": "sigkill"})["id"])
    assert done["state"] == "failed" and done["worker"] == "n1/w0"
    assert "worker died: killed by SIGKILL" in done["error"]
    wait_for(lambda: client.get("/api/nodes/n1")["state"] == "up")


def test_a_dropped_connection_requeues_the_job_which_runs_once(node: dict, client: Client,
                                                              sshd: Sshd) -> None:
    job = client.submit("testing.sleep", {"seconds": 3, "steps": 30})
    wait_for(lambda: client.job(job["id"]).get("progress"))
    assert client.job(job["id"])["worker"] == "n1/w0"
    assert sshd.drop_connections() >= 1
    done = client.wait(job["id"])
    assert done["state"] == "succeeded" and done["worker"] == "n1/w0", done["error"]
    types = [e["type"] for e in client.events(job["id"])]
    assert types.count("job.started") == 2 and types.count("job.succeeded") == 1
    assert "job.failed" not in types
    wait_for(lambda: client.get("/api/nodes/n1")["state"] == "up")


def test_nodes_list_and_logs(node: dict, server: ServerProcess) -> None:
    out = cli("nodes", "list", "--url", server.url)
    assert out.returncode == 0 and "n1" in out.stdout and "up" in out.stdout, out.stdout
    logs = cli("nodes", "logs", "n1", "--url", server.url)
    assert "uv" in logs.stdout and "reconnected to" in logs.stdout, logs.stdout


def test_adding_the_same_machine_again_reuses_its_venv(node: dict, sshd: Sshd,
                                                       server: ServerProcess) -> None:
    out = cli(*add_args(sshd, server, node["remote"], "--name", "n1"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "already has this stable-core and plugin set: reusing it" in out.stdout, out.stdout
    assert "sent stable_core" not in out.stdout  # the wheels are there already


ISOLATED_JOB = """
import sys
from stablecore import Text, job

@job(description="Say which environment runs this plugin.")
def where() -> Text:
    return sys.prefix
"""


def test_a_plugin_installed_isolated_gets_its_own_env_there(node: dict, sshd: Sshd,
                                                            server: ServerProcess,
                                                            client: Client,
                                                            tmp_path: Path) -> None:
    plugin = tmp_path / "iso"
    (plugin / "src" / "sc_iso").mkdir(parents=True)
    (plugin / "pyproject.toml").write_text('''[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"
[project]
name = "stablecore-iso"
version = "0.1.0"
dependencies = ["stable-core", "numpy"]
[project.entry-points."stablecore.plugins"]
iso = "sc_iso"
''')
    (plugin / "src" / "sc_iso" / "__init__.py").write_text(ISOLATED_JOB)
    installed = subprocess.run(
        [*CLI, "plugin", "install", str(plugin), "--isolated", "--no-reload"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "STABLECORE_DATA_DIR": str(server.data_dir),
             "STABLECORE_UV_ARGS": "--offline,--no-build-isolation"})
    assert installed.returncode == 0, installed.stdout + installed.stderr

    args = add_args(sshd, server, node["remote"], "--name", "n1")
    out = cli(*["testing,iso" if a == "testing" else a for a in args])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"creating {node['remote']}/envs/iso for iso (installed --isolated)" in out.stdout
    assert "n1 is up: workers n1/w0, n1/w-iso" in out.stdout, out.stdout
    done = client.wait(client.submit("iso.where")["id"])
    assert done["state"] == "succeeded" and done["worker"] == "n1/w-iso", done["error"]
    prefix = client.http.get(f"/api/artifacts/{done['outputs']['text']['id']}").text
    assert prefix == str(node["remote"] / "envs" / "iso")
    assert {w["name"]: w.get("node") for w in client.workers()}["n1/w-iso"] == "n1"


def test_a_changed_host_key_is_refused(sshd: Sshd, server: ServerProcess,
                                       tmp_path: Path) -> None:
    other = Sshd(tmp_path / "other").start()
    try:
        known = server.data_dir / "known_hosts"
        fake = sshd_helper.keygen(tmp_path / "fake").with_suffix(".pub").read_text().split()
        with known.open("a") as f:  # as if we had met another machine at that address
            f.write(f"[127.0.0.1]:{other.port} {fake[0]} {fake[1]}\n")
        error = api_error(server, {"url": other.url, "key": str(other.client_key),
                                   "name": "other", "accept_new_host_key": True})
        assert "CHANGED" in error["detail"] and error["host_key"] == other.fingerprint
    finally:
        other.stop()


def test_removing_a_node_stops_its_workers_and_uninstalls(node: dict, client: Client,
                                                          server: ServerProcess,
                                                          sshd: Sshd) -> None:
    out = cli("nodes", "remove", "n1", "--uninstall", "--url", server.url)
    assert out.returncode == 0, out.stderr
    assert client.get("/api/nodes") == []
    assert not any(w["name"].startswith("n1/") for w in client.workers())
    assert not node["remote"].exists()
    assert f"[127.0.0.1]:{sshd.port} " not in (server.data_dir / "known_hosts").read_text()


@pytest.mark.parametrize("url", ["R5B\u00f5]", "[", "ssh://[::1", "ssh://u@h\u008f"])
def test_a_malformed_node_url_is_a_422_not_a_500(url: str) -> None:
    from stablecore.engine.ssh import Target
    from stablecore.errors import InvalidParams
    from stablecore.nodes import NodeRequest

    with pytest.raises((InvalidParams, ValueError)):
        Target.parse(NodeRequest(url=url).url)
