"""`stable-core cloud runpod|vast up/list/down` against a local stand-in for each provider's
HTTP API (the documented endpoints, request and response shapes; the real services are never
called), whose "machines" are a real sshd on 127.0.0.1: the public key the CLI sends is what
lets it in, as RunPod's PUBLIC_KEY and vast's account keys do."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stablecore import cloud
from stablecore.client import Client
from stablecore.errors import ConfigError
from stablecore.testing import ServerProcess

_spec = importlib.util.spec_from_file_location("sshd_helper", Path(__file__).with_name("sshd.py"))
sshd_helper = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(sshd_helper)  # type: ignore[union-attr]

pytestmark = pytest.mark.skipif(not Path(sshd_helper.SSHD).is_file(),
                                reason="needs OpenSSH's sshd (Debian: openssh-server)")
KEY = "rp_test_key_0123456789abcdef"


class Provider:
    """What the two APIs answer, and what they were asked."""

    def __init__(self, sshd: Any) -> None:
        self.sshd = sshd
        self.price = 0.44
        self.fail_next: tuple[int, dict] | None = None
        self.pods: dict[str, dict] = {}
        self.instances: dict[str, dict] = {}
        self.deleted: list[str] = []
        self.ssh_keys: list[str] = []

    def authorize(self, public_key: str) -> None:
        with (self.sshd.folder / "authorized_keys").open("a") as f:
            f.write(public_key.strip() + "\n")

    def answer(self, method: str, path: str, body: Any, auth: str) -> tuple[int, Any]:
        if auth != f"Bearer {KEY}":
            return 401, {"error": "invalid api key"}
        if self.fail_next:
            failure, self.fail_next = self.fail_next, None
            return failure
        if path.startswith("/runpod/v1"):
            return self.runpod(method, path.removeprefix("/runpod/v1"), body)
        return self.vast(method, path.removeprefix("/vast/api/v0"), body)

    def runpod(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/pods":
            assert body["ports"] == ["22/tcp"] and body["gpuTypeIds"] == ["NVIDIA GeForce RTX 4090"]
            pod_id = f"pod{len(self.pods) + 1}"
            self.authorize(body["env"]["PUBLIC_KEY"])  # what RunPod's images do with it
            self.pods[pod_id] = {"id": pod_id, "name": body["name"], "desiredStatus": "RUNNING",
                                 "costPerHr": self.price, "publicIp": "127.0.0.1",
                                 "portMappings": {"22": self.sshd.port},
                                 "gpu": {"id": body["gpuTypeIds"][0], "count": body["gpuCount"],
                                         "displayName": "RTX 4090"}}
            return 201, self.pods[pod_id]
        if method == "GET" and path == "/pods":
            return 200, list(self.pods.values())
        pod_id = path.removeprefix("/pods/")
        if pod_id not in self.pods:
            return 404, {"error": "pod not found"}
        if method == "DELETE":
            self.deleted.append(pod_id)
            del self.pods[pod_id]
            return 200, {}
        return 200, self.pods[pod_id]

    def vast(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "/ssh/":
            if method == "POST":
                self.ssh_keys.append(body["ssh_key"])
                self.authorize(body["ssh_key"])  # account keys go into new instances
                return 200, {"success": True}
            return 200, [{"id": i, "public_key": k} for i, k in enumerate(self.ssh_keys)]
        if method == "POST" and path == "/bundles/":
            assert body["gpu_name"] == {"eq": "RTX 4090"} and body["order"] == [["dph_total", "asc"]]
            return 200, {"offers": [{"id": 77, "dph_total": self.price, "gpu_name": "RTX 4090",
                                     "num_gpus": 1}]}
        if method == "PUT" and path == "/asks/77/":
            iid = str(4242 + len(self.instances))
            self.instances[iid] = {"id": int(iid), "label": body["label"],
                                   "actual_status": "running", "ssh_host": "ssh5.vast.ai",
                                   "ssh_port": 1, "public_ipaddr": "127.0.0.1",
                                   "ports": {"22/tcp": [{"HostIp": "0.0.0.0",
                                                         "HostPort": str(self.sshd.port)}]},
                                   "dph_total": self.price, "gpu_name": "RTX 4090",
                                   "num_gpus": 1}
            return 200, {"success": True, "new_contract": int(iid)}
        if method == "GET" and path == "/instances/":
            return 200, {"instances": list(self.instances.values())}
        iid = path.removeprefix("/instances/").strip("/")
        if iid not in self.instances:
            return 404, {"success": False, "error": "no_such_instance"}
        if method == "DELETE":
            self.deleted.append(iid)
            del self.instances[iid]
            return 200, {"success": True}
        return 200, {"instances": self.instances[iid]}


def serve(provider: Provider) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            size = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(size)) if size else None
            status, answer = provider.answer(self.command, self.path, body,
                                             self.headers.get("authorization", ""))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _any

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("cloud")
    sshd = sshd_helper.Sshd(root / "sshd")
    (sshd.folder / "authorized_keys").write_text("")  # only what the providers put there
    sshd.start()
    provider = Provider(sshd)
    httpd = serve(provider)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    env = {"RUNPOD_API_KEY": KEY, "VAST_API_KEY": KEY,
           "STABLECORE_RUNPOD_URL": f"{base}/runpod/v1",
           "STABLECORE_VAST_URL": f"{base}/vast/api/v0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with ServerProcess(root / "data", uv_args="--offline") as server:
            yield {"sshd": sshd, "provider": provider, "server": server, "root": root,
                   "env": {**os.environ, "COLUMNS": "400"}}
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        httpd.shutdown()
        sshd.stop()


def cli(world: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stablecore", "cloud", *args, "--url",
                           world["server"].url], capture_output=True, text=True, timeout=120,
                          env=world["env"])


def up(world: dict, provider: str, *extra: str) -> subprocess.CompletedProcess:
    return cli(world, provider, "up", "--gpu", "RTX 4090", "--key",
               str(world["sshd"].client_key), "--plugins", "testing", "--python",
               sys.executable, "--remote-dir", str(world["root"] / "remote"), *extra)


def test_a_settings_file_others_can_read_is_refused(tmp_path: Path) -> None:
    settings = tmp_path / "cloud.toml"
    settings.write_text('[vast]\napi_key = "secret"\n')
    settings.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        cloud.api_key("vast", {}, settings)
    settings.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert cloud.api_key("vast", {}, settings) == "secret"


def test_a_price_above_the_cap_is_refused(world: dict) -> None:
    world["provider"].price = 0.99
    out = up(world, "runpod", "--max-price", "0.80")
    assert out.returncode == 1
    assert "costs $0.99/h, above your cap of $0.80/h; the pod was deleted" in out.stderr
    assert world["provider"].deleted == ["pod1"] and not world["provider"].pods
    out = up(world, "vast", "--max-price", "0.80")
    assert out.returncode == 1 and "nothing was rented" in out.stderr, out.stderr
    assert not world["provider"].instances


def test_a_provider_error_is_told_without_the_key(world: dict) -> None:
    world["provider"].fail_next = (400, {"error": f"GPU type not available ({KEY})"})
    out = up(world, "runpod", "--max-price", "0.80")
    assert out.returncode == 1
    assert "runpod answered 400 to POST /pods: GPU type not available" in out.stderr
    assert KEY not in out.stderr + out.stdout and "***" in out.stderr


def test_runpod_up_list_and_idle_stop(world: dict) -> None:
    provider, server = world["provider"], world["server"]
    provider.price = 0.44
    started = time.monotonic()
    out = up(world, "runpod", "--max-price", "0.80", "--idle-stop", "0.15")
    assert out.returncode == 0, out.stdout + out.stderr
    (pod,) = provider.pods
    assert f"rented {pod} (1 x RTX 4090) at $0.44/h" in out.stdout
    assert f"runpod-{pod} is up" in out.stdout
    listed = cli(world, "list")
    assert f"runpod-{pod}" in listed.stdout and "0.44" in listed.stdout, listed.stdout
    with Client(server.url) as c:
        deadline = time.monotonic() + 30
        while c.get("/api/nodes") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.get("/api/nodes") == []
    assert pod in provider.deleted  # destroyed after 9 s without a job
    print(f"runpod up to idle stop: {time.monotonic() - started:.1f} s")


def test_vast_up_and_down(world: dict) -> None:
    provider = world["provider"]
    provider.price = 0.30
    out = up(world, "vast", "--max-price", "0.60", "--idle-stop", "0")
    assert out.returncode == 0, out.stdout + out.stderr
    (iid,) = provider.instances
    assert f"vast-{iid} is up" in out.stdout
    down = cli(world, "down", f"vast-{iid}")
    assert down.returncode == 0, down.stderr
    assert f"destroyed vast instance {iid}" in down.stdout
    assert iid in provider.deleted
    with Client(world["server"].url) as c:
        assert c.get("/api/nodes") == []
