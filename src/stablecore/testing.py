"""Pytest fixtures for stable-core and its plugins: a real server in a subprocess.

Registered as a pytest plugin (entry point `pytest11`), so a plugin's own tests get the
`stablecore_server` and `stablecore_client` fixtures with nothing to import.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import PIL.Image
import pytest

from stablecore.client import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m stablecore serve` on 127.0.0.1; settings go in as STABLECORE_* variables."""

    def __init__(self, data_dir: Path, workers: str = "cpu", port: int | None = None,
                 python: str = sys.executable, **settings: object) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "STABLECORE_WORKERS": workers,
                    "STABLECORE_DATA_DIR": str(data_dir), "STABLECORE_PORT": str(self.port),
                    "STABLECORE_HOST": "127.0.0.1"}
        self.env.update({f"STABLECORE_{k.upper()}": str(v) for k, v in settings.items()})
        self.token = settings.get("token")
        self.python = python
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.proc = subprocess.Popen([self.python, "-m", "stablecore", "serve"], env=self.env,
                                     cwd=self.data_dir.parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                r = httpx.get(self.url + "/api/workers", headers=headers, timeout=1)
                if r.status_code == 401:  # it has users: its health says when it is ready
                    if httpx.get(self.url + "/api/health", timeout=1).json()["ready"]:
                        return self
                elif r.json() and all(w["state"] == "idle" for w in r.json()):
                    return self
            time.sleep(0.1)
        raise TimeoutError(f"server at {self.url}: workers not idle after {timeout} s")

    def client(self, **kw: object) -> Client:
        return Client(self.url, token=kw.pop("token", self.token), **kw)  # type: ignore[arg-type]

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def install_private(source: Path, target: Path) -> Path:
    """Install the plugin package at `source` into the folder `target` (not into this
    environment), for servers started with `target` on PYTHONPATH: test plugins then never
    show up in the server a user runs. Built from a copy, so the source tree stays clean."""
    build = target.with_name(target.name + "-src")
    shutil.copytree(source, build, ignore=shutil.ignore_patterns("build", "*.egg-info"),
                    dirs_exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "--upgrade",
                    "--target", str(target), str(build)], check=True, capture_output=True)
    return target


def save_image(folder: Path, pixels: np.ndarray, name: str = "in.png") -> Path:
    """An array written as an image file, ready to upload as a job input."""
    path = folder / name
    PIL.Image.fromarray(pixels).save(path)
    return path


def fetch_image(client: Client, ref: dict, folder: Path) -> np.ndarray:
    """An image output (a ref from a job's `outputs`) downloaded and read as an array."""
    path = client.download(ref["id"], folder / f"{ref['id']}.png")
    with PIL.Image.open(path) as im:
        return np.asarray(im)


def fetch_json(client: Client, ref: dict, folder: Path) -> Any:
    """A Numbers (or other JSON) output downloaded and parsed."""
    return json.loads(client.download(ref["id"], folder / f"{ref['id']}.json").read_text())


@pytest.fixture(scope="module")
def stablecore_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with one CPU worker, shared by a test module."""
    with ServerProcess(tmp_path_factory.mktemp("stablecore") / "data") as server:
        yield server


@pytest.fixture
def stablecore_client(stablecore_server: ServerProcess) -> Iterator[Client]:
    with stablecore_server.client() as client:
        yield client
