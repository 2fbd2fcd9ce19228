"""With a token, every route but /api/health needs it; exposed binds need one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import websockets
from starlette.requests import Request

from stablecore.client import ApiError, Client
from stablecore.config import Settings
from stablecore.errors import Forbidden
from stablecore.server.auth import require_admin
from stablecore.testing import ServerProcess

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("auth") / "data", token=TOKEN) as s:
        yield s


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/specs"), ("GET", "/api/jobs"), ("POST", "/api/jobs"),
    ("GET", "/api/workers"), ("GET", "/api/sessions"), ("GET", "/api/artifacts/a_x"),
    ("POST", "/api/artifacts"), ("GET", "/openapi.json"), ("GET", "/api/jobs/j_x/events"),
])
def test_routes_need_the_token(server: ServerProcess, method: str, path: str) -> None:
    assert httpx.request(method, server.url + path).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.request(method, server.url + path, headers=wrong).status_code == 401


def test_health_is_open_and_the_token_works(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/api/health").json()["ok"]
    with Client(server.url, token=TOKEN) as c:
        assert c.run("testing.echo")["state"] == "succeeded"
    assert httpx.get(server.url + f"/api/jobs?token={TOKEN}").status_code == 200
    with Client(server.url, token="wrong") as c, pytest.raises(ApiError) as e:
        c.specs()
    assert e.value.status == 401


def test_websocket_needs_the_token(server: ServerProcess) -> None:
    ws = "ws" + server.url.removeprefix("http") + "/api/events?since=0"

    async def first(url: str) -> dict:
        async with websockets.connect(url) as conn:
            return await conn.recv()

    with pytest.raises(websockets.InvalidStatus):
        asyncio.run(first(ws))
    assert "worker.up" in asyncio.run(first(ws + f"&token={TOKEN}"))


@pytest.mark.parametrize("client, token, allowed", [
    ("127.0.0.1", None, True), ("::1", None, True), ("192.0.2.7", None, False),
    ("192.0.2.7", "t", True),  # with a token, TokenAuth has already checked the caller
])
def test_admin_routes_need_this_machine_or_the_token(client: str, token: str | None,
                                                     allowed: bool) -> None:
    app = SimpleNamespace(state=SimpleNamespace(settings=Settings(token=token)))
    request = Request({"type": "http", "client": (client, 5000), "app": app})
    if allowed:
        require_admin(request)
    else:
        with pytest.raises(Forbidden, match="from this machine only"):
            require_admin(request)


def test_binding_beyond_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stablecore", "serve", "--host", "0.0.0.0", "--port", "1",
         "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"})
    assert result.returncode == 1
    assert "refusing to bind 0.0.0.0 without an access token" in result.stderr
    assert not (tmp_path / "d").exists()
