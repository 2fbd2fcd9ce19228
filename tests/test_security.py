"""Hostile requests against a real server: DNS rebinding, cross-site requests, escaping
session names, oversized bodies, unknown fields, weak tokens on a public bind."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import PIL.Image
import pytest
import websockets

from stablecore.client import Client
from stablecore.config import Settings
from stablecore.errors import ConfigError, InvalidParams
from stablecore.store import Store
from stablecore.testing import ServerProcess

EVIL_HOST = "rebind.evil.example"
EVIL_ORIGIN = "http://evil.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("security") / "data"
    with ServerProcess(data, allowed_hosts="studio.local") as s:
        yield s


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as h:
        yield h


def png(size: int = 8, noise: bool = False) -> bytes:
    pixels = (np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
              if noise else np.zeros((size, size, 3), np.uint8))
    buf = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def blobs(server: ServerProcess) -> set[str]:
    return {p.name for p in (server.data_dir / "blobs").rglob("*") if p.is_file()}


# --- DNS rebinding: only loopback Host names (and allowed_hosts) without a token -----------
@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/jobs", {"spec": "testing.echo"}),
    ("POST", "/api/plugins/reload", None),
    ("POST", "/api/plugins/install", {"source": "anything"}),
    ("POST", "/api/sessions", {}),
    ("GET", "/api/jobs", None),
    ("GET", "/openapi.json", None),
])
def test_a_rebound_host_name_is_refused(http: httpx.Client, method: str, path: str,
                                        body: dict | None) -> None:
    r = http.request(method, path, json=body, headers={"Host": EVIL_HOST})
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "Forbidden" and r.json()["field"] == "host"
    assert EVIL_HOST in r.json()["detail"] and "DNS rebinding" in r.json()["detail"]


def test_a_rebound_host_name_reaches_no_job_and_no_reload(server: ServerProcess,
                                                          http: httpx.Client) -> None:
    before = http.get("/api/jobs").json()["total"]
    pids = [w["pid"] for w in http.get("/api/workers").json()]
    for path in ("/api/jobs", "/api/plugins/reload"):
        r = http.post(path, json={"spec": "testing.echo"},
                      headers={"Host": f"{EVIL_HOST}:{server.port}"})
        assert r.status_code == 403
    time.sleep(0.5)
    assert http.get("/api/jobs").json()["total"] == before
    assert [w["pid"] for w in http.get("/api/workers").json()] == pids  # no restart


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]", "studio.local",
                                  "127.0.0.2"])
def test_loopback_and_allowed_host_names_are_served(server: ServerProcess, http: httpx.Client,
                                                    host: str) -> None:
    for value in (host, f"{host}:{server.port}"):
        r = http.get("/api/jobs", headers={"Host": value})
        assert r.status_code == 200, (value, r.text)


@pytest.mark.parametrize("host", [f"127.0.0.1@{EVIL_HOST}", f"{EVIL_HOST}#@127.0.0.1",
                                  "localhost.evil.example", "127.0.0.1:notaport"])
def test_host_names_that_only_look_local_are_refused(http: httpx.Client, host: str) -> None:
    assert http.get("/api/jobs", headers={"Host": host}).status_code == 403


# --- cross-site requests: an Origin must be the server's own ---------------------------------
@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/jobs", {"spec": "testing.echo"}),
    ("POST", "/api/plugins/reload", None),
    ("POST", "/api/sessions", {}),
    ("PATCH", "/api/jobs/j_x", {"priority": 1}),
    ("DELETE", "/api/plugins/x", None),
])
def test_a_foreign_origin_may_not_change_anything(http: httpx.Client, method: str, path: str,
                                                  body: dict | None) -> None:
    for origin in (EVIL_ORIGIN, "null", f"http://{EVIL_HOST}:5000"):
        r = http.request(method, path, json=body, headers={"Origin": origin})
        assert r.status_code == 403, r.text
        assert r.json()["field"] == "origin" and origin in r.json()["detail"]


def test_reads_and_same_origin_writes_pass(server: ServerProcess, http: httpx.Client) -> None:
    assert http.get("/api/jobs", headers={"Origin": EVIL_ORIGIN}).status_code == 200
    for origin in (server.url, f"http://localhost:{server.port}"):
        host = origin.removeprefix("http://")
        r = http.post("/api/jobs", json={"spec": "testing.echo"},
                      headers={"Origin": origin, "Host": host})
        assert r.status_code == 201, r.text


def test_a_cross_origin_upload_is_refused_and_not_stored(server: ServerProcess,
                                                         http: httpx.Client) -> None:
    before = blobs(server)
    r = http.post("/api/artifacts", files={"file": ("x.png", png(), "image/png")},
                  headers={"Origin": EVIL_ORIGIN})
    assert r.status_code == 403 and r.json()["field"] == "origin"
    r = http.post("/api/artifacts", files={"file": ("x.png", png(), "image/png")},
                  headers={"Host": EVIL_HOST})
    assert r.status_code == 403 and r.json()["field"] == "host"
    assert blobs(server) == before


def test_a_websocket_from_a_foreign_origin_is_refused(server: ServerProcess) -> None:
    url = "ws" + server.url.removeprefix("http") + "/api/events?since=0"

    async def first(**kw: object) -> str:
        async with websockets.connect(url, **kw) as conn:  # type: ignore[arg-type]
            return str(await asyncio.wait_for(conn.recv(), 10))

    for kw in ({"origin": EVIL_ORIGIN}, {"additional_headers": {"Host": EVIL_HOST}}):
        with pytest.raises(websockets.InvalidStatus) as e:
            asyncio.run(first(**kw))
        assert e.value.response.status_code == 403
    assert "worker.up" in asyncio.run(first(origin=server.url))  # the web UI's own origin
    assert "worker.up" in asyncio.run(first())  # a script, no Origin


def test_plain_clients_still_work(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "in.png").write_bytes(png(16))
    with server.client() as c:
        art = c.upload(tmp_path / "in.png")
        job = c.run("testing.invert", inputs={"image": art["id"]})
        assert job["state"] == "succeeded", job
        assert c.run("testing.echo", {"text": "ok"})["state"] == "succeeded"


# --- session names ---------------------------------------------------------------------------
BAD_NAMES = [".", "..", " .. ", "../escape", "a/../../b", "a/b", "/abs", "..\\x", "a\x00b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_session_names_that_escape_the_folder_are_refused(server: ServerProcess,
                                                          http: httpx.Client, name: str) -> None:
    outside = sorted(p.name for p in server.data_dir.iterdir())
    r = http.post("/api/sessions", json={"name": name})
    assert r.status_code == 422 and r.json()["field"] == "name", r.text
    # every other route that takes a session refers to one by id: a name is no id
    r = http.post("/api/jobs", json={"spec": "testing.echo", "session": name})
    assert r.status_code == 404 and r.json()["field"] == "session"
    r = http.post("/api/artifacts", files={"file": ("x.png", png(), "image/png")},
                  data={"session": name})
    assert r.status_code == 404 and r.json()["field"] == "session"
    r = http.get("/api/sessions/" + quote(name, safe="").replace(".", "%2E"))
    assert r.status_code == 404
    assert http.get("/api/jobs", params={"session": name}).json()["jobs"] == []
    assert sorted(p.name for p in server.data_dir.iterdir()) == outside


def test_the_store_refuses_escaping_names_too(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    try:
        for name in (".", "..", "../x", "a/../../x", "a/b"):
            with pytest.raises(InvalidParams) as e:
                store.create_session(name)
            assert e.value.fields["field"] == "name"
        assert store.create_session("...")["name"] == "..."  # a name, not a parent folder
    finally:
        store.close()


def test_unnamed_sessions_made_in_the_same_second_get_distinct_names(tmp_path: Path,
                                                                     http: httpx.Client) -> None:
    store = Store(tmp_path / "data")
    try:
        names = [store.create_session()["name"] for _ in range(5)]
        assert len(set(names)) == 5
    finally:
        store.close()
    made = [http.post("/api/sessions", json={}) for _ in range(3)]
    assert [r.status_code for r in made] == [201] * 3
    assert len({r.json()["name"] for r in made}) == 3


# --- request sizes, echoed values, unknown fields --------------------------------------------
def test_a_json_body_over_the_limit_gets_413(http: httpx.Client) -> None:
    big = {"spec": "testing.echo", "params": {"text": "x" * (2 * 2**20)}}
    r = http.post("/api/jobs", json=big)
    assert r.status_code == 413 and r.json()["limit"] == 2**20, r.text
    assert "1048576 bytes" in r.json()["detail"] and "max_body_mb" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"spec": "testing.echo", "params": {"text": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}}'

    r = http.post("/api/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text


def test_uploads_keep_their_own_limit(http: httpx.Client) -> None:
    data = png(1100, noise=True)
    assert len(data) > 2**20 * 3
    r = http.post("/api/artifacts", files={"file": ("big.png", data, "image/png")})
    assert r.status_code == 201, r.text


def test_echoed_values_are_cut_short(http: httpx.Client) -> None:
    name = "n" * 500_000
    r = http.post("/api/jobs", json={"spec": name})
    assert r.status_code == 404 and len(r.text) < 1000, r.text[:300]
    assert "more characters" in r.json()["detail"]
    r = http.get("/api/specs/" + "s" * 60_000)
    assert r.status_code == 404 and len(r.text) < 1000


@pytest.mark.parametrize("method, path, body, field", [
    ("POST", "/api/jobs", {"spec": "testing.echo", "priorty": 5}, "priorty"),
    ("POST", "/api/sessions", {"nam": "x"}, "nam"),
    ("PATCH", "/api/jobs/j_x", {"priority": 1, "urgent": True}, "urgent"),
    ("POST", "/api/plugins/install", {"source": "x", "isolate": True}, "isolate"),
    ("POST", "/api/models/pull", {"plugin": "all", "force": True}, "force"),
])
def test_unknown_fields_are_refused(http: httpx.Client, method: str, path: str, body: dict,
                                    field: str) -> None:
    r = http.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert r.json() == {"error": "InvalidParams", "detail": f"{field}: unknown field",
                        "field": field}


# --- tokens on a public bind -----------------------------------------------------------------
@pytest.mark.parametrize("token", [" ", "short", "  fifteen-chars!  ", " a b c d e f g h i j k l m n o "])
def test_a_weak_token_on_a_public_bind_is_refused(token: str) -> None:
    Settings(host="127.0.0.1", token=token).check_safe()  # loopback: the token is optional
    with pytest.raises(ConfigError, match="stable-core token new") as e:
        Settings(host="0.0.0.0", token=token).check_safe()
    assert e.value.fields["field"] == "token"
    Settings(host="0.0.0.0", token="x" * 16).check_safe()


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run([sys.executable, "-m", "stablecore", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_serve_refuses_a_weak_token_and_token_new_makes_a_good_one(tmp_path: Path) -> None:
    data = tmp_path / "d"
    weak = run_cli(tmp_path, "serve", "--host", "0.0.0.0", "--port", "1", "--token", " ",
                   "--data-dir", str(data))
    assert weak.returncode == 1
    assert "weak access token" in weak.stderr and "stable-core token new" in weak.stderr
    assert not data.exists()
    made = [run_cli(tmp_path, "token", "new").stdout.strip() for _ in range(2)]
    assert made[0] != made[1] and all(len(t) >= 43 and " " not in t for t in made)
    Settings(host="0.0.0.0", token=made[0]).check_safe()


def test_a_server_with_a_token_serves_any_host_name(tmp_path: Path) -> None:
    token = "t" * 20
    with ServerProcess(tmp_path / "data", token=token) as s, \
            Client(s.url, token=token) as c:
        r = httpx.get(s.url + "/api/jobs", headers={"Host": "studio.example.org",
                                                    "Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert httpx.get(s.url + "/api/jobs", headers={"Host": EVIL_HOST}).status_code == 401
        assert c.run("testing.echo")["state"] == "succeeded"


@pytest.mark.parametrize("path, body, field", [
    ("/api/jobs", {"spec": "testing.echo", "session": "\ud800"}, "session"),
    ("/api/jobs", {"spec": "testing.invert", "inputs": {"image": "\udfff"}}, "inputs.image"),
    ("/api/workflows", {"nodes": {"a\ud800": {"spec": "testing.echo"}}}, "nodes"),
    ("/api/sessions", {"name": "x\ud800"}, "name"),
])
def test_a_lone_surrogate_anywhere_in_a_body_is_a_422(server, path: str, body: dict,
                                                      field: str) -> None:
    """JSON can escape a lone surrogate, UTF-8 cannot hold one: these were 500s."""
    import json

    answer = httpx.post(server.url + path, content=json.dumps(body),
                        headers={"content-type": "application/json"})
    assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
